"""The one tool contract: every compression tool is declared here, once.

A :class:`ToolSpec` says what the rest of the project needs to know about a tool: its
name (the ``MSC_TOOL`` value), its class, its place in the pipeline, what it needs
before it acts, how a gym searches it and how a plan's choices become the tool, and
what of its strategy a replay must reproduce. The runtime manager, tasks and the
pipeline apply tools through one function, :func:`apply_tools`; the env ids, the task
kinds, the pipeline stages and replay's comparison are all read from the registry. A
new tool is its module plus one :func:`register_tool` call.

The registry stays light (no torch, no TVM): the command line reads it for its
choices before any model is loaded, so classes and builders are named by
``"module:attribute"`` and imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.tools.base import MSC_TOOL, BaseTool, Params, ToolConfigError, tool_name

NEEDS: frozenset[str] = frozenset({"calibration", "teacher", "train_data", "quant"})
"""What a tool may need before it acts: calibration data (it calibrates), the float
teacher, training data (it trains), the quant plan of the tools before it (it trains
with their fake quantization)."""

SpaceBuilder = Callable[[Any], list[Any]]
"""``(task) -> [Dimension, ...]``: the tool's dimensions of a task's search space."""
PlanBuilder = Callable[[Any, Mapping[str, Any], MSCGraph, Params, "ToolContext"],
                       "BaseTool | None"]
"""``(task, choices, graph, params, context) -> tool``: the tool a plan's choices (its
dimensions' values, by full dimension name) stand for, over ``graph``; None when the
choices leave the model as it is."""


def _whole(strategy: Any) -> Any:
    return strategy


def _tool_strategy(tool: BaseTool) -> Any:
    return tool.strategy()


@dataclass(frozen=True)
class ToolSpec:
    """One tool's declaration; see the module docstring.

    ``space``, ``plan`` and ``unchanged`` may be callables or ``"module:attribute"``
    names (imported on first use, so declaring a tool imports nothing heavy).
    """

    name: str
    """The tool's kind (``MSC_TOOL`` value), the prefix of its search dimensions, the key
    of its strategy in records and the name of its pipeline stage."""
    tool_class: str | type[BaseTool]
    """The class, or ``"module:Class"``."""
    order: int
    """Place in the pipeline: tools apply in increasing order (prune before quantize
    before distill: the distiller fine-tunes with the quantizer's plan)."""
    needs: frozenset[str] = frozenset()
    """Some of :data:`NEEDS`."""
    space: str | SpaceBuilder | None = None
    """The gym's dimensions for this tool (None: the tool is not searched)."""
    plan: str | PlanBuilder | None = None
    """How a plan's choices become the tool (required with ``space``)."""
    prefixes: tuple[str, ...] = ()
    """Dimension-name prefixes the space uses besides ``name`` (``calibrate``)."""
    space_option: str | None = None
    """The Task argument whose values the tool's dimensions offer (``quant_choices``):
    a task rebuilt from its description gets them back from the recorded space."""
    record: Callable[[BaseTool], Any] = _tool_strategy
    """What a record stores of the applied tool (None: nothing to store)."""
    replay_view: Callable[[Any], Any] = _whole
    """What must agree between a recorded and a rebuilt strategy."""
    unchanged: str | Callable[[MSCGraph, Params], dict[str, Any]] | None = None
    """The strategy that leaves the model as it is (default: the strategy of the tool
    made with an empty config), written when a gym keeps the model unchanged."""
    env_id: str | None = None
    """The Gymnasium id of its env (default ``msc/<Name>-v0``; only with ``space``)."""
    stage: bool = True
    """Whether the pipeline config takes a section of this name."""

    def __post_init__(self) -> None:
        unknown = sorted(self.needs - NEEDS)
        if unknown:
            raise ToolConfigError(f"tool {self.name!r}: unknown needs {unknown}; expected "
                                  f"some of {sorted(NEEDS)}")
        if (self.space is None) != (self.plan is None):
            raise ToolConfigError(f"tool {self.name!r}: declare both 'space' and 'plan' (a "
                                  "searched tool needs both) or neither")

    @property
    def searchable(self) -> bool:
        return self.space is not None

    @property
    def gym_id(self) -> str | None:
        if not self.searchable:
            return None
        return self.env_id or f"msc/{self.name.capitalize()}-v0"

    @property
    def dimension_prefixes(self) -> tuple[str, ...]:
        return (self.name, *self.prefixes)

    def cls(self) -> type[BaseTool]:
        return _resolve(self.tool_class)

    @property
    def config_schema(self) -> dict[str, Any] | None:
        """The JSON Schema the tool declares for its config (its class's
        ``config_schema``, checked when the tool is made): a new tool declares its
        config's keys, types and ranges there instead of checking them by hand."""
        return self.cls().config_schema

    def build_space(self, task: Any) -> list[Any]:
        if self.space is None:
            raise ToolConfigError(f"tool {self.name!r} declares no search space")
        return list(_resolve(self.space)(task))

    def build_tool(self, task: Any, choices: Mapping[str, Any], graph: MSCGraph,
                   params: Params, context: ToolContext) -> BaseTool | None:
        if self.plan is None:
            raise ToolConfigError(f"tool {self.name!r} declares no plan builder")
        return _resolve(self.plan)(task, choices, graph, params, context)

    def unchanged_strategy(self, graph: MSCGraph, params: Params) -> dict[str, Any]:
        if self.unchanged is not None:
            return _resolve(self.unchanged)(graph, params)
        return self.cls()(graph, params, {}).strategy()


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


@dataclass
class ToolContext:
    """What whoever applies tools can give them (see :data:`NEEDS`); a tool whose need
    the context does not meet acts without it (the runtime manager calibrates and trains
    its tools itself, in MSC's loop)."""

    teacher: tuple[MSCGraph, Params] | None = None
    calibrate: Callable[[BaseTool], None] | None = None
    """Runs calibration data through a tool until it is calibrated."""
    train_data: Callable[[], tuple[Any, Any]] | None = None
    """``() -> (inputs, labels or None)``, called only when a tool trains."""
    eval_fn: Any = None
    """Handed to a training tool's per-epoch evaluation."""
    teacher_outputs: Any = None
    """The teacher's outputs on the training data, kept across plans
    (:class:`~mscgym.tools.distiller.TeacherOutputs`), handed on with the teacher."""


@dataclass
class Applied:
    """The model after a sequence of tools, and the tools as applied."""

    graph: MSCGraph
    params: Params
    quant: QuantPlan
    tools: dict[str, BaseTool] = field(default_factory=dict)

    def strategies(self) -> dict[str, Any]:
        """Each applied tool's strategy as a record stores it."""
        out: dict[str, Any] = {}
        for name, tool in self.tools.items():
            value = tool_spec(name).record(tool)
            if value is not None:
                out[name] = value
        return out


ToolStep = BaseTool | Callable[[MSCGraph, Params, ToolContext], "BaseTool | None"]
"""A tool to apply, or a function making it over the graph the tools before left."""


def apply_tools(graph: MSCGraph, params: Params,
                steps: Mapping[str, ToolStep] | Iterable[tuple[str, ToolStep]],
                context: ToolContext | None = None,
                quant: QuantPlan | None = None) -> Applied:
    """Apply tools to ``graph``/``params`` and return the result.

    ``steps`` maps tool names to tools (or to functions making one over the current
    graph); a mapping applies in pipeline order (:attr:`ToolSpec.order`), a sequence of
    ``(name, step)`` pairs in the order given (a pipeline config's stage order, or
    AMC's recipe: prune, recover by fine-tuning, then calibrate). Each tool first gets
    what it needs: the quant plan so far (``quant`` plus what earlier tools planned),
    calibration and training from ``context``; then its transform and its quant plan
    are applied.
    """
    context = context or ToolContext()
    ordered = (in_pipeline_order(steps) if isinstance(steps, Mapping) else list(steps))
    plan: QuantPlan = dict(quant or {})
    applied = Applied(graph, params, plan)
    for name, step in ordered:
        spec = tool_spec(name)
        tool = step if isinstance(step, BaseTool) else step(applied.graph, applied.params,
                                                            context)
        if tool is None:
            continue
        if "quant" in spec.needs and plan:
            tool.set_quant(plan)  # type: ignore[attr-defined]
        if "calibration" in spec.needs and context.calibrate is not None and not getattr(
                tool, "calibrated", True):
            context.calibrate(tool)
        if "train_data" in spec.needs and context.train_data is not None and getattr(
                tool, "distilled_params", None) is None:
            tool.distill(*context.train_data(), eval_fn=context.eval_fn)  # type: ignore[attr-defined]
        applied.graph, applied.params = tool.transform(applied.graph, applied.params)
        plan.update(tool.quant_plan())
        applied.tools[name] = tool
    return applied


def new_tool(kind: MSC_TOOL | str, graph: MSCGraph, params: Params,
             config: Mapping[str, Any] | None = None,
             context: ToolContext | None = None) -> BaseTool:
    """The tool of ``kind`` over ``graph``, its config validated, and the teacher set
    when it needs one and ``context`` has it."""
    spec = tool_spec(kind)
    tool = spec.cls()(graph, params, dict(config or {}))
    if "teacher" in spec.needs and context is not None and context.teacher is not None:
        tool.set_teacher(*context.teacher, outputs=context.teacher_outputs)  # type: ignore[attr-defined]
    return tool


# -- the registry -------------------------------------------------------------------------
_SPECS: dict[str, ToolSpec] = {}
Listener = Callable[[ToolSpec, bool], None]
_LISTENERS: list[Listener] = []


def register_tool(spec: ToolSpec) -> ToolSpec:
    """Add a tool; its env, space, pipeline stage and replay follow from ``spec``."""
    if spec.name in _SPECS:
        raise ToolConfigError(f"tool {spec.name!r} is registered already")
    if any(s.order == spec.order for s in _SPECS.values()):
        raise ToolConfigError(f"tool {spec.name!r}: order {spec.order} is taken")
    _SPECS[spec.name] = spec
    for listener in list(_LISTENERS):
        listener(spec, True)
    return spec


def unregister_tool(name: str) -> None:
    """Remove a tool registered with :func:`register_tool` (and its env)."""
    spec = _SPECS.pop(name, None)
    if spec is None:
        raise ToolConfigError(f"tool {name!r} is not registered")
    for listener in list(_LISTENERS):
        listener(spec, False)


def subscribe(listener: Listener) -> None:
    """Call ``listener(spec, registered)`` for every tool registered now and later."""
    _LISTENERS.append(listener)
    for spec in tool_specs():
        listener(spec, True)


def tool_spec(kind: MSC_TOOL | str) -> ToolSpec:
    name = tool_name(kind)
    if name not in _SPECS:
        raise ToolConfigError(f"unknown tool kind {name!r}; expected one of {tool_names()}")
    return _SPECS[name]


def tool_specs() -> list[ToolSpec]:
    """Every registered tool, in pipeline order."""
    return sorted(_SPECS.values(), key=lambda s: s.order)


def tool_names() -> list[str]:
    return [s.name for s in tool_specs()]


def is_registered(name: str) -> bool:
    return name in _SPECS


def in_pipeline_order(steps: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    """``steps`` (keyed by tool kind) as ``(name, value)`` pairs in pipeline order."""
    return sorted(((tool_name(k), v) for k, v in steps.items()),
                  key=lambda item: tool_spec(item[0]).order)


def pipeline_stages() -> tuple[str, ...]:
    """The tools a pipeline config may name as stages."""
    return tuple(s.name for s in tool_specs() if s.stage)


def replay_view(name: str, strategy: Any) -> Any:
    """What must agree between a recorded and a rebuilt strategy of tool ``name`` (the
    whole strategy for a tool this process does not know)."""
    return _SPECS[name].replay_view(strategy) if name in _SPECS else strategy


# -- the built-in tools ---------------------------------------------------------------------
def _quant_record(tool: BaseTool) -> Any:
    plan = tool.quant_plan()
    return {k: v.to_json() for k, v in plan.items()} if plan else None


def _prune_view(strategy: Any) -> Any:
    """The kept channels of each prune group."""
    if isinstance(strategy, dict) and isinstance(strategy.get("groups"), list):
        return {str(g.get("name")): g.get("keep") for g in strategy["groups"]
                if isinstance(g, dict)}
    return strategy


def _distill_view(strategy: Any) -> Any:
    """The distilled weights' hash (training history may differ in the last digits)."""
    if isinstance(strategy, dict):
        return {"weights_sha256": strategy.get("weights_sha256")}
    return strategy


def _quant_unchanged(graph: MSCGraph, params: Params) -> dict[str, Any]:
    return {}


def _prune_unchanged(graph: MSCGraph, params: Params) -> dict[str, Any]:
    return tool_spec(MSC_TOOL.PRUNE).cls()(graph, params, {"density": 1.0}).strategy()


_PLANS = "mscgym.tasks.tool_plans"
for _spec in (
    ToolSpec("prune", "mscgym.tools.pruner:Pruner", 10, frozenset({"calibration"}),
             space=f"{_PLANS}:prune_space", plan=f"{_PLANS}:prune_tool",
             space_option="densities", replay_view=_prune_view, unchanged=_prune_unchanged),
    ToolSpec("quantize", "mscgym.tools.quantizer:Quantizer", 20, frozenset({"calibration"}),
             space=f"{_PLANS}:quantize_space", plan=f"{_PLANS}:quantize_tool",
             prefixes=("calibrate",), space_option="quant_choices", record=_quant_record,
             unchanged=_quant_unchanged),
    ToolSpec("distill", "mscgym.tools.distiller:Distiller", 30,
             frozenset({"teacher", "train_data", "quant"}), space=f"{_PLANS}:distill_space",
             plan=f"{_PLANS}:distill_tool", replay_view=_distill_view),
    ToolSpec("collect", "mscgym.tools.collector:Collector", 40, stage=False),
):
    register_tool(_spec)

__all__ = ["NEEDS", "Applied", "ToolContext", "ToolSpec", "apply_tools", "in_pipeline_order",
           "is_registered", "new_tool", "pipeline_stages", "register_tool", "replay_view",
           "subscribe", "tool_name", "tool_names", "tool_spec", "tool_specs",
           "unregister_tool"]
