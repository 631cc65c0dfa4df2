"""One supervisor for the workers of a run, wherever they run.

Local worker processes (:mod:`genepool.executors.processes`) and Ray actors
(:mod:`genepool.executors.ray`) are watched the same way, by :func:`supervise`:

1. start ``workers`` workers;
2. forward a stop (Ctrl-C, a storage fault) to every one of them: their members
   checkpoint, then they end;
3. watch for workers that end: one that died (its process, its node) is replaced while
   members are left to train and restarts are left; one that stopped on its storage
   stops the run, which then raises the worker's :class:`~genepool.StorageError`;
4. once no member is left to train (or, where the executor asks, once a stop was
   forwarded), give the workers ``grace_seconds`` to end, then kill the rest (a worker
   hung in user code never ends by itself);
5. return why the run ended, read from the store.

An executor says how to start, wait for and end its workers through two small protocols,
:class:`WorkerHandle` (one worker) and :class:`Launcher` (starts them and waits for them);
the supervisor holds no state a crash could lose: the store holds it all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from genepool._errors import StorageError
from genepool.policy.stop import ended_because
from genepool.worker import RunContext

__all__ = ["Launcher", "Supervision", "WorkerHandle", "members_left", "outcome", "supervise"]

log = logging.getLogger("genepool.executors")


class WorkerHandle(Protocol):
    """One started worker, as the supervisor sees it."""

    @property
    def index(self) -> int:
        """Which of the run's workers it is (a replacement takes the dead one's index)."""
        ...

    def placed(self) -> bool:
        """Whether it runs somewhere yet (a Ray actor may wait for room on the cluster)."""
        ...

    def stop(self, reason: str) -> None:
        """Ask it to stop: its member checkpoints, then it ends (as on Ctrl-C)."""
        ...

    def kill(self) -> None:
        """End it at once (a worker hung in user code ignores a polite request)."""
        ...

    def outcome(self) -> bool:
        """Once it has ended: whether it ended normally (``False``: it died, and may be
        replaced). Frees what the driver held for it.

        Raises:
            StorageError: It stopped on a storage fault: the run stops, then raises it.
            Exception: Anything else it raises, no new worker could get past: the run ends
                at once and the driver raises it.
        """
        ...

    def close(self) -> None:
        """At the end of the run: make sure it has ended, and free what the driver holds
        for it."""
        ...


H = TypeVar("H", bound=WorkerHandle)


class Launcher(Protocol[H]):
    """Starts an executor's workers and waits for them to end."""

    def start(self, index: int) -> H:
        """Start worker ``index``."""
        ...

    def replace(self, dead: H) -> H:
        """Start a worker in the place of ``dead`` (and tidy up what it left)."""
        ...

    def wait(self, handles: Sequence[H], timeout: float) -> list[H]:
        """The ``handles`` that have ended, after waiting up to ``timeout`` seconds for
        one to end."""
        ...


@dataclass(frozen=True)
class Supervision:
    """How the supervisor watches a run's workers.

    Attributes:
        workers: How many workers to start.
        max_restarts: How many dead workers may be replaced during the run.
        grace_seconds: How long workers may take to end once no member is left to train
            (and after a stop, with ``kill_after_stop``) before they are killed.
        check_every: Seconds between reads of the store for members left to train (only
            for workers that never end by themselves: those hung in user code).
        kill_after_stop: Whether ``grace_seconds`` also runs from a forwarded stop; if
            not, stopping workers may take as long as their checkpoints do.
    """

    workers: int
    max_restarts: int
    grace_seconds: float
    check_every: float
    kill_after_stop: bool = False


def supervise(ctx: RunContext, launcher: Launcher[H], how: Supervision) -> str:
    """Start the run's workers, watch them until none is left, and say why the run ended.

    Returns:
        Why the run ended: the stop's reason after a stop, else :func:`outcome`.

    Raises:
        StorageError: A worker stopped on its storage (the others were stopped first).
    """
    watch = _Watch(ctx, launcher, how)
    try:
        for index in range(how.workers):
            watch.live.append(launcher.start(index))
        watch.until_none_is_left()
    finally:
        for handle in watch.live:
            handle.close()
    if watch.fault is not None:
        raise watch.fault
    if ctx.stop_event.is_set():
        return ctx.stop_reason or "interrupted"
    return outcome(ctx)


class _Watch(Generic[H]):
    """The state of one supervised run: the live workers, the restarts, the deadline."""

    def __init__(self, ctx: RunContext, launcher: Launcher[H], how: Supervision) -> None:
        self.ctx = ctx
        self.launcher = launcher
        self.how = how
        self.live: list[H] = []
        self.restarts = 0
        self.fault: StorageError | None = None  # a worker's storage error: the run stops
        self.stopping = False  # the stop was forwarded
        self.deadline: float | None = None  # when the workers left are killed
        self._next_check = 0.0

    def until_none_is_left(self) -> None:
        """Watch the workers until every one has ended (or was killed)."""
        while self.live:
            now = time.monotonic()
            if self.ctx.stop_event.is_set() and not self.stopping:
                self._forward_stop(now)
            if self.deadline is None and now >= self._next_check:
                self._next_check = now + self.how.check_every
                if not members_left(self.ctx):
                    self._no_member_left(now)
                    if not self.live:
                        break
            if self.deadline is not None and now > self.deadline:
                log.warning("%d worker(s) did not end: killing them", len(self.live))
                for handle in self.live:
                    handle.kill()
                break
            for handle in self.launcher.wait(self.live, 0.1):
                self.live.remove(handle)
                self._ended(handle)

    def _forward_stop(self, now: float) -> None:
        """Stop every worker: members checkpoint, then the workers end."""
        self.stopping = True
        for handle in self.live:
            handle.stop(self.ctx.stop_reason or "interrupted")
        if self.how.kill_after_stop:
            self._kill_after(now + self.how.grace_seconds)

    def _no_member_left(self, now: float) -> None:
        """The workers have nothing left to do: they end by themselves, or are killed."""
        self._kill_after(now + self.how.grace_seconds)
        # a replacement still waiting for room has nothing left to do
        for handle in [h for h in self.live if not h.placed()]:
            handle.kill()
            handle.close()
            self.live.remove(handle)

    def _kill_after(self, deadline: float) -> None:
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)

    def _ended(self, handle: H) -> None:
        """A worker has ended: stop the run on its storage fault, or replace it if it
        died while there is work left and restarts are left."""
        try:
            if handle.outcome():
                return  # it ended normally
        except StorageError as err:  # stop the others as on Ctrl-C, then raise
            self.fault = self.fault or err
            self.ctx.stop_reason = "storage"
            self.ctx.stop_event.set()
            return
        if self.ctx.stop_event.is_set() or not members_left(self.ctx):
            return
        if self.restarts >= self.how.max_restarts:
            log.error("worker %d died; no restarts left", handle.index)
            return
        self.restarts += 1
        log.warning("worker %d died: starting another", handle.index)
        self.live.append(self.launcher.replace(handle))


def members_left(ctx: RunContext) -> bool:
    """Whether any member of the run is left to train (active)."""
    return any(m.status == "active" for m in ctx.store.population(ctx.name))


def outcome(ctx: RunContext) -> str:
    """Why the run ended, read from the store (the members' stop reasons): with members
    still active, the call's time was up (``Budget.seconds``) or it was interrupted."""
    population = ctx.store.population(ctx.name)
    if any(m.status == "active" for m in population):
        seconds = ctx.policy.budget.seconds
        if seconds is not None and ctx.clock.now() - ctx.started >= seconds:
            return "time"
        return "interrupted"
    return ended_because(population)
