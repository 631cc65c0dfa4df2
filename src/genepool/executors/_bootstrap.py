"""The start of every worker that is not the driver: a local process or a Ray actor.

The driver packs the run for its workers with :func:`pack`; each worker unpacks it with
:func:`unpack` (which sets up its logging and caps torch's threads as the driver asked)
and trains with :func:`run_worker`. What is an executor's own stays with it: a worker
process's watch on its driver and its signals; a Ray actor's ``sys.path``, its node
check and its door for a stop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

import cloudpickle

from genepool._errors import StorageError
from genepool.store import Lease
from genepool.worker import RunContext, Worker

__all__ = ["THREAD_VARS", "pack", "run_worker", "unpack"]

log = logging.getLogger("genepool.executors")

#: The environment variables that cap BLAS / OpenMP threads in a worker.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def pack(ctx: RunContext, threads: int | None) -> bytes:
    """The run, as its workers receive it: the context, this process's log level, and
    the threads each worker may use (``None``: no cap)."""
    return bytes(cloudpickle.dumps((ctx, logging.getLogger().level, threads)))


def unpack(blob: bytes) -> RunContext:
    """The run the driver packed with :func:`pack`; sets up this worker's logging at the
    driver's level and caps torch's threads (where torch is loaded).

    Raises:
        ImportError: The run's code cannot be imported here.
    """
    shared: RunContext
    shared, log_level, threads = cloudpickle.loads(blob)
    logging.basicConfig(level=log_level)
    if threads is not None:
        torch = sys.modules.get("torch")  # torch is optional: cap its threads if loaded
        if torch is not None:
            with contextlib.suppress(Exception):
                torch.set_num_threads(threads)
    return shared


def run_worker(
    shared: RunContext,
    *,
    name: str,
    idle_wait: float,
    driver: int | None = None,
    prepare: Callable[[RunContext], None] | None = None,
    report_fault: Callable[[StorageError, list[Lease]], NoReturn] | None = None,
) -> str:
    """Train the run's members, as one of several workers, until none is left to train.

    Args:
        shared: The run, as :func:`unpack` gave it.
        name: This worker's name (in leases and logs).
        idle_wait: Seconds to wait before claiming again when other workers hold every
            member left.
        driver: The pid of the run's driver in this process space, if any (a worker that
            dies with it counts no crash against its member).
        prepare: Called with the worker's context before it trains: what the executor
            needs to stop it (signals, a door for a stop).
        report_fault: Called on a storage fault, with the error and the leases the
            worker could not give back, to hand both to the driver its own way (it
            raises); without it, the error is raised as it is.

    Returns:
        Why the worker ended.
    """
    # one of several workers: wait for members others hold, and keep leases alive
    ctx = dataclasses.replace(shared, idle_wait=idle_wait, heartbeat=True)
    if prepare is not None:
        prepare(ctx)
    worker = Worker(ctx, name=name, driver=driver)
    try:
        return worker.run()
    except StorageError as err:
        log.error("%s stopped: %s", name, err)
        if report_fault is None:
            raise
        report_fault(err, worker.left_behind)
