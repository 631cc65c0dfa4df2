"""Loggers named in text, as the command line and the config file name them.

``"mlflow"`` or ``"mlflow:TRACKING_URI"`` is :class:`~genepool.MLflowLogger`;
``"wandb"`` or ``"wandb:PROJECT"`` is :class:`~genepool.WandbLogger` (its mode and folder
from W&B's environment: ``WANDB_MODE=offline``, ``WANDB_DIR``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genepool._errors import invalid
from genepool._redact import shown
from genepool.loggers._base import RATE, Logger

__all__ = ["SPEC_HELP", "loggers_from_specs"]

SPEC_HELP = "mlflow[:TRACKING_URI] or wandb[:PROJECT]"


def logger_from_spec(spec: Any, *, owner: str, name: str, rate: float | None = RATE) -> Logger:
    """The logger ``spec`` names (see the module), sending at most ``rate`` points a
    second (``None``: every point).

    Raises:
        InvalidArgumentError: ``spec`` names no logger.
    """
    fix = "Fix: 'mlflow:sqlite:///mlflow.db' or 'wandb:my-project'."
    if not isinstance(spec, str):
        raise invalid(owner, name, f"a logger's name: {SPEC_HELP}", shown(spec), fix)
    kind, _, value = spec.partition(":")
    if kind == "mlflow":
        from genepool.loggers._mlflow import MLflowLogger

        return MLflowLogger(tracking_uri=value or None, rate=rate)
    if kind == "wandb":
        from genepool.loggers._wandb import WandbLogger

        return WandbLogger(project=value or None, rate=rate)
    raise invalid(owner, name, f"a logger's name: {SPEC_HELP}", shown(spec), fix)


def loggers_from_specs(
    specs: Any, *, owner: str, name: str, rate: float | None = RATE
) -> list[Logger]:
    """The loggers a list of specs names, each sending at most ``rate`` points a second.

    Raises:
        InvalidArgumentError: ``specs`` is not a list of them.
    """
    if isinstance(specs, str) or not isinstance(specs, Sequence):
        fix = "Fix: loggers = ['mlflow:sqlite:///mlflow.db']."
        raise invalid(owner, name, f"a list of loggers' names ({SPEC_HELP})", shown(specs), fix)
    return [
        logger_from_spec(s, owner=owner, name=f"{name}[{i}]", rate=rate)
        for i, s in enumerate(specs)
    ]
