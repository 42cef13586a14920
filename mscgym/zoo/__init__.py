"""Models and data that work offline, for compression experiments.

Five small classifiers trained on scikit-learn's bundled 8x8 digits (MLP, CNN, ResNet,
MobileNetV2-style, transformer) and two untrained ImageNet-sized networks (ResNet-18,
MobileNetV2) calibrated on crops of scikit-learn's sample photos::

    from mscgym import zoo
    m = zoo.load("digits-cnn")
    m.accuracy(m.model)
"""

from mscgym.zoo.cache import UnknownModelError, ZooCacheError
from mscgym.zoo.registry import ZooModel, list_models, load

__all__ = ["UnknownModelError", "ZooCacheError", "ZooModel", "list_models", "load"]
