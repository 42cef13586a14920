"""Validate leaderboard records in a fresh Python process.

A record must stand on its own: rebuilt from the file alone, its plan must re-measure
within tolerance. Validating it in the process that searched would let that process's
state (loaded models, built artifacts, torch settings an agent changed) stand in for
what the record says, so the leaderboard hands each task's records to a new interpreter
(``python -m mscgym.leaderboard.fresh OUT.json RECORD...``), which runs
:func:`mscgym.records.replay.validate` on each and writes the problems it found as JSON.
One process per task keeps the cost to one interpreter start per task, not per record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from mscgym.compiler.errors import MSCError
from mscgym.utils.files import atomic_write_text, read_json


def record_problems(path: str) -> list[str]:
    """What does not hold when the record at ``path`` is validated (empty: it holds)."""
    from mscgym.records.replay import validate

    try:
        report = validate(path)
    except MSCError as err:
        return [f"the record does not validate: {err}"]
    problems = [f"{metric} does not hold when re-measured" for metric in report.failed]
    if report.score is not None and not report.score.holds:
        problems.append(report.score.describe())
    return problems


def validate_fresh(paths: Sequence[str], timeout: float | None = None) -> dict[str, list[str]]:
    """Each record's problems, found by :func:`record_problems` in a new interpreter.

    A child that crashes, times out or reports nothing gives every record it was asked
    about a problem saying so (never an empty list, which would read as validated).
    """
    if not paths:
        return {}
    with tempfile.TemporaryDirectory(prefix="mscgym-validate-") as folder:
        result = os.path.join(folder, "problems.json")
        try:
            child = subprocess.run(
                [sys.executable, "-m", "mscgym.leaderboard.fresh", result, *paths],
                capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {p: [f"fresh-process validation timed out after {timeout:.0f} s"]
                    for p in paths}
        found = read_json(result, MSCError, "validation result") if os.path.isfile(
            result) else {}
    if child.returncode != 0 or not isinstance(found, dict):
        lines = [line for line in child.stderr.strip().splitlines() if line.strip()]
        cause = lines[-1] if lines else f"exit code {child.returncode}"
        return {p: [f"the fresh validation process failed: {cause}"] for p in paths}
    return {p: found.get(p, ["the fresh validation process did not report this record"])
            for p in paths}


def main(argv: Sequence[str] | None = None) -> int:
    """``OUT.json RECORD...``: validate each record, write {record: [problems]} to OUT."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m mscgym.leaderboard.fresh OUT.json RECORD [RECORD...]",
              file=sys.stderr)
        return 2
    out, records = args[0], args[1:]
    atomic_write_text(out, json.dumps({path: record_problems(path) for path in records},
                                      indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
