"""The pipeline report as a readable table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(rows: Sequence[dict[str, Any]]) -> str:
    """One line per finished stage: accuracy, distill loss, latency and size."""
    header = f"{'stage':<10} {'accuracy':>9} {'distill_loss':>13} {'latency_ms':>11} " \
             f"{'p90_ms':>9} {'size_KB':>9} {'params':>10} {'runner':>12}"
    lines = [header, "-" * len(header)]
    for row in rows:
        size = row.get("size_bytes")
        lines.append(
            f"{row['stage']:<10} {_fmt(row.get('accuracy'), '.4f'):>9} "
            f"{_fmt(row.get('distill_loss'), '.3g'):>13} {_fmt(row.get('latency_ms'), '.4f'):>11} "
            f"{_fmt(row.get('latency_p90_ms'), '.4f'):>9} "
            f"{_fmt(None if size is None else size / 1024, '.1f'):>9} "
            f"{_fmt(row.get('params'), 'd'):>10} {row.get('runner', '-'):>12}")
    return "\n".join(lines)
