"""One round of a claimed member, trained in a session: the paper's loop, in its order.

:meth:`Trainer.round` trains the member (``step``, each report recorded: ``eval``) until it
is ``ready``, checkpoints the round, decides with the member's new score among the
others', and carries the decision out, each kind in one method: :meth:`Trainer._exploit`
(then explore: the donor's checkpoint with the explored hyperparameters),
:meth:`Trainer._explore` (new hyperparameters on its own weights) and :meth:`Trainer.stop`.
What a round makes of the member's record is plain data from :mod:`genepool.round`,
shared with the other drivers; this module loads and trains sessions and writes that
data to the store.

Two writes are saved where they can be: a round that ends in an exploit is written with
the exploit and never checkpointed (its weights are replaced), and a round's last write
waits for the worker's next claim (:mod:`genepool._deferred`). A synchronous member
checkpoints first and decides once the round's barrier is passed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

from genepool._collect import Collector
from genepool._deferred import DeferredWrite
from genepool._errors import (
    CheckpointError,
    CollectedPinError,
    HyperparameterNotAppliedError,
    StaleLeaseError,
    StorageError,
    TrainableError,
)
from genepool._heartbeat import Heartbeat
from genepool._loading import Loader, MemberCodeFailed, own_code
from genepool._redact import shown
from genepool._residents import Resident, Residents
from genepool._sessions import _Returned, _Session
from genepool.decision import Continue, Decision, Exploit, Explore, Stop
from genepool.member import (
    FAILED,
    FINISHED,
    CheckpointRef,
    Event,
    MemberView,
    Population,
    Report,
)
from genepool.policy.stop import BEST_EVENT, PlateauTracker
from genepool.round import (
    RoundRecord,
    after_round,
    decide,
    exploited,
    explored,
    failed,
    kept_previous,
    score_of,
    stopped,
    undecided,
    with_member,
)
from genepool.store import Lease
from genepool.store._codec import unstorable

if TYPE_CHECKING:
    from genepool._context import RunContext

__all__ = ["Trainer"]

log = logging.getLogger("genepool.worker")


@dataclasses.dataclass
class _WithExploit:
    """A round that ends in an exploit, written with it in one write: its reports and
    events, the member's checkpoint before the round, what checkpoints the round if the
    exploit is abandoned (the donor's checkpoint was collected meanwhile), and the
    population the decision saw."""

    reports: Sequence[Report]
    events: Sequence[Event]
    before: CheckpointRef | None
    checkpoint: Callable[[], MemberView]
    seen: Population | None


class Trainer:
    """Trains rounds of the members a worker claims, in sessions it keeps resident.

    Args:
        ctx: The run.
        residents: The worker's resident sessions.
        beat: The worker's heartbeat (each step is progress; a lost lease ends the round).
    """

    def __init__(self, ctx: RunContext, *, residents: Residents, beat: Heartbeat) -> None:
        self.ctx = ctx
        self.residents = residents
        self.collector = Collector(ctx)
        self.loader = Loader(ctx, residents, self.collector)
        self.beat = beat
        self.deferred = DeferredWrite(ctx.store)
        #: The run's best score so far, for a plateau stop (restored on a resume).
        self.plateau = PlateauTracker(min_delta=ctx.policy.budget.min_delta)
        #: The last round gave its member back at a synchronous barrier: wait a moment.
        self.held_back = False

    def round(self, lease: Lease) -> Population:
        """One round of the claimed member, or what stands in for one: a member that
        crashed its workers too often stops; a synchronous member past its barrier
        decides; one whose barrier is not passed yet is given back."""
        ctx = self.ctx
        pop = ctx.store.population(ctx.name)
        read_at = ctx.clock.now()
        self.residents.drop_stale(pop)
        view = pop[lease.member]
        if view.crashes >= ctx.max_crashes:
            return self.stop(lease, view, "crashed", status=FAILED)
        if view.pending:  # synchronous: the barrier is passed, decide now
            view = dataclasses.replace(view, pending=False)
            return self._carry_out(lease, view, decide(ctx.policy, ctx.seed, view, pop))
        if ctx.synchronous and ctx.idle_wait is not None and undecided(pop, view):
            # the barrier's other side: another worker has yet to decide a member in a
            # round this one has done, and that decision must not see this one's next
            # round; give the member back and claim again a moment later
            self.held_back = True
            return ctx.store.commit(lease, release=True)
        return self._train(lease, view, pop, read_at)

    def _train(self, lease: Lease, view: MemberView, pop: Population, read_at: float) -> Population:
        """The paper's round: step and eval until ready, checkpoint, decide, carry the
        decision out. ``pop`` is the population as read at ``read_at``, when it began."""
        ctx = self.ctx
        if view.checkpoint is not None and ctx.policy.budget_reached(view.checkpoint.counter):
            # it copied a checkpoint that has used the whole budget: nothing left to train
            return self.stop(lease, view, "budget")
        try:
            view, res, fell_back = self.loader.load(lease, view)
        except MemberCodeFailed as err:  # its setup or load raised
            return self._failed_round(lease, view, [], err.cause, [])
        if fell_back is not None:
            pop = fell_back

        # step and eval until ready
        record = RoundRecord(
            view,
            policy=ctx.policy,
            metric=ctx.metric,
            metrics_every=ctx.metrics_every,
            flushed_at=ctx.clock.now(),
            began=ctx.clock.now(),
        )
        failure, returned = self._step_until_ready(lease, res.session, record)
        self.beat.round_took(ctx.clock.now() - record.began)
        reports = record.reports()
        if self.beat.lost:
            raise StaleLeaseError(f"member {view.id}: the lease was lost during the round")
        if failure is not None or record.bad:
            return self._failed_round(lease, view, reports, failure, record.bad)
        if returned and not reports:
            return self.stop(lease, view, "returned", reports)
        new = after_round(
            view, record, step=res.session.member.step, recent_window=ctx.recent_window
        )
        ready = not record.cut_short

        # decide, with the member's new score among the others' (past the barrier, for a
        # synchronous member: it waits there from the very write that counts its round,
        # so no other worker can see the round done but the member not waiting)
        wait = ctx.synchronous and ready and not returned
        decision: Decision | None = None
        # the population with this round in it: the one read when the round began if that
        # is recent (reports reach the store at least that often anyway), else now
        recent = pop if ctx.clock.now() - read_at < ctx.flush_seconds else None
        seen: Population | None = None
        if ready and not wait:
            seen = self._with(new, recent)
            decision = decide(ctx.policy, ctx.seed, new, seen, returned=returned)
        events = self._best_so_far(new, seen, recent)
        if isinstance(decision, Exploit):
            # the round is written with the exploit, in one write, and never checkpointed:
            # its weights are replaced by the donor's
            checkpoint = functools.partial(self._checkpoint, res, view, new)
            written = _WithExploit(reports, events, view.checkpoint, checkpoint, seen)
            return self._exploit(lease, new, decision, round_=written)

        # checkpoint
        try:
            new = self._checkpoint(res, view, new)
        except MemberCodeFailed as err:  # its save raised: the round is lost
            return self._failed_round(lease, view, reports, err.cause, [])
        plain = isinstance(decision, Continue)
        if plain and seen is not None and self.deferred.leave(lease, new, reports, events):
            # the member goes on: its round is written with the next claim, in one write
            self.collector.replace(view, new, now=False)
            return self._with(new, seen)
        pop = ctx.store.commit(
            lease,
            member=dataclasses.replace(new, pending=True) if wait else new,
            reports=reports,
            events=events,
            release=wait or not ready or plain,
        )
        self.collector.replace(view, new)
        if decision is None or plain:  # at the barrier, stopped mid-round, or going on
            return pop
        return self._carry_out(lease, new, decision)

    def _step_until_ready(
        self, lease: Lease, session: _Session, record: RoundRecord
    ) -> tuple[Exception | None, bool]:
        """Train the member: ``step`` (the trainable's), each report recorded (``eval``),
        until it is ``ready``, its budget is used, or the run stops. Returns the exception
        its code raised, if any, and whether its function returned."""
        ctx = self.ctx
        clock, beat, seconds = ctx.clock, self.beat, ctx.policy.budget.seconds

        def observe(metrics: Mapping[str, Any]) -> bool:
            """One step's report: whether the round is over."""
            step = session.advance()
            bad = unstorable(metrics)
            if bad is not None:
                name, value = bad
                if name == record.metric:  # the run's metric: its own message says more
                    score_of(name, metrics, fix="report it as a number.")
                raise TrainableError(
                    f"Member {lease.member} reported {name}={shown(value)} at step {step}, "
                    "which the store cannot keep: a metric is a number, a string, a boolean, "
                    "None, or a list, tuple or dict of them (not one that holds itself). Fix: "
                    f"report a plain value, e.g. {name}=float(value), or leave it out."
                )
            now = clock.now()
            beat.progress(now)
            record.add(step, metrics, now)
            if now - record.flushed_at >= ctx.flush_seconds:  # a long round: flush
                ctx.store.commit(lease, reports=record.take(now))
            if record.ends_round(step, metrics, now):
                return True
            if seconds is not None and now - ctx.started >= seconds:
                ctx.stop_reason = "time"
                ctx.stop_event.set()
            if ctx.stop_event.is_set() or beat.lost:
                record.cut_short = True
                return True
            return False

        try:
            session.run_round(observe)
        except _Returned:
            return None, True
        except (TrainableError, CheckpointError, HyperparameterNotAppliedError, StorageError):
            raise
        except Exception as err:
            return err, False
        return None, False

    def _checkpoint(self, res: Resident, view: MemberView, new: MemberView) -> MemberView:
        """Checkpoint the round ``view`` trained: ``new`` with the checkpoint's id, and
        ``view``'s checkpoints kept as its previous ones."""
        state = own_code(res.session.save)
        ckpt_id, size = self.ctx.write_checkpoint(new, state, res.session.rng_state())
        self.collector.last_size = size
        res.checkpoint = ckpt_id
        ref = dataclasses.replace(new.checkpoint, id=ckpt_id) if new.checkpoint else None
        return dataclasses.replace(new, checkpoint=ref, previous=kept_previous(view, self.ctx.keep))

    def _best_so_far(
        self, new: MemberView, seen: Population | None, recent: Population | None
    ) -> list[Event]:
        """A better score is what can raise the run's best: the plateau tracker's new state,
        if it changed, is recorded with the round (a resumed run starts from it)."""
        if self.ctx.policy.budget.plateau is None:
            return []
        if not self.plateau.observe(seen if seen is not None else self._with(new, recent)):
            return []
        data = self.plateau.event_data()
        return [Event(BEST_EVENT, new.id, new.step, data, self.ctx.clock.now())]

    # -- carrying decisions out: one method for each kind -------------------------------
    def _carry_out(self, lease: Lease, view: MemberView, decision: Decision) -> Population:
        """Carry out ``decision`` for the member ``view``, whose round is written."""
        if isinstance(decision, Continue):
            return self.ctx.store.commit(lease, member=view, release=True)
        if isinstance(decision, Exploit):
            return self._exploit(lease, view, decision)
        if isinstance(decision, Explore):
            return self._explore(lease, view, decision)
        if isinstance(decision, Stop):
            return self.stop(lease, view, decision.reason)
        assert_never(decision)

    def _exploit(
        self,
        lease: Lease,
        view: MemberView,
        decision: Exploit,
        *,
        round_: _WithExploit | None = None,
    ) -> Population:
        """Exploit, then explore: copy the donor's checkpoint and take the explored
        hyperparameters. ``round_``: the round just trained, written with the exploit."""
        ctx = self.ctx
        before = view  # the member as it stood, holding its checkpoint before the round
        reports: Sequence[Report] = ()
        events: Sequence[Event] = ()
        if round_ is not None:
            before = dataclasses.replace(view, checkpoint=round_.before)
            reports, events = round_.reports, round_.events
        previous = kept_previous(before, ctx.keep)
        new, event = exploited(view, decision, previous=previous, now=ctx.clock.now())
        pin = decision.checkpoint.id  # the donor's checkpoint, kept while the exploit needs it
        if round_ is not None and self.deferred.enabled:
            # the round, the exploit and its pin go in one write with the next claim; the
            # donor's weights are loaded when the member next trains, here or elsewhere
            checkpoint = round_.checkpoint

            def abandon() -> None:
                kept = checkpoint()  # never switched: its own weights, checkpointed now
                ctx.store.commit(lease, member=kept, reports=reports, events=events, release=True)

            self.deferred.leave(lease, new, reports, [*events, event], pin=pin, abandon=abandon)
            self.collector.replace(before, new, now=False)
            return self._with(new, round_.seen)
        try:
            # the pin and the member's new row in one write: the donor's bytes stay
            pop = ctx.store.commit(
                lease, member=new, reports=reports, events=[*events, event], pin=pin
            )
        except CollectedPinError as err:
            log.info("member %d: exploit of %s abandoned (%s)", view.id, pin, err)
            if round_ is None:
                return ctx.store.commit(lease, member=view, release=True)
            kept = round_.checkpoint()  # it goes on with its own weights: checkpoint them
            pop = ctx.store.commit(lease, member=kept, reports=reports, events=events, release=True)
            self.collector.replace(before, kept)
            return pop
        # the donor's weights, loaded now that they are pinned
        try:
            new, _, fell_back = self.loader.load(lease, new)
        except MemberCodeFailed as err:  # its load or apply_hparams raised
            return self._failed_round(lease, new, [], err.cause, [])
        if fell_back is not None:
            pop = fell_back
        self.collector.replace(before, new)
        if not self.deferred.leave(lease):
            return ctx.store.commit(lease, release=True)
        return pop

    def _explore(self, lease: Lease, view: MemberView, decision: Explore) -> Population:
        """Explore alone: new hyperparameters on the member's own weights, recorded as an
        ``explore`` event, then applied to its resident session (if any) and checked."""
        ctx = self.ctx
        res = self.residents.get(view.id)
        new, event = explored(view, decision, now=ctx.clock.now())
        if self.deferred.leave(lease, new, events=[event]):
            pop = self._with(new)
        else:
            pop = ctx.store.commit(lease, member=new, events=[event], release=True)
        if res is not None:
            try:
                own_code(res.session.switch, new.hparams, None)
            except MemberCodeFailed as err:  # its lease is gone: start afresh next
                log.warning("member %d: apply_hparams raised %s", view.id, err)
                self.residents.drop(view.id)
                return pop
            res.hparams = new.hparams
            self.loader.verify(res.session, new.hparams, view.id)
        return pop

    def stop(
        self,
        lease: Lease,
        view: MemberView,
        reason: str,
        reports: Sequence[Report] = (),
        *,
        status: str = FINISHED,
    ) -> Population:
        """The member trains no more: its session ends, and it is written finished (or
        failed)."""
        res = self.residents.pop(view.id)
        if res is not None:
            res.session.finish()
        new, event = stopped(view, reason, now=self.ctx.clock.now(), status=status)
        return self.ctx.store.commit(
            lease, member=new, reports=reports, events=[event], release=True
        )

    def _failed_round(
        self,
        lease: Lease,
        view: MemberView,
        reports: list[Report],
        failure: BaseException | None,
        bad: list[str],
    ) -> Population:
        """The member's round raised (``failure``) or scored what is not a number
        (``bad``): it goes back to its checkpoint with one failure more, and the policy
        decides (it stops the member after ``max_failures``)."""
        ctx = self.ctx
        if failure is not None:
            error = f"{type(failure).__name__}: {failure}"
            tb = "".join(traceback.format_exception(failure))
        else:
            error, tb = "non-finite score: " + bad[0], ""
        log.warning("member %d failed after step %d: %s", view.id, view.step + len(reports), error)
        self.residents.drop(view.id)
        new, event = failed(
            view, error=error, traceback=tb, steps=len(reports), now=ctx.clock.now()
        )
        pop = ctx.store.commit(lease, member=new, reports=reports, events=[event])
        if ctx.stop_event.is_set():
            ctx.store.commit(lease, release=True)
            return pop
        decision = decide(ctx.policy, ctx.seed, new, pop, failures=new.failures)
        if isinstance(decision, Stop) and decision.reason == "failed":
            return self.stop(lease, new, "failed", status=FAILED)
        return self._carry_out(lease, new, decision)

    def _with(self, view: MemberView, population: Population | None = None) -> Population:
        """``population`` (default: as the store has it now) with ``view`` in place of its
        member."""
        now = self.ctx.store.population(self.ctx.name) if population is None else population
        return with_member(now, view)
