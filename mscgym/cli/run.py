"""``mscgym run CONFIG``: run a compression pipeline; ``--replay WORKSPACE`` reruns one
from its recorded config and strategies and checks that the results match."""

from __future__ import annotations

import argparse
from typing import Any

from mscgym.cli.model_args import add_model_arguments, model_spec, task_data
from mscgym.compiler.errors import MSCError

NAME = "run"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="run a config-driven compression pipeline, or replay a workspace",
        description="Run the pipeline a JSON config describes (baseline -> prune/quantize/"
                    "distill -> finalize -> export), resuming after the last finished stage "
                    "of an existing workspace; or replay a finished workspace.",
        epilog="examples:\n  mscgym run examples/pipeline.json\n"
               "  mscgym run --replay msc_workspace",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="pipeline config (JSON)")
    parser.add_argument("--model", help="model (zoo name, .onnx, .pt2 or exported graph); "
                                        "default: the config's 'model' key")
    add_model_arguments(parser, model_flag=False)
    parser.add_argument("--replay", metavar="WORKSPACE", help="replay this workspace instead")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mscgym.pipeline.processor import create_msc_processor
    from mscgym.pipeline.replay import replay_workspace
    from mscgym.pipeline.report import format_report

    if args.replay:
        comparison = replay_workspace(args.replay, args.model)
        width = max(len(r["stage"]) for r in comparison.rows)
        for row in comparison.rows:
            mark = "ok" if row["holds"] else "MISMATCH"
            print(f"{row['stage']:<{width}}  {row['metric']:<13} recorded={row['recorded']!s:<24}"
                  f" replayed={row['replayed']!s:<24} {mark}")
        print(f"replay workspace: {comparison.replay_workspace}")
        return 0 if comparison.all_hold else 1
    if not args.config:
        raise MSCError("give a CONFIG file, or --replay WORKSPACE")
    model: Any = args.model
    data = None
    if args.model is not None:
        model = model_spec(args.model, args)
        data = task_data(args, model) if args.data is not None else None
    elif args.data is not None or args.input_shape:
        raise MSCError("--data, --eval-data, --labels and --input-shape go with --model")
    processor = create_msc_processor(model, args.config, data)
    try:
        report = processor.run()
    finally:
        processor.close()
    print(format_report(report["stages"]))
    print(f"workspace: {processor.workspace.root}")
    return 0
