"""``mscgym replay``: rebuild a record's compressed model and run it again.

Checks that the rebuilt task (weights, data, search space) and tool strategies are
the recorded ones, runs the model on the record's runner over the evaluation inputs,
and prints the accuracy and distillation loss next to the recorded values;
``--output`` also saves the outputs as a ``.npy`` file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mscgym.compiler.errors import MSCError
from mscgym.utils.files import atomic_write
from mscgym.utils.paths import output_arg

NAME = "replay"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="rebuild a record's compressed model and run it",
        description="Rebuild the task and compressed model a record describes, check the "
                    "tool strategies against the record, run the model on the record's "
                    "runner and print its accuracy and distillation loss.",
        epilog="examples:\n  mscgym replay best.json\n"
               "  mscgym replay best.json --output outputs.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("record", metavar="RECORD", help="a record .json written by search")
    parser.add_argument("--output", metavar="OUT.npy", type=output_arg(),
                        help="also save the model's outputs on the evaluation inputs here")
    parser.set_defaults(run=run)


def _compare(value: float | None, recorded: float | None, fmt: str) -> str:
    if value is None:
        return "n/a (the task data has no labels)"
    verdict = "same" if value == recorded else "differs"
    shown = "none" if recorded is None else format(recorded, fmt)
    return f"{value:{fmt}} (recorded {shown}, {verdict})"


def run(args: argparse.Namespace) -> int:
    if args.output is not None and Path(args.output).suffix != ".npy":
        raise MSCError(f"output file {args.output!r} must end in .npy")
    from mscgym.records.replay import replay  # torch, TVM: only when a record is replayed

    result = replay(args.record)
    task, recorded = result.task, result.record.metrics
    print(f"record:       {args.record} ({task.tool} {task.source.model_id}, "
          f"{task.runner}/{task.device})")
    changed = {k: v for k, v in result.record.plan.items()
               if v != task.space[k].baseline}
    print("plan:         " + (", ".join(f"{k}={v}" for k, v in changed.items())
                              or "baseline (nothing compressed)"))
    tools = sorted(result.model.strategies)
    verb = "matches" if len(tools) == 1 else "match"
    print("strategies:   " + (f"{', '.join(tools)} {verb} the record" if tools else "none"))
    print(f"accuracy:     {_compare(result.accuracy, recorded.accuracy, '.4f')}")
    print(f"distill loss: {_compare(result.distill_loss, recorded.distill_loss, '.6g')}")
    if args.output is not None:
        atomic_write(args.output, lambda tmp: _save_npy(tmp, result.outputs))
        print(f"wrote {args.output}")
    return 0


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
