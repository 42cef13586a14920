"""The leaderboard's outputs: ``leaderboard.json`` (everything) and ``leaderboard.md``
(the ranking per budget and every run), both written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mscgym.compiler.errors import MSCError
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


def task_matrix(runs: Sequence[RunResult], budget: int) -> list[str]:
    """One budget as agents x tasks: each task's counted speed-up, then the geomean,
    feasible tasks, evaluations, search wall time and whether every record validated."""
    summaries = [s for s in summarize(runs) if s.budget == budget]
    tasks = sorted({r.task for r in runs if r.budget == budget})
    cells = {(r.agent, r.task): r for r in runs if r.budget == budget}
    rows = []
    for rank, summary in enumerate(summaries, start=1):
        per_task = []
        for task in tasks:
            run = cells.get((summary.agent, task))
            per_task.append("-" if run is None else _speedup_cell(run))
        rows.append((str(rank), summary.agent, *per_task, f"**{summary.geomean_speedup:.3f}x**",
                     f"{summary.feasible}/{summary.tasks}", str(summary.evaluations),
                     f"{summary.wall_seconds:.0f}", "yes" if summary.validated else "**no**"))
    return _table(("rank", "agent", *(f"`{t}`" for t in tasks), "geomean", "feasible",
                   "evaluations", "search wall (s)", "validated"),
                  "><" + ">" * len(tasks) + ">>>><", rows)


PUBLISH_START = "<!-- full-board:start (written by benchmarks/leaderboard/run.py) -->"
PUBLISH_END = "<!-- full-board:end -->"


def published_section(board: Leaderboard, when: str, machine: str) -> str:
    """The Markdown a full run puts into docs/LEADERBOARD.md between the markers."""
    lines = [PUBLISH_START, "",
             f"Full board of {when} on {machine}: {len(board.runs)} runs "
             f"({'complete' if board.complete else 'INCOMPLETE'}), {board.wall_seconds / 60:.1f} "
             f"min in all, seed {SEED}, latency = median of {board.config.profile_repeat} timed "
             "runs. Cells: the best plan's speed-up over the float model on that task "
             "(`1.000x*` = outside the bound, raw speed-up in brackets); every best record "
             "was re-validated in a fresh process (`validated`).", ""]
    for budget in sorted({r.budget for r in board.runs}):
        lines += [f"**Budget {budget}**", "", *task_matrix(board.runs, budget), ""]
    problems = [f"- {r.agent} on {r.task} (budget {r.budget}): {p}"
                for r in board.runs for p in r.problems]
    if problems:
        lines += ["Problems:", "", *problems, ""]
    lines.append(PUBLISH_END)
    return "\n".join(lines)


def publish(board: Leaderboard, doc: str | os.PathLike[str], when: str, machine: str) -> None:
    """Replace the section between :data:`PUBLISH_START` and :data:`PUBLISH_END` in
    ``doc`` with this board's tables (atomically); a doc without the markers is an error
    rather than a silently appended table."""
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    start, end = text.find(PUBLISH_START), text.find(PUBLISH_END)
    if start < 0 or end < start:
        raise MSCError(f"{os.fspath(doc)}: no '{PUBLISH_START}' ... '{PUBLISH_END}' section "
                       "to publish the board into")
    atomic_write_text(doc, text[:start] + published_section(board, when, machine)
                      + text[end + len(PUBLISH_END):])


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
    for budget in sorted({r.budget for r in board.runs}):
        lines += [f"## Per task, budget {budget}", "", *task_matrix(board.runs, budget), ""]
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
