"""The serial executor: one worker in this process and thread. Deterministic for a seed."""

from __future__ import annotations

import os

from genepool._errors import StorageError
from genepool._faults import abandon
from genepool.worker import RunContext, Worker

__all__ = ["SerialExecutor"]


class SerialExecutor:
    """Runs the whole population in one worker, time-sharing members round by round.

    The member furthest behind trains next, one ready round at a time, so members advance
    together and the run is exactly reproducible for a seed. For tests and debugging, and
    for trainables so cheap that processes would only add overhead.
    """

    def run(self, ctx: RunContext) -> str:
        """Train until the run ends; return why it ended."""
        # the worker is the driver: when it dies, the driver died, and no crash counts
        worker = Worker(ctx, name="serial-0", driver=os.getpid())
        try:
            return worker.run()
        except StorageError:  # the run stops; the next one gives these leases back
            abandon(ctx.store, worker.left_behind)
            raise

    def __repr__(self) -> str:
        return "SerialExecutor()"
