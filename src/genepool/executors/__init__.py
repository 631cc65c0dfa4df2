"""Executors start and watch workers; they never re-implement the worker loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from genepool._lazy import lazy_attributes
from genepool.executors.processes import ProcessExecutor
from genepool.executors.serial import SerialExecutor
from genepool.worker import RunContext

if TYPE_CHECKING:
    from genepool.executors.ray import RayExecutor

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor"]


class Executor(Protocol):
    """Starts and watches the workers of a run; returns why the run ended."""

    def run(self, ctx: RunContext) -> str: ...


# the Ray executor's module is loaded on first use (a local worker never needs it)
__getattr__ = lazy_attributes(
    __name__, globals(), {"RayExecutor": "genepool.executors.ray"}, keep=False
)
