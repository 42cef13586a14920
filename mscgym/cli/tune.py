"""``mscgym tune``: MetaSchedule-tune a model's workloads into the persistent database.

A later build of any model with the same workloads (the TVM runner, ``finalize`` on
``tvm``, a gym evaluation in another process) applies the records without tuning.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mscgym.cli.model_args import add_model_arguments, model_spec
from mscgym.compiler.errors import MSCError

NAME = "tune"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="tune a model's TVM workloads with MetaSchedule (persistent database)",
        description=__doc__.splitlines()[0],
        epilog="examples:\n  mscgym tune digits-cnn --trials 16\n"
               "  mscgym tune model.onnx --input-shape input=1x3x224x224",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL_OR_FILE",
                        help="a zoo model (built with batch 1) or a model file")
    add_model_arguments(parser, data=False, model_flag=False)
    parser.add_argument("--runner", default="tvm", choices=["tvm"],
                        help="the runner whose builds use the database (only tvm tunes)")
    parser.add_argument("--trials", type=int, default=None,
                        help="MetaSchedule trials per new workload (default 32)")
    parser.add_argument("--cost-model", default="xgb", choices=["xgb", "random"])
    parser.add_argument("--target", default=None,
                        help="TVM target as JSON (default: the host CPU, detected)")
    parser.add_argument("--db", default=None, help="database root "
                        "(default <cache dir>/runtime/tvm_tuning)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import tvm

    from mscgym import zoo
    from mscgym.compiler.codegen.relax_codegen import to_relax
    from mscgym.compiler.frontend import from_torch
    from mscgym.compiler.quant_spec import QuantPlan
    from mscgym.runtime import tuning
    from mscgym.tasks.sources import ModelFile, load_model_file

    spec = model_spec(args.model, args)
    if isinstance(spec, ModelFile):
        graph, params = load_model_file(spec.path, spec.input_shapes)
    else:
        entry = zoo.load(spec, rebuild_corrupt=True)
        graph, params = from_torch(entry.model, entry.example_inputs, dynamic_batch=False)
    if args.target is None:
        target = tuning.host_target()
    else:
        try:
            target = tvm.target.Target(json.loads(args.target))
        except (ValueError, json.JSONDecodeError) as exc:
            raise MSCError(f"--target: expected a TVM target as JSON, e.g. "
                           f"'{{\"kind\": \"llvm\", \"num-cores\": 2}}': {exc}") from exc
    fused = tuning.fuse(to_relax(graph, params, "main", quant=QuantPlan()), target)
    report = tuning.tune(fused, target, tuning.database_dir(target, args.db),
                         trials=args.trials or tuning.DEFAULT_TRIALS,
                         cost_model=args.cost_model)
    print(f"target {report.target}\ndatabase {report.database}\n"
          f"workloads {report.workloads}: {report.already_tuned} already tuned, "
          f"{report.tuned} tuned now with {report.trials} trials in {report.seconds:.0f} s"
          + (" (interrupted: the records measured so far are kept)" if report.interrupted
             else ""))
    return 130 if report.interrupted else 0
