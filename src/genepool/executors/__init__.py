"""Executors start and watch workers; they never re-implement the worker loop."""

from genepool.executors.serial import SerialExecutor

__all__ = ["SerialExecutor"]
