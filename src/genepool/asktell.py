"""Ask/tell: PBT driven from the user's own loop, scheduler or cluster code.

:class:`AskTell` holds a run (the same store, policy, checkpoints and events as
:func:`genepool.run`); :meth:`AskTell.ask` hands out the member to train next as a
:class:`Claim`, and :meth:`AskTell.tell` takes its round back and returns the decision.
Both are the worker's round (:mod:`genepool.round`) with the training left to the user, so
reports, lineage, report, export and replay work unchanged, and several processes or
machines may ask and tell at once (leases, fencing and resume as for workers).

Example:
    >>> import genepool as gp
    >>> pbt = gp.AskTell(gp.Space(lr=gp.Float(0.01, 0.1)), metric="score", population=4,
    ...                  ready=gp.Every(2), budget=gp.Budget(steps=8), seed=0)
    >>> while (claim := pbt.ask()) is not None:
    ...     with claim:
    ...         x = claim.checkpoint.load() if claim.checkpoint else 0.0
    ...         while not claim.ready:
    ...             x += claim.hparams["lr"]
    ...             claim.report(score=x)
    ...         decision = pbt.tell(claim, state=x)
    >>> pbt.result().best.step
    8
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

from genepool._collect import Collector
from genepool._create import open_run
from genepool._errors import CollectedPinError, StaleLeaseError, invalid
from genepool._heartbeat import Heartbeat
from genepool._rng import member_stream
from genepool.checkpoints import LocalCheckpoints
from genepool.decision import Continue, Decision, Exploit, Explore, Stop
from genepool.member import ACTIVE, FAILED, FINISHED, Event, MemberView, Population, Report
from genepool.policy.stop import BEST_EVENT, PlateauTracker, ended_because, run_stop_reason
from genepool.result import Result, close_store
from genepool.round import (
    RoundRecord,
    after_round,
    decide,
    exploited,
    explored,
    failed,
    kept_previous,
    stopped,
    undecided,
    with_member,
)
from genepool.space import Space
from genepool.store import Lease, WorkerInfo

__all__ = ["AskTell", "Checkpoint", "Claim"]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The checkpoint a claimed member starts from: its own, or a donor's after an exploit.

    Attributes:
        id: The checkpoint's id.
        member: Whose it is (the donor, after an exploit).
        step: The step its weights had reached.
        path: Its folder on this machine, where the checkpoints are a local folder (read
            it, never change it); ``None`` elsewhere.
    """

    id: str
    member: int
    step: int
    path: str | None
    _read: Callable[[], Any] = dataclasses.field(repr=False, compare=False)

    def load(self) -> Any:
        """The state handed to :meth:`AskTell.tell` when it was taken."""
        return self._read()["state"]


class Claim:
    """A member to train: its id, its hyperparameters and the checkpoint to start from.

    Use it as a context manager: while it is open its lease is kept alive from a thread
    (no other process takes the member); leaving it without :meth:`AskTell.tell` gives
    the member back untouched (it goes on from its checkpoint). Report each step with
    :meth:`report` until :attr:`ready`, then tell. A claim used without ``with`` must be
    told within the run's ``lease_seconds``.

    Attributes:
        member: The member's id.
        hparams: The hyperparameters to train with (after an exploit: the explored ones).
        step: The member's step: its checkpoint's, then one more for each report.
        generation: How many times it has exploited another.
        checkpoint: What to start from; ``None``: a fresh start.
    """

    def __init__(self, owner: AskTell, lease: Lease, view: MemberView) -> None:
        ctx = owner.ctx
        self._owner, self._lease, self._view = owner, lease, view
        self.member = view.id
        self.hparams: Mapping[str, Any] = dict(view.hparams)
        self.step = view.step
        self.generation = view.generation
        self.checkpoint: Checkpoint | None = None
        if view.checkpoint is not None:
            ref = view.checkpoint
            path = owner._local_path(ref.id)
            self.checkpoint = Checkpoint(ref.id, ref.member, ref.step, path, self._payload)
        self._read: Any = None
        self._own = view.checkpoint is not None and view.checkpoint.member == view.id
        self._rng: np.random.Generator | None = None
        now = ctx.clock.now()
        self._record = RoundRecord(
            view, policy=ctx.policy, metric=ctx.metric, metrics_every=ctx.metrics_every, began=now
        )
        self._beat = Heartbeat(ctx, name=owner._info.name, end_hung=False)
        self._beat.progress(now)
        self._holding: contextlib.ExitStack | None = None
        self._ready = False
        self.told = False

    @property
    def ready(self) -> bool:
        """Whether the member is ready (or its budget used): tell its round now."""
        return self._ready

    @property
    def rng(self) -> np.random.Generator:
        """The member's own random stream, as a trainable's ``member.rng``: seeded from
        the run seed, its id and generation, and saved in its checkpoints."""
        if self._rng is None:
            view = self._view
            rng = member_stream(self._owner.ctx.seed, view.id, view.generation, view.failures)
            start = self._payload().get("rng") if self._own and view.failures == 0 else None
            if start is not None:
                rng.bit_generator.state = start
            self._rng = rng
        return self._rng

    def report(self, metrics: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Record one step's metrics (a dict, or keyword arguments); the member is
        :attr:`ready` once they make it so (see the run's ``ready`` rule).

        Raises:
            TrainableError: The run's metric is missing or not a number.
        """
        merged = {**(metrics or {}), **more}
        ctx = self._owner.ctx
        step = self.step = self.step + 1
        now = ctx.clock.now()
        self._beat.progress(now)
        record = self._record
        record.add(step, merged, now)
        if now - record.flushed_at >= ctx.flush_seconds:  # a long round: flush
            ctx.store.commit(self._lease, reports=record.take(now))
        if record.ends_round(step, merged, now):
            self._ready = True

    def __enter__(self) -> Claim:
        self._holding = contextlib.ExitStack()
        self._holding.enter_context(self._beat)
        self._holding.enter_context(self._beat.holding(self._lease))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holding is not None:
            self._holding.close()
            self._holding = None
        if not self.told:  # given back untouched: it goes on from its checkpoint
            self.told = True
            with contextlib.suppress(StaleLeaseError):
                self._owner.ctx.store.commit(self._lease, release=True)

    def _payload(self) -> Any:
        """The checkpoint's payload, read once."""
        if self._read is None and self._view.checkpoint is not None:
            self._read = self._owner.ctx.read_checkpoint(self._view.checkpoint.id)
        return self._read

    def _rng_state(self) -> Any:
        """The stream's state for the round's checkpoint (as ``Member._rng_state``)."""
        if self._rng is not None:
            return self._rng.bit_generator.state
        if self._own and self._view.failures == 0:
            return self._payload().get("rng")
        return None if self._view.failures == 0 else self.rng.bit_generator.state


class AskTell:
    """A PBT run that the caller trains: :meth:`ask` for a member, :meth:`tell` its round.

    Takes :func:`genepool.run`'s arguments but those that start training (the trainable,
    ``workers``, ``executor``, ``max_resident``, ``progress``). A run of the same
    ``name`` in the same ``storage`` is resumed, by this process or by others asking and
    telling at the same time. Close it (or use it in a ``with`` block) when done.

    Args:
        space: The hyperparameters and their bounds.
        **settings: As for :func:`genepool.run`: ``metric``, ``ready`` and ``budget``,
            and ``mode``, ``population``, ``storage``, ``seed``, ...
    """

    def __init__(self, space: Space, **settings: Any) -> None:
        self.ctx, self._owns_store = open_run(space, settings)
        ctx = self.ctx
        self.name = ctx.name
        self._info = WorkerInfo.with_driver(
            f"asktell-{os.getpid()}", started=ctx.clock.now(), driver=os.getpid()
        )
        self._collector = Collector(ctx)
        self._plateau = PlateauTracker(min_delta=ctx.policy.budget.min_delta)
        pop = ctx.store.population(ctx.name)
        if ctx.policy.budget.plateau is not None and any(m.ready_count for m in pop):
            self._plateau = PlateauTracker.restore(
                ctx.store.events(ctx.name), mode=pop.mode, min_delta=ctx.policy.budget.min_delta
            )
        #: Why the run ended (``None`` while members are left to train).
        self.stop_reason: str | None = None

    def __enter__(self) -> AskTell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ask -------------------------------------------------------------------------
    def ask(self, *, timeout: float = 0.0) -> Claim | None:
        """The member to train next, claimed for this process.

        Returns ``None`` when the run is over (:attr:`stop_reason` says why), or when no
        member is claimable within ``timeout`` seconds: the others are held by other
        processes, or wait at a synchronous barrier for members still training.
        """
        ctx = self.ctx
        deadline = ctx.clock.now() + timeout
        while self.stop_reason is None:
            lease = ctx.store.claim(
                ctx.name, self._info, lease_seconds=ctx.lease_seconds, max_ahead=ctx.max_ahead
            )
            if lease is not None:
                claim = self._claim(lease)
                if claim is not None:
                    return claim
                continue
            pop = ctx.store.population(ctx.name)
            if not any(m.status == ACTIVE for m in pop):
                self.stop_reason = ended_because(pop)
            elif ctx.clock.now() >= deadline:
                return None
            else:
                time.sleep(min(0.05, max(0.0, deadline - ctx.clock.now())))
        return None

    def _claim(self, lease: Lease) -> Claim | None:
        """A claim of the member ``lease`` holds, or ``None``: it stopped, or decided at
        a synchronous barrier, or waits at one (its lease released)."""
        ctx = self.ctx
        pop = ctx.store.population(ctx.name)
        view = pop[lease.member]
        if view.crashes >= ctx.max_crashes:
            self._stop(lease, view, "crashed", status=FAILED)
            return None
        if view.pending:  # synchronous: the barrier is passed, decide now
            view = dataclasses.replace(view, pending=False)
            self._carry_out(lease, view, decide(ctx.policy, ctx.seed, view, pop))
            return None
        if ctx.synchronous and undecided(pop, view):
            ctx.store.commit(lease, release=True)  # the barrier's other side: wait
            return None
        if view.checkpoint is not None and ctx.policy.budget_reached(view.checkpoint.counter):
            self._stop(lease, view, "budget")  # it copied a checkpoint with no budget left
            return None
        return Claim(self, lease, view)

    # -- tell ------------------------------------------------------------------------
    def tell(
        self,
        claim: Claim,
        *,
        state: Any = None,
        metrics: Sequence[Mapping[str, Any]] = (),
    ) -> Decision:
        """Record the round of ``claim``: checkpoint it, decide, and write the decision.

        Args:
            claim: What :meth:`ask` returned, told once.
            state: The state to checkpoint (plain data, arrays, tensors), or a callable
                that returns it, called only if a checkpoint is taken (an exploit
                replaces the member's weights and takes none).
            metrics: Steps' metrics not given to :meth:`Claim.report`, in order.

        Returns:
            What the member does next: ``Continue()``; ``Exploit`` (its next claim
            starts from the donor's checkpoint with new hyperparameters); ``Explore``
            (new hyperparameters on its own weights); ``Stop``. A round told before it
            was ready, and a round of a synchronous run (decided once every member has
            told the same round), give ``Continue()``.

        Raises:
            StaleLeaseError: The claim's lease was lost (another process has the member
                now); nothing is recorded.
            InvalidArgumentError: The claim was told already, or is another run's.
            TrainableError: A report lacks the run's metric, or it is not a number.
        """
        if claim._owner is not self or claim.told:
            raise invalid(
                "AskTell.tell",
                "claim",
                "an open claim of this run, told once",
                f"member {claim.member}'s claim",
                "Fix: tell each claim once, to the AskTell that asked for it.",
            )
        for m in metrics:
            claim.report(m)
        claim.told = True
        if claim._beat.lost:
            raise StaleLeaseError(f"member {claim.member}: the lease was lost during the round")
        ctx, lease, view, record = self.ctx, claim._lease, claim._view, claim._record
        reports = record.reports()
        if record.bad:  # a score that is not a number: the round failed
            return self._failed(lease, view, reports, "non-finite score: " + record.bad[0])
        record.cut_short = not claim.ready
        new = after_round(view, record, step=claim.step, recent_window=ctx.recent_window)
        wait = ctx.synchronous and claim.ready  # decided past the barrier
        decision: Decision = Continue()
        seen = None
        if claim.ready and not wait:
            seen = with_member(ctx.store.population(ctx.name), new)
            decision = decide(ctx.policy, ctx.seed, new, seen)
        events = self._best_so_far(new, seen)
        if isinstance(decision, Exploit):  # written with the round, which takes no checkpoint
            before = dataclasses.replace(new, checkpoint=view.checkpoint)
            if self._exploit(lease, new, decision, before=before, reports=reports, events=events):
                return self._after(decision)
            decision = Continue()  # the donor's checkpoint went meanwhile: go on as it is
        value = state() if callable(state) else state
        ckpt_id, size = ctx.write_checkpoint(new, value, claim._rng_state())
        self._collector.last_size = size
        ref = dataclasses.replace(new.checkpoint, id=ckpt_id) if new.checkpoint else None
        new = dataclasses.replace(new, checkpoint=ref, previous=kept_previous(view, ctx.keep))
        plain = isinstance(decision, Continue)
        ctx.store.commit(
            lease,
            member=dataclasses.replace(new, pending=True) if wait else new,
            reports=reports,
            events=events,
            release=plain,
        )
        self._collector.replace(view, new)
        if not plain:
            self._carry_out(lease, new, decision)
        return self._after(decision)

    def _failed(
        self, lease: Lease, view: MemberView, reports: Sequence[Report], error: str
    ) -> Decision:
        """The round failed: back to the member's checkpoint, one failure more."""
        ctx = self.ctx
        new, event = failed(
            view, error=error, traceback="", steps=len(reports), now=ctx.clock.now()
        )
        pop = ctx.store.commit(lease, member=new, reports=reports, events=[event])
        decision = decide(ctx.policy, ctx.seed, new, pop, failures=new.failures)
        if isinstance(decision, Stop) and decision.reason == "failed":
            self._stop(lease, new, "failed", status=FAILED)
        else:
            self._carry_out(lease, new, decision)
        return decision

    # -- carrying decisions out (the worker's, without sessions) ------------------------
    def _carry_out(self, lease: Lease, view: MemberView, decision: Decision) -> None:
        """Write ``decision`` for ``view``, whose round is written, and release it."""
        ctx = self.ctx
        if isinstance(decision, Continue):
            ctx.store.commit(lease, member=view, release=True)
        elif isinstance(decision, Exploit):
            if not self._exploit(lease, view, decision, before=view):
                ctx.store.commit(lease, member=view, release=True)
        elif isinstance(decision, Explore):
            new, event = explored(view, decision, now=ctx.clock.now())
            ctx.store.commit(lease, member=new, events=[event], release=True)
        elif isinstance(decision, Stop):
            self._stop(lease, view, decision.reason)
        else:
            assert_never(decision)

    def _exploit(
        self,
        lease: Lease,
        view: MemberView,
        decision: Exploit,
        *,
        before: MemberView,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
    ) -> bool:
        """Write the exploit (and the round's ``reports`` and ``events``) with a pin on
        the donor's checkpoint, and release; ``False``: the checkpoint was collected
        meanwhile, and nothing is written."""
        ctx = self.ctx
        previous = kept_previous(before, ctx.keep)
        new, event = exploited(view, decision, previous=previous, now=ctx.clock.now())
        try:
            ctx.store.commit(
                lease,
                member=new,
                reports=reports,
                events=[*events, event],
                pin=decision.checkpoint.id,
                release=True,
            )
        except CollectedPinError:
            return False
        self._collector.replace(before, new)
        return True

    def _stop(self, lease: Lease, view: MemberView, reason: str, *, status: str = FINISHED) -> None:
        new, event = stopped(view, reason, now=self.ctx.clock.now(), status=status)
        self.ctx.store.commit(lease, member=new, events=[event], release=True)

    def _best_so_far(self, new: MemberView, seen: Population | None) -> list[Event]:
        """The plateau tracker's new state, recorded with the round if it changed."""
        ctx = self.ctx
        if ctx.policy.budget.plateau is None:
            return []
        pop = seen if seen is not None else with_member(ctx.store.population(ctx.name), new)
        if not self._plateau.observe(pop):
            return []
        return [Event(BEST_EVENT, new.id, new.step, self._plateau.event_data(), ctx.clock.now())]

    def _after(self, decision: Decision) -> Decision:
        """After a round: end the run if its target, plateau or time is reached."""
        ctx = self.ctx
        self._collector.maybe()
        pop = ctx.store.population(ctx.name)
        elapsed = ctx.clock.now() - ctx.started
        reason = run_stop_reason(pop, ctx.policy.budget, elapsed=elapsed, plateau=self._plateau)
        if reason == "time":  # members stay resumable
            self.stop_reason = "time"
        elif reason is not None and reason != "budget":
            self.stop_reason = reason
            while lease := ctx.store.claim(ctx.name, self._info, lease_seconds=ctx.lease_seconds):
                self._stop(lease, ctx.store.population(ctx.name)[lease.member], reason)
        return decision

    # -- the rest --------------------------------------------------------------------
    def result(self) -> Result:
        """The run's :class:`~genepool.Result`, so far or at its end."""
        ctx = self.ctx
        return Result(
            name=ctx.name,
            seed=ctx.seed,
            metric=ctx.metric,
            stop_reason=self.stop_reason or "interrupted",
            store=ctx.store,
            checkpoints=ctx.checkpoints,
            trust=ctx.trust_checkpoints,
            owns_store=False,
        )

    def close(self) -> None:
        """Delete the checkpoints replaced meanwhile and close the store this opened."""
        try:
            self._collector.collect()
            self.ctx.checkpoints.drain()
        finally:
            if self._owns_store:
                close_store(self.ctx.store)

    def _local_path(self, checkpoint_id: str) -> str | None:
        """A checkpoint's folder, where the checkpoints are a local folder."""
        checkpoints = self.ctx.checkpoints
        if isinstance(checkpoints, LocalCheckpoints):
            return os.path.join(checkpoints.root, *checkpoint_id.split("/"))
        return None
