"""Attributes of a package loaded on first use (PEP 562).

A worker process imports genepool to run the worker loop; what only the driver, the
report or the SQL layer needs is loaded when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], where: Mapping[str, str], *, keep: bool = True
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: the name ``name`` comes from the module
    ``where[name]`` when asked for, and (with ``keep``) is kept in ``namespace`` (the
    package's ``globals()``) from then on; without, it is looked up there each time."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        if keep:
            namespace[name] = value
        return value

    return __getattr__
