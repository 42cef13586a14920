"""mscgym: model compression as a search problem over a multi-system compiler.

Importing the package registers the Gymnasium environments (``msc/Quantize-v0`` and
friends); everything heavier (TVM, torch) loads when first used.
"""

from mscgym.envs import ENV_IDS, register_envs

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "__version__", "register_envs"]
