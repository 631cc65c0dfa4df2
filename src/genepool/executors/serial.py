"""The serial executor: one worker in this process and thread. Deterministic for a seed."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from genepool._errors import StorageError, TrainableError
from genepool._faults import abandon
from genepool.worker import RunContext, Worker

__all__ = ["SerialExecutor"]

#: The signal the watchdog sends this process's main thread when a member hangs.
_HUNG_SIGNAL = getattr(signal, "SIGUSR2", None)


class _Hung(BaseException):
    """Raised in the main thread, out of the member's code, when the member hangs (a
    BaseException: the member's own ``except Exception`` does not swallow it)."""


class SerialExecutor:
    """Runs the whole population in one worker, time-sharing members round by round.

    The member furthest behind trains next, one ready round at a time, so members advance
    together and the run is exactly reproducible for a seed. For tests and debugging, and
    for trainables so cheap that processes would only add overhead.

    A member that makes no step for ``progress_timeout`` (see :func:`genepool.run`) hangs
    the only worker there is: the run stops with a :class:`~genepool.TrainableError`
    naming it (where :func:`genepool.run` is called from the main thread on POSIX).
    """

    def run(self, ctx: RunContext) -> str:
        """Train until the run ends; return why it ended."""
        # the worker is the driver: when it dies, the driver died, and no crash counts
        worker = Worker(ctx, name="serial-0", driver=os.getpid())
        try:
            with _watchdog(worker) as hung:
                return worker.run()
        except _Hung:
            member, idle = hung[0]
            raise TrainableError(
                f"Member {member} made no step for {idle:.0f} s (more than "
                f"{worker.progress_limit():.0f} s, progress_timeout): it hangs in its code, "
                "and a serial run has no other worker to hand it to. Fix: find where its "
                "step (or a function trainable's loop between reports) blocks; with "
                "workers=2 or more a hung member is handed over and its worker replaced."
            ) from None
        except StorageError:  # the run stops; the next one gives these leases back
            abandon(ctx.store, worker.left_behind)
            raise

    def __repr__(self) -> str:
        return "SerialExecutor()"


@contextlib.contextmanager
def _watchdog(worker: Worker) -> Iterator[list[tuple[int, float]]]:
    """Watch ``worker`` from a thread; when its member hangs, raise :class:`_Hung` in the
    main thread (a signal: it interrupts a blocking wait too). Yields the list the hung
    member and its idle seconds are put in. Off outside the main thread, and without
    ``SIGUSR2``."""
    found: list[tuple[int, float]] = []
    if _HUNG_SIGNAL is None or threading.current_thread() is not threading.main_thread():
        yield found
        return
    main = threading.get_ident()
    done = threading.Event()

    def raise_hung(signum: int, frame: FrameType | None) -> None:
        if found:
            raise _Hung

    def watch() -> None:
        while not done.wait(min(1.0, worker.progress_limit() / 5)):
            hung = worker.hung()
            if hung is not None and not found:
                found.append(hung)
                worker.forget(hung[0])  # its thread, if any, is left to itself
                signal.pthread_kill(main, _HUNG_SIGNAL)
                return

    previous = signal.signal(_HUNG_SIGNAL, raise_hung)
    thread = threading.Thread(target=watch, name="genepool-serial-watchdog", daemon=True)
    thread.start()
    try:
        yield found
    finally:
        done.set()
        thread.join(2.0)
        signal.signal(_HUNG_SIGNAL, previous)
