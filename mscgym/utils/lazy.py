"""Lazy package exports: ``from mscgym.compiler import from_torch`` imports TVM only then.

A package ``__init__`` calls :func:`lazy_exports` with its public names and the modules
defining them, instead of importing those modules, so importing a light submodule (an
error class, a registry of names) does not import torch, TVM or scikit-learn through
the package (``mscgym --help`` stays fast). The names resolve on first access, through
the module ``__getattr__`` hook of PEP 562, and are then cached on the package.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exports load on first access.

    Python's import system binds a loaded submodule as an attribute of its package
    (``mscgym.compiler.normalize`` the module); where an export has the submodule's name
    (the function ``normalize``), the export wins, as it did when the package imported
    it eagerly, so ``from mscgym.compiler import normalize`` is the function either way.
    """

    _lazy_exports: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:
        module = self._lazy_exports.get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        types.ModuleType.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if (isinstance(value, types.ModuleType) and self._lazy_exports.get(name) == value.__name__
                and value.__name__ == f"{self.__name__}.{name}" and hasattr(value, name)):
            value = getattr(value, name)
        types.ModuleType.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._lazy_exports))


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Make ``package`` resolve each name of ``exports`` (module -> names) on first use.

    Returns the sorted public names, for the package's ``__all__``. Call it from the
    package's ``__init__`` with ``__name__``.
    """
    table = {name: module for module, names in exports.items() for name in names}
    pkg = sys.modules[package]
    types.ModuleType.__setattr__(pkg, "_lazy_exports", table)
    pkg.__class__ = _LazyPackage
    return sorted(table)
