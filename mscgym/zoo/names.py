"""The zoo's model names, importable without torch (command-line choices and help).

:mod:`mscgym.zoo.registry` builds one ``ModelSpec`` per name here, in this order; a test
checks that the two agree.
"""

from __future__ import annotations

MODEL_NAMES: tuple[str, ...] = (
    "digits-mlp", "digits-cnn", "digits-resnet", "digits-mobilenet", "digits-transformer",
    "digits32-resnet20", "digits32-mobilenetv2", "resnet18", "mobilenetv2",
)


def list_models() -> list[str]:
    """Return the names ``load`` accepts, in registry order (digits models first)."""
    return list(MODEL_NAMES)
