"""The runner interface: build a graph (with a quant plan) for one framework, run it.

Each runner turns (graph, params, quant plan) into something executable through its
own codegen and framework; the runtime manager adds tools, caching and profiling on
top, so a runner stays a thin adapter.

The base class also guards every runner's ``run``: the inputs are checked against the
built graph's declared inputs (count, dtype, rank, static dims, and one value per
symbolic dim) before they reach a framework, since frameworks fail deep inside on a
mismatch or, worse, accept it (torch runs a 9x9 input through an 8x8 graph).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from mscgym.compiler.dims import Dim
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan


class RunnerUnavailableError(MSCError, RuntimeError):
    """The runner's framework or device is missing here; the message says what."""


class RunnerInputError(MSCError, ValueError):
    """Inputs given to ``run`` do not match the built graph's inputs."""


InputSpec = tuple[str, str, tuple[Dim, ...]]


def _spec(name: str, dtype: str, shape: Sequence[Dim]) -> str:
    return f"{name!r} ({dtype}{list(shape)})"


def check_inputs(runner: str, specs: Sequence[InputSpec], inputs: Sequence[Any]) -> None:
    """Raise RunnerInputError naming the input and what the graph expects, when
    ``inputs`` do not match ``specs`` (name, dtype, shape with symbolic dims)."""
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
        raise RunnerInputError(f"runner {runner!r}: run() takes a list of arrays, one per graph "
                               f"input ({', '.join(_spec(*s) for s in specs)}), got "
                               f"{type(inputs).__name__}")
    if len(inputs) != len(specs):
        raise RunnerInputError(f"runner {runner!r}: got {len(inputs)} inputs, the graph takes "
                               f"{len(specs)}: {', '.join(_spec(*s) for s in specs)}")
    symbols: dict[str, tuple[int, str]] = {}
    for (name, dtype, shape), value in zip(specs, inputs, strict=True):
        expected = _spec(name, dtype, shape)
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise RunnerInputError(f"runner {runner!r}: input {name!r} is a "
                                   f"{type(value).__name__}, expected an array {expected}")
        given = str(value.dtype).removeprefix("torch.")
        got = f"{given}{list(value.shape)}"
        if given != dtype:
            raise RunnerInputError(f"runner {runner!r}: input {name!r} is {got}, expected "
                                   f"dtype {dtype} ({expected})")
        if len(value.shape) != len(shape):
            raise RunnerInputError(f"runner {runner!r}: input {name!r} is {got}, expected rank "
                                   f"{len(shape)} ({expected})")
        for axis, (size, dim) in enumerate(zip(value.shape, shape, strict=True)):
            if type(dim) is int and size != dim:
                raise RunnerInputError(f"runner {runner!r}: input {name!r} is {got}, expected "
                                       f"{dim} at axis {axis} ({expected})")
            if isinstance(dim, str) and dim.isidentifier():
                seen = symbols.setdefault(dim, (int(size), name))
                if seen[0] != size:
                    raise RunnerInputError(
                        f"runner {runner!r}: input {name!r} has {dim}={size} at axis {axis}, "
                        f"but input {seen[1]!r} has {dim}={seen[0]} ({expected})")


def _recording_build(build: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(build)
    def wrapper(self: BaseRunner, graph: MSCGraph, *args: Any, **kwargs: Any) -> None:
        self._input_specs = [(t.name, t.dtype, tuple(t.shape)) for t in graph.get_inputs()]
        build(self, graph, *args, **kwargs)

    return wrapper


def _checked_run(run: Callable[..., list[np.ndarray]]) -> Callable[..., list[np.ndarray]]:
    @functools.wraps(run)
    def wrapper(self: BaseRunner, inputs: list[np.ndarray], *args: Any, **kwargs: Any
                ) -> list[np.ndarray]:
        specs = getattr(self, "_input_specs", None)
        if specs is not None:
            check_inputs(self.name, specs, inputs)
        return run(self, inputs, *args, **kwargs)

    return wrapper


class BaseRunner(ABC):
    """Builds and runs one graph on one framework and device."""

    name: ClassVar[str]
    artifact_suffix: ClassVar[str]
    """File suffix of what :meth:`export` writes (``.so``, ``.onnx``...), so a pipeline
    names the artifact without knowing the runner."""
    _input_specs: list[InputSpec] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each runner's own ``build`` (to remember the graph's inputs) and ``run``
        (to check inputs against them): one guard for every runner."""
        super().__init_subclass__(**kwargs)
        if "build" in cls.__dict__:
            cls.build = _recording_build(cls.__dict__["build"])  # type: ignore[method-assign]
        if "run" in cls.__dict__:
            cls.run = _checked_run(cls.__dict__["run"])  # type: ignore[method-assign]

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        self.device = device
        self.options = dict(options or {})

    @classmethod  # noqa: B027 - optional hook
    def check_available(cls, device: str) -> None:
        """Raise :class:`RunnerUnavailableError` when this runner cannot work on ``device``."""

    @abstractmethod
    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        """Make the graph executable; later ``run`` calls use it."""

    @abstractmethod
    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the built graph on host arrays; returns the graph outputs as host arrays."""

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait for queued device work (a no-op on the CPU)."""

    def export(self, path: str) -> str:
        """Write the built artifact (a library, an ONNX file, a module) to ``path``."""
        raise NotImplementedError(f"runner {self.name!r} cannot export its artifact")

    @property
    def target(self) -> str:
        """What the artifact is built for, e.g. ``llvm`` or ``CPUExecutionProvider``."""
        return self.device
