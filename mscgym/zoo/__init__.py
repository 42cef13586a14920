"""Models and data that work offline, for compression experiments.

Five small classifiers trained on scikit-learn's bundled 8x8 digits (MLP, CNN, ResNet,
MobileNetV2-style, transformer) and two untrained ImageNet-sized networks (ResNet-18,
MobileNetV2) calibrated on crops of scikit-learn's sample photos. Two more are trained
on the digits upsampled to 32x32, where one image costs milliseconds: a CIFAR-style
ResNet-20 (``digits32-resnet20``) and a small MobileNetV2 (``digits32-mobilenetv2``)::

    from mscgym import zoo
    m = zoo.load("digits-cnn")
    m.accuracy(m.model)
"""

from mscgym.utils.lazy import lazy_exports

# Loaded on first use (torch): model names come from the light ``mscgym.zoo.names``.
__all__ = lazy_exports(__name__, {
    "mscgym.zoo.cache": ("UnknownModelError", "ZooCacheError"),
    "mscgym.zoo.names": ("MODEL_NAMES", "list_models"),
    "mscgym.zoo.registry": ("ZooModel", "load"),
})
