"""Ray, imported on first use: genepool itself never needs it.

Ray ships partial type hints; genepool treats it as untyped (``Any``), which keeps the
strict type check independent of Ray's version.
"""

from __future__ import annotations

import importlib
from typing import Any

from genepool._errors import missing_dependency

__all__ = ["import_ray", "unwrap"]


def import_ray(purpose: str) -> Any:
    """The ``ray`` module; a :class:`~genepool.MissingDependencyError` naming the extra
    ``[ray]`` when it is not installed."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise missing_dependency("ray", "ray", purpose) from None


def unwrap(err: BaseException) -> BaseException:
    """The exception a Ray task raised (``RayTaskError.cause``), or ``err`` itself."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
