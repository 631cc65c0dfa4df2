"""The worker: the paper's loop, the same in every executor.

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

Everything a worker knows it reads from the store and writes back to it; the sessions it
keeps resident are only a cache, checked against the store at every claim.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

from genepool._errors import (
    CheckpointError,
    CollectedPinError,
    HyperparameterNotAppliedError,
    StaleLeaseError,
    StorageError,
    TrainableError,
    storage_fault,
)
from genepool._rng import decision_stream
from genepool.checkpoints import CheckpointStore, decode, encode
from genepool.clock import Clock
from genepool.decision import Continue, Decision, Exploit, Explore, Stop
from genepool.member import (
    ACTIVE,
    FAILED,
    FINISHED,
    CheckpointRef,
    Event,
    MemberView,
    Population,
    Report,
)
from genepool.policy import Policy
from genepool.policy.stop import BEST_EVENT, PlateauTracker, ended_because, run_stop_reason
from genepool.store import Lease, Store, WorkerInfo
from genepool.trainable import (
    JOIN_SECONDS,
    Member,
    TrainableLike,
    _FunctionSession,
    _Returned,
    _Session,
)
from genepool.trainable import make_session as _make_session

__all__ = ["RunContext", "Worker", "collect_orphans", "ended_because"]

log = logging.getLogger("genepool.worker")

#: A worker hands the checkpoints its members replaced to :meth:`Store.collect` this many at
#: a time (one write for several rounds), and what is left when it ends.
COLLECT_BATCH = 8
#: ... but at once after writing a checkpoint this large (bytes), to keep disk use low.
COLLECT_AT_ONCE_BYTES = 1 << 20
#: While a member of the run is active, a checkpoint that nothing refers to is left alone
#: until it is this old (seconds): a worker may have written it and be about to record it.
ORPHAN_GRACE_SECONDS = 3600.0
#: A worker keeps at most this many members' sessions resident by default (see
#: :func:`genepool.run`'s ``max_resident``).
MAX_RESIDENT = 32
#: A heartbeat that cannot renew its lease warns at most this often (seconds), so that a
#: database that is down does not flood the log; the failures between go to DEBUG.
HEARTBEAT_WARN_SECONDS = 60.0
#: Without ``progress_timeout``, a member is taken for hung after this many times its
#: worker's slowest round so far, and never before :data:`PROGRESS_FLOOR_SECONDS`.
PROGRESS_ROUNDS = 10.0
PROGRESS_FLOOR_SECONDS = 600.0
#: The exit status of a worker process that ended itself, its member hung in user code.
HUNG_EXIT = 70
#: How often a worker alone (the serial executor) looks again when every active member is
#: held elsewhere (seconds).
IDLE_WAIT_ALONE = 0.1


def metric_value(metric: str, reported: object) -> float:
    """The run's metric as a number: an int, a float, a NumPy number or a 0-d array or
    tensor; never a string (``"1.5"``) or a bool (``True`` is no score).

    Raises:
        TrainableError: It is not a number.
    """
    if not isinstance(reported, (str, bytes, bool, np.bool_)):
        try:
            return float(reported)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            pass
    shown = repr(reported)[:200]
    raise TrainableError(
        f"The metric {metric!r} must be a number; the trainable reported {shown} "
        f"({type(reported).__name__}). Fix: report a float, e.g. {metric}=float(value)."
    )


@dataclass
class RunContext:
    """Everything a worker needs to train a run's members (built by :func:`genepool.run`)."""

    name: str
    trainable: TrainableLike
    policy: Policy
    metric: str
    seed: int
    store: Store
    checkpoints: CheckpointStore
    clock: Clock
    started: float
    recent_window: int = 100
    #: Metrics other than the decision metric (and the ready counter) are stored only at
    #: steps that are multiples of this, and at the last step of each round.
    metrics_every: int = 1
    lease_seconds: float = 60.0
    max_ahead: int | None = None
    synchronous: bool = False
    #: Seconds to wait before claiming again when every member is held by other workers;
    #: ``None``: :data:`IDLE_WAIT_ALONE` (a worker alone waits only for a lease that runs
    #: out, or for another process training the same run).
    idle_wait: float | None = None
    #: Reports reach the store at every ready and at least this often.
    flush_seconds: float = 1.0
    #: Renew the lease from a background thread (several workers).
    heartbeat: bool = False
    #: Stop renewing (so another worker takes over) when no step came for this long.
    progress_timeout: float | None = None
    #: A member whose workers died this many times is stopped as failed.
    max_crashes: int = 3
    #: A worker keeps at most this many members' sessions (their models, and a function
    #: trainable's thread) resident, closing the least recently used first; a member
    #: closed is started again from its checkpoint when next trained.
    max_resident: int = MAX_RESIDENT
    #: Whether a trainable may lower ``max_resident`` by asking for fewer (its member's
    #: ``resident_limit``: 1 for a torch model on a CUDA device); ``False`` when the user
    #: chose ``max_resident``.
    resident_hint: bool = True
    #: Checkpoints each member keeps beyond its current one (and a pinned one): its
    #: previous ones, newest first, what it falls back to when its current one cannot be
    #: read (see ``MemberView.previous``).
    keep: int = 1
    #: Store and read any Python object in checkpoints (pickle): the checkpoint storage
    #: is then as trusted as the code. Off: checkpoints hold plain data, arrays and
    #: tensors, and reading one never runs code.
    trust_checkpoints: bool = False
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: all but this process's stop signal."""
        state = self.__dict__.copy()
        del state["stop_event"]
        state["stop_reason"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stop_event = threading.Event()

    def read_checkpoint(self, checkpoint_id: str) -> Any:
        """The payload of a checkpoint (``{"state": ..., "rng": ...}``), decoded as this
        run's trust allows."""
        blob = self.checkpoints.get(checkpoint_id)
        return decode(blob, checkpoint_id=checkpoint_id, trust=self.trust_checkpoints)


#: The kind of the event recorded when a member's checkpoint cannot be read and it goes on
#: from another (its previous one, a donor's) or from scratch.
FALLBACK_EVENT = "fallback"
#: What a :class:`CheckpointError` says of a checkpoint that is torn or gone (a member falls
#: back from it); any other (one that needs ``trust``, a newer format) stops the run.
_UNREADABLE = ("torn", "No checkpoint", "not a genepool checkpoint")


class _Unreadable(CheckpointError):
    """A member's checkpoint is torn or missing (raised by ``Worker._resident_for``)."""

    def __init__(self, checkpoint_id: str, error: CheckpointError) -> None:
        super().__init__(str(error))
        self.checkpoint_id = checkpoint_id
        self.error = error


class _MemberCodeFailed(Exception):
    """The member's own code outside ``step`` (``setup``, ``load``, ``save``,
    ``apply_hparams``) raised: a failure of that member, as one in ``step`` is."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


#: What a member's code may raise that is not its failure: genepool's own errors.
_NOT_THE_MEMBERS = (TrainableError, CheckpointError, HyperparameterNotAppliedError, StorageError)


def _own_code(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, a call into the member's code: what it raises (but genepool's own
    errors) becomes a :class:`_MemberCodeFailed`."""
    try:
        return call(*args)
    except _NOT_THE_MEMBERS:
        raise
    except Exception as err:
        raise _MemberCodeFailed(err) from err


def _unreadable(err: CheckpointError) -> bool:
    """Whether ``err`` says a checkpoint is torn or missing, not refused (``trust``)."""
    text = str(err)
    return "trust" not in text and any(s in text for s in _UNREADABLE)


@dataclass
class _LastWrite:
    """A round's last write, left for the worker's next claim to make with it."""

    lease: Lease
    member: MemberView | None
    reports: Sequence[Report]
    events: Sequence[Event]
    #: an exploit's pin on the donor's checkpoint, and what to do instead if the store
    #: refuses it (the checkpoint was collected meanwhile)
    pin: str | None = None
    abandon: Callable[[], None] | None = None


@dataclass
class _Resident:
    session: _Session
    handle: Member
    checkpoint: str | None
    generation: int
    hparams: Mapping[str, Any]

    def serves(self, view: MemberView) -> str | None:
        """How this session can train ``view``: ``"as is"``; ``"switch"`` to the donor's
        weights of an exploit written since this worker trained it (a write that left the
        loading to the member's next round); ``None``: not at all, the member moved on
        without it (another worker trained it, or a failed round set it back), and it
        starts again from its checkpoint."""
        ckpt = view.checkpoint.id if view.checkpoint is not None else None
        if (
            self.checkpoint == ckpt
            and self.generation == view.generation
            and self.hparams == view.hparams
            and self.handle.step == view.step
        ):
            return "as is"
        if (
            view.checkpoint is not None
            and view.checkpoint.member != view.id
            and not view.failed
            and self.generation < view.generation
        ):
            return "switch"
        return None


def _close(member: int, session: _Session) -> None:
    """End a session (its thread, and what it holds); a broken trainable that fails to
    close is dropped anyway."""
    try:
        session.close()
    except Exception:
        log.debug("closing member %d's session raised", member, exc_info=True)


class _Residents:
    """The members' sessions a worker keeps between their rounds: a cache of at most
    ``limit``, the least recently used closed first. A member closed, or dropped when
    another worker trained it meanwhile, starts again from its checkpoint when this worker
    next trains it, as it would after a resume.

    Args:
        limit: How many sessions at most (``RunContext.max_resident``).
        hint: Whether a trainable may lower ``limit`` (see :attr:`Member.resident_limit`).
    """

    def __init__(self, limit: int, *, hint: bool = True) -> None:
        self.limit = limit
        self._hint = hint
        self._sessions: OrderedDict[int, _Resident] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, member: int) -> bool:
        return member in self._sessions

    def members(self) -> list[int]:
        """The resident members, least recently used first."""
        return list(self._sessions)

    def get(self, member: int) -> _Resident | None:
        """The member's session, now the most recently used; ``None`` if not resident."""
        res = self._sessions.get(member)
        if res is not None:
            self._sessions.move_to_end(member)
        return res

    def make_room(self) -> None:
        """Close the least recently used sessions until one more fits: before a session
        starts, so that no more than ``limit`` models are ever held at once."""
        if self._hint:
            for res in self._sessions.values():
                asked = res.handle.resident_limit
                if asked is not None and asked < self.limit:
                    self.limit = max(1, asked)
        while len(self._sessions) >= self.limit:
            member, res = self._sessions.popitem(last=False)
            _close(member, res.session)

    def put(self, member: int, res: _Resident) -> None:
        """Keep ``res`` as the member's session (call :meth:`make_room` before starting it)."""
        self._sessions[member] = res
        self._sessions.move_to_end(member)

    def pop(self, member: int) -> _Resident | None:
        """Forget the member's session, left open for the caller to end."""
        return self._sessions.pop(member, None)

    def drop(self, member: int) -> None:
        """Close the member's session, if resident."""
        res = self._sessions.pop(member, None)
        if res is not None:
            _close(member, res.session)

    def drop_stale(self, population: Population) -> None:
        """Close the sessions that can no longer train their member as the store has it:
        another worker trained it (its checkpoint moved on) or ended it."""
        for member in [
            m
            for m, res in self._sessions.items()
            if population[m].status != ACTIVE or res.serves(population[m]) is None
        ]:
            self.drop(member)

    def forget_all(self) -> None:
        """Let go of every session without closing it (the run aborts: a function
        trainable's thread may hang, and nobody waits for it)."""
        self._sessions.clear()

    def close_all(self) -> None:
        """Close every session."""
        while self._sessions:
            member, res = self._sessions.popitem(last=False)
            _close(member, res.session)


def collect_orphans(ctx: RunContext, *, grace_seconds: float | None = None) -> list[str]:
    """Delete the run's checkpoints that nothing refers to, and return their ids.

    Those are checkpoints written by a worker that died before it recorded them, and
    replaced ones that a worker did not live to delete. The store decides, as for every
    delete (:meth:`Store.collect`): a member's current checkpoint, one it keeps as a
    previous one, or a pinned one, is never deleted. Nor is a checkpoint of another
    datastore (a run of the same name in the same folder, with another store): only
    those that belong to this run's datastore
    (:meth:`~genepool.checkpoints.CheckpointStore.owned_by`) are candidates.

    Only a worker holding a member's lease can record a checkpoint of it: the checkpoints
    are listed first, then the members held are read (:meth:`Store.held`), and a
    checkpoint of a member nobody holds is garbage however young (its writer is gone, or
    recorded it). One of a held member is left alone until it is ``grace_seconds`` old.
    The driver calls this when a run starts (resumes) and ends, and the process executor
    when one of its workers dies.

    Args:
        ctx: The run.
        grace_seconds: Leave alone the checkpoints of held members younger than this.
            Default: :data:`ORPHAN_GRACE_SECONDS` while a member is active; none once no
            member is (nothing can record a checkpoint any more), when the run's
            temporary directories (a torn write, the spare directories of a worker that
            died) are removed too.
    """
    store, checkpoints, run = ctx.store, ctx.checkpoints, ctx.name
    try:
        on_disk = checkpoints.ids(run)  # first: what a worker records later is listed here
        old = set(checkpoints.ids(run, older_than=grace_seconds or ORPHAN_GRACE_SECONDS))
    except NotImplementedError:  # a store that cannot list what it holds
        return []
    population, held = store.population(run), store.held(run)  # then who can record one
    done = not any(m.status == ACTIVE for m in population)
    if grace_seconds is None:
        grace_seconds = 0.0 if done else ORPHAN_GRACE_SECONDS
    current = {m.checkpoint.id for m in population if m.checkpoint is not None}

    def garbage(checkpoint_id: str) -> bool:
        if checkpoint_id in current:
            return False
        if grace_seconds <= 0 or checkpoint_id in old:
            return True
        member = _member_of(checkpoint_id)
        return member is not None and member not in held

    identity = store.identity
    candidates = checkpoints.owned_by(identity, [c for c in on_disk if garbage(c)])
    collected = store.collect(run, candidates) if candidates else []
    for checkpoint_id in collected:
        checkpoints.delete(checkpoint_id)
    if collected:
        log.info("deleted %d checkpoint(s) of run %r that nothing referred to", len(collected), run)
    if done and grace_seconds <= 0:  # in this datastore's folder only
        checkpoints.sweep(run=run, grace_seconds=0.0, owner=identity)
    return collected


def _member_of(checkpoint_id: str) -> int | None:
    """The member in a checkpoint id ``<run>/m<member>/<name>``; ``None`` if not one."""
    parts = checkpoint_id.split("/")
    if len(parts) == 3 and parts[1][:1] == "m" and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None


def _undecided(population: Population, view: MemberView) -> bool:
    """Whether another active member waits for its decision in a round ``view`` has done."""
    return any(
        m.pending and m.status == ACTIVE and m.ready_count <= view.ready_count and m.id != view.id
        for m in population
    )


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


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
        self._resident = _Residents(ctx.max_resident, hint=ctx.resident_hint)
        self._plateau = PlateauTracker(min_delta=ctx.policy.budget.min_delta)
        self._counter = ctx.policy.ready.counter
        self._current: Lease | None = None
        self._lease_lost = False
        # the heartbeat may only judge the lease the loop holds now, never an earlier one
        self._lease_lock = threading.Lock()
        self._last_progress = 0.0
        self._slowest_round = 0.0  # seconds: the slowest round this worker has trained
        self._replaced: list[str] = []  # checkpoints to hand to Store.collect
        self._held_back = False  # the last claim was given back: wait before the next
        self._last_size = 0  # bytes of the last checkpoint this worker wrote
        # where the store commits and claims in one write, a round that goes on leaves
        # its last write to the next claim (one write a round instead of two)
        self._defer = bool(getattr(ctx.store, "fuses_commit_and_claim", False))
        self._last: _LastWrite | None = None
        #: Leases this worker could not give back when the storage failed (see
        #: :mod:`genepool._faults`): its executor hands them to the next run.
        self.left_behind: list[Lease] = []

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> str:
        """Train until no member is left to train; return why the run ended."""
        ctx = self.ctx
        beat = self._start_heartbeat() if ctx.heartbeat else None
        waiting = False  # for a member held elsewhere
        try:
            self._restore_plateau()
            while True:
                if ctx.stop_event.is_set():
                    return ctx.stop_reason or "interrupted"
                lease = self._claim()
                if lease is None:
                    pop = ctx.store.population(ctx.name)
                    if not any(m.status == ACTIVE for m in pop):
                        return ended_because(pop)
                    # every active member is held by another worker, or by a lease that
                    # runs out (its holder gone): wait, never end with members active
                    if not waiting:
                        log.info("%s: every active member is held: waiting", self.info.name)
                    waiting = True
                    ctx.stop_event.wait(ctx.idle_wait or IDLE_WAIT_ALONE)
                    continue
                waiting = False
                with self._lease_lock:
                    self._current, self._lease_lost = lease, False
                self._last_progress = ctx.clock.now()
                try:
                    pop = self._round(lease)
                except StaleLeaseError as err:
                    log.warning("%s lost member %d: %s", self.info.name, lease.member, err)
                    self._drop(lease.member)
                    continue
                except StorageError:  # the storage failed, not the member: stop
                    self._give_back(lease)
                    raise
                finally:
                    with self._lease_lock:
                        self._current = None
                reason = run_stop_reason(
                    pop,
                    ctx.policy.budget,
                    elapsed=ctx.clock.now() - ctx.started,
                    plateau=self._plateau,
                )
                if reason == "time":  # the call's time is up: members stay resumable
                    ctx.stop_reason = "time"
                    ctx.stop_event.set()
                elif reason is not None and reason != "budget":
                    self._flush_last()
                    self._finish_all(reason)
                    return reason
                if self._held_back:
                    self._held_back = False
                    ctx.stop_event.wait(ctx.idle_wait or 0.0)
        except (KeyboardInterrupt, SystemExit):  # a second Ctrl-C: abort, wait for nothing
            self._resident.forget_all()
            raise
        finally:
            if beat is not None:
                self._beat_stop.set()
                beat.join(JOIN_SECONDS)  # a renewal may hang on a database that is down
                if beat.is_alive():
                    log.warning("%s: its heartbeat did not end: left behind", self.info.name)
            try:
                self._flush_last()
            finally:
                self.close()

    def _claim(self) -> Lease | None:
        """Claim the next member, making the last round's write in the same write."""
        ctx = self.ctx
        last, self._last = self._last, None
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
        self._maybe_collect()
        return lease

    def _last_write_failed(self, last: _LastWrite, err: StorageError) -> None:
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
        self._drop(last.lease.member)

    def _flush_last(self) -> None:
        """Make the write the last round left for the next claim (see :meth:`_claim`)."""
        last, self._last = self._last, None
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

    def _end_round(
        self,
        lease: Lease,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
    ) -> bool:
        """Whether the round's last write should end ``lease`` now; ``False`` leaves it,
        with ``member``, ``reports`` and ``events``, to the next claim (a store that fuses
        a commit and a claim), and the caller writes nothing."""
        if self._defer:
            self._last = _LastWrite(lease, member, reports, events)
            return False
        return True

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
        self._plateau = PlateauTracker.restore(
            events, mode=population.mode, min_delta=budget.min_delta
        )

    def _start_heartbeat(self) -> threading.Thread:
        """Renew the current lease while its member makes progress."""
        self._beat_stop = threading.Event()
        ctx = self.ctx
        period = max(0.05, ctx.lease_seconds / 3)
        failures = 0  # renewals failed in a row
        quiet_until = -math.inf  # no second warning before then (time.monotonic)

        def beat() -> None:
            nonlocal failures, quiet_until
            while not self._beat_stop.wait(period):
                with self._lease_lock:  # the loop cannot move to another lease meanwhile
                    lease = self._current
                    if lease is None or self._lease_lost:
                        continue
                    idle = ctx.clock.now() - self._last_progress
                    limit = self.progress_limit()
                    if idle > limit + ctx.lease_seconds + 2 * limit:
                        # hung in the member's code, its member handed over: end this
                        # process, which its executor replaces (the member counts a crash)
                        log.error(
                            "%s: member %d made no step for %.0f s (hung in its code): "
                            "ending this worker",
                            self.info.name,
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
                        continue
                    try:
                        ctx.store.renew(lease, lease_seconds=ctx.lease_seconds)
                    except StaleLeaseError:
                        self._lease_lost = True  # this very lease: the loop still holds it
                    except Exception as err:  # maybe passing: the next beat tries again
                        failures += 1
                        if time.monotonic() < quiet_until:
                            log.debug("lease renewal failed", exc_info=True)
                            continue
                        quiet_until = time.monotonic() + HEARTBEAT_WARN_SECONDS
                        log.warning(
                            "%s could not renew its lease on member %d (%d time(s) in a "
                            "row; said at most every %.0f s): %s. If renewals keep "
                            "failing the lease expires and another worker may take the "
                            "member.",
                            self.info.name,
                            lease.member,
                            failures,
                            HEARTBEAT_WARN_SECONDS,
                            err,
                        )
                    else:
                        failures = 0

        thread = threading.Thread(target=beat, name=f"{self.info.name}-heartbeat", daemon=True)
        thread.start()
        return thread

    def hung(self) -> tuple[int, float] | None:
        """The member this worker trains and its seconds without a step, once those are
        past :meth:`progress_limit`; ``None`` otherwise."""
        with self._lease_lock:
            lease = self._current
        if lease is None:
            return None
        idle = self.ctx.clock.now() - self._last_progress
        return (lease.member, idle) if idle > self.progress_limit() else None

    def forget(self, member: int) -> None:
        """Let go of ``member``'s session without closing it (it hangs in the member's
        code: closing would wait for it)."""
        self._resident.pop(member)

    def progress_limit(self) -> float:
        """Seconds without a step after which the member trained now is taken for hung:
        ``progress_timeout``, else :data:`PROGRESS_ROUNDS` times this worker's slowest
        round, at least :data:`PROGRESS_FLOOR_SECONDS`. It stops renewing its lease then
        (another worker takes the member over once the lease runs out), and a worker
        process ends itself twice that long later (its executor starts another)."""
        if self.ctx.progress_timeout is not None:
            return self.ctx.progress_timeout
        return max(PROGRESS_FLOOR_SECONDS, PROGRESS_ROUNDS * self._slowest_round)

    def _drop(self, member: int) -> None:
        self._resident.drop(member)

    def _give_back(self, lease: Lease) -> None:
        """The storage failed during ``lease``'s round: release the lease untouched, so
        that the member waits, active at its last recorded checkpoint, for the run to
        resume (its session goes: it may be ahead of that checkpoint). A store that cannot
        take even that leaves the lease in :attr:`left_behind`."""
        self._drop(lease.member)
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
            self._resident.close_all()
        finally:
            try:
                self._collect_replaced()
            except StorageError as err:  # the storage failed: the run says so already
                log.warning("%s could not delete replaced checkpoints: %s", self.info.name, err)
            except Exception:  # the driver collects what is left when the run ends
                log.warning(
                    "%s could not delete replaced checkpoints", self.info.name, exc_info=True
                )
            finally:
                self.ctx.checkpoints.drain()

    # -- one ready round ---------------------------------------------------------------
    def _read(self, checkpoint_id: str) -> Any:
        """A checkpoint's payload; :class:`_Unreadable` if it is torn or missing."""
        try:
            return self.ctx.read_checkpoint(checkpoint_id)
        except CheckpointError as err:
            if _unreadable(err):
                raise _Unreadable(checkpoint_id, err) from err
            raise

    def _load(
        self, lease: Lease, view: MemberView
    ) -> tuple[MemberView, _Resident, Population | None]:
        """The member's session (:meth:`_resident_for`); when its checkpoint is torn or
        missing, it falls back first (:meth:`_fall_back`): the view it goes on as, the
        session, and the population the fallback's write returned (``None``: none)."""
        pop = None
        try:
            return view, self._resident_for(view), pop
        except _Unreadable as err:
            view, pop = self._fall_back(lease, view, err)
        return view, self._resident_for(view), pop

    def _fall_back(
        self, lease: Lease, view: MemberView, failed: _Unreadable
    ) -> tuple[MemberView, Population]:
        """``view``'s checkpoint cannot be read: go on from its previous checkpoint (the
        newest that reads), else a donor's (the best-scoring other member's current one,
        pinned as an exploit's), else from scratch. Written at once, with a ``"fallback"``
        event (data: the ``checkpoint`` that failed, the ``reason``, what it fell back
        ``to``: ``"previous"``, ``"donor"`` or ``"fresh"``, and the ``fallback``
        checkpoint, ``None`` for a fresh start); the unreadable checkpoints are handed to
        :meth:`Store.collect`."""
        ctx = self.ctx
        self._resident.drop(view.id)
        log.warning(
            "member %d: checkpoint %s cannot be read (%s); falling back",
            view.id,
            failed.checkpoint_id,
            failed.error,
        )
        bad = [failed.checkpoint_id]
        new: MemberView | None = None
        to, pin = "fresh", None
        for i, ref in enumerate(view.previous):
            if ref.id in bad:
                continue
            try:
                self._read(ref.id)
            except _Unreadable:
                bad.append(ref.id)
                continue
            rest = tuple(p for p in view.previous[i + 1 :] if p.id not in bad)
            new = dataclasses.replace(
                view,
                checkpoint=ref,
                step=ref.step,
                score=ref.score,
                ready_counter=ref.counter,
                previous=rest,
            )
            to = "previous"
            break
        if new is None:
            pop = ctx.store.population(ctx.name)
            others = pop.donors(exclude=view.id)
            donor = max(others, key=lambda m: (pop.fitness(m), -m.id)) if others else None
            donor_ref = donor.checkpoint if donor is not None else None
            if donor is not None and donor_ref is not None and donor_ref.id not in bad:
                try:
                    self._read(donor_ref.id)
                except _Unreadable:
                    bad.append(donor_ref.id)
                else:
                    new = dataclasses.replace(
                        view,
                        checkpoint=donor_ref,
                        step=donor_ref.step,
                        score=donor_ref.score,
                        ready_counter=donor_ref.counter,
                        recent=(),
                        parent=donor.id,
                        previous=(),
                    )
                    to, pin = "donor", donor_ref.id
        if new is None:
            new = dataclasses.replace(
                view, checkpoint=None, step=0, score=None, ready_counter=0.0, recent=(), previous=()
            )
        event = Event(
            FALLBACK_EVENT,
            view.id,
            new.step,
            {
                "checkpoint": failed.checkpoint_id,
                "reason": str(failed.error),
                "to": to,
                "fallback": new.checkpoint.id if new.checkpoint is not None else None,
                "unreadable": bad,
            },
            ctx.clock.now(),
        )
        try:
            pop = ctx.store.commit(lease, member=new, events=[event], pin=pin)
        except StorageError:
            if pin is None:
                raise
            # the donor's checkpoint was collected meanwhile: start afresh instead
            new = dataclasses.replace(
                view, checkpoint=None, step=0, score=None, ready_counter=0.0, recent=(), previous=()
            )
            data = {**event.data, "to": "fresh", "fallback": None}
            event = dataclasses.replace(event, step=0, data=data)
            pop = ctx.store.commit(lease, member=new, events=[event])
        log.warning("member %d fell back to %s (%s)", view.id, to, event.data["fallback"])
        self._replaced.extend(bad)
        return new, pop

    def _resident_for(self, view: MemberView) -> _Resident:
        """The member's session, in the state the store says it is in; raises
        :class:`_Unreadable` if its checkpoint is torn or missing."""
        res = self._resident.get(view.id)
        serves = res.serves(view) if res is not None else None
        if res is not None and serves == "as is":
            return res
        ctx = self.ctx
        ckpt = view.checkpoint.id if view.checkpoint is not None else None
        if res is not None and serves == "switch" and view.checkpoint is not None:
            # it exploited since this worker trained it, in a write that left the loading
            # of the donor's weights to its next round: switch the session to them
            payload = self._read(view.checkpoint.id)
            handle = res.handle
            handle._reseed(ctx.seed, view.generation, view.failures)
            handle._generation = view.generation
            handle._step = view.step
            _own_code(res.session.switch, view.hparams, payload["state"])
            res.checkpoint, res.generation, res.hparams = ckpt, view.generation, view.hparams
            self._verify(res.session, view.hparams, view.id)
            return res
        if res is not None:
            self._resident.drop(view.id)
        self._resident.make_room()
        state = start = None
        if view.checkpoint is not None:
            payload = self._read(view.checkpoint.id)
            state = payload["state"]
            if view.checkpoint.member == view.id and view.failures == 0:  # its own
                start = payload.get("rng")
        handle = Member._keyed(
            id=view.id,
            hparams=view.hparams,
            seed=ctx.seed,
            generation=view.generation,
            attempt=view.failures,
            start=start,
        )
        handle._generation = view.generation
        handle._step = view.step
        session = _make_session(ctx.trainable, handle)
        _own_code(session.start, view.hparams, state)
        self._verify(session, view.hparams, view.id)
        res = _Resident(session, handle, ckpt, view.generation, view.hparams)
        self._resident.put(view.id, res)
        return res

    def _round(self, lease: Lease) -> Population:
        ctx = self.ctx
        pop = ctx.store.population(ctx.name)
        read_at = ctx.clock.now()
        self._resident.drop_stale(pop)
        view = pop[lease.member]
        if view.crashes >= ctx.max_crashes:
            return self._stop(lease, view, "crashed", [], status=FAILED)
        if view.pending:  # synchronous: the barrier is passed, decide now
            view = dataclasses.replace(view, pending=False)
            return self._decide(lease, view, pop)
        if ctx.synchronous and ctx.idle_wait is not None and _undecided(pop, view):
            # the barrier's other side: another worker has yet to decide a member in a
            # round this one has done, and that decision must not see this one's next
            # round; give the member back and claim again a moment later
            self._held_back = True
            return ctx.store.commit(lease, release=True)
        return self._train(lease, view, pop, read_at)

    def _decision(self, view: MemberView, pop: Population, *, returned: bool = False) -> Decision:
        seed = self.ctx.seed
        decision = self.ctx.policy.decide_with(
            pop, view, lambda: decision_stream(seed, view.id, view.ready_count)
        )
        if returned and not isinstance(decision, Stop):
            decision = Stop("returned")
        return decision

    def _decide(
        self, lease: Lease, view: MemberView, pop: Population, *, returned: bool = False
    ) -> Population:
        return self._carry_out(lease, view, self._decision(view, pop, returned=returned))

    def _train(self, lease: Lease, view: MemberView, pop: Population, read_at: float) -> Population:
        """Train one round of the member; ``pop`` is the population as read at ``read_at``,
        when the round began."""
        ctx = self.ctx
        policy = ctx.policy
        if view.checkpoint is not None and policy.budget_reached(view.checkpoint.counter):
            # it copied a checkpoint that has used the whole budget: nothing left to train
            return self._stop(lease, view, "budget", [])
        try:
            view, res, fell_back = self._load(lease, view)
        except _MemberCodeFailed as failed:  # its setup or load raised
            return self._failed_round(lease, view, [], failed.cause, [])
        if fell_back is not None:
            pop = fell_back
        handle = res.handle
        metric = self.ctx.metric
        counter_name = self._counter
        ready_due = policy.ready.due
        budget_reached = policy.budget_reached
        seconds = policy.budget.seconds
        clock = ctx.clock
        stop_event = ctx.stop_event
        flush_seconds = ctx.flush_seconds
        last_flush = [clock.now()]
        last = view.ready_counter  # readies keep their rhythm across interruptions
        round_start = clock.now()
        # the round's reports as (step, metrics, time): made Reports at its end (or at a
        # flush), not at each step, where a Report costs tens of microseconds of cold code
        raw: list[tuple[int, dict[str, Any], float]] = []
        scores: list[float] = []
        bad: list[str] = []
        counter_box = [view.checkpoint.counter if view.checkpoint is not None else 0.0]
        cut_short = [False]  # the round ended early (a stop, a lost lease), not at a ready
        every = ctx.metrics_every
        kept = frozenset((metric, counter_name))
        member = view.id

        def observe(metrics: Mapping[str, Any]) -> bool:
            handle._step += 1
            step = handle._step
            now = clock.now()
            self._last_progress = now
            if every > 1 and raw:  # the one before this is not the round's last
                prev_step, prev, prev_time = raw[-1]
                if prev_step % every and len(prev) > len(kept & prev.keys()):
                    raw[-1] = (prev_step, {k: v for k, v in prev.items() if k in kept}, prev_time)
            raw.append((step, dict(metrics), now))
            if now - last_flush[0] >= flush_seconds:  # a long round: flush what we have
                ctx.store.commit(lease, reports=[Report(member, *r) for r in raw])
                raw.clear()
                last_flush[0] = now
            if metric not in metrics:
                raise TrainableError(
                    f"The trainable reported {sorted(metrics)} without the run's metric "
                    f"{metric!r}. Fix: include it in every report, or pass metric= one of those."
                )
            value = metric_value(metric, metrics[metric])
            if not math.isfinite(value):
                bad.append(f"the metric {metric!r} was {value} at step {step}")
                return True
            scores.append(value)
            if counter_name == "steps":
                counter: float = step
            else:
                try:
                    counter = float(metrics[counter_name])
                except KeyError:
                    raise TrainableError(
                        f"The ready rule counts {counter_name!r}, but a report had only "
                        f"{sorted(metrics)}. Fix: report the cumulative {counter_name!r} "
                        "with every step."
                    ) from None
            counter_box[0] = counter
            if budget_reached(counter) or ready_due(
                counter=counter, last=last, elapsed=now - round_start
            ):
                return True
            if seconds is not None and now - ctx.started >= seconds:
                ctx.stop_reason = "time"
                stop_event.set()
            if stop_event.is_set() or self._lease_lost:
                cut_short[0] = True
                return True
            return False

        failure: BaseException | None = None
        returned = False
        try:
            res.session.run_round(observe)
        except _Returned:
            returned = True
        except (TrainableError, CheckpointError, HyperparameterNotAppliedError, StorageError):
            raise
        except Exception as err:
            failure = err

        self._slowest_round = max(self._slowest_round, clock.now() - round_start)
        reports = [Report(member, *r) for r in raw]
        if self._lease_lost:
            raise StaleLeaseError(f"member {view.id}: the lease was lost during the round")
        if failure is not None or bad:
            return self._failed_round(lease, view, reports, failure, bad)

        if returned and not reports:
            return self._stop(lease, view, "returned", reports)

        step = handle._step
        score = scores[-1] if scores else view.score
        ready = not cut_short[0]
        counter = counter_box[0]
        # the round's checkpoint as the decision sees it: its id comes once it is written,
        # which a member about to exploit (its weights replaced) never needs
        ref = CheckpointRef("", view.id, step, counter, score, view.hparams)
        new = dataclasses.replace(
            view,
            step=step,
            checkpoint=ref,
            score=score,
            recent=(view.recent + tuple(scores))[-ctx.recent_window :],
            failures=0,
            # progress: only a run of crashes without it stops the member (max_crashes)
            crashes=0 if step > view.step else view.crashes,
            ready_count=view.ready_count + 1 if ready else view.ready_count,
            ready_counter=counter if ready else view.ready_counter,
            # what it ranks by from now on, even once it has copied another (Truncation)
            curve=view.curve_with(counter, scores[-1]) if ready and scores else view.curve,
        )
        # a synchronous member waits at the barrier from the very write that counts its
        # round, so no other worker can see the round done but the member not waiting
        wait = ctx.synchronous and ready and not returned
        decision: Decision | None = None
        # the population with this round in it: the one read when the round began if that
        # is recent (reports reach the store at least that often anyway), else now
        recent = pop if clock.now() - read_at < flush_seconds else None
        seen: Population | None = None
        if ready and not wait:
            # decide now: when the member simply goes on, one write records the round and
            # ends the lease
            seen = self._with(new, recent)
            decision = self._decision(new, seen, returned=returned)
        events: list[Event] = []
        # a better score is what can raise the best score: the plateau tracker's new
        # state, if it changed, is recorded with the round (a resumed run starts from it)
        if ctx.policy.budget.plateau is not None and self._plateau.observe(
            seen if seen is not None else self._with(new, recent)
        ):
            data = self._plateau.event_data()
            events.append(Event(BEST_EVENT, view.id, step, data, clock.now()))

        def save() -> tuple[MemberView, str]:
            """Checkpoint the round: ``new`` with the checkpoint's id, and the id."""
            state = _own_code(res.session.save)
            blob = encode({"state": state, "rng": handle._rng_state()}, trust=ctx.trust_checkpoints)
            manifest = {
                "hparams": dict(view.hparams),
                "score": score,
                "counter": counter,
                "generation": view.generation,
                "parent": view.parent,
                "metric": ctx.metric,
            }
            try:
                ckpt_id = ctx.checkpoints.put(ctx.name, view.id, step, blob, manifest=manifest)
            except OSError as err:  # a store that lets the system's error through
                what = f"writing a checkpoint of member {view.id}"
                raise storage_fault(err, what, repr(ctx.checkpoints)) from err
            self._last_size = len(blob)
            res.checkpoint = ckpt_id
            saved = dataclasses.replace(
                new,
                checkpoint=dataclasses.replace(ref, id=ckpt_id),
                previous=self._previous(view),
            )
            return saved, ckpt_id

        if isinstance(decision, Exploit):
            # the round is written with the exploit, in one write, and never checkpointed
            return self._exploit(
                lease, new, decision, round_=(reports, events, view.checkpoint, save, seen)
            )
        try:
            new, _ = save()
        except _MemberCodeFailed as failed:  # its save raised: the round is lost
            return self._failed_round(lease, view, reports, failed.cause, [])
        if seen is not None:
            seen = self._with(new, seen)
        plain = isinstance(decision, Continue)
        if plain and seen is not None and not self._end_round(lease, new, reports, events):
            # the member goes on: its round is written with the next claim, in one write
            self._collect(view, new)
            return seen
        pop = ctx.store.commit(
            lease,
            member=dataclasses.replace(new, pending=True) if wait else new,
            reports=reports,
            events=events,
            release=wait or not ready or plain,
        )
        self._collect(view, new)
        if decision is None or plain:  # at the barrier, stopped mid-round, or going on
            return pop
        return self._carry_out(lease, new, decision)

    # -- carrying decisions out --------------------------------------------------------
    def _carry_out(self, lease: Lease, view: MemberView, decision: Decision) -> Population:
        """Carry out ``decision`` for the member ``view``, whose round is written: each
        kind of decision in one place."""
        if isinstance(decision, Continue):
            return self.ctx.store.commit(lease, member=view, release=True)
        if isinstance(decision, Exploit):
            return self._exploit(lease, view, decision)
        if isinstance(decision, Explore):
            return self._explore(lease, view, decision)
        if isinstance(decision, Stop):
            return self._stop(lease, view, decision.reason, [])
        assert_never(decision)

    def _explore(self, lease: Lease, view: MemberView, decision: Explore) -> Population:
        """New hyperparameters on the member's own weights: recorded as an ``explore``
        event, then applied to its resident session (if any) and checked."""
        ctx = self.ctx
        new_hp = dict(decision.hparams)
        res = self._resident.get(view.id)
        event = Event(
            "explore",
            view.id,
            view.step,
            {"old_hparams": dict(view.hparams), "new_hparams": new_hp},
            ctx.clock.now(),
        )
        new = dataclasses.replace(view, hparams=new_hp)
        if self._end_round(lease, new, events=[event]):
            pop = ctx.store.commit(lease, member=new, events=[event], release=True)
        else:
            pop = self._with(new)
        if res is not None:
            try:
                _own_code(res.session.switch, new_hp, None)
            except _MemberCodeFailed as failed:  # its lease is gone: start afresh next
                log.warning("member %d: apply_hparams raised %s", view.id, failed)
                self._drop(view.id)
                return pop
            res.hparams = new_hp
            self._verify(res.session, new_hp, view.id)
        return pop

    def _exploit(
        self,
        lease: Lease,
        view: MemberView,
        decision: Exploit,
        *,
        round_: tuple[
            Sequence[Report],
            Sequence[Event],
            CheckpointRef | None,
            Callable[[], tuple[MemberView, str]],
            Population | None,
        ]
        | None = None,
    ) -> Population:
        """Copy the donor's checkpoint and take the new hyperparameters. ``round_``: the
        round just trained, written with the exploit (its reports and events, the member's
        checkpoint before it, what checkpoints it if the exploit is abandoned, and the
        population the decision saw)."""
        ctx = self.ctx
        reports: Sequence[Report] = ()
        events: Sequence[Event] = ()
        seen: Population | None = None
        before = view  # the member as it stood, holding its checkpoint before the round
        if round_ is not None:
            reports, events, old, save, seen = round_
            before = dataclasses.replace(view, checkpoint=old)
        donor_ckpt = decision.checkpoint
        new_hp = dict(decision.hparams)
        generation = view.generation + 1
        new = dataclasses.replace(
            view,
            hparams=new_hp,
            step=donor_ckpt.step,
            generation=generation,
            parent=decision.donor,
            checkpoint=donor_ckpt,
            score=donor_ckpt.score,
            recent=(),
            ready_counter=donor_ckpt.counter,
            previous=self._previous(before),
        )
        event = Event(
            "exploit",
            view.id,
            donor_ckpt.step,
            {
                "donor": decision.donor,
                "donor_generation": decision.donor_generation,
                "checkpoint": donor_ckpt.id,
                "donor_step": donor_ckpt.step,
                "donor_score": donor_ckpt.score,
                "old_step": view.step,
                "old_score": view.score,
                "old_hparams": dict(view.hparams),
                "new_hparams": new_hp,
                "generation": generation,
            },
            ctx.clock.now(),
        )
        if round_ is not None and self._defer:
            # the round, the exploit and its pin go in one write with the next claim; the
            # donor's weights are loaded when the member next trains, here or elsewhere

            def abandon() -> None:
                kept, _ = save()  # never switched: its own weights, checkpointed now
                ctx.store.commit(lease, member=kept, reports=reports, events=events, release=True)

            self._last = _LastWrite(
                lease, new, reports, [*events, event], pin=donor_ckpt.id, abandon=abandon
            )
            self._collect(before, new)
            return self._with(new, seen)
        try:
            # the pin and the member's new row in one write: the donor's bytes stay
            pop = ctx.store.commit(
                lease, member=new, reports=reports, events=[*events, event], pin=donor_ckpt.id
            )
        except CollectedPinError as err:
            log.info("member %d: exploit of %s abandoned (%s)", view.id, donor_ckpt.id, err)
            if round_ is None:
                return ctx.store.commit(lease, member=view, release=True)
            kept, _ = save()  # it goes on with its own weights: checkpoint them
            pop = ctx.store.commit(lease, member=kept, reports=reports, events=events, release=True)
            self._collect(before, kept)
            return pop
        # the donor's weights, loaded now that they are pinned
        try:
            new, _, fell_back = self._load(lease, new)
        except _MemberCodeFailed as failed:  # its load or apply_hparams raised
            return self._failed_round(lease, new, [], failed.cause, [])
        if fell_back is not None:
            pop = fell_back
        self._collect(before, new)
        if self._end_round(lease):
            return ctx.store.commit(lease, release=True)
        return pop

    def _failed_round(
        self,
        lease: Lease,
        view: MemberView,
        reports: list[Report],
        failure: BaseException | None,
        bad: list[str],
    ) -> Population:
        ctx = self.ctx
        if failure is not None:
            error = f"{type(failure).__name__}: {failure}"
            tb = "".join(traceback.format_exception(failure))
        else:
            error, tb = "non-finite score: " + bad[0], ""
        log.warning("member %d failed after step %d: %s", view.id, view.step + len(reports), error)
        self._resident.drop(view.id)
        failures = view.failures + 1
        step = view.checkpoint.step if view.checkpoint is not None else 0
        event = Event(
            "failure",
            view.id,
            step + len(reports),
            {"error": error, "traceback": tb, "failures": failures},
            ctx.clock.now(),
        )
        new = dataclasses.replace(view, step=step, failures=failures)
        pop = ctx.store.commit(lease, member=new, reports=reports, events=[event])
        if ctx.stop_event.is_set():
            ctx.store.commit(lease, release=True)
            return pop
        rng = decision_stream(ctx.seed, view.id, view.ready_count, failures)
        decision = ctx.policy.decide(pop, new, rng)
        if isinstance(decision, Stop) and decision.reason == "failed":
            return self._stop(lease, new, "failed", [], status=FAILED)
        return self._carry_out(lease, new, decision)

    def _stop(
        self,
        lease: Lease,
        view: MemberView,
        reason: str,
        reports: list[Report],
        *,
        status: str = FINISHED,
    ) -> Population:
        ctx = self.ctx
        res = self._resident.pop(view.id)
        if res is not None:
            if isinstance(res.session, _FunctionSession):
                res.session.finish()
            else:
                res.session.close()
        new = dataclasses.replace(
            view, status=FAILED if status == FAILED else FINISHED, stop_reason=reason
        )
        event = Event("stop", view.id, view.step, {"reason": reason}, ctx.clock.now())
        return ctx.store.commit(lease, member=new, reports=reports, events=[event], release=True)

    def _finish_all(self, reason: str) -> None:
        """End the run for every active member (target, plateau or time reached)."""
        ctx = self.ctx
        while True:
            lease = ctx.store.claim(ctx.name, self.info, lease_seconds=ctx.lease_seconds)
            if lease is None:
                return
            view = ctx.store.population(ctx.name)[lease.member]
            self._stop(lease, view, reason, [])

    # -- helpers -----------------------------------------------------------------------
    def _with(self, view: MemberView, population: Population | None = None) -> Population:
        """``population`` (default: as the store has it now) with ``view`` in place of its
        member."""
        now = self.ctx.store.population(self.ctx.name) if population is None else population
        return Population(tuple(view if m.id == view.id else m for m in now.members), now.mode)

    def _previous(self, view: MemberView) -> tuple[CheckpointRef, ...]:
        """The checkpoints ``view`` keeps as its previous ones once its current one is
        replaced: the current one, then its previous ones, newest first, ``keep`` of them."""
        held = (view.checkpoint, *view.previous) if view.checkpoint is not None else view.previous
        kept: list[CheckpointRef] = []
        for ref in held:
            if len(kept) < self.ctx.keep and all(k.id != ref.id for k in kept):
                kept.append(ref)
        return tuple(kept)

    def _collect(self, before: MemberView, after: MemberView) -> None:
        """``after`` replaced ``before``: delete the checkpoints ``before`` held (its current
        and previous ones) that ``after`` no longer does, once nothing refers to them."""
        held = {ref.id for ref in after.previous}
        if after.checkpoint is not None:
            held.add(after.checkpoint.id)
        old = [before.checkpoint] if before.checkpoint is not None else []
        dropped = [ref.id for ref in (*old, *before.previous) if ref.id not in held]
        if not dropped:
            return
        self._replaced.extend(dropped)
        if self._last is None:  # else once the write that replaces it is made
            self._maybe_collect()

    def _maybe_collect(self) -> None:
        if len(self._replaced) >= COLLECT_BATCH or self._last_size > COLLECT_AT_ONCE_BYTES:
            self._collect_replaced()

    def _collect_replaced(self) -> None:
        """Delete the replaced checkpoints that the store says nothing refers to (neither a
        member's current one nor pinned); the store remembers them as collected."""
        if not self._replaced:
            return
        candidates = list(self._replaced)
        self._replaced.clear()
        for checkpoint_id in self.ctx.store.collect(self.ctx.name, candidates):
            self.ctx.checkpoints.discard(checkpoint_id)

    def _verify(self, session: _Session, decided: Mapping[str, Any], member: int) -> None:
        in_effect = session.hparams_in_effect()
        if in_effect is None:
            return
        wrong = {
            k: (in_effect[k], v)
            for k, v in decided.items()
            if k in in_effect and not _same_value(in_effect[k], v)
        }
        if wrong:
            detail = ", ".join(
                f"{k}: in effect {a!r}, decided {b!r}" for k, (a, b) in wrong.items()
            )
            raise HyperparameterNotAppliedError(
                f"Member {member}: the trainable's hyperparameters in effect differ from the "
                f"decided ones ({detail}). Fix: set them in apply_hparams(), after load() "
                "restored the donor's state (an optimizer's state carries its old values)."
            )
