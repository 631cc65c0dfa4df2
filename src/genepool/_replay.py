"""Replay: train one fresh member with a schedule PBT found, with no population.

A schedule (:meth:`genepool.Result.schedule`, ``genepool export``) lists the
hyperparameters along one member's line and the changes that set them. :func:`replay`
trains a single member through it: each change is applied at its step exactly as the
worker applies it (through the same session adapters; a function trainable is restarted
from its state), and the values in effect are checked after every change.

With the run's seed the replay retraces the run's random streams: a line starts on its
root member's stream ``(seed, member, generation 0)`` and, at each exploit, is reseeded to
the recipient's stream ``(seed, recipient, generation)``, and the trainable sees the
recipient's :attr:`Member.id`, as the worker would. A trainable that depends only on its
hyperparameters, its state and ``member.rng`` then reproduces the member's scores of a
serial run exactly. A replay with another seed asks the other question: does the schedule,
not the luck of the draws, make the model?

What a schedule does not record is not retraced: a failed round (the worker reseeds a
member that failed with its count of failures, and an exploit right after one with that
count too, where a replay uses 0), and randomness from outside ``member.rng``.

This lives beside the worker, not in :mod:`genepool.analysis` (whose functions are pure
readers of a run's events): a replay trains, and shares the worker's sessions, random
streams and checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genepool._errors import TrainableError, invalid
from genepool._rng import member_stream
from genepool._sessions import _Returned, _Session, make_session
from genepool.analysis import Change, Schedule
from genepool.checkpoints import decode, encode
from genepool.round import check_applied, score_of
from genepool.trainable import Member, TrainableLike, check_trainable

__all__ = ["ReplayResult", "replay"]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay trained.

    Attributes:
        score: The metric at the last step trained (``None`` if no step was trained).
        scores: The metric at each step, ``scores[i]`` for step ``i + 1``.
        metrics: Every metric the trainable reported, per step.
        step: How many steps were trained (fewer than asked if a function returned).
        metric: The metric followed.
        seed: The seed of the random streams.
        hparams: The hyperparameters in effect at the end.
        state: The trainable's final state (what ``save`` returns; ``None`` for a
            function that gave no state).
        expected: The score the schedule's member reached in the run, for comparison.
    """

    score: float | None
    scores: tuple[float, ...]
    metrics: tuple[Mapping[str, Any], ...]
    step: int
    metric: str
    seed: int
    hparams: Mapping[str, Any]
    state: Any
    expected: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the scores, the seed and the hyperparameters at the end."""
        return {
            "metric": self.metric,
            "score": _finite_or_none(self.score),
            "expected": _finite_or_none(self.expected),
            "step": self.step,
            "seed": self.seed,
            "hparams": dict(self.hparams),
            "scores": [_finite_or_none(s) for s in self.scores],
        }


def replay(
    trainable: TrainableLike,
    schedule: Schedule | str | os.PathLike[str],
    *,
    steps: int | None = None,
    seed: int | None = None,
    metric: str | None = None,
    retrace: bool = True,
) -> ReplayResult:
    """Train one fresh member with a schedule's hyperparameters, changing them on time.

    Args:
        trainable: The run's trainable (a :class:`genepool.Trainable` subclass or function).
        schedule: A :class:`genepool.analysis.Schedule`, or the path of one saved as JSON
            (``genepool export``).
        steps: How many steps to train; the schedule's ``final_step`` by default. Past the
            schedule's end its last values stay in effect.
        seed: The seed of the random streams; the run's (stored in the schedule) by
            default, else 0.
        metric: The metric to follow; the run's (stored in the schedule) by default.
        retrace: Follow the run's random streams and member ids along the line (reseed at
            each exploit, pass the donor's state through a checkpoint's save and load);
            ``False`` trains one member on one stream, changing only hyperparameters.

    Returns:
        The final score, the per-step scores and the final state.

    Example:
        >>> import genepool as gp
        >>> class Climb(gp.Trainable):
        ...     def setup(self, hparams): self.x, self.lr = 0.0, hparams["lr"]
        ...     def apply_hparams(self, hparams): self.lr = hparams["lr"]
        ...     def step(self):
        ...         self.x += self.lr * (1.0 + 0.1 * self.member.rng.standard_normal())
        ...         return {"score": self.x}
        ...     def save(self): return {"x": self.x}
        ...     def load(self, state): self.x = state["x"]
        >>> result = gp.run(Climb, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=4, ready=gp.Every(5), budget=gp.Budget(steps=20),
        ...                 seed=0)
        >>> replayed = gp.replay(Climb, result.schedule())
        >>> replayed.step, replayed.score == result.best.score
        (20, True)
    """
    check_trainable(trainable)
    if isinstance(schedule, str | os.PathLike):
        schedule = Schedule.load(schedule)
    elif not isinstance(schedule, Schedule):
        raise invalid(
            "replay",
            "schedule",
            "a genepool.analysis.Schedule or the path of a schedule file",
            repr(schedule),
            "Fix: result.schedule(), or the file `genepool export` wrote.",
        )
    total = schedule.final_step if steps is None else steps
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise invalid("replay", "steps", "an int >= 0", repr(steps))
    the_seed = seed if seed is not None else schedule.seed if schedule.seed is not None else 0
    if not isinstance(the_seed, int) or isinstance(the_seed, bool):
        raise invalid("replay", "seed", "an int", repr(seed))
    the_metric = metric if metric is not None else schedule.metric
    if not isinstance(the_metric, str):
        raise invalid(
            "replay",
            "metric",
            "the name of the metric to follow",
            repr(metric),
            "The schedule names none: pass metric='accuracy', say.",
        )
    return _Replay(trainable, schedule, total, the_seed, the_metric, retrace).run()


class _Replay:
    """One replay: a member handle, its session, and the changes still to apply."""

    def __init__(
        self,
        trainable: TrainableLike,
        schedule: Schedule,
        steps: int,
        seed: int,
        metric: str,
        retrace: bool,
    ) -> None:
        self.schedule = schedule
        self.steps = steps
        self.seed = seed
        self.metric = metric
        self.retrace = retrace
        first = schedule.changes[0]
        self.hparams: Mapping[str, Any] = dict(first.hparams)
        self.handle = Member(
            id=first.member, hparams=self.hparams, rng=member_stream(seed, first.member, 0, 0)
        )
        self.session: _Session = make_session(trainable, self.handle)
        self.metrics: list[Mapping[str, Any]] = []
        self.scores: list[float] = []
        self.until = 0  # the step the current round trains to

    def run(self) -> ReplayResult:
        changes: Sequence[Change] = self.schedule.changes
        pending = [c for c in changes[1:] if c.step < self.steps]
        session = self.session
        clean = False
        try:
            session.start(self.hparams, None)
            self._verify()
            returned = False
            while True:
                while pending and pending[0].step <= self.handle.step:
                    self._apply(pending.pop(0))
                if returned or self.handle.step >= self.steps:
                    break
                self.until = pending[0].step if pending else self.steps
                try:
                    session.run_round(self._observe)
                except _Returned:
                    returned = True
                    pending.clear()
            state = self._final_state()
            clean = True
        finally:
            if clean:
                session.finish()  # a function sees running == False and returns
            else:
                session.close()
        return ReplayResult(
            score=self.scores[-1] if self.scores else None,
            scores=tuple(self.scores),
            metrics=tuple(self.metrics),
            step=self.handle.step,
            metric=self.metric,
            seed=self.seed,
            hparams=dict(self.hparams),
            state=state,
            expected=self.schedule.score,
        )

    def _observe(self, metrics: Mapping[str, Any]) -> bool:
        step = self.session.advance()
        fix = "pass replay(..., metric=) one of those."
        value = score_of(self.metric, metrics, fix=fix)
        self.metrics.append(dict(metrics))
        self.scores.append(value)
        return step >= self.until

    def _apply(self, change: Change) -> None:
        """Carry a change out as the worker does (see ``Worker._exploit`` and ``_explore``)."""
        hparams = dict(change.hparams)
        handle = self.handle
        if self.retrace and change.cause == "exploit":
            # the recipient's stream and id, and the donor's state through a checkpoint
            handle.id = change.member
            self.session.reseed(self.seed, change.generation, 0)
            self.session.place(step=handle.step, generation=change.generation)
            # through the checkpoint format, as a run copies it; the bytes never leave
            # this process, so any object the trainable saves may pass (trust)
            copied = encode({"state": self.session.save()}, trust=True)
            state = decode(copied, trust=True)["state"]
            self.session.switch(hparams, state)
        else:
            self.session.switch(hparams, None)
        self.hparams = hparams
        self._verify()

    def _verify(self) -> None:
        """The worker's check: the values in effect are the ones the schedule sets."""
        check_applied(
            self.session.hparams_in_effect(),
            self.hparams,
            who=f"Replay at step {self.handle.step}",
            fix="set them in apply_hparams(), after load() restored the state.",
        )

    def _final_state(self) -> Any:
        try:
            return self.session.save()
        except TrainableError:  # a function that never handed a state to report
            return None


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
