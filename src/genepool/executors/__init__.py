"""Executors start and watch workers; they never re-implement the worker loop."""

from __future__ import annotations

from typing import Protocol

from genepool.executors.processes import ProcessExecutor
from genepool.executors.ray import RayExecutor
from genepool.executors.serial import SerialExecutor
from genepool.worker import RunContext

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor"]


class Executor(Protocol):
    """Starts and watches the workers of a run; returns why the run ended."""

    def run(self, ctx: RunContext) -> str: ...
