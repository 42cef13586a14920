"""Optimize mode: the pipeline hands back a trainable model with its tools in place
(pruned, fake-quantized); we train it with our own loop and give the weights back.

Run from this folder: python optimize.py
"""

import torch

from mscgym import zoo
from mscgym.pipeline import create_msc_processor

config = {
    "workspace": "msc_optimize_workspace",
    "prune": {"config": {"density": 0.5}},
    "quantize": {"config": {"weight": {"per_channel": True}}},
    "compile": {"target": "onnxruntime"},
}
processor = create_msc_processor("digits-cnn", config)
model = processor.optimize()
inputs, labels = zoo.load("digits-cnn").train_data
optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
for epoch in range(5):
    for i in range(0, len(inputs), 64):
        optimizer.zero_grad()
        logits = model(inputs[i:i + 64])
        logits = logits[0] if isinstance(logits, tuple) else logits
        loss = torch.nn.functional.cross_entropy(logits, labels[i:i + 64])
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
processor.update_weights(model)
report = processor.compile()
processor.export()
processor.close()
print(report["stages"][-1])
