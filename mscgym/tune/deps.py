"""Ray is optional: check for it without importing it, and import it with a clear error.

Importing Ray costs seconds and starts nothing useful, so no mscgym module imports it
at import time; only code that runs a sweep (or a trial inside one) does.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from mscgym.compiler.errors import MSCError

INSTALL_HINT = "pip install 'mscgym[tune]'"


def _missing(detail: str) -> MSCError:
    return MSCError(f"Ray Tune sweeps need ray[tune], {detail}; {INSTALL_HINT}")


def check_ray() -> None:
    """Raise MSCError when Ray is not installed (without importing it)."""
    if importlib.util.find_spec("ray") is None:
        raise _missing("which is not installed")


def import_tune() -> ModuleType:
    """``ray.tune``, or an MSCError saying how to install it."""
    check_ray()
    try:
        from ray import tune
    except ImportError as err:
        raise _missing(f"which cannot be imported ({err})") from None
    return tune
