"""The worker: the paper's loop, the same in every executor (serial, processes, Ray).

claim a member -> load its state -> step ... step (``eval``: each step reports) until
``ready`` -> decide (:mod:`genepool.decision`), with the member's new score among the
others' -> carry the decision out:

- ``Exploit``: the round and the exploit are written at once, the member's own state is
  not checkpointed (it is replaced); the donor's checkpoint is loaded, the explored
  hyperparameters applied and verified;
- ``Continue``, ``Explore`` or ``Stop``: the member's state is checkpointed with the
  round, then it trains on (its round's write joined to the next claim), takes its new
  hyperparameters, or stops;

-> release -> claim the next. A synchronous run checkpoints first and decides once the
round's barrier is passed.

This module is the loop (claim, round, release, until the run ends). The round is
:mod:`genepool._training` (sessions) over :mod:`genepool.round` (the round's data, shared
with ask/tell); beside it: the heartbeat (:mod:`genepool._heartbeat`), the resident
sessions (:mod:`genepool._residents`), the deferred write (:mod:`genepool._deferred`) and
checkpoint collection (:mod:`genepool._collect`).

Everything a worker knows it reads from the store and writes back to it; the sessions it
keeps resident are only a cache, checked against the store at every claim.
"""

from __future__ import annotations

import logging

from genepool._collect import ORPHAN_GRACE_SECONDS, collect_orphans
from genepool._context import RunContext
from genepool._deferred import LastWrite
from genepool._errors import CollectedPinError, StaleLeaseError, StorageError
from genepool._heartbeat import (
    HEARTBEAT_WARN_SECONDS,
    HUNG_EXIT,
    PROGRESS_FLOOR_SECONDS,
    PROGRESS_ROUNDS,
    Heartbeat,
)
from genepool._loading import FALLBACK_EVENT
from genepool._residents import MAX_RESIDENT, Residents
from genepool._training import Trainer
from genepool.member import ACTIVE
from genepool.policy.stop import PlateauTracker, ended_because, run_stop_reason
from genepool.round import metric_value
from genepool.store import Lease, WorkerInfo

__all__ = [
    "FALLBACK_EVENT",
    "HEARTBEAT_WARN_SECONDS",
    "HUNG_EXIT",
    "MAX_RESIDENT",
    "ORPHAN_GRACE_SECONDS",
    "PROGRESS_FLOOR_SECONDS",
    "PROGRESS_ROUNDS",
    "RunContext",
    "Worker",
    "collect_orphans",
    "ended_because",
    "metric_value",
]

log = logging.getLogger("genepool.worker")

#: How often a worker alone (the serial executor) looks again when every active member is
#: held elsewhere (seconds).
IDLE_WAIT_ALONE = 0.1


class Worker:
    """Runs ready rounds of claimed members until the run ends.

    Args:
        ctx: The run.
        name: This worker's name (appears in leases and logs).
        driver: The pid of the run's driver, in this process space (this process for a
            serial run): a worker that dies with it counts no crash against its member.
            ``None``: no driver is known, and every death counts one.
    """

    def __init__(
        self, ctx: RunContext, *, name: str = "worker-0", driver: int | None = None
    ) -> None:
        self.ctx = ctx
        self.info = WorkerInfo.with_driver(name, started=ctx.clock.now(), driver=driver)
        self._residents = Residents(ctx.max_resident, hint=ctx.resident_hint)
        self._beat = Heartbeat(ctx, name=name)
        self._trainer = Trainer(ctx, residents=self._residents, beat=self._beat)
        self._collector = self._trainer.collector
        self._deferred = self._trainer.deferred
        #: Leases this worker could not give back when the storage failed (see
        #: :mod:`genepool._faults`): its executor hands them to the next run.
        self.left_behind: list[Lease] = []

    # -- the loop: claim a member, train a round of it, release it, repeat -------------
    def run(self) -> str:
        """Train until no member is left to train; return why the run ended."""
        try:
            with self._beat:  # renews the lease held, from a thread (several workers)
                self._restore_plateau()
                return self._loop()
        except (KeyboardInterrupt, SystemExit):  # a second Ctrl-C: abort, wait for nothing
            self._residents.forget_all()
            raise
        finally:
            try:
                self._flush_last()
            finally:
                self.close()

    def _loop(self) -> str:
        ctx = self.ctx
        waiting = False  # for a member held elsewhere
        while True:
            if ctx.stop_event.is_set():
                return ctx.stop_reason or "interrupted"
            lease = self._claim()
            if lease is None:
                pop = ctx.store.population(ctx.name)
                if not any(m.status == ACTIVE for m in pop):
                    return ended_because(pop)
                # every active member is held by another worker, or by a lease that runs
                # out (its holder gone): wait, never end with members active
                if not waiting:
                    log.info("%s: every active member is held: waiting", self.info.name)
                waiting = True
                ctx.stop_event.wait(ctx.idle_wait or IDLE_WAIT_ALONE)
                continue
            waiting = False
            try:
                with self._beat.holding(lease):
                    pop = self._trainer.round(lease)
            except StaleLeaseError as err:
                log.warning("%s lost member %d: %s", self.info.name, lease.member, err)
                self._residents.drop(lease.member)
                continue
            except StorageError:  # the storage failed, not the member: stop
                self._give_back(lease)
                raise
            reason = run_stop_reason(
                pop,
                ctx.policy.budget,
                elapsed=ctx.clock.now() - ctx.started,
                plateau=self._trainer.plateau,
            )
            if reason == "time":  # the call's time is up: members stay resumable
                ctx.stop_reason = "time"
                ctx.stop_event.set()
            elif reason is not None and reason != "budget":
                self._flush_last()
                self._finish_all(reason)
                return reason
            if self._trainer.held_back:
                self._trainer.held_back = False
                ctx.stop_event.wait(ctx.idle_wait or 0.0)

    def _claim(self) -> Lease | None:
        """Claim the next member, making the last round's write in the same write."""
        ctx = self.ctx
        last = self._deferred.take()
        if last is None:
            return ctx.store.claim(
                ctx.name, self.info, lease_seconds=ctx.lease_seconds, max_ahead=ctx.max_ahead
            )
        try:
            lease = ctx.store.commit_and_claim(
                last.lease,
                self.info,
                lease_seconds=ctx.lease_seconds,
                max_ahead=ctx.max_ahead,
                member=last.member,
                reports=last.reports,
                events=last.events,
                pin=last.pin,
            )
        except StorageError as err:
            self._last_write_failed(last, err)
            lease = ctx.store.claim(
                ctx.name, self.info, lease_seconds=ctx.lease_seconds, max_ahead=ctx.max_ahead
            )
        self._collector.maybe()
        return lease

    def _last_write_failed(self, last: LastWrite, err: StorageError) -> None:
        """The last write was refused, and nothing of it written: the lease was lost (the
        member is someone else's now), or an exploit's donor checkpoint was collected
        (the member goes on with its own weights)."""
        if not isinstance(err, StaleLeaseError):
            if last.abandon is None or not isinstance(err, CollectedPinError):
                self._give_back(last.lease)  # the storage failed: stop
                raise err
            log.info("member %d: exploit of %s abandoned (%s)", last.lease.member, last.pin, err)
            try:
                last.abandon()
                return
            except StaleLeaseError as stale:
                err = stale
        if last.member is not None or last.reports or last.events:
            log.warning("%s lost member %d: %s", self.info.name, last.lease.member, err)
        self._residents.drop(last.lease.member)

    def _flush_last(self) -> None:
        """Make the write the last round left for the next claim (see :meth:`_claim`)."""
        last = self._deferred.take()
        if last is None:
            return
        try:
            self.ctx.store.commit(
                last.lease,
                member=last.member,
                reports=last.reports,
                events=last.events,
                pin=last.pin,
                release=True,
            )
        except StorageError as err:
            self._last_write_failed(last, err)

    def _restore_plateau(self) -> None:
        """Start the plateau tracker where the run's recorded state left it (a resume)."""
        ctx = self.ctx
        budget = ctx.policy.budget
        if budget.plateau is None:
            return
        population = ctx.store.population(ctx.name)
        if not any(m.ready_count for m in population):
            return  # nothing can have been recorded yet
        events = ctx.store.events(ctx.name)  # the events alone: never every report
        self._trainer.plateau = PlateauTracker.restore(
            events, mode=population.mode, min_delta=budget.min_delta
        )

    def hung(self) -> tuple[int, float] | None:
        """The member this worker trains and its seconds without a step, once those are
        past :meth:`progress_limit`; ``None`` otherwise."""
        return self._beat.hung()

    def progress_limit(self) -> float:
        """Seconds without a step after which the member trained now is taken for hung
        (see :meth:`genepool._heartbeat.Heartbeat.progress_limit`)."""
        return self._beat.progress_limit()

    def forget(self, member: int) -> None:
        """Let go of ``member``'s session without closing it (it hangs in the member's
        code: closing would wait for it)."""
        self._residents.pop(member)

    def _give_back(self, lease: Lease) -> None:
        """The storage failed during ``lease``'s round: release the lease untouched, so
        that the member waits, active at its last recorded checkpoint, for the run to
        resume (its session goes: it may be ahead of that checkpoint). A store that cannot
        take even that leaves the lease in :attr:`left_behind`."""
        self._residents.drop(lease.member)
        try:
            self.ctx.store.commit(lease, release=True)
        except StaleLeaseError:
            pass  # another worker has it already
        except StorageError:
            self.left_behind.append(lease)

    def close(self) -> None:
        """End every resident session; delete the replaced checkpoints nothing refers to,
        and the checkpoint directories kept for reuse."""
        try:
            self._residents.close_all()
        finally:
            try:
                self._collector.collect()
            except StorageError as err:  # the storage failed: the run says so already
                log.warning("%s could not delete replaced checkpoints: %s", self.info.name, err)
            except Exception:  # the driver collects what is left when the run ends
                log.warning(
                    "%s could not delete replaced checkpoints", self.info.name, exc_info=True
                )
            finally:
                self.ctx.checkpoints.drain()

    def _finish_all(self, reason: str) -> None:
        """End the run for every active member (target, plateau or time reached)."""
        ctx = self.ctx
        while True:
            lease = ctx.store.claim(ctx.name, self.info, lease_seconds=ctx.lease_seconds)
            if lease is None:
                return
            view = ctx.store.population(ctx.name)[lease.member]
            self._trainer.stop(lease, view, reason)
