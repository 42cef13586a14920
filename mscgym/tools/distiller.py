"""Distiller: fine-tune a compressed student against its float teacher.

Pruning and quantization cost accuracy; a few epochs of knowledge distillation win most
of it back. The student is the graph the earlier tools left (pruned, and trained with
fake quantization when :meth:`Distiller.set_quant` gives the quantizer's plan); the
teacher is the float source graph. Both run as torch modules generated from their
MSCGraphs (``torch_codegen.to_torch``), so distillation works for any model the
compiler reads, and the trained weights go back into graph naming for every runner.

Intermediate tensors are matched by building each module with the chosen node outputs
appended as extra graph outputs, the same trick the runtime manager uses to show tools
their watched tensors.

The teacher is frozen, so its outputs on the training inputs are the same for every
student fine-tuned from it: a :class:`TeacherOutputs` given to :meth:`Distiller.set_teacher`
computes them once (logits, plus the matched intermediate tensors) and every later
distillation from the same teacher weights on the same inputs reads them back instead of
running the teacher per batch. Gym tasks hold one per task, so fine-tuning each pruned
plan pays only for the student.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mscgym.compiler.codegen.torch_codegen import to_torch, weights_from_torch
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph, MSCTensor
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.tools import losses
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError, check_shape
from mscgym.utils.hashing import arrays_hash
from mscgym.utils.schema import integer_at_least

logger = logging.getLogger(__name__)

_DEFAULTS: dict[str, Any] = {
    "loss": "kl",
    "temperature": 4.0,
    "alpha": 0.5,
    "intermediate": [],
    "epochs": 3,
    "lr": 1e-3,
    "optimizer": "adam",
    "schedule": "cosine",
    "batch_size": 32,
    "weight_decay": 0.0,
    "seed": 0,
    "threads": 1,
    "progress": True,
}
_OPTIMIZERS = ("adam", "sgd")
_SCHEDULES = ("cosine", "constant")
_SGD_MOMENTUM = 0.9
_WEIGHT_LAYER_PREFIXES = ("nn.conv", "msc.conv", "msc.linear")
_FLOATS = ("temperature", "alpha", "lr", "weight_decay")

_PAIR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"student": {"type": "string"}, "teacher": {"type": "string"},
                   "weight": {"type": "number", "minimum": 0},
                   "loss": {"enum": list(losses.FEATURE_LOSSES)}},
    "required": ["student", "teacher"],
    "additionalProperties": False,
}
_INTERMEDIATE = '"auto" or a list of {student, teacher, weight, loss} objects'
CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "distiller config",
    "type": "object",
    "properties": {
        "loss": {"enum": list(losses.OUTPUT_LOSSES)},
        "temperature": {"type": "number", "exclusiveMinimum": 0},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1},
        "intermediate": {"anyOf": [
            {"const": "auto", "x-expected": _INTERMEDIATE},
            {"type": "array", "items": _PAIR_SCHEMA, "x-expected": _INTERMEDIATE}],
            "x-expected": _INTERMEDIATE},
        "epochs": integer_at_least(1),
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "optimizer": {"enum": list(_OPTIMIZERS)},
        "schedule": {"enum": list(_SCHEDULES)},
        "batch_size": integer_at_least(1),
        "weight_decay": {"type": "number", "minimum": 0},
        "seed": integer_at_least(0),
        "threads": integer_at_least(0),
        "progress": {"type": "boolean"},
    },
    "additionalProperties": False,
}
"""Every key of a distiller config; that its numbers are finite (JSON Schema lets NaN
through) and its student nodes are nodes of the graph stays in code."""

STRATEGY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "distiller strategy",
    "type": "object",
    "properties": {
        "config": {"type": "object"},
        "matched": {"type": "array", "items": _PAIR_SCHEMA},
        "final": {"type": ["object", "null"]},
        "weights_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$",
                           "x-expected": "64 lowercase hex digits or null"},
    },
    "required": ["config", "matched", "final", "weights_sha256"],
    "additionalProperties": False,
}
"""The shape of a distiller strategy (its ``config`` is checked by :data:`CONFIG_SCHEMA`);
the matched nodes against both graphs stay in code."""

EvalFn = Callable[[Callable[[torch.Tensor], torch.Tensor]], Any]


@dataclass(frozen=True)
class FeaturePair:
    """One intermediate match: the output of ``student`` node vs ``teacher`` node."""

    student: str
    teacher: str
    weight: float = 1.0
    loss: str = "mse"

    def to_json(self) -> dict[str, Any]:
        return {"student": self.student, "teacher": self.teacher, "weight": self.weight,
                "loss": self.loss}


class Distiller(BaseTool):
    """Knowledge distillation from a float teacher into the compressed student graph.

    Config (every key optional, defaults in brackets): ``loss`` "kl" | "mse" | "kl+ce"
    ["kl"]; ``temperature`` of the soft targets [4.0]; ``alpha`` weight of the hard-label
    cross-entropy with "kl+ce", the KL term gets ``1 - alpha`` [0.5]; ``intermediate``
    a list of {student, teacher, weight=1.0, loss="mse"} node pairs whose outputs are
    matched, or "auto" for the last conv/linear layer of each residual stage where the
    shapes agree [[]]; ``epochs`` [3]; ``lr`` [1e-3]; ``optimizer`` "adam" | "sgd"
    (momentum 0.9) ["adam"]; ``schedule`` of the learning rate, "cosine" (decays to 0
    over the run) | "constant" ["cosine"]; ``batch_size`` [32]; ``weight_decay`` [0];
    ``seed`` of the shuffling and of torch [0]; ``threads`` torch uses while training,
    0 keeps torch's setting [1]: one thread with deterministic kernels gives the same
    weights, hence the same ``weights_sha256``, on every machine (and is the fastest
    choice for small models on a busy CPU); ``progress`` shows a tqdm bar [True].
    """

    kind = MSC_TOOL.DISTILL
    config_schema = CONFIG_SCHEMA

    def __init__(self, graph: MSCGraph, params: Params, config: dict[str, Any] | None) -> None:
        super().__init__(graph, params, config)
        self.config = self._validate_config(self.config, "distiller config")
        self._teacher_graph, self._teacher_params = graph, params
        self._teacher_cache: TeacherOutputs | None = None
        self._quant: QuantPlan = {}
        self._pairs: list[FeaturePair] | None = None  # resolved against the teacher on use
        self.history: list[dict[str, Any]] = []
        self._trained: Params | None = None
        self._final: dict[str, Any] | None = None
        self._weights_sha256: str | None = None

    # -- setup --------------------------------------------------------------------------
    def set_teacher(self, graph: MSCGraph, params: Params,
                    outputs: TeacherOutputs | None = None) -> None:
        """Distill from ``graph``/``params`` (the float source model) instead of the
        student; ``outputs`` caches the teacher's outputs on the training inputs across
        distillers sharing this teacher (see :class:`TeacherOutputs`)."""
        self._teacher_cache = outputs
        if len(graph.output_names) != len(self.graph.output_names):
            raise ToolConfigError(
                f"distiller teacher {graph.name!r} has {len(graph.output_names)} outputs, the "
                f"student {self.graph.name!r} has {len(self.graph.output_names)}")
        self._teacher_graph, self._teacher_params = graph, params
        self._pairs = self._resolve_pairs()

    def set_quant(self, plan: QuantPlan) -> None:
        """Train the student with fake quantization of ``plan`` (quantization-aware)."""
        for name in plan:
            self.check_layer(name, "distiller set_quant")
        self._quant = dict(plan)

    @property
    def matched(self) -> list[FeaturePair]:
        """The intermediate pairs the loss uses, resolved against the current teacher."""
        if self._pairs is None:
            self._pairs = self._resolve_pairs()
        return list(self._pairs)

    # -- training -------------------------------------------------------------------------
    def distill(
        self,
        train_inputs: Any,
        train_labels: Any = None,
        eval_fn: EvalFn | None = None,
    ) -> list[dict[str, Any]]:
        """Fine-tune the student; returns one entry per epoch.

        ``train_inputs`` is an array/tensor (or one per graph input, equal first dims);
        ``train_labels`` the class labels, needed by "kl+ce". ``eval_fn`` receives a
        function mapping an input batch to the student's logits after every epoch and
        returns a number (e.g. ``zoo_model.accuracy``), logged as ``eval``. Each entry
        holds the epoch's mean ``loss`` (what was minimized), ``distill_loss`` (the
        output term), ``feature_loss``, ``ce`` (None without the CE term) and ``eval``.
        Every call starts again from the student's weights as constructed.
        """
        inputs = _as_input_tensors(train_inputs, self.graph)
        labels = self._labels(train_labels, len(inputs[0]))
        config, pairs = self.config, self.matched
        n_out = len(self.graph.output_names)
        student_graph = self.graph.with_outputs(
            _node_outputs(self.graph, [p.student for p in pairs]))
        teacher_graph = self._teacher_graph.with_outputs(
            _node_outputs(self._teacher_graph, [p.teacher for p in pairs]))
        rng = np.random.default_rng(config["seed"])
        batches = math.ceil(len(inputs[0]) / config["batch_size"])
        self.history = []
        with _reproducible(config["seed"], config["threads"]):
            targets_of = self._teacher_targets(teacher_graph, inputs)
            student = self._to_torch(student_graph, self.params, self._quant).train()
            optimizer = self._optimizer(student)
            schedule = self._schedule(optimizer, config["epochs"] * batches)
            bar = tqdm(total=config["epochs"] * batches, desc=f"distill {self.graph.name}",
                       unit="batch", disable=not config["progress"])
            with bar:
                for epoch in range(1, config["epochs"] + 1):
                    order = torch.from_numpy(rng.permutation(len(inputs[0])))
                    sums = dict.fromkeys(("loss", "distill_loss", "feature_loss", "ce"), 0.0)
                    student.train()
                    for index in order.split(config["batch_size"]):
                        batch = [x[index] for x in inputs]
                        with torch.no_grad():
                            targets = targets_of(batch, index)
                        terms = self._loss_terms(_as_tuple(student(*batch)), targets, pairs,
                                                 n_out, None if labels is None else labels[index])
                        if not torch.isfinite(terms["loss"]):
                            raise MSCError(
                                f"distiller: the loss of {self.graph.name!r} became "
                                f"{float(terms['loss'])} in epoch {epoch}; training diverged, "
                                f"lower config key 'lr' (now {config['lr']})")
                        optimizer.zero_grad(set_to_none=True)
                        terms["loss"].backward()
                        optimizer.step()
                        schedule.step()
                        for key, value in terms.items():
                            sums[key] += float(value.detach()) * len(index)
                        bar.update(1)
                        bar.set_postfix(loss=f"{float(terms['loss'].detach()):.4f}")
                    entry = self._epoch_entry(epoch, sums, len(inputs[0]), labels is not None)
                    entry["eval"] = self._evaluate(student, eval_fn)
                    self.history.append(entry)
                    logger.info("distill %s epoch %d: %s", self.graph.name, epoch, entry)
        self._trained = {name: np.asarray(value, dtype=self.params[name].dtype)  # keeps 0-d
                         for name, value in weights_from_torch(student).items()}
        self._final = {k: v for k, v in self.history[-1].items() if k != "epoch"}
        self._weights_sha256 = weights_sha256(self._trained)
        return self.history

    def _teacher_targets(self, teacher_graph: MSCGraph, inputs: list[torch.Tensor]
                         ) -> Callable[[list[torch.Tensor], torch.Tensor], Tensors]:
        """``(batch, index) -> teacher outputs``: the teacher run on the batch, or, with a
        :class:`TeacherOutputs`, the rows ``index`` of its outputs on all inputs."""
        if self._teacher_cache is None:
            teacher = self._to_torch(teacher_graph, self._teacher_params).eval()
            return lambda batch, index: _as_tuple(teacher(*batch))
        known = self._teacher_cache.outputs(teacher_graph, self._teacher_params, inputs,
                                            self.config["batch_size"])
        return lambda batch, index: tuple(t[index] for t in known)

    def _to_torch(self, graph: MSCGraph, params: Params,
                  quant: QuantPlan | None = None) -> torch.nn.Module:
        """The trainable torch module of ``graph`` (student or teacher); a partitioned
        model's distiller builds its regions and host calls instead."""
        return to_torch(graph, params, quant)

    @property
    def distilled_params(self) -> Params | None:
        """The student's weights after :meth:`distill` (None before)."""
        return None if self._trained is None else dict(self._trained)

    def transform(self, graph: MSCGraph, params: Params) -> tuple[MSCGraph, Params]:
        """``graph`` with the distilled weights (unchanged before :meth:`distill`)."""
        if self._trained is None:
            return graph, params
        known = graph.weight_tensors()
        for name, value in self._trained.items():
            if name not in known or tuple(known[name].shape) != value.shape:
                expected = tuple(known[name].shape) if name in known else "no such weight"
                raise ToolConfigError(
                    f"distiller transform: weight {name!r} of the distilled student has shape "
                    f"{value.shape}, graph {graph.name!r} has {expected}; distill again after "
                    "changing the tools before the distiller")
        return graph, {**params, **self._trained}

    # -- strategy -------------------------------------------------------------------------
    def strategy(self) -> dict[str, Any]:
        return {
            "config": copy.deepcopy(self.config),
            "matched": [pair.to_json() for pair in self.matched],
            "final": None if self._final is None else dict(self._final),
            "weights_sha256": self._weights_sha256,
        }

    def set_strategy(self, strategy: dict[str, Any]) -> None:
        where = "distiller strategy"
        check_shape(strategy, STRATEGY_SCHEMA, where)
        config = self._validate_config(strategy["config"], f"{where} config")
        pairs = [self._check_against_teacher(self._check_pair(item, f"{where}: matched[{i}]"),
                                             f"{where}: matched[{i}]")
                 for i, item in enumerate(strategy["matched"])]
        self.config, self._pairs = config, pairs
        self._final, self._weights_sha256 = strategy["final"], strategy["weights_sha256"]

    # -- internals ------------------------------------------------------------------------
    def _validate_config(self, config: Any, where: str) -> dict[str, Any]:
        """A config checked by :data:`CONFIG_SCHEMA`, its numbers finite and its student
        nodes in the graph, merged over the defaults."""
        self.check_config(config, where)
        merged = {**_DEFAULTS, **config}
        for key in _FLOATS:
            _check_finite(merged[key], f"{where}: {key}")
        if isinstance(merged["intermediate"], list):
            pairs = [self._check_pair(item, f"{where}: intermediate[{i}]")
                     for i, item in enumerate(merged["intermediate"])]
            merged["intermediate"] = [pair.to_json() for pair in pairs]
        for key in _FLOATS:
            merged[key] = float(merged[key])
        return merged

    def _check_pair(self, item: dict[str, Any], where: str) -> FeaturePair:
        """A pair as the config writes it (shape checked by the schema): the student node
        must exist in the student, the weight be finite."""
        self.check_layer(item["student"], f"{where} key 'student'")
        weight = item.get("weight", 1.0)
        _check_finite(weight, f"{where}.weight")
        return FeaturePair(item["student"], item["teacher"], float(weight),
                           item.get("loss", "mse"))

    def _resolve_pairs(self) -> list[FeaturePair]:
        """The configured pairs checked against the teacher, or the "auto" matches."""
        intermediate = self.config["intermediate"]
        if intermediate == "auto":
            return _auto_pairs(self.graph, self._teacher_graph)
        return [self._check_against_teacher(FeaturePair(**item),
                                            f"distiller config: intermediate[{index}]")
                for index, item in enumerate(intermediate)]

    def _check_against_teacher(self, pair: FeaturePair, where: str) -> FeaturePair:
        if pair.teacher not in self._teacher_graph:
            raise ToolConfigError(f"{where} key 'teacher': unknown layer {pair.teacher!r} (not "
                                  f"a node of teacher graph {self._teacher_graph.name!r})")
        student = self.graph.find_node(pair.student).output
        teacher = self._teacher_graph.find_node(pair.teacher).output
        if not _shapes_agree(student, teacher):
            raise ToolConfigError(f"{where}: student output {student} and teacher output "
                                  f"{teacher} have different shapes")
        return pair

    def _labels(self, train_labels: Any, count: int) -> torch.Tensor | None:
        if train_labels is None:
            if self.config["loss"] == "kl+ce":
                raise ToolConfigError("distiller config key 'loss': \"kl+ce\" needs "
                                      "train_labels; pass them or use \"kl\"")
            return None
        labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
        if labels.shape[:1] != (count,):
            raise ToolConfigError(f"distill: train_labels has shape {tuple(labels.shape)}, "
                                  f"expected {count} labels, one per input")
        return labels

    def _optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        trainable = [p for p in module.parameters() if p.requires_grad]
        lr, decay = self.config["lr"], self.config["weight_decay"]
        if self.config["optimizer"] == "sgd":
            return torch.optim.SGD(trainable, lr=lr, momentum=_SGD_MOMENTUM, weight_decay=decay)
        return torch.optim.Adam(trainable, lr=lr, weight_decay=decay)

    def _schedule(self, optimizer: torch.optim.Optimizer,
                  steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """Cosine decay to zero over the run (or a constant rate): a short fine-tune
        ends on small steps instead of wherever the last large step left the weights."""
        if self.config["schedule"] == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def _loss_terms(self, student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                    pairs: list[FeaturePair], n_out: int,
                    labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        config = self.config
        soft = torch.stack([losses.output_loss(config["loss"], t, s, config["temperature"])
                            for t, s in zip(teacher[:n_out], student[:n_out], strict=True)]
                           ).mean()
        feature = student[0].new_zeros(())
        for pair, t, s in zip(pairs, teacher[n_out:], student[n_out:], strict=True):
            feature = feature + pair.weight * losses.feature_loss(pair.loss, t, s)
        terms = {"distill_loss": soft, "feature_loss": feature}
        if config["loss"] == "kl+ce" and labels is not None:
            terms["ce"] = losses.ce_loss(student[0], labels)
            alpha = config["alpha"]
            terms["loss"] = (1.0 - alpha) * soft + alpha * terms["ce"] + feature
        else:
            terms["loss"] = soft + feature
        return terms

    def _epoch_entry(self, epoch: int, sums: dict[str, float], count: int,
                     has_ce: bool) -> dict[str, Any]:
        with_ce = has_ce and self.config["loss"] == "kl+ce"
        return {"epoch": epoch, "loss": sums["loss"] / count,
                "distill_loss": sums["distill_loss"] / count,
                "feature_loss": sums["feature_loss"] / count,
                "ce": sums["ce"] / count if with_ce else None}

    @staticmethod
    def _evaluate(student: torch.nn.Module, eval_fn: EvalFn | None) -> Any:
        if eval_fn is None:
            return None
        student.eval()

        def predict(*batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return _as_tuple(student(*(torch.as_tensor(x) for x in batch)))[0]

        result = eval_fn(predict)
        return float(result) if isinstance(result, int | float | np.number) else result


Tensors = tuple[torch.Tensor, ...]


class TeacherOutputs:
    """A frozen teacher's outputs on training inputs, computed once and shared.

    Keyed by the teacher's weights (content hash), the outputs it is built to return
    (logits and any matched intermediate tensors), the inputs (content hash) and the
    batch size they are computed in (the same as training's, so every value equals what
    the per-batch forward pass gives). ``hits`` and ``misses`` count the look-ups.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Tensors] = {}
        self.hits = 0
        self.misses = 0

    def outputs(self, graph: MSCGraph, params: Params, inputs: Sequence[torch.Tensor],
                batch_size: int) -> Tensors:
        """Every output of ``graph`` over all of ``inputs`` (first dim), in input order."""
        key = "|".join((weights_sha256(params), arrays_hash(
            {f"input{i}": x.numpy() for i, x in enumerate(inputs)}), str(batch_size),
            *graph.output_names))
        if key in self._entries:
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        teacher = to_torch(graph, params).eval()
        chunks: list[Tensors] = []
        with torch.no_grad():
            for start in range(0, len(inputs[0]), batch_size):
                chunks.append(_as_tuple(teacher(*(x[start:start + batch_size]
                                                  for x in inputs))))
        found = tuple(torch.cat(parts) for parts in zip(*chunks, strict=True))
        self._entries[key] = found
        return found


@contextmanager
def _reproducible(seed: int, threads: int) -> Iterator[None]:
    """Seed torch, pin its thread count, use deterministic kernels; restore all of it."""
    previous_threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
            torch.set_num_threads(previous_threads)


def weights_sha256(params: Params) -> str:
    """The content hash a distillation strategy records for its resulting weights."""
    return arrays_hash(params)


def _auto_pairs(student: MSCGraph, teacher: MSCGraph) -> list[FeaturePair]:
    """Last conv/linear layer of each residual stage, where the two shapes agree.

    A residual stage is the module path above the block index of a residual add
    (``layer2`` for ``layer2.1.add``); an add of two activations is residual.
    """
    stages: list[str] = []
    for node in teacher.nodes:
        if node.optype == "add" and len(node.inputs) == 2 and not node.weights:
            stage = _stage_of(node.name)
            if stage not in stages:
                stages.append(stage)
    pairs = []
    for stage in stages:
        layers = [n for n in teacher.nodes if n.name.startswith(f"{stage}.")
                  and n.optype.startswith(_WEIGHT_LAYER_PREFIXES)]
        if not layers or layers[-1].name not in student:
            continue
        name = layers[-1].name
        if _shapes_agree(student.find_node(name).output, layers[-1].output):
            pairs.append(FeaturePair(name, name))
    return pairs


def _stage_of(name: str) -> str:
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:index])
    return ".".join(parts[:-1])


def _shapes_agree(student: MSCTensor, teacher: MSCTensor) -> bool:
    if student.ndim != teacher.ndim:
        return False
    return all(isinstance(a, str) and isinstance(b, str) or a == b
               for a, b in zip(student.shape, teacher.shape, strict=True))


def _node_outputs(graph: MSCGraph, nodes: list[str]) -> list[str]:
    """The output tensor of each of ``nodes`` (feature pairs name nodes)."""
    return [graph.find_node(name).output.name for name in nodes]


def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def _as_input_tensors(train_inputs: Any, graph: MSCGraph) -> list[torch.Tensor]:
    """One float tensor per graph input, all with the same number of samples."""
    n_inputs = len(graph.input_names)
    if isinstance(train_inputs, np.ndarray | torch.Tensor):
        items: Sequence[Any] = [train_inputs]
    else:
        items = list(train_inputs)
    if len(items) != n_inputs:
        raise ToolConfigError(f"distill: got {len(items)} training inputs, graph "
                              f"{graph.name!r} takes {n_inputs} ({graph.input_names})")
    tensors = []
    for name, item in zip(graph.input_names, items, strict=True):
        expected = graph.find_tensor(name)
        tensor = torch.as_tensor(np.asarray(item), dtype=getattr(torch, expected.dtype))
        static = [(i, d) for i, d in enumerate(expected.shape) if isinstance(d, int)]
        if tensor.ndim != expected.ndim or any(tensor.shape[i] != d for i, d in static):
            raise ToolConfigError(f"distill: training input {name!r} has shape "
                                  f"{tuple(tensor.shape)}, expected {tuple(expected.shape)}")
        tensors.append(tensor)
    if len({len(t) for t in tensors}) != 1 or len(tensors[0]) == 0:
        raise ToolConfigError("distill: training inputs must be non-empty and have the same "
                              "number of samples")
    return tensors


def _check_finite(value: float, where: str) -> None:
    """JSON Schema's ranges let NaN (and infinity, where unbounded) through."""
    if not math.isfinite(value):
        raise ToolConfigError(f"{where} {value!r}: expected a finite number")
