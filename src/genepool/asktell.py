"""Ask/tell: PBT driven from the user's own loop, scheduler or cluster code.

:class:`AskTell` holds a run (the same store, policy, checkpoints and events as
:func:`genepool.run`); :meth:`AskTell.ask` hands out the member to train next as a
:class:`Claim`, and :meth:`AskTell.tell` takes its round back and returns the decision.
Both are the worker's round (:mod:`genepool.round`) with the training left to the user, so
reports, lineage, report, export and replay work unchanged, and several processes or
machines may ask and tell at once (leases, fencing and resume as for workers). A claimed
member's checkpoint that is torn or missing falls back as a worker's does
(:mod:`genepool._loading`), before the claim is handed out.

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
from collections.abc import Mapping, Sequence
from typing import Any

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

from genepool._asktell_args import ASK, tell_steps
from genepool._claim import Checkpoint, Claim
from genepool._collect import Collector
from genepool._constraints import check
from genepool._errors import CheckpointError, CollectedPinError, StaleLeaseError, invalid
from genepool._heartbeat import Heartbeats
from genepool._loading import Loader, Unreadable
from genepool._open_run import open_run
from genepool._redact import shown
from genepool._residents import Residents
from genepool._storage import close_store
from genepool.checkpoints._resident import ResidentCheckpoints
from genepool.decision import Continue, Decision, Exploit, Explore, Stop
from genepool.loggers._feed import feeding
from genepool.member import ACTIVE, FAILED, FINISHED, Event, MemberView, Population, Report
from genepool.policy.stop import BEST_EVENT, PlateauTracker, ended_because, run_stop_reason
from genepool.result import Result
from genepool.round import (
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


class AskTell:
    """A PBT run that the caller trains: :meth:`ask` for a member, :meth:`tell` its round.

    Takes :func:`genepool.run`'s arguments but those that start training (the trainable,
    ``workers``, ``executor``, ``max_resident``, ``progress``). A run of the same
    ``name`` in the same ``storage`` is resumed, by this process or by others asking and
    telling at the same time. Close it (or use it in a ``with`` block) when done.

    Args:
        space: The hyperparameters and their bounds.
        **settings: As for :func:`genepool.run`: ``metric``, ``ready`` and ``budget``,
            and ``mode``, ``population``, ``storage``, ``seed``, ``loggers`` (a thread
            of this process sends the run to them until :meth:`close`: pass them to one
            process of a run only), ...
    """

    def __init__(self, space: Space, **settings: Any) -> None:
        self.ctx, self._owns_store = open_run(space, settings)
        self.ctx.checkpoints = ResidentCheckpoints(self.ctx.checkpoints)  # tell(durable=)
        self._closed = False
        ctx = self.ctx
        self.name = ctx.name
        self._info = WorkerInfo.with_driver(
            f"asktell-{os.getpid()}", started=ctx.clock.now(), driver=os.getpid()
        )
        self._collector = Collector(ctx)
        self._beats = Heartbeats(ctx, name=self._info.name)  # one thread for all claims
        # a torn or missing checkpoint falls back as a worker's does; ask/tell keeps no
        # sessions, so the loader's resident cache stays empty
        self._loader = Loader(ctx, Residents(1), self._collector)
        self._plateau = PlateauTracker(min_delta=ctx.policy.budget.min_delta)
        pop = ctx.store.population(ctx.name)
        if ctx.policy.budget.plateau is not None and any(m.ready_count for m in pop):
            self._plateau = PlateauTracker.restore(
                ctx.store.events(ctx.name), mode=pop.mode, min_delta=ctx.policy.budget.min_delta
            )
        #: Why the run ended (``None`` while members are left to train).
        self.stop_reason: str | None = None
        self._logging = contextlib.ExitStack()  # closed last by close()
        self._logging.enter_context(feeding(settings.get("loggers") or [], ctx.store, ctx.name))

    def __enter__(self) -> AskTell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ask -------------------------------------------------------------------------
    def ask(self, *, timeout: float = 0.0) -> Claim | None:
        """The member to train next, claimed for this process.

        The member's checkpoint is read now: one torn or missing falls back as a
        worker's member does, to its previous checkpoint, else the best other member's,
        else a fresh start, with a ``"fallback"`` event, and the claim starts from that.

        Args:
            timeout: Seconds to wait for a member held elsewhere (``0``: none;
                ``math.inf``: until one is claimable or the run is over), in real time
                whatever the run's ``clock``.

        Returns:
            The claim, or ``None`` when the run is over (:attr:`stop_reason` says why),
            or when no member is claimable within ``timeout`` seconds: the others are
            held by other processes, or wait at a synchronous barrier for members still
            training.

        Raises:
            InvalidArgumentError: ``timeout`` is not a number >= 0.
            CheckpointError: A checkpoint is refused, not torn: it needs
                ``trust_checkpoints=True``, or a newer genepool (the member is given back).
        """
        check("AskTell.ask", {"timeout": timeout}, ASK)
        ctx = self.ctx
        # the wait is real (it sleeps), so its end is too: the run's clock may be a
        # gp.ManualClock that moves only when told
        deadline = time.monotonic() + timeout
        while self.stop_reason is None:
            lease = ctx.store.claim(
                ctx.name, self._info, lease_seconds=ctx.lease_seconds, max_ahead=ctx.max_ahead
            )
            if lease is not None:
                claim = self._claim(lease)
                while isinstance(claim, Lease):  # a member given back handed over the next
                    claim = self._claim(claim)
                if claim is not None:
                    return claim
                continue
            pop = ctx.store.population(ctx.name)
            if not any(m.status == ACTIVE for m in pop):
                self.stop_reason = ended_because(pop)
            elif time.monotonic() >= deadline:
                return None
            else:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return None

    def _claim(self, lease: Lease) -> Claim | Lease | None:
        """A claim of the member ``lease`` holds; else it is given back (stopped, decided
        at a synchronous barrier, or waiting at one) and the result is the next member's
        lease if the write that gave it back claimed one (``None``: claim again)."""
        ctx = self.ctx
        pop = ctx.store.population(ctx.name)
        view = pop[lease.member]
        if view.crashes >= ctx.max_crashes:
            self._stop(lease, view, "crashed", status=FAILED)
            return None
        if view.pending:  # synchronous: the barrier is passed, decide now
            view = dataclasses.replace(view, pending=False)
            decision = decide(ctx.policy, ctx.seed, view, pop)
            if isinstance(decision, Continue):  # the commonest: one write with the next claim
                return self._give_back_and_claim(lease, member=view)
            self._carry_out(lease, view, decision)
            return None
        if ctx.synchronous and undecided(pop, view):
            return self._give_back_and_claim(lease)  # the barrier's other side: wait
        if view.checkpoint is not None and ctx.policy.budget_reached(view.checkpoint.counter):
            self._stop(lease, view, "budget")  # it copied a checkpoint with no budget left
            return None
        try:
            view, payload = self._starting_point(lease, view)
        except CheckpointError:  # refused (it needs trust, say): given back, and raised
            with contextlib.suppress(StaleLeaseError):
                ctx.store.commit(lease, release=True)
            raise
        return Claim(self, lease, view, payload, worker=self._info.name, heartbeats=self._beats)

    def _give_back_and_claim(
        self, lease: Lease, *, member: MemberView | None = None
    ) -> Lease | None:
        """Release ``lease`` (writing ``member``), and claim the next member in the same
        write where the store can (:attr:`Store.fuses_commit_and_claim`)."""
        ctx, info = self.ctx, self._info
        seconds, ahead = ctx.lease_seconds, ctx.max_ahead
        return ctx.store.commit_and_claim(
            lease, info, lease_seconds=seconds, max_ahead=ahead, member=member
        )

    def _starting_point(self, lease: Lease, view: MemberView) -> tuple[MemberView, Any]:
        """The member as its claim starts, and its checkpoint's payload (``None``: it
        has none). A checkpoint that is torn or missing falls back first, written with
        its ``"fallback"`` event (:meth:`Loader.fall_back`, the worker's own).

        Raises:
            CheckpointError: A checkpoint is refused (``trust``, a newer format).
        """
        try:
            return view, self._read(view)
        except Unreadable as err:
            view, _ = self._loader.fall_back(lease, view, err)
        return view, self._read(view)

    def _read(self, view: MemberView) -> Any:
        """The payload of ``view``'s checkpoint; ``None`` if it has none."""
        return None if view.checkpoint is None else self._loader.read(view.checkpoint.id)

    # -- tell ------------------------------------------------------------------------
    def tell(
        self,
        claim: Claim,
        *,
        state: Any = None,
        metrics: Sequence[Mapping[str, Any]] = (),
        durable: bool = True,
    ) -> Decision:
        """Record the round of ``claim``: checkpoint it, decide, and write the decision.

        Args:
            claim: What :meth:`ask` returned, told once.
            state: The state to checkpoint (plain data, arrays, tensors), or a function
                that returns it, called only if a checkpoint is taken (an exploit
                replaces the member's weights and takes none).
            metrics: Steps' metrics not given to :meth:`Claim.report`, in order.
            durable: ``False``: the checkpoint is *resident*, in this process's memory
                only; lost with it, the member rolls back to its last durable one
                (:mod:`genepool.checkpoints._resident`; ``keep`` must hold it).

        Returns:
            What the member does next: ``Continue()``; ``Exploit`` (its next claim
            starts from the donor's checkpoint with new hyperparameters); ``Explore``
            (new hyperparameters on its own weights); ``Stop``. A round told before it
            was ready, and a round of a synchronous run (decided once every member has
            told the same round), give ``Continue()``.

        Raises:
            StaleLeaseError: The claim's lease was lost (another process has the member
                now); nothing is recorded.
            InvalidArgumentError: ``claim`` is not an open claim of this run (told
                already, another's), or ``metrics`` not a list of dicts (as
                :meth:`Claim.report` takes them); nothing is recorded.
            TrainableError: A step's metrics lack the run's metric, or it is not a
                number; nothing is recorded.
            CheckpointError: ``state`` holds what a checkpoint does not store. Nothing is
                recorded and the claim stays open, as when a callable ``state`` raises:
                tell it again with another state (the ``metrics`` given are reported
                already), or leave it and its member goes back untouched.
        """
        self._check_open(claim)
        steps = tell_steps(metrics)
        for m in steps:  # each step checked before any is reported
            claim._checked(m, {}, owner="AskTell.tell")
        for m in steps:
            claim.report(m)
        if claim._beat.lost:
            claim.told = True
            raise StaleLeaseError(f"member {claim.member}: the lease was lost during the round")
        ctx, lease, view, record = self.ctx, claim._lease, claim._view, claim._record
        reports = record.reports()
        if record.bad:  # a score that is not a number: the round failed
            claim.told = True
            return self._failed(lease, view, reports, "non-finite score: " + record.bad[0])
        record.cut_short = not claim.ready
        new = after_round(view, record, step=claim.step, recent_window=ctx.recent_window)
        wait = ctx.synchronous and claim.ready  # decided past the barrier
        decision: Decision = Continue()
        seen = None
        if claim.ready and not wait:
            seen = with_member(ctx.store.population(ctx.name), new)
            decision = decide(ctx.policy, ctx.seed, new, seen)
        if not isinstance(decision, Exploit):  # raises before anything is written
            new = self._checkpointed(claim, new, state, durable=durable)
        claim.told = True
        events = self._best_so_far(new, seen)
        if isinstance(decision, Exploit):  # written with the round, which takes no checkpoint
            before = dataclasses.replace(new, checkpoint=view.checkpoint)
            if self._exploit(lease, new, decision, before=before, reports=reports, events=events):
                return self._after(decision)
            decision = Continue()  # the donor's checkpoint went meanwhile: go on as it is
            try:
                new = self._checkpointed(claim, new, state, durable=durable)
            except BaseException:  # nothing is written: the member goes back untouched
                with contextlib.suppress(StaleLeaseError):
                    ctx.store.commit(lease, release=True)
                raise
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

    def _check_open(self, claim: Any) -> None:
        """``claim`` is one of this run's, not told yet.

        Raises:
            InvalidArgumentError: It is not.
        """
        if not isinstance(claim, Claim):
            got = f"{shown(claim)} ({type(claim).__name__})"
        elif claim._owner is not self:
            got = f"member {claim.member}'s claim from another AskTell"
        elif claim.told:
            got = f"member {claim.member}'s claim, told already"
        else:
            return
        raise invalid(
            "AskTell.tell",
            "claim",
            "an open claim of this run, told once",
            got,
            "Fix: tell each claim that ask() returned once, to the AskTell that asked for it.",
        )

    def _checkpointed(
        self, claim: Claim, new: MemberView, state: Any, *, durable: bool = True
    ) -> MemberView:
        """``new`` with its round's checkpoint written (``state``, called if a function,
        and the member's stream) and the member's checkpoints before it kept as previous.

        Raises:
            CheckpointError: ``state`` holds what a checkpoint does not store (see
                :func:`genepool.checkpoints.encode`); nothing is written.
        """
        ctx = self.ctx
        called = callable(state) and not isinstance(state, type)  # a class is no state
        value = state() if called else state
        ckpt_id, size = ctx.write_checkpoint(new, value, claim._rng_state(), durable=durable)
        self._collector.last_size = size
        ref = dataclasses.replace(new.checkpoint, id=ckpt_id) if new.checkpoint else None
        return dataclasses.replace(
            new, checkpoint=ref, previous=kept_previous(claim._view, ctx.keep)
        )

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
            # once this is closed, a store it opened is the result's: reopened if asked
            owns_store=self._owns_store and self._closed,
        )

    def close(self) -> None:
        """Delete the checkpoints replaced meanwhile and close the store this opened."""
        try:
            self._beats.close()
            self._collector.collect()
            self.ctx.checkpoints.drain()
            self._logging.close()  # what is left, and the lineages
        finally:
            self._closed = True
            if self._owns_store:
                close_store(self.ctx.store)
