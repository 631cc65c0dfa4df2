"""Executors start and watch workers; they never re-implement the worker loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from genepool.executors.processes import ProcessExecutor
from genepool.executors.serial import SerialExecutor
from genepool.worker import RunContext

if TYPE_CHECKING:
    from genepool.executors.ray import RayExecutor

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor"]


class Executor(Protocol):
    """Starts and watches the workers of a run; returns why the run ended."""

    def run(self, ctx: RunContext) -> str: ...


def __getattr__(name: str) -> Any:
    # the Ray executor's module is loaded on first use (a local worker never needs it)
    if name == "RayExecutor":
        from genepool.executors.ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'genepool.executors' has no attribute {name!r}")
