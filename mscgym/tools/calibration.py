"""Calibration algorithms: from observed values to quantization ranges and parameters.

Pure numpy, independent of graphs and runners, so each algorithm can be checked on
synthetic data. Activations are summarized by a running range and, for the
histogram methods, a histogram over that range (filled on a second pass over the
calibration data); weights are calibrated from the tensor itself.

Conventions (shared by every codegen through :class:`QuantParams`):

- symmetric: zero point 0 (signed dtypes) or ``2**(bits-1)`` (uint8) and
  ``scale = threshold / (2**(bits-1) - 1)``, i.e. ``max|x| / 127`` for int8 and
  ``max|x| / 7`` for int4. Calibrated values land on the restricted grid
  [-127, 127]; the codegens clamp to the dtype's full range (``QuantParams.qrange``,
  [-128, 127]), which only an out-of-range negative value can reach.
- asymmetric: the range is widened to include 0 (so 0 is exact), then
  ``scale = (high - low) / (qmax - qmin)`` and ``zero_point = round(qmin - low / scale)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mscgym.compiler.quant_spec import QuantParams

WEIGHT_DTYPES = ("int8", "int4", "uint8")
ACTIVATION_DTYPES = ("int8", "uint8")
WEIGHT_METHODS = ("minmax", "mse")
ACTIVATION_METHODS = ("minmax", "percentile", "entropy", "mse")
HISTOGRAM_METHODS = ("percentile", "entropy", "mse")

_BITS = {"int8": (8, True), "uint8": (8, False), "int4": (4, True)}
# Smallest scale handed out: an all-zero tensor (e.g. a pruned channel) still gets
# valid, finite parameters.
MIN_SCALE = 1e-8
# Candidate thresholds of the MSE searches.
_MSE_CANDIDATES = 256
_WEIGHT_MSE_ALPHAS = np.linspace(0.3, 1.0, 71)
# Probability given to a bin that P fills and Q leaves empty (the folded tail).
_KL_FLOOR = 1e-12


def qlimits(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of ``dtype``: the full integer range, as ``QuantParams.qrange``."""
    bits, signed = _BITS[dtype]
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _f32(values: np.ndarray) -> tuple[float, ...]:
    """Scales as float32-exact Python floats: every runner then uses the same value."""
    return tuple(float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1))


def symmetric_params(threshold: np.ndarray | float, dtype: str,
                     axis: int | None = None) -> QuantParams:
    """Symmetric parameters for ``|x| <= threshold`` (one threshold per channel with axis)."""
    bits, signed = _BITS[dtype]
    half = (1 << (bits - 1)) - 1
    thresholds = np.atleast_1d(np.asarray(threshold, dtype=np.float64))
    scale = np.maximum(thresholds / half, MIN_SCALE)
    zero = 0 if signed else 1 << (bits - 1)
    return QuantParams(dtype, _f32(scale), tuple([zero] * len(scale)), axis)


def affine_params(low: np.ndarray | float, high: np.ndarray | float, dtype: str,
                  axis: int | None = None) -> QuantParams:
    """Asymmetric parameters for ``low <= x <= high`` (per channel with axis)."""
    qmin, qmax = qlimits(dtype)
    lows = np.minimum(np.atleast_1d(np.asarray(low, dtype=np.float64)), 0.0)
    highs = np.maximum(np.atleast_1d(np.asarray(high, dtype=np.float64)), 0.0)
    scale = np.asarray(_f32(np.maximum((highs - lows) / (qmax - qmin), MIN_SCALE)),
                       dtype=np.float64)
    zero = np.clip(np.round(qmin - lows / scale), qmin, qmax).astype(np.int64)
    return QuantParams(dtype, _f32(scale), tuple(int(z) for z in zero), axis)


def range_params(low: float, high: float, dtype: str, symmetric: bool) -> QuantParams:
    """Per-tensor parameters of a calibrated range."""
    if symmetric:
        return symmetric_params(max(abs(low), abs(high)), dtype)
    return affine_params(low, high, dtype)


# -------------------------------------------------------------------------------------
# Activation statistics
# -------------------------------------------------------------------------------------
@dataclass
class Histogram:
    """Counts of values in ``bins`` equal bins over [low, high]; values outside are
    counted in the end bins, so a later batch never silently drops its outliers."""

    low: float
    high: float
    bins: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.high <= self.low:
            self.high = self.low + MIN_SCALE
        self.counts = np.zeros(self.bins, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        clipped = np.clip(values.reshape(-1), self.low, self.high)
        counts, _ = np.histogram(clipped, bins=self.bins, range=(self.low, self.high))
        self.counts += counts

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    @property
    def total(self) -> float:
        return float(self.counts.sum())


@dataclass
class TensorObserver:
    """Running statistics of one activation tensor over the calibration batches.

    Pass 0 keeps the range; :meth:`start_histograms` then opens the histograms the
    methods need (of ``|x|`` over [0, max|x|] for symmetric ranges, of ``x`` over
    [min, max] for asymmetric ones), filled by the next pass.
    """

    bins: int = 2048
    minimum: float = np.inf
    maximum: float = -np.inf
    count: int = 0
    batches: int = 0
    abs_hist: Histogram | None = None
    signed_hist: Histogram | None = None

    @property
    def absmax(self) -> float:
        return max(abs(self.minimum), abs(self.maximum)) if self.count else 0.0

    def update_range(self, values: np.ndarray) -> None:
        data = np.asarray(values, dtype=np.float32)
        data = data[np.isfinite(data)]
        self.batches += 1
        if data.size == 0:
            return
        self.minimum = min(self.minimum, float(data.min()))
        self.maximum = max(self.maximum, float(data.max()))
        self.count += int(data.size)

    def start_histograms(self, absolute: bool, signed: bool) -> None:
        low, high = (self.minimum, self.maximum) if self.count else (0.0, 0.0)
        self.abs_hist = Histogram(0.0, self.absmax, self.bins) if absolute else None
        self.signed_hist = Histogram(low, high, self.bins) if signed else None

    def update_histograms(self, values: np.ndarray) -> None:
        data = np.asarray(values, dtype=np.float32)
        data = data[np.isfinite(data)]
        if self.abs_hist is not None:
            self.abs_hist.add(np.abs(data))
        if self.signed_hist is not None:
            self.signed_hist.add(data)


# -------------------------------------------------------------------------------------
# Threshold searches over histograms
# -------------------------------------------------------------------------------------
def percentile_abs_threshold(hist: Histogram, percentile: float) -> float:
    """Smallest threshold below which ``percentile`` % of ``|x|`` lies."""
    if hist.total == 0:
        return hist.high
    cdf = np.cumsum(hist.counts) / hist.total
    index = int(np.searchsorted(cdf, percentile / 100.0, side="left"))
    return float(hist.edges[min(index, hist.bins - 1) + 1])


def percentile_range(hist: Histogram, percentile: float) -> tuple[float, float]:
    """(low, high): the ``100 - percentile`` and ``percentile`` percentiles of ``x``."""
    if hist.total == 0:
        return hist.low, hist.high
    cdf = np.cumsum(hist.counts) / hist.total
    edges = hist.edges
    low_index = int(np.searchsorted(cdf, 1.0 - percentile / 100.0, side="left"))
    high_index = int(np.searchsorted(cdf, percentile / 100.0, side="left"))
    low = float(edges[min(low_index, hist.bins - 1)])
    high = float(edges[min(high_index, hist.bins - 1) + 1])
    return low, high


def entropy_threshold(hist: Histogram, levels: int = 128) -> float:
    """TensorRT's KL-divergence calibration on a histogram of ``|x|``.

    For each candidate threshold (bin edge ``i >= levels``), P is the histogram up to
    ``i`` with the clipped tail folded into its last bin, Q is that histogram
    squeezed into ``levels`` quantization bins and expanded back evenly over the
    non-empty bins; the threshold with the smallest KL(P || Q) wins. All candidates
    are scored at once from prefix sums (a bin of P that Q leaves empty, only
    possible for the folded last bin, gets probability ``_KL_FLOOR`` in Q).
    """
    if hist.total == 0 or hist.bins <= levels:
        return hist.high
    # As NVIDIA's calibrator does, flatten the spike of exact zeros (ReLU outputs) in
    # the first bin: otherwise it dominates P and drives the threshold far too low.
    counts = hist.counts.copy()
    counts[0] = counts[1]
    total = counts.sum()
    if total == 0:
        return hist.high
    zero = np.zeros(1)
    prefix = np.concatenate([zero, np.cumsum(counts)])
    filled = np.concatenate([zero, np.cumsum(counts > 0)])
    xlogx = np.concatenate([zero, np.cumsum(_xlogx(counts))])
    cand = np.arange(levels, hist.bins + 1)
    starts = (np.arange(levels + 1)[None, :] * cand[:, None]) // levels
    sums = prefix[starts[:, 1:]] - prefix[starts[:, :-1]]
    nonempty = filled[starts[:, 1:]] - filled[starts[:, :-1]]
    density = sums / np.maximum(nonempty, 1.0)  # Q's value in each non-empty source bin
    last, kept = counts[cand - 1], prefix[cand]
    folded = last + (total - kept)  # P's last bin
    with np.errstate(divide="ignore", invalid="ignore"):
        log_kept = np.log(kept)
        # sum over source bins before the last of counts * log(Q value)
        cross = (_xlogx_rows(sums, density)
                 - np.where(last > 0, last * np.log(density[:, -1]), 0.0))
        q_last = np.where(last > 0, density[:, -1] / kept, _KL_FLOOR)
        p_log_p = (xlogx[cand - 1] + _xlogx(folded)) / total - np.log(total)
        p_log_q = ((cross - prefix[cand - 1] * log_kept) / total
                   + folded / total * np.log(np.maximum(q_last, _KL_FLOOR)))
        kl = np.where(kept > 0, p_log_p - p_log_q, np.inf)
    return float(hist.edges[cand[int(np.argmin(kl))]])


def _xlogx(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(values), 0.0)


def _xlogx_rows(sums: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``sums * log(density)`` over the non-empty groups."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums > 0, sums * np.log(density), 0.0).sum(axis=1)


def mse_abs_threshold(hist: Histogram, dtype: str) -> float:
    """Threshold of ``|x|`` minimizing the expected symmetric quantization MSE.

    The error of each candidate is measured on the bin centers: clipping above the
    threshold, rounding to the grid below it.
    """
    if hist.total == 0:
        return hist.high
    bits = _BITS[dtype][0]
    half = (1 << (bits - 1)) - 1
    centers, counts = hist.centers, hist.counts
    edges = hist.edges
    step = max(1, hist.bins // _MSE_CANDIDATES)
    candidates = edges[step::step]
    if candidates[-1] != edges[-1]:
        candidates = np.append(candidates, edges[-1])
    scale = candidates[:, None] / half
    dequant = np.clip(np.round(centers[None, :] / scale), 0, half) * scale
    errors = ((centers[None, :] - dequant) ** 2 * counts[None, :]).sum(axis=1)
    return float(candidates[int(np.argmin(errors))])


def mse_range(hist: Histogram, dtype: str) -> tuple[float, float]:
    """(low, high) minimizing the asymmetric quantization MSE over the signed
    histogram; candidates shrink both ends of the observed range by the same factor."""
    if hist.total == 0:
        return hist.low, hist.high
    qmin, qmax = qlimits(dtype)
    centers, counts = hist.centers, hist.counts
    alphas = np.linspace(1.0 / _MSE_CANDIDATES, 1.0, _MSE_CANDIDATES)
    lows = np.minimum(hist.low, 0.0) * alphas
    highs = np.maximum(hist.high, 0.0) * alphas
    scale = np.maximum((highs - lows) / (qmax - qmin), MIN_SCALE)[:, None]
    zero = np.clip(np.round(qmin - lows[:, None] / scale), qmin, qmax)
    q = np.clip(np.round(centers[None, :] / scale) + zero, qmin, qmax)
    errors = ((centers[None, :] - (q - zero) * scale) ** 2 * counts[None, :]).sum(axis=1)
    best = int(np.argmin(errors))
    return float(lows[best]), float(highs[best])


def activation_params(observer: TensorObserver, dtype: str, symmetric: bool, method: str,
                      percentile: float) -> tuple[QuantParams, tuple[float, float]]:
    """Per-tensor parameters of one activation, and the range they cover."""
    low, high = (observer.minimum, observer.maximum) if observer.count else (0.0, 0.0)
    if method == "minmax":
        chosen = (low, high)
    elif symmetric:
        hist = _required(observer.abs_hist, method)
        if method == "percentile":
            threshold = percentile_abs_threshold(hist, percentile)
        elif method == "entropy":
            threshold = entropy_threshold(hist, _levels(dtype, symmetric, low))
        else:
            threshold = mse_abs_threshold(hist, dtype)
        chosen = (-threshold, threshold)
    elif method == "entropy":
        threshold = entropy_threshold(_required(observer.abs_hist, method),
                                      _levels(dtype, symmetric, low))
        chosen = (max(low, -threshold), min(high, threshold))
    elif method == "percentile":
        chosen = percentile_range(_required(observer.signed_hist, method), percentile)
    else:
        chosen = mse_range(_required(observer.signed_hist, method), dtype)
    params = range_params(chosen[0], chosen[1], dtype, symmetric)
    return params, chosen


def needs_histograms(method: str, symmetric: bool) -> tuple[bool, bool]:
    """(|x| histogram, signed histogram) that ``method`` reads."""
    if method not in HISTOGRAM_METHODS:
        return False, False
    if symmetric:
        return True, False
    return method == "entropy", method != "entropy"


def _levels(dtype: str, symmetric: bool, low: float) -> int:
    """Quantization levels available to ``|x|``: half the grid, or all of it for
    non-negative data on an asymmetric grid."""
    bits = _BITS[dtype][0]
    if not symmetric and low >= 0:
        return 1 << bits
    return 1 << (bits - 1)


def _required(hist: Histogram | None, method: str) -> Histogram:
    if hist is None:
        raise ValueError(f"calibration method {method!r} needs a histogram pass")
    return hist


# -------------------------------------------------------------------------------------
# Weights
# -------------------------------------------------------------------------------------
def weight_params(weight: np.ndarray, dtype: str, per_channel: bool, symmetric: bool,
                  method: str) -> QuantParams:
    """Parameters of a weight, per output channel (axis 0) or per tensor.

    ``mse`` tries thresholds ``alpha * max|w|`` (``alpha * [min, max]`` when
    asymmetric) and keeps, per channel, the one with the smallest quantization MSE.
    """
    data = np.asarray(weight, dtype=np.float64)
    rows = data.reshape(data.shape[0], -1) if per_channel else data.reshape(1, -1)
    axis = 0 if per_channel else None
    low, high = rows.min(axis=1), rows.max(axis=1)
    absmax = np.maximum(np.abs(low), np.abs(high))

    def make(alpha: np.ndarray | float) -> QuantParams:
        if symmetric:
            return symmetric_params(absmax * alpha, dtype, axis)
        return affine_params(low * alpha, high * alpha, dtype, axis)

    if method == "minmax":
        return make(1.0)
    return _best_per_channel(rows, make)


def _best_per_channel(rows: np.ndarray,
                      make: Callable[[np.ndarray | float], QuantParams]) -> QuantParams:
    alphas = _WEIGHT_MSE_ALPHAS
    errors = np.empty((len(alphas), rows.shape[0]))
    for k, alpha in enumerate(alphas):
        spec = make(alpha)
        axis_spec = QuantParams(spec.dtype, spec.scale, spec.zero_point, 0)
        errors[k] = ((rows - axis_spec.fake_quant(rows)) ** 2).mean(axis=1)
    best = _WEIGHT_MSE_ALPHAS[np.argmin(errors, axis=0)]
    return make(best)
