"""The heartbeat: keeps a worker's lease alive while its member makes progress.

A worker that trains a member holds a lease on it in the store. With several workers a
background thread renews it every third of ``lease_seconds``, as long as the member made a
step recently (:meth:`Heartbeat.progress_limit`). A member hung in its own code stops
getting renewals: its lease runs out and another worker takes it over from its last
checkpoint; twice that long later the hung worker process ends itself
(:data:`HUNG_EXIT`), and its executor starts another. An ask/tell process, which may
hold hundreds of claims at once, renews all of them from one thread (:class:`Heartbeats`).

Example::

    with Heartbeat(ctx, name="worker-0") as beat:
        with beat.holding(lease):
            ...  # train, calling beat.progress() at each step
            if beat.lost: ...  # another worker has the member now
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from genepool._errors import StaleLeaseError
from genepool._sessions import JOIN_SECONDS
from genepool.store import Lease

if TYPE_CHECKING:
    from genepool.worker import RunContext

log = logging.getLogger("genepool.worker")

#: A heartbeat that cannot renew its lease warns at most this often (seconds), so that a
#: database that is down does not flood the log; the failures between go to DEBUG.
HEARTBEAT_WARN_SECONDS = 60.0
#: Without ``progress_timeout``, a member is taken for hung after this many times its
#: worker's slowest round so far, and never before :data:`PROGRESS_FLOOR_SECONDS`.
PROGRESS_ROUNDS = 10.0
PROGRESS_FLOOR_SECONDS = 600.0
#: The exit status of a worker process that ended itself, its member hung in user code.
HUNG_EXIT = 70


class Heartbeat:
    """The lease a worker holds now, how recently its member made progress, and (when the
    run asks for one, ``ctx.heartbeat``) the thread that renews the lease.

    Args:
        ctx: The run.
        name: The worker's name, for logs.
        end_hung: End this process when its member hangs (a worker process, which its
            executor replaces); ``False`` for a process that is not only a worker.
    """

    def __init__(
        self,
        ctx: RunContext,
        *,
        name: str,
        end_hung: bool = True,
        shared: Heartbeats | None = None,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.end_hung = end_hung
        self._shared = shared
        # the thread may only judge the lease the loop holds now, never an earlier one
        self._lock = threading.Lock()
        self._current: Lease | None = None
        self._lost = False
        self._last_progress = 0.0
        #: Seconds: the slowest round this worker has trained.
        self.slowest_round = 0.0
        self._own: Heartbeats | None = None  # the thread beating for it alone, if any
        self._failures = 0  # renewals failed in a row
        self._quiet_until = -math.inf  # no second warning before then (time.monotonic)

    def __enter__(self) -> Heartbeat:
        if self.ctx.heartbeat:
            if self._shared is None:  # a worker's: a thread of its own
                self._own = self._shared = Heartbeats(self.ctx, name=self.name)
            self._shared.add(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._shared is not None:
            self._shared.discard(self)
        if self._own is not None:
            self._own.close()
            self._own = self._shared = None

    @contextlib.contextmanager
    def holding(self, lease: Lease) -> Iterator[None]:
        """Keep ``lease`` alive inside the block (the worker trains its member)."""
        with self._lock:
            self._current, self._lost = lease, False
        self.progress()
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def progress(self, now: float | None = None) -> None:
        """The member made a step (at ``now``, by the run's clock)."""
        self._last_progress = self.ctx.clock.now() if now is None else now

    @property
    def lost(self) -> bool:
        """Whether the store refused to renew the lease held now (another worker has it)."""
        return self._lost

    def round_took(self, seconds: float) -> None:
        """A round took ``seconds`` (the default progress limit follows the slowest)."""
        self.slowest_round = max(self.slowest_round, seconds)

    def progress_limit(self) -> float:
        """Seconds without a step after which the member trained now is taken for hung:
        ``progress_timeout``, else :data:`PROGRESS_ROUNDS` times this worker's slowest
        round, at least :data:`PROGRESS_FLOOR_SECONDS`. It stops renewing its lease then
        (another worker takes the member over once the lease runs out), and a worker
        process ends itself twice that long later (its executor starts another)."""
        if self.ctx.progress_timeout is not None:
            return self.ctx.progress_timeout
        return max(PROGRESS_FLOOR_SECONDS, PROGRESS_ROUNDS * self.slowest_round)

    def hung(self) -> tuple[int, float] | None:
        """The member trained now and its seconds without a step, once those are past
        :meth:`progress_limit`; ``None`` otherwise."""
        with self._lock:
            lease = self._current
        if lease is None:
            return None
        idle = self.ctx.clock.now() - self._last_progress
        return (lease.member, idle) if idle > self.progress_limit() else None

    # -- the beat (run by a Heartbeats thread) ------------------------------------------
    def tick(self) -> None:
        """One beat: renew the lease held now, unless its member seems hung."""
        ctx = self.ctx
        with self._lock:  # the loop cannot move to another lease meanwhile
            lease = self._current
            if lease is None or self._lost:
                return
            idle = ctx.clock.now() - self._last_progress
            limit = self.progress_limit()
            if self.end_hung and idle > limit + ctx.lease_seconds + 2 * limit:
                # hung in the member's code, its member handed over: end this process,
                # which its executor replaces (the member counts a crash)
                log.error(
                    "%s: member %d made no step for %.0f s (hung in its code): ending this worker",
                    self.name,
                    lease.member,
                    idle,
                )
                os._exit(HUNG_EXIT)
            if idle > limit:
                log.warning(
                    "member %d made no progress for %.1f s: its lease is left to expire",
                    lease.member,
                    idle,
                )
                return
            self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            self.ctx.store.renew(lease, lease_seconds=self.ctx.lease_seconds)
        except StaleLeaseError:
            self._lost = True  # this very lease: the loop still holds it
        except Exception as err:  # maybe passing: the next beat tries again
            self._failures += 1
            if time.monotonic() < self._quiet_until:
                log.debug("lease renewal failed", exc_info=True)
                return
            self._quiet_until = time.monotonic() + HEARTBEAT_WARN_SECONDS
            log.warning(
                "%s could not renew its lease on member %d (%d time(s) in a row; said at "
                "most every %.0f s): %s. If renewals keep failing the lease expires and "
                "another worker may take the member.",
                self.name,
                lease.member,
                self._failures,
                HEARTBEAT_WARN_SECONDS,
                err,
            )
        else:
            self._failures = 0


class Heartbeats:
    """The thread that beats for heartbeats, every third of ``lease_seconds``: a worker's
    one, or all the open claims of an ask/tell process, which may hold hundreds of leases
    at once (a thread each would not scale).

    Args:
        ctx: The run.
        name: For the thread's name and the logs.
    """

    def __init__(self, ctx: RunContext, *, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._beats: dict[int, Heartbeat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, beat: Heartbeat) -> None:
        """Beat for ``beat`` from now on (the thread starts with the first)."""
        with self._lock:
            self._beats[id(beat)] = beat
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"{self.name}-heartbeat", daemon=True
                )
                self._thread.start()

    def discard(self, beat: Heartbeat) -> None:
        """Beat no more for ``beat``."""
        with self._lock:
            self._beats.pop(id(beat), None)

    def _run(self) -> None:
        period = max(0.05, self.ctx.lease_seconds / 3)
        while not self._stop.wait(period):
            with self._lock:
                beats = list(self._beats.values())
            for beat in beats:
                beat.tick()

    def close(self) -> None:
        """Stop the thread (a renewal under way may take up to :data:`JOIN_SECONDS`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)  # a renewal may hang on a database that is down
            if self._thread.is_alive():
                log.warning("%s: its heartbeat did not end: left behind", self.name)
