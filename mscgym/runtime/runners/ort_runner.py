"""ONNX Runtime runner: MSCGraph -> ONNX with QDQ nodes -> InferenceSession.

ONNX Runtime fuses QuantizeLinear/DequantizeLinear pairs around supported ops into
real int8 kernels at ``ORT_ENABLE_ALL``, so latency measured here reflects int8
execution on the CPU. Serialized models are kept in the in-process cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort

from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.compiler.errors import MSCError
from mscgym.compiler.graph import MSCGraph
from mscgym.compiler.quant_spec import QuantPlan
from mscgym.runtime.cache import MemoryCache, fingerprint
from mscgym.runtime.runner import BaseRunner, RunnerUnavailableError
from mscgym.utils.files import atomic_write_bytes

_MODELS = MemoryCache("onnx")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def onnx_bytes(graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan,
               quantize_bias: bool = True) -> bytes:
    """The serialized ONNX model of ``graph`` (from the in-process cache when built before).

    ``quantize_bias=False`` keeps biases float (TensorRT takes no int32 DequantizeLinear).
    """
    target = f"onnx/quantize_bias={quantize_bias}"
    key = fingerprint(graph, params, quant, "onnx", target, onnx.__version__)
    data = _MODELS.get(key)
    if data is None:
        data = to_onnx(graph, params, quant, quantize_bias=quantize_bias).SerializeToString()
        _MODELS.put(key, data)
    return data


class ORTRunner(BaseRunner):
    """Runs the ONNX codegen's model in an ONNX Runtime session."""

    name = "onnxruntime"
    artifact_suffix = ".onnx"
    OPTIONS: ClassVar[dict[str, str]] = {
        "intra_op_threads": "threads of one op (default: ONNX Runtime's choice)",
    }

    @classmethod
    def check_available(cls, device: str) -> None:
        provider = _PROVIDERS[device]
        available = ort.get_available_providers()
        if provider not in available:
            raise RunnerUnavailableError(
                f"onnxruntime runner cannot use device {device!r}: {provider} is not in this "
                f"onnxruntime {ort.__version__} build (available: {available}); install "
                "onnxruntime-gpu with a CUDA GPU, or use device 'cpu'")

    def __init__(self, device: str = "cpu", options: Mapping[str, Any] | None = None) -> None:
        super().__init__(device, options)
        threads = self.options.get("intra_op_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 0):
            raise MSCError(f"onnxruntime runner: intra_op_threads must be an integer >= 0 "
                           f"(0 = ONNX Runtime's default), got {threads!r}")
        self._threads = threads
        self._session: ort.InferenceSession | None = None
        self._model: bytes | None = None
        self._input_names: list[str] = []

    @property
    def target(self) -> str:
        return _PROVIDERS[self.device]

    def build(self, graph: MSCGraph, params: Mapping[str, np.ndarray], quant: QuantPlan) -> None:
        self._model = onnx_bytes(graph, params, quant)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads is not None:
            options.intra_op_num_threads = self._threads
        self._session = ort.InferenceSession(self._model, options, providers=[self.target])
        self._input_names = [i.name for i in self._session.get_inputs()]
        if len(self._input_names) != len(graph.input_names):
            raise MSCError(f"onnxruntime runner: the ONNX model of graph {graph.name!r} takes "
                           f"inputs {self._input_names}, the graph {graph.input_names}")

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if self._session is None:
            raise MSCError("onnxruntime runner: call build() before run()")
        feed = dict(zip(self._input_names, inputs, strict=True))
        return [np.asarray(out) for out in self._session.run(None, feed)]

    def export(self, path: str) -> str:
        """Write the ONNX model (with its QDQ nodes) that the session runs."""
        if self._model is None:
            raise MSCError("onnxruntime runner: call build() before export()")
        atomic_write_bytes(path, self._model)
        return os.path.abspath(path)
