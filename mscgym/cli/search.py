"""``mscgym search``: search a compression task with an agent and record the best plan.

Builds the task (model, tool, scorer, runner), runs the agent under the budget,
prints the baseline against the best plan (accuracy, distillation loss, latency with
its speed-up, size with its ratio) and what the search cost (evaluations, cache hit
rate, wall time), and writes the best plan's record, which ``mscgym replay`` and
``mscgym validate`` read back.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mscgym import zoo
from mscgym.agents.registry import AGENTS
from mscgym.cli.model_args import add_model_arguments, task_model_and_data
from mscgym.compiler.errors import MSCError
from mscgym.runtime.registry import runner_names
from mscgym.tasks.kinds import TOOLS
from mscgym.tasks.scorers import SCORERS, speedup
from mscgym.utils.files import atomic_write_text
from mscgym.utils.paths import exclusive_output, output_arg

NAME = "search"

_OPTUNA_ONLY = ("sampler", "storage", "study_name")
SEARCH_TUNE_TRIALS = 4
"""MetaSchedule trials per new workload in a search on the tvm runner: each distinct
workload is tuned once (random design-space samples), kept in the tuning database and
reused by every later evaluation, so latencies are of scheduled code at a bounded cost."""

if TYPE_CHECKING:  # torch and TVM: imported when a search runs, not for --help
    from mscgym.agents.base import SearchResult
    from mscgym.tasks.task import Task


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="search a compression task with an agent and record the best plan",
        description="Search the per-layer choices of a compression task (quantize, prune, "
                    "distill or all of them) with an agent under a budget of plans, print "
                    "the baseline against the best plan, and write the best plan's record.",
        epilog="examples:\n  mscgym search --task quantize --model digits-cnn --budget 16 "
               "--record best.json\n"
               "  mscgym search --task prune --model digits-resnet --agent optuna --budget 32 "
               "--record best.json --history history.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, choices=TOOLS, help="what to search")
    add_model_arguments(parser)
    parser.add_argument("--agent", default="random", metavar="AGENT",
                        help=f"the search agent: {', '.join(AGENTS)} (default random)")
    parser.add_argument("--budget", required=True, type=_positive_int,
                        help="how many plans the agent may propose")
    parser.add_argument("--record", required=True, metavar="OUT.json", type=output_arg(),
                        help="where to write the best plan's record")
    parser.add_argument("--history", metavar="OUT.json", type=output_arg(),
                        help="also write the search history (for mscgym plot) here")
    parser.add_argument("--runner", default="onnxruntime", choices=runner_names(),
                        help="runner that measures each plan (default onnxruntime)")
    parser.add_argument("--device", default="cpu", help="device of the runner (default cpu)")
    parser.add_argument("--scorer", default="latency_under_accuracy", choices=SCORERS,
                        help="how a plan is scored (default latency_under_accuracy)")
    parser.add_argument("--max-drop", type=_fraction,
                        help="largest accuracy drop latency_under_accuracy accepts "
                             "(default 0.01)")
    parser.add_argument("--sampler", help="optuna sampler (tpe, gp, cmaes, nsga2; default tpe)")
    parser.add_argument("--storage", help="optuna storage URL, e.g. sqlite:///study.db")
    parser.add_argument("--study-name", help="optuna study name (resumed if it exists)")
    parser.add_argument("--storage-path", type=output_arg("dir"),
                        help="ray: where Tune keeps the sweep's experiment "
                             "(default ~/ray_results)")
    parser.add_argument("--address", help="ray: the address of a running Ray cluster "
                        "(e.g. 127.0.0.1:6379); with token auth, set RAY_AUTH_TOKEN, "
                        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (default: a local Ray)")
    parser.add_argument("--logdir", type=output_arg("dir"),
                        help="write TensorBoard logs of the search here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the task and the agent")
    parser.add_argument("--tune-trials", type=int, default=SEARCH_TUNE_TRIALS, metavar="N",
                        help="tvm runner: MetaSchedule trials per new workload, tuned once "
                             f"and kept in the database (default {SEARCH_TUNE_TRIALS}; "
                             "0: TVM's default schedules)")
    parser.add_argument("--profile-repeat", type=_positive_int, default=30,
                        help="timed runs per latency measurement (default 30)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def _agent_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"seed": args.seed, "progress": not args.no_progress,
                               "logdir": args.logdir}
    for key in _OPTUNA_ONLY:
        value = getattr(args, key)
        if value is None:
            continue
        if args.agent != "optuna":
            raise MSCError(f"--{key.replace('_', '-')} applies only to --agent optuna")
        options[key] = value
    if args.storage_path is not None:
        if args.agent not in ("ray", "ray_tune"):
            raise MSCError("--storage-path applies only to --agent ray")
        options["storage_path"] = args.storage_path
    if args.address is not None:
        if args.agent not in ("ray", "ray_tune"):
            raise MSCError("--address applies only to --agent ray")
        options["address"] = args.address
    return options


def build_task(args: argparse.Namespace) -> Task:
    """The task the arguments describe; an unknown model or missing runner is an MSCError."""
    from mscgym.runtime.runner import RunnerUnavailableError
    from mscgym.tasks.task import Task

    source = task_model_and_data(args)
    scorer_options: dict[str, Any] = {}
    if args.max_drop is not None:
        if args.scorer != "latency_under_accuracy":
            raise MSCError("--max-drop applies only to --scorer latency_under_accuracy")
        scorer_options["max_drop"] = args.max_drop
    runner_options: dict[str, Any] = {}
    if args.tune_trials < 0:
        raise MSCError(f"--tune-trials: expected an integer >= 0, got {args.tune_trials}")
    if args.runner == "tvm" and args.device == "cpu" and args.tune_trials:
        runner_options["tune"] = {"trials": args.tune_trials, "cost_model": "random"}
    try:
        return Task(source["model"], args.task, data=source["data"], scorer=args.scorer,
                    scorer_options=scorer_options, runner=args.runner, device=args.device,
                    seed=args.seed, profile_repeat=args.profile_repeat,
                    runner_options=runner_options)
    except (RunnerUnavailableError, zoo.ZooCacheError) as err:
        raise MSCError(str(err)) from None


def _row(title: str, base: str, best: str, note: str = "") -> str:
    return f"{title:<14}{base:>12}{best:>12}  {note}".rstrip()


def _optional(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)


def format_summary(task: Task, result: SearchResult, path: str) -> str:
    """Baseline against best, what the search cost, and where the record went."""
    base, best = task.baseline, result.best_metrics
    speed = speedup(best, base)  # the paired ratio where measured: what the score used
    kind = "paired speed-up" if best.paired_speedup is not None else "speed-up"
    ratio = best.size_bytes / base.size_bytes if base.size_bytes else float("nan")
    changed = {k: v for k, v in result.best_plan.items() if v != task.space[k].baseline}
    cache = result.cache_stats
    accuracy = (_optional(base.accuracy, "{:.4f}".format),
                _optional(best.accuracy, "{:.4f}".format))
    lines = [
        f"search:       {result.agent} on {task.tool} {task.source.model_id} "
        f"({task.runner}/{task.device}), scorer {task.scorer.name}, budget {result.budget}",
        "",
        _row("", "baseline", "best"),
        _row("accuracy", *accuracy),
        _row("distill loss", f"{base.distill_loss:.4g}", f"{best.distill_loss:.4g}"),
        _row("latency (ms)", f"{base.latency_ms:.4f}", f"{best.latency_ms:.4f}",
             f"{speed:.2f}x {kind}"),
        _row("size (KB)", f"{base.size_bytes / 1024:.1f}", f"{best.size_bytes / 1024:.1f}",
             f"{ratio:.2f}x of baseline"),
        _row("score", f"{task.score(base):.4g}", f"{result.best_score:.4g}"),
        "",
        "best plan:    " + (", ".join(f"{k}={v}" for k, v in changed.items())
                            or "baseline (nothing compressed)"),
        f"outcome:      {result.summary()}",
        f"evaluations:  {result.evaluations} measured for {len(result.history)} plans, "
        f"cache hit rate {cache['hit_rate']:.0%}, wall {result.wall_seconds:.1f} s",
        *_tuning_line(result),
        f"record:       {path}",
    ]
    return "\n".join(lines)


def _tuning_line(result: SearchResult) -> list[str]:
    """What a search on the tvm runner paid for MetaSchedule tuning (none for others)."""
    paid = result.extra.get("tvm_tuning")
    if paid is None:
        return []
    return [f"tvm tuning:   {paid['workloads']} new workloads, {paid['trials']} trials, "
            f"{paid['seconds']:.1f} s of the wall (once per workload, kept in the database)"]


def run(args: argparse.Namespace) -> int:
    from mscgym.agents.registry import create_agent

    options = _agent_options(args)
    agent = create_agent(args.agent, **options)
    with exclusive_output(args.record, "--record"):  # a second search on it is refused
        task = build_task(args)
        result = agent.search(task, args.budget)
        path = result.best_record.save(args.record)
        if args.history is not None:
            atomic_write_text(args.history, json.dumps(result.to_json(), indent=1,
                                                       sort_keys=True))
    print(format_summary(task, result, path))
    return 0

