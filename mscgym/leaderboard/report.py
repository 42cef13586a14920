"""The leaderboard's outputs: ``leaderboard.json`` (everything) and ``leaderboard.md``
(the ranking per budget and every run), both written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mscgym.leaderboard.results import AgentSummary, RunResult, summarize
from mscgym.leaderboard.tasks import SCORER, SEED
from mscgym.records.record import package_versions
from mscgym.utils.files import atomic_write_text

if TYPE_CHECKING:
    from mscgym.leaderboard.runner import Leaderboard

SCHEMA = "mscgym.leaderboard"
SCHEMA_VERSION = 1
JSON_NAME = "leaderboard.json"
MARKDOWN_NAME = "leaderboard.md"


def to_json(board: Leaderboard) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "config": board.config.to_json(),
        "seed": SEED,
        "tasks": [task.to_json() for task in board.tasks],
        "summary": [s.to_json() for s in summarize(board.runs)] if board.runs else [],
        "runs": [run.to_json() for run in board.runs],
        "complete": board.complete,
        "wall_seconds": board.wall_seconds,
        "versions": package_versions(),
    }


def _table(header: Sequence[str], align: str, rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; ``align`` has one character per column, ``<`` or ``>``."""
    rule = ["---:" if a == ">" else "---" for a in align]
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def summary_table(summaries: Sequence[AgentSummary]) -> list[str]:
    """The ranking of one budget's agents by geomean speed-up."""
    rows = [(str(rank), s.agent, f"{s.geomean_speedup:.3f}x", f"{s.feasible}/{s.tasks}",
             str(s.evaluations), f"{s.wall_seconds:.1f}", "yes" if s.validated else "**no**")
            for rank, s in enumerate(summaries, start=1)]
    return _table(("rank", "agent", "geomean speed-up", "feasible", "evaluations",
                   "search wall (s)", "validated"), "><>>>><", rows)


def _speedup_cell(run: RunResult) -> str:
    if run.feasible:
        return f"{run.speedup:.3f}x"
    return f"1.000x* ({run.speedup:.3f}x)"


def runs_table(runs: Sequence[RunResult]) -> list[str]:
    """Every run: the best plan's score, speed-up, quality, cost and checks."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.task, r.budget, r.agent)):
        quality = (f"acc {run.best_accuracy:.4f}" if run.best_accuracy is not None
                   else f"loss {run.best_distill_loss:.3g}")
        rows.append((run.task, str(run.budget), run.agent, f"{run.best_score:.4g}",
                     _speedup_cell(run), quality, "yes" if run.feasible else "**no**",
                     f"{run.steps}/{run.evaluations}", f"{run.wall_seconds:.1f}",
                     "yes" if run.validated else "**no**"))
    return _table(("task", "budget", "agent", "best score", "speed-up", "best quality",
                   "feasible", "plans/evaluations", "search wall (s)", "validated"),
                  "<><>><<>><", rows)


def to_markdown(board: Leaderboard) -> str:
    config = board.config
    tasks = ", ".join(f"`{t.name}` ({t.bound})" for t in board.tasks)
    lines = [
        "# mscgym leaderboard",
        "",
        f"Tasks: {tasks}. Scorer `{SCORER}`, seed {SEED}, latency = median of "
        f"{config.profile_repeat} timed runs at batch 1 on the task's runner (CPU).",
        "Speed-up = baseline latency / best plan's latency; a best plan outside the task's "
        "bound counts as 1.000x (marked `*`, its raw speed-up in brackets). Geomean over tasks. "
        "`validated`: the agent kept the budget and scorer, and every best record "
        "re-measured within its tolerances (`mscgym validate`).",
        "",
    ]
    if not board.runs:
        return "\n".join([*lines, "No runs finished yet.", ""])
    summaries = summarize(board.runs)
    for budget in sorted({s.budget for s in summaries}):
        lines += [f"## Budget {budget}", "",
                  *summary_table([s for s in summaries if s.budget == budget]), ""]
    lines += ["## Runs", "", *runs_table(board.runs), ""]
    problems = [f"- {r.agent} on {r.task} (budget {r.budget}): {p}"
                for r in board.runs for p in r.problems]
    if problems:
        lines += ["## Problems", "", *problems, ""]
    status = "complete" if board.complete else "INCOMPLETE"
    lines.append(f"{len(board.runs)} runs ({status}), {board.wall_seconds:.0f} s in all.")
    return "\n".join(lines) + "\n"


def write_outputs(board: Leaderboard, out: str | os.PathLike[str]) -> tuple[str, str]:
    """Write ``leaderboard.json`` and ``leaderboard.md`` into ``out``; return their paths."""
    json_path = os.path.join(os.fspath(out), JSON_NAME)
    markdown_path = os.path.join(os.fspath(out), MARKDOWN_NAME)
    atomic_write_text(json_path, json.dumps(to_json(board), indent=1, sort_keys=True))
    atomic_write_text(markdown_path, to_markdown(board))
    return json_path, markdown_path
