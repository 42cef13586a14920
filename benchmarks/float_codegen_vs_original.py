"""Float ONNX codegen against the user's original file, both on ONNX Runtime.

A translated float model should never be slower than the file it came from: our codegen
has to emit what ONNX Runtime fuses (Clip as Clip, not Max+Min; the bias inside Conv)
so that ORT's Conv+Activation fusions still apply. Each model is a torch module exported
with ``torch.onnx.export`` (the TorchScript exporter at ``--opset``, or the dynamo one
with ``--dynamo``); the file goes through ``mscgym.compiler.from_onnx`` and back out with
``to_onnx``. Both files run in an ORT_ENABLE_ALL CPU session with ``--threads`` intra-op
threads (1 by default), measured interleaved in the same run (see
``common.interleaved_latency``); the table gives the medians, the ratio
original / ours (>= 1.0: ours is at least as fast), the same ratio of the fastest runs
(steadier on a loaded machine, where load spikes move medians), the largest output difference
relative to the output's range, and the kernels ORT runs for each.

Models (random weights, fixed seed): ``mobilenetv2`` and ``resnet18`` (the zoo's
torchvision-compatible architectures, 224x224; MobileNetV2 uses ReLU6), ``segnet`` (an
encoder-decoder with ConvTranspose and a bilinear Resize), ``lrn-net`` (AlexNet-style
LRN, max pooling and Dropout) and ``fire-net`` (SqueezeNet fire modules: concat of 1x1
and 3x3 expands).

Run: python benchmarks/float_codegen_vs_original.py [--models mobilenetv2,...]
         [--repeat 30] [--warmup 5] [--budget 30] [--threads 1] [--opset 13] [--dynamo]
         [--json OUT]
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable

import common
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from mscgym.compiler import MSCError, from_onnx
from mscgym.compiler.codegen.onnx_codegen import to_onnx
from mscgym.zoo.mobilenet import mobilenetv2
from mscgym.zoo.resnet import resnet18


class SegNet(nn.Module):
    """Encoder-decoder: strided convs, a transposed conv, a skip add, bilinear resize."""

    def __init__(self, width: int = 32, classes: int = 8) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1),
                                  nn.BatchNorm2d(2 * width), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.ReLU6())
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.enc1(x)
        y = F.relu(self.up(self.enc2(skip)))
        y = self.fuse(y + skip)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(y)


class LRNNet(nn.Module):
    """AlexNet's opening: conv, ReLU, LRN, max pooling; a dropout before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, 11, 4, 2), nn.ReLU(), nn.LocalResponseNorm(5),
            nn.MaxPool2d(3, 2), nn.Conv2d(48, 96, 5, padding=2), nn.ReLU(),
            nn.LocalResponseNorm(5), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(96 * 13 * 13, 100))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class FireNet(nn.Module):
    """SqueezeNet 1.1's layout, shortened."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64), Fire(128, 16, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128), Fire(256, 32, 128))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(256, 100, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mobilenetv2": (mobilenetv2, (1, 3, 224, 224)),
    "resnet18": (resnet18, (1, 3, 224, 224)),
    "segnet": (SegNet, (1, 3, 128, 128)),
    "lrn-net": (LRNNet, (1, 3, 224, 224)),
    "fire-net": (FireNet, (1, 3, 224, 224)),
}


def export(name: str, opset: int, dynamo: bool) -> tuple[bytes, np.ndarray]:
    """The model's ONNX file (bytes) and one input batch."""
    make, shape = MODELS[name]
    torch.manual_seed(0)
    module = make().eval()
    x = torch.randn(*shape)
    buffer = io.BytesIO()
    if dynamo:
        program = torch.onnx.export(module, (x,), input_names=["input"], opset_version=opset,
                                    dynamo=True)
        buffer.write(program.model_proto.SerializeToString())
    else:
        torch.onnx.export(module, (x,), buffer, input_names=["input"], output_names=["output"],
                          opset_version=opset, dynamo=False)
    return buffer.getvalue(), x.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of timed runs per variant and model (at most)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--opset", type=int, default=13)
    parser.add_argument("--dynamo", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    common.set_threads(args.threads)

    rows, results = [], {}
    for name in names:
        original, x = export(name, args.opset, args.dynamo)
        try:
            graph, params = from_onnx(onnx.load_from_string(original))
        except MSCError as err:  # reported in the table; the other models still run
            print(f"{name}: not translated: {err}", flush=True)
            rows.append([name, "-", "-", "-", "-", "-", "not translated", str(err)[:60]])
            results[name] = {"error": str(err)}
            continue
        ours = to_onnx(graph, params).SerializeToString()
        sessions = {"original": common.ort_session(original, args.threads),
                    "ours": common.ort_session(ours, args.threads)}
        feeds = {label: {sess.get_inputs()[0].name: x} for label, sess in sessions.items()}
        outputs = {label: sess.run(None, feeds[label])[0] for label, sess in sessions.items()}
        diff = float(np.abs(outputs["ours"] - outputs["original"]).max()
                     / max(float(np.abs(outputs["original"]).max()), 1e-12))
        calls = {label: (lambda s=sess, f=feeds[label]: s.run(None, f))
                 for label, sess in sessions.items()}
        latency = common.interleaved_latency(calls, args.repeat, args.warmup, args.budget)
        ratio = latency["original"].median_ms / latency["ours"].median_ms
        best = min(latency["original"].samples_ms) / min(latency["ours"].samples_ms)
        kernels = {label: common.ort_kernels(model)
                   for label, model in (("original", original), ("ours", ours))}
        rows.append([name, f"{latency['original'].median_ms:.2f}",
                     f"{latency['ours'].median_ms:.2f}", f"{ratio:.3f}x", f"{best:.3f}x",
                     f"{diff:.1e}",
                     common.kernel_summary(kernels["original"]),
                     common.kernel_summary(kernels["ours"])])
        results[name] = {"ratio": ratio, "min_ratio": best, "max_rel_diff": diff,
                         **{label: lat.to_json() for label, lat in latency.items()},
                         "kernels": {k: dict(v) for k, v in kernels.items()}}
        print(f"{name}: original {latency['original'].median_ms:.2f} ms, ours "
              f"{latency['ours'].median_ms:.2f} ms, ratio {ratio:.3f}x (of the fastest runs "
              f"{best:.3f}x)", flush=True)

    env = common.environment(args.threads)
    print()
    print(common.format_table(["model", "original ms", "ours ms", "original/ours",
                               "min original/min ours", "max rel diff",
                               "ORT kernels (original)", "ORT kernels (ours)"],
                              rows))
    print(f"\nexporter: {'dynamo' if args.dynamo else 'torchscript'}, opset {args.opset}; "
          f"{common.environment_line(env)}")
    if args.json:
        common.write_json(args.json, {"environment": env, "opset": args.opset,
                                      "dynamo": args.dynamo, "models": results})


if __name__ == "__main__":
    main()
