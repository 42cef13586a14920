"""``mscgym inspect``: what a model is made of, before anything is compressed.

Takes a zoo model name, an exported graph file (``graph.export``) or an ONNX file,
translates it to an MSCGraph and prints its inputs, outputs, totals (parameters,
FLOPs), op-type counts and a per-layer table; ``--json`` prints the same summary as
JSON, ``--prototxt``/``--dot`` also write drawings of the graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mscgym import zoo
from mscgym.cli.model_args import add_model_arguments, input_shapes
from mscgym.compiler.errors import MSCError
from mscgym.utils.paths import output_arg

if TYPE_CHECKING:  # the loaders import TVM, ONNX and torch when a model is loaded
    from mscgym.compiler.graph import MSCGraph
    from mscgym.compiler.graph_translator import Params

NAME = "inspect"

_TABLE_COLUMNS = (("name", "<"), ("optype", "<"), ("output shape", "<"), ("params", ">"),
                  ("FLOPs", ">"))


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        NAME, help="summarize a model: inputs, outputs, params, FLOPs, per-layer table",
        description="Translate a zoo model, an exported graph file or an ONNX file to an "
                    "MSCGraph and print its inputs, outputs, totals, op-type counts and "
                    "per-layer parameters and FLOPs.",
        epilog="examples:\n  mscgym inspect digits-cnn\n"
               "  mscgym inspect model.onnx --input-shape input=1x3x224x224 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="NAME_OR_PATH", nargs="?",
                        help="a zoo model name, an exported graph .json, an .onnx file or a "
                             "saved torch.export program .pt2 (or give it as --model)")
    parser.add_argument("--model", metavar="NAME_OR_FILE", help="the same as NAME_OR_PATH")
    add_model_arguments(parser, data=False, model_flag=False)
    parser.add_argument("--batch", type=int, default=1,
                        help="value of the symbolic batch dim for FLOPs (default 1)")
    parser.add_argument("--prototxt", metavar="OUT", type=output_arg(),
                        help="also write a Netron prototxt here")
    parser.add_argument("--dot", metavar="OUT", type=output_arg(),
                        help="also write a Graphviz dot file here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def load_target(target: str, input_shapes: dict[str, tuple[int | str, ...]] | None = None
                ) -> tuple[MSCGraph, Params, str]:
    """(graph, params, where it came from) for a zoo name, graph, ONNX or .pt2 file."""
    from mscgym.compiler.serialize import load_graph

    path = Path(target)
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            return (*_from_onnx(path, input_shapes), f"ONNX file {path}")
        if input_shapes:
            raise MSCError("--input-shape applies only to an .onnx file")
        if path.suffix.lower() == ".pt2":
            return (*_from_file(path), f"torch.export program {path}")
        graph, params = load_graph(path)
        return graph, params, f"graph file {path}"
    if target in zoo.list_models():
        return (*_from_zoo(target), f"zoo model {target}")
    if path.suffix or "/" in target or path.exists():
        raise MSCError(f"{target!r} is not a readable file (expected an exported graph .json "
                       "or an .onnx file)")
    raise MSCError(f"unknown model {target!r}: not a file, and not a zoo model "
                   f"({', '.join(zoo.list_models())})")


def _from_onnx(path: Path, input_shapes: dict[str, tuple[int | str, ...]] | None = None
               ) -> tuple[MSCGraph, Params]:
    from google.protobuf.message import DecodeError
    from onnx.checker import ValidationError

    from mscgym.compiler.frontend import from_onnx

    try:
        return from_onnx(path, input_shapes=input_shapes or None)
    except (MSCError, OSError, DecodeError, ValidationError, ValueError, NotImplementedError,
            TypeError, RuntimeError) as exc:
        # TVM and ONNX raise all of these for files they cannot take; a user gets one
        # line naming the file, never a traceback.
        raise MSCError(f"cannot import ONNX file {path}: {exc}") from exc


def _from_file(path: Path) -> tuple[MSCGraph, Params]:
    from mscgym.tasks.sources import load_model_file

    try:
        return load_model_file(path)
    except MSCError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        raise MSCError(f"cannot import model file {path}: {type(exc).__name__}: {exc}") from exc


def _from_zoo(name: str) -> tuple[MSCGraph, Params]:
    from mscgym.compiler.frontend import from_torch

    try:
        model = zoo.load(name)
    except zoo.ZooCacheError as exc:
        raise MSCError(str(exc)) from exc
    return from_torch(model.model, model.example_inputs)


def _shape(dims: list[Any]) -> str:
    return "x".join(str(d) for d in dims)


def _tensors(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['name']} {t['dtype']}[{','.join(str(d) for d in t['shape'])}]"
                     for t in items)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g}"


def format_summary(summary: dict[str, Any], source: str) -> str:
    """The summary as text: header lines, op-type counts, then a fixed-width layer table."""
    totals = summary["totals"]
    lines = [
        f"graph:      {summary['name']} ({source})",
        f"inputs:     {_tensors(summary['inputs'])}",
        f"outputs:    {_tensors(summary['outputs'])}",
        f"nodes:      {totals['nodes']}",
        f"params:     {totals['params']:,} ({_si(totals['weight_bytes'])}B of weights)",
    ]
    if "nonzero_params" in totals:
        lines.append(f"nonzero:    {totals['nonzero_params']:,}")
    lines += [
        f"MACs:       {totals['macs']:,} ({_si(totals['macs'])}) at batch {summary['batch']}",
        f"FLOPs:      {totals['flops']:,} ({_si(totals['flops'])}) at batch {summary['batch']}",
        "op types:   " + ", ".join(f"{op} {n}" for op, n in summary["optypes"].items()),
        "",
    ]
    rows = [(layer["name"], layer["optype"], _shape(layer["output_shape"]),
             f"{layer['params']:,}", f"{layer['flops']:,}") for layer in summary["layers"]]
    header = tuple(title for title, _ in _TABLE_COLUMNS)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        parts = [f"{cell:{align}{width}}"
                 for cell, (_, align), width in zip(cells, _TABLE_COLUMNS, widths, strict=True)]
        return "  ".join(parts).rstrip()

    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths))
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mscgym.compiler.analysis import graph_summary

    if args.target is None and args.model is None:
        raise MSCError("the following arguments are required: NAME_OR_PATH (or --model)")
    if args.target is not None and args.model is not None:
        raise MSCError("give the model once: as NAME_OR_PATH or as --model, not both")
    graph, params, source = load_target(args.target or args.model, input_shapes(args))
    summary = graph_summary(graph, params or None, batch=args.batch)
    for out, suffix in ((args.prototxt, ".prototxt"), (args.dot, ".dot")):
        if out is None:
            continue
        if Path(out).suffix != suffix:
            raise MSCError(f"output file {out!r} must end in {suffix}")
        graph.visualize(out)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(format_summary(summary, source))
    return 0
