"""One round of a member, as the paper tells it, in data.

A round is: ``step`` and ``eval`` until the member is ``ready`` (:class:`RoundRecord`
keeps what each step reported and says when the round is over), the member's record after
the round (:func:`after_round`), the decision (:func:`decide`), and what each kind of
decision makes of the record: :func:`exploited` (the donor's checkpoint and the explored
hyperparameters), :func:`explored` (new hyperparameters on its own weights),
:func:`stopped`, and :func:`failed` for a round that raised.

Everything here returns data and touches no store, file or process: the drivers (the
worker, which trains members in sessions, and ask/tell, where the user trains them) write
it. Both therefore run the same PBT.

Example:
    >>> import genepool as gp
    >>> view = gp.MemberView(id=0, hparams={"lr": 0.1})
    >>> new, event = explored(view, Explore({"lr": 0.2}), now=0.0)
    >>> new.hparams, event.kind
    ({'lr': 0.2}, 'explore')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from genepool._errors import HyperparameterNotAppliedError, TrainableError
from genepool._rng import decision_stream
from genepool.decision import Decision, Exploit, Explore, Stop
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

__all__ = [
    "RoundRecord",
    "after_round",
    "check_applied",
    "decide",
    "exploited",
    "explored",
    "failed",
    "kept_previous",
    "metric_value",
    "stopped",
    "undecided",
    "with_member",
]


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


def score_of(metric: str, metrics: Mapping[str, Any], *, fix: str) -> float:
    """``metrics[metric]`` as a number (``eval``).

    Raises:
        TrainableError: The report has no ``metric`` (``fix`` says what to do), or it is
            not a number.
    """
    if metric not in metrics:
        raise TrainableError(
            f"The trainable reported {sorted(metrics)} without the run's metric "
            f"{metric!r}. Fix: {fix}"
        )
    return metric_value(metric, metrics[metric])


class RoundRecord:
    """``step`` and ``eval``: what one round of a member reported, step by step, and when
    the round is over.

    Args:
        view: The member as the round began.
        policy: The run's policy (its ready rule and budget).
        metric: The run's metric.
        metrics_every: Metrics other than the metric and the ready counter are kept only
            at steps that are multiples of this, and at the round's last step.
        began: The time the round began.
        flushed_at: When its reports were last written (default: ``began``).
    """

    def __init__(
        self,
        view: MemberView,
        *,
        policy: Policy,
        metric: str,
        metrics_every: int,
        began: float,
        flushed_at: float | None = None,
    ) -> None:
        self.member = view.id
        self.policy = policy
        self.metric = metric
        self.counter_name = policy.ready.counter
        self.every = metrics_every
        self.kept = frozenset((metric, self.counter_name))
        self.began = began
        #: The ready counter of the member's last ready: readies keep their rhythm across
        #: interruptions.
        self.last_ready = view.ready_counter
        #: The ready counter now (``policy.ready.counter``: steps, or a reported metric).
        self.counter = view.checkpoint.counter if view.checkpoint is not None else 0.0
        #: The reports as (step, metrics, time), made :class:`Report` objects only when
        #: taken: a Report per step costs tens of microseconds of cold code.
        self.raw: list[tuple[int, dict[str, Any], float]] = []
        self.scores: list[float] = []
        #: Why the round failed without raising (a score that is not finite).
        self.bad: list[str] = []
        #: The round ended early (a stop, a lost lease), not at a ready.
        self.cut_short = False
        self.flushed_at = began if flushed_at is None else flushed_at

    def add(self, step: int, metrics: Mapping[str, Any], now: float) -> None:
        """Keep what ``step`` reported."""
        raw = self.raw
        if self.every > 1 and raw:  # the one before this is not the round's last
            prev_step, prev, prev_time = raw[-1]
            if prev_step % self.every and len(prev) > len(self.kept & prev.keys()):
                raw[-1] = (prev_step, {k: v for k, v in prev.items() if k in self.kept}, prev_time)
        raw.append((step, dict(metrics), now))

    def ends_round(self, step: int, metrics: Mapping[str, Any], now: float) -> bool:
        """``eval`` and ``ready``: whether the round is over after ``step`` reported
        ``metrics``: the member is ready, its budget is used, or its score is not finite.

        Raises:
            TrainableError: The report lacks the metric or the ready counter.
        """
        fix = "include it in every report, or pass metric= one of those."
        value = score_of(self.metric, metrics, fix=fix)
        if not math.isfinite(value):
            self.bad.append(f"the metric {self.metric!r} was {value} at step {step}")
            return True
        self.scores.append(value)
        counter: float
        if self.counter_name == "steps":
            counter = step
        else:
            try:
                counter = float(metrics[self.counter_name])
            except KeyError:
                raise TrainableError(
                    f"The ready rule counts {self.counter_name!r}, but a report had only "
                    f"{sorted(metrics)}. Fix: report the cumulative {self.counter_name!r} "
                    "with every step."
                ) from None
        self.counter = counter
        return self.policy.budget_reached(counter) or self.policy.ready.due(
            counter=counter, last=self.last_ready, elapsed=now - self.began
        )

    def take(self, now: float) -> list[Report]:
        """The reports not taken yet (a long round flushes them to the store)."""
        reports = self.reports()
        self.raw.clear()
        self.flushed_at = now
        return reports

    def reports(self) -> list[Report]:
        """The round's reports not taken yet."""
        return [Report(self.member, *r) for r in self.raw]


def after_round(
    view: MemberView, record: RoundRecord, *, step: int, recent_window: int
) -> MemberView:
    """The member after its round, trained to ``step``: its new score, its ready count,
    and its checkpoint as the decision sees it (its id ``""`` until it is written, which
    a member about to exploit, its weights replaced, never needs); and, if the explore
    strategy reads them, the round among its latest intervals (:attr:`MemberView.intervals`)."""
    scores = record.scores
    score = scores[-1] if scores else view.score
    ready = not record.cut_short
    counter = record.counter
    ref = CheckpointRef("", view.id, step, counter, score, view.hparams)
    kept, intervals = view.intervals, record.policy.intervals
    if intervals and ready and scores:
        kept = _with_interval(view, counter, scores[-1], intervals)
    return dataclasses.replace(
        view,
        step=step,
        checkpoint=ref,
        score=score,
        recent=(view.recent + tuple(scores))[-recent_window:],
        failures=0,
        # progress: only a run of crashes without it stops the member (max_crashes)
        crashes=0 if step > view.step else view.crashes,
        ready_count=view.ready_count + 1 if ready else view.ready_count,
        ready_counter=counter if ready else view.ready_counter,
        # what it ranks by from now on, even once it has copied another (Truncation)
        curve=view.curve_with(counter, scores[-1]) if ready and scores else view.curve,
        intervals=kept,
    )


def _with_interval(
    view: MemberView, counter: float, score: float, keep: int
) -> tuple[tuple[float, float, Mapping[str, Any]], ...]:
    """``view``'s intervals with the round that ended at ``counter`` scoring ``score``:
    the change of its score per unit of the ready counter since the checkpoint it started
    from (its own, or the donor's it copied), with the values it trained with. A round
    with no such start (a member's first) adds none."""
    start = view.checkpoint
    if start is None or start.score is None or not math.isfinite(start.score):
        return view.intervals
    if counter <= start.counter or not math.isfinite(score):
        return view.intervals
    change = (score - start.score) / (counter - start.counter)
    kept = [row for row in view.intervals if row[0] < counter]  # not from before a rewind
    tail = kept[len(kept) - keep + 1 :] if keep > 1 else []
    return (*tail, (counter, change, dict(view.hparams)))


def decide(
    policy: Policy,
    seed: int,
    view: MemberView,
    population: Population,
    *,
    returned: bool = False,
    failures: int = 0,
) -> Decision:
    """The decision for the ready member ``view`` in ``population``, drawn from its own
    stream (the run's ``seed``, its id and ready count, and ``failures`` after a failed
    round): a seeded run decides the same in every driver. ``returned``: its function
    trainable returned, so it stops."""
    decision = policy.decide_with(
        population, view, lambda: decision_stream(seed, view.id, view.ready_count, failures)
    )
    if returned and not isinstance(decision, Stop):
        decision = Stop("returned")
    return decision


def exploited(
    view: MemberView, decision: Exploit, *, previous: tuple[CheckpointRef, ...], now: float
) -> tuple[MemberView, Event]:
    """``exploit`` then ``explore``: the member continues from the donor's checkpoint with
    the explored hyperparameters, one generation on; ``previous`` are the checkpoints it
    keeps of its own (:func:`kept_previous`). The ``"exploit"`` event records both sides."""
    donor = decision.checkpoint
    new_hp = dict(decision.hparams)
    generation = view.generation + 1
    new = dataclasses.replace(
        view,
        hparams=new_hp,
        step=donor.step,
        generation=generation,
        parent=decision.donor,
        checkpoint=donor,
        score=donor.score,
        recent=(),
        ready_counter=donor.counter,
        previous=previous,
    )
    data = {
        "donor": decision.donor,
        "donor_generation": decision.donor_generation,
        "checkpoint": donor.id,
        "donor_step": donor.step,
        "donor_score": donor.score,
        "old_step": view.step,
        "old_score": view.score,
        "old_hparams": dict(view.hparams),
        "new_hparams": new_hp,
        "generation": generation,
        "ready_count": view.ready_count,
    }
    new = _with_account(new, data, decision)
    return new, Event("exploit", view.id, donor.step, data, now)


def explored(view: MemberView, decision: Explore, *, now: float) -> tuple[MemberView, Event]:
    """``explore`` alone: new hyperparameters on the member's own weights."""
    new_hp = dict(decision.hparams)
    data: dict[str, Any] = {"old_hparams": dict(view.hparams), "new_hparams": new_hp}
    new = _with_account(dataclasses.replace(view, hparams=new_hp), data, decision)
    return new, Event("explore", view.id, view.step, data, now)


def _with_account(
    view: MemberView, data: dict[str, Any], decision: Exploit | Explore
) -> MemberView:
    """What the rules said of ``decision`` put in its event's ``data``: a greediness
    control's judgement of the donor's lead (``"greedy"``, gp.Calm) and the explore
    strategy's account of the values (``"explored"``, gp.PB2); and ``view`` keeping what
    the strategy left for its next decision (its ``"state"``, if any)."""
    if decision.judgement is not None:
        data["greedy"] = dict(decision.judgement)
    if decision.explored is None:
        return view
    data["explored"] = dict(decision.explored)
    state = decision.explored.get("state")
    return view if state is None else dataclasses.replace(view, explore_state=dict(state))


def stopped(
    view: MemberView, reason: str, *, now: float, status: str = FINISHED
) -> tuple[MemberView, Event]:
    """The member trains no more: finished, or failed (``status``)."""
    new = dataclasses.replace(
        view, status=FAILED if status == FAILED else FINISHED, stop_reason=reason
    )
    return new, Event("stop", view.id, view.step, {"reason": reason}, now)


def failed(
    view: MemberView, *, error: str, traceback: str, steps: int, now: float
) -> tuple[MemberView, Event]:
    """The member's round raised (``error``) after ``steps`` reported steps: it goes back
    to its checkpoint with one failure more (the policy stops it after ``max_failures``)."""
    failures = view.failures + 1
    step = view.checkpoint.step if view.checkpoint is not None else 0
    data = {"error": error, "traceback": traceback, "failures": failures}
    event = Event("failure", view.id, step + steps, data, now)
    return dataclasses.replace(view, step=step, failures=failures), event


def kept_previous(view: MemberView, keep: int) -> tuple[CheckpointRef, ...]:
    """The checkpoints ``view`` keeps as its previous ones once its current one is
    replaced: the current one, then its previous ones, newest first, ``keep`` of them."""
    held = (view.checkpoint, *view.previous) if view.checkpoint is not None else view.previous
    kept: list[CheckpointRef] = []
    for ref in held:
        if len(kept) < keep and all(k.id != ref.id for k in kept):
            kept.append(ref)
    return tuple(kept)


def undecided(population: Population, view: MemberView) -> bool:
    """Whether another active member waits for its decision at a synchronous barrier in a
    round ``view`` has done (then ``view`` may not train on: that decision must not see
    its next round)."""
    return any(
        m.pending and m.status == ACTIVE and m.ready_count <= view.ready_count and m.id != view.id
        for m in population
    )


def with_member(population: Population, view: MemberView) -> Population:
    """``population`` with ``view`` in place of its member (what the snapshot derived,
    its ranking say, is updated, not rebuilt)."""
    return population.with_members([view])


def _same_value(a: Any, b: Any) -> bool:
    """Equal, floats within a relative 1e-6 (a value that went through float32)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def check_applied(
    in_effect: Mapping[str, Any] | None,
    decided: Mapping[str, Any],
    *,
    who: str,
    fix: str,
    same: Callable[[Any, Any], bool] = _same_value,
) -> None:
    """The hyperparameters a trainable says are in effect are the ones decided.

    Args:
        in_effect: What the trainable says (``hparams_in_effect``); ``None``: it cannot say.
        decided: The values decided.
        who: Whose they are, for the message ("Member 3").
        fix: The message's fix.
        same: Whether a value in effect is the decided one (default: equal, floats within
            a relative 1e-6).

    Raises:
        HyperparameterNotAppliedError: A value in effect differs from the decided one.
    """
    if in_effect is None:
        return
    wrong = {
        k: (in_effect[k], v)
        for k, v in decided.items()
        if k in in_effect and not same(in_effect[k], v)
    }
    if wrong:
        detail = ", ".join(f"{k}: in effect {a!r}, decided {b!r}" for k, (a, b) in wrong.items())
        raise HyperparameterNotAppliedError(
            f"{who}: the trainable's hyperparameters in effect differ from the decided ones "
            f"({detail}). Fix: {fix}"
        )
