"""Our QDQ model against ONNX Runtime's ``quantize_static`` (``ort-u8-all``), tensor by tensor.

``quantize_vs_ort.py`` compares the two quantizers by their outputs; this script says
where a difference in distill loss comes from. For one model, calibrated on the same
batches, it prints:

* the tensors only one side quantizes;
* the largest relative difference between the two sides' scales, for activations and
  weights, and the zero points and weight/bias integers that differ;
* the distill loss of ours, of ORT's, and of ORT's model with our activation scales and
  zero points written into its Q/DQ nodes. When the last equals ours, the two quantizers
  differ only in those parameters (for example in the calibration ranges' last digits:
  we observe activations with torch, ONNX Runtime with its own float kernels).

    python benchmarks/qdq_diff_vs_ort.py mobilenetv2
"""

from __future__ import annotations

import argparse
import os
import tempfile

import common
import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization.shape_inference import quant_pre_process
from quantize_vs_ort import EXPORT_OPSET, OURS, ort_quantize

from mscgym.compiler.codegen.onnx_codegen import save_onnx, to_onnx
from mscgym.runtime.runners.ort_runner import onnx_bytes
from mscgym.tools.losses import distill_loss

_SUFFIXES = ("_dequantized", "_DequantizeLinear_Output")
"""What our codegen and ORT append to a weight's name for its dequantized tensor."""


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _weight_name(tensor: str) -> str:
    for suffix in _SUFFIXES:
        tensor = tensor.removesuffix(suffix)
    return tensor


def activation_params(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Float tensor -> (scale, zero point) of every QuantizeLinear."""
    arrays = _arrays(model)
    return {node.input[0]: (arrays[node.input[1]], arrays[node.input[2]])
            for node in model.graph.node if node.op_type == "QuantizeLinear"}


def weight_params(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, ...]]:
    """Weight name -> (integers, scale, zero point) of every DequantizeLinear of a constant."""
    arrays = _arrays(model)
    return {_weight_name(node.output[0]): (arrays[node.input[0]].astype(np.int64),
                                           arrays[node.input[1]], arrays[node.input[2]])
            for node in model.graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in arrays}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.max(np.abs(a64 - b64) / np.maximum(np.abs(b64), 1e-30)))


def with_activation_params(model: onnx.ModelProto,
                           params: dict[str, tuple[np.ndarray, np.ndarray]]
                           ) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose Q/DQ pairs on the tensors in ``params`` use those params."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    inits = {init.name: init for init in result.graph.initializer}
    producers = {out: node for node in result.graph.node for out in node.output}
    written = 0
    for node in result.graph.node:
        tensor = node.input[0]
        if node.op_type == "DequantizeLinear" and tensor in producers:
            tensor = producers[tensor].input[0]
        elif node.op_type != "QuantizeLinear":
            continue
        if tensor not in params:
            continue
        for init_name, value in zip(node.input[1:3], params[tensor], strict=True):
            old = inits[init_name]
            dtype = numpy_helper.to_array(old).dtype
            old.CopyFrom(numpy_helper.from_array(np.asarray(value, dtype).reshape(old.dims),
                                                 init_name))
        written += 1
    return result, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo model name, e.g. mobilenetv2")
    args = parser.parse_args()
    entry, graph, params = common.load_model(args.model)
    batches = common.calibration_arrays(entry)
    ours = onnx.load_from_string(onnx_bytes(graph, params,
                                            common.calibrate(graph, params, batches,
                                                             OURS["mscgym"])))
    with tempfile.TemporaryDirectory() as workdir:
        exported, prepared, quantized = (os.path.join(workdir, f"m.{n}.onnx")
                                         for n in ("float", "pre", "q"))
        save_onnx(to_onnx(graph, params, opset=EXPORT_OPSET), exported)
        quant_pre_process(exported, prepared)
        ort_quantize(prepared, quantized, "ort-u8-all", graph.input_names[0], batches)
        theirs = onnx.load(quantized)

    ours_act, theirs_act = activation_params(ours), activation_params(theirs)
    ours_w, theirs_w = weight_params(ours), weight_params(theirs)
    print(f"{args.model}: mscgym vs ort-u8-all, same {len(batches)} calibration batches")
    print(f"activations quantized: ours {len(ours_act)}, ORT {len(theirs_act)}; only ours "
          f"{sorted(set(ours_act) - set(theirs_act))}; only ORT "
          f"{sorted(set(theirs_act) - set(ours_act))}")
    shared = sorted(set(ours_act) & set(theirs_act))
    print(f"  shared {len(shared)}: largest relative scale difference "
          f"{max((_relative(ours_act[t][0], theirs_act[t][0]) for t in shared), default=0):.1e}, "
          f"zero points differing on "
          f"{sum(not np.array_equal(ours_act[t][1], theirs_act[t][1]) for t in shared)}")
    weights = sorted(set(ours_w) & set(theirs_w))
    print(f"weights and biases quantized: ours {len(ours_w)}, ORT {len(theirs_w)}, shared "
          f"{len(weights)}: largest relative scale difference "
          f"{max((_relative(ours_w[w][1], theirs_w[w][1]) for w in weights), default=0):.1e}")
    for name in weights:
        mine, other = ours_w[name][0], theirs_w[name][0]
        if mine.size != other.size or not np.array_equal(mine.ravel(), other.ravel()):
            diff = (np.abs(mine.ravel() - other.ravel()) if mine.size == other.size
                    else np.array([-1]))
            print(f"  {name}: integers differ in {int((diff != 0).sum())} of {other.size} "
                  f"elements, by at most {int(diff.max())}")

    inputs = entry.eval_inputs.numpy()
    teacher = common.float_outputs(entry, entry.eval_inputs)

    def loss(model: onnx.ModelProto) -> float:
        session = common.ort_session(model.SerializeToString(), 1)
        return distill_loss(teacher, session.run(None, {session.get_inputs()[0].name: inputs})[0])

    swapped, written = with_activation_params(theirs, ours_act)
    print(f"distill loss on the held-out inputs: ours {loss(ours):.4e}, ORT {loss(theirs):.4e}, "
          f"ORT with our activation params ({written} Q/DQ nodes) {loss(swapped):.4e}")


if __name__ == "__main__":
    main()
