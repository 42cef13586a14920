"""``mscgym validate``: re-measure a record's plan and say which metrics still hold.

Rebuilds the task, replays the plan (the tool strategies must be rebuilt exactly),
evaluates it again without the cache and compares each metric with the tolerance of
the policy in code, which the record may only tighten (deterministic metrics exactly
or to float rounding, latency within the recorded spread); the baseline is measured
again and the score recomputed. Exit code 0 when every metric and the score hold, 1
when one does not, 2 when the record itself is refused.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and TVM: run imports them when a record is validated
    from mscgym.records.replay import ValidationReport, ValidationRow

NAME = "validate"
EXIT_FAILED = 1

_COLUMNS = (("metric", "<"), ("recorded", ">"), ("measured", ">"), ("tolerance", "<"),
            ("holds", "<"))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="re-measure a record's plan and check its metrics",
        description="Re-evaluate the plan a record holds and compare every metric with the "
                    "record's tolerance; exit 0 if all hold, 1 if one does not, 2 if the "
                    "record is refused.",
        epilog="examples:\n  mscgym validate best.json --json\n"
               "  mscgym validate best.json --skip latency_ms   # on another machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("record", metavar="RECORD", help="a record .json written by search")
    parser.add_argument("--skip", metavar="METRIC", action="append", default=[],
                        help="a metric not to compare (repeatable), e.g. latency_ms when "
                             "validating on another machine than the one that searched")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


def _tolerance(row: ValidationRow) -> str:
    terms = ", ".join(f"{k} {v:g}" for k, v in row.tolerance.items())
    if row.allowed is None:
        return f"both missing ({terms})"
    text = f"±{row.allowed:.3g} ({terms})" if row.allowed else f"exact ({terms})"
    if row.paired is not None:
        paired = row.paired
        text += (f"; paired speed-up {_value(paired.recorded)} -> {_value(paired.measured)} "
                 f"{_tolerance(paired)}" + ("" if paired.holds else " NOT HELD"))
    return text


def format_report(report: ValidationReport) -> str:
    """The report as a fixed-width table plus a one-line verdict."""
    rows = [(r.metric, _value(r.recorded), _value(r.measured), _tolerance(r),
             "yes" if r.holds else "NO") for r in report.rows]
    header = tuple(title for title, _ in _COLUMNS)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, (_, align), width
                         in zip(cells, _COLUMNS, widths, strict=True)).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows), ""]
    skipped = f" (not compared: {', '.join(report.skipped)})" if report.skipped else ""
    if not report.failed:  # the score line below says whether the score holds too
        lines.append(f"all {len(rows)} metrics hold{skipped}")
    else:
        lines.append(f"{len(report.failed)} of {len(rows)} metrics do not hold: "
                     + ", ".join(report.failed) + skipped)
    if report.score is not None:
        lines.append(report.score.describe())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mscgym.records.replay import validate

    report = validate(args.record, skip=args.skip)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(f"record: {args.record}")
        print(format_report(report))
    return 0 if report.all_hold else EXIT_FAILED
