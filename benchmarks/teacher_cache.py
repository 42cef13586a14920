"""Fine-tuning plans with and without the teacher's outputs cached (``TeacherOutputs``).

``msc/Compress-v0`` fine-tunes every pruned plan from the float teacher. Without the
cache each fine-tuning runs the teacher over every training batch; with it the teacher
runs once per task and every later plan only indexes its outputs. This times the
distillation of a few pruned digits-cnn plans (the task's recovery settings: kl+ce,
1 or 2 epochs), interleaving the two ways, prints the median seconds per plan and the
ratio, and checks that both ways give the same weights (the records' ``weights_sha256``).

Run: OMP_NUM_THREADS=1 python benchmarks/teacher_cache.py [--model digits-cnn] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from mscgym.tasks.task import Task
from mscgym.tools import MSC_TOOL, create_tool
from mscgym.tools.distiller import TeacherOutputs

DENSITIES = (0.8, 0.6, 0.5)
EPOCHS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    task = Task(args.model, "compress")
    inputs, labels = task.data.train_inputs, task.data.train_labels
    if inputs is None or labels is None:
        raise SystemExit(f"{args.model}: compress fine-tunes only with labelled training data")
    students = []
    for density in DENSITIES:
        pruner = create_tool(MSC_TOOL.PRUNE, task.graph, task.params, {"density": density})
        students.append(pruner.transform(task.graph, task.params))

    def fine_tune(graph, params, epochs: int, cache: TeacherOutputs | None) -> tuple[float, str]:
        config = {"loss": "kl+ce", "temperature": 4.0, "alpha": 0.5, "epochs": epochs,
                  "lr": 1e-3, "intermediate": [], "seed": 0, "progress": False}
        distiller = create_tool(MSC_TOOL.DISTILL, graph, params, config)
        distiller.set_teacher(task.graph, task.params, outputs=cache)
        start = time.perf_counter()
        distiller.distill(inputs, labels)
        return time.perf_counter() - start, distiller.strategy()["weights_sha256"]

    cache = TeacherOutputs()  # one per task, as Task holds it
    plain: list[float] = []
    cached: list[float] = []
    first_cached = None
    for _ in range(args.repeats):
        for graph, params in students:
            for epochs in EPOCHS:
                seconds, digest = fine_tune(graph, params, epochs, None)
                plain.append(seconds)
                seconds_c, digest_c = fine_tune(graph, params, epochs, cache)
                if first_cached is None:
                    first_cached = seconds_c  # includes the one teacher pass
                cached.append(seconds_c)
                if digest != digest_c:
                    raise SystemExit("the cached teacher outputs changed the trained weights")
    plans = len(students) * len(EPOCHS)
    print(f"{args.model}: {plans} fine-tuned plans x {args.repeats} repeats, "
          f"{len(inputs)} training images")
    print(f"  teacher per batch : {statistics.median(plain):.3f} s per plan (median)")
    print(f"  teacher cached    : {statistics.median(cached):.3f} s per plan (median); "
          f"first plan {first_cached:.3f} s (computes the teacher's outputs)")
    print(f"  ratio             : {statistics.median(plain) / statistics.median(cached):.2f}x "
          f"faster; cache {cache.hits} hits, {cache.misses} miss; weights identical")


if __name__ == "__main__":
    main()
