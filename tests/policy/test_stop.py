"""Budget validation and the run-level stop criteria: budget, time, target, plateau."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from genepool import InvalidArgumentError
from genepool.member import (
    FAILED,
    FINISHED,
    CheckpointRef,
    Event,
    MemberView,
    Mode,
    Population,
    Status,
)
from genepool.policy.stop import BEST_EVENT, Budget, PlateauTracker, run_stop_reason

NAN = float("nan")
INF = float("inf")


def mk(
    i: int,
    score: float | None,
    *,
    ready_count: int = 1,
    status: Status = "active",
    failures: int = 0,
) -> MemberView:
    ckpt = CheckpointRef(f"c{i}", i, 4, 4.0, score, {})
    return MemberView(
        id=i,
        hparams={},
        checkpoint=ckpt,
        score=score,
        ready_count=ready_count,
        status=status,
        failures=failures,
    )


def pop(*members: MemberView, mode: Mode = "max") -> Population:
    return Population(tuple(members), mode=mode)


# -- Budget --------------------------------------------------------------------------------


def test_budget_needs_steps_or_seconds_and_says_how_to_fix_it():
    for kwargs in ({}, {"target": 1.0}, {"plateau": 3}):
        with pytest.raises(InvalidArgumentError, match="Fix"):
            Budget(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 200},
        {"steps": 0.5},
        {"seconds": 1.5},
        {"steps": 10, "seconds": 60},
        {"steps": 10, "target": -5.0},
        {"steps": 10, "target": 0},
        {"steps": 10, "plateau": 1, "min_delta": 0.0},
        {"seconds": 10, "plateau": 3, "min_delta": 0.01},
    ],
)
def test_budget_valid(kwargs):
    budget = Budget(**kwargs)
    for key, value in kwargs.items():
        assert getattr(budget, key) == value


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": -1}, "steps"),
        ({"steps": NAN}, "steps"),
        ({"steps": INF}, "steps"),
        ({"steps": True}, "steps"),
        ({"steps": "10"}, "steps"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": NAN}, "seconds"),
        ({"seconds": INF}, "seconds"),
        ({"seconds": True}, "seconds"),
        ({"steps": 10, "target": NAN}, "target"),
        ({"steps": 10, "target": INF}, "target"),
        ({"steps": 10, "target": True}, "target"),
        ({"steps": 10, "target": "1"}, "target"),
        ({"steps": 10, "plateau": 0}, "plateau"),
        ({"steps": 10, "plateau": -2}, "plateau"),
        ({"steps": 10, "plateau": True}, "plateau"),
        ({"steps": 10, "plateau": 1.5}, "plateau"),
        ({"steps": 10, "min_delta": -0.1}, "min_delta"),
        ({"steps": 10, "min_delta": NAN}, "min_delta"),
        ({"steps": 10, "min_delta": INF}, "min_delta"),
        ({"steps": 10, "min_delta": True}, "min_delta"),
    ],
)
def test_budget_invalid(kwargs, name):
    with pytest.raises(InvalidArgumentError, match=name):
        Budget(**kwargs)


def test_budget_is_frozen():
    budget = Budget(steps=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.steps = 20  # type: ignore[misc]


# -- run_stop_reason -----------------------------------------------------------------------


def test_nothing_to_stop():
    population = pop(mk(0, 0.5), mk(1, 0.7))
    budget = Budget(steps=10, seconds=100, target=1.0, plateau=3)
    assert run_stop_reason(population, budget, elapsed=5.0) is None
    assert run_stop_reason(population, budget, elapsed=5.0, plateau=PlateauTracker()) is None


@pytest.mark.parametrize(
    "statuses",
    [(FINISHED, FINISHED), (FINISHED, FAILED), (FAILED, FAILED)],
)
def test_budget_when_no_member_is_active(statuses):
    population = pop(*(mk(i, 0.5, status=s) for i, s in enumerate(statuses)))
    assert run_stop_reason(population, Budget(steps=10), elapsed=0.0) == "budget"


def test_one_active_member_keeps_the_run_going():
    population = pop(mk(0, 0.5, status=FINISHED), mk(1, 0.5))
    assert run_stop_reason(population, Budget(steps=10), elapsed=0.0) is None


@pytest.mark.parametrize(("elapsed", "reason"), [(0.0, None), (9.99, None), (10.0, "time")])
def test_time(elapsed, reason):
    population = pop(mk(0, 0.5))
    assert run_stop_reason(population, Budget(seconds=10), elapsed=elapsed) == reason
    assert run_stop_reason(population, Budget(steps=5, seconds=10), elapsed=elapsed) == reason
    # no time limit: never "time"
    assert run_stop_reason(population, Budget(steps=5), elapsed=1e9) is None


@pytest.mark.parametrize(
    ("scores", "target", "reason"),
    [
        ((0.2, 0.9), 1.0, None),
        ((0.2, 1.0), 1.0, "target"),
        ((1.5, 0.2), 1.0, "target"),
        ((-3.0, -2.0), -2.5, "target"),
    ],
)
def test_target_max(scores, target, reason):
    population = pop(*(mk(i, s) for i, s in enumerate(scores)))
    assert run_stop_reason(population, Budget(steps=10, target=target), elapsed=0.0) == reason


@pytest.mark.parametrize(
    ("scores", "target", "reason"),
    [
        ((0.5, 0.2), 0.1, None),
        ((0.5, 0.1), 0.1, "target"),
        ((0.05, 5.0), 0.1, "target"),
        ((2.0, 1.5), 1.0, None),  # max mode would say "target"
    ],
)
def test_target_min(scores, target, reason):
    population = pop(*(mk(i, s) for i, s in enumerate(scores)), mode="min")
    assert run_stop_reason(population, Budget(steps=10, target=target), elapsed=0.0) == reason


def test_target_ignores_members_that_cannot_donate():
    budget = Budget(steps=10, target=1.0)
    population = pop(mk(0, 0.2), mk(1, 2.0, failures=1))
    assert run_stop_reason(population, budget, elapsed=0.0) is None
    unscored = MemberView(id=1, hparams={}, score=None)
    assert run_stop_reason(pop(mk(0, 0.2), unscored), budget, elapsed=0.0) is None


# -- plateau -------------------------------------------------------------------------------


def rounds(scores_per_round: list[tuple[float, ...]], mode: Mode = "max") -> list[Population]:
    """Synchronous rounds: every member at ready_count r + 1 in round r."""
    return [
        pop(*(mk(i, s, ready_count=r + 1) for i, s in enumerate(scores)), mode=mode)
        for r, scores in enumerate(scores_per_round)
    ]


def reasons(
    populations: list[Population], budget: Budget, **tracker_kwargs: Any
) -> list[str | None]:
    tracker = PlateauTracker(min_delta=budget.min_delta, **tracker_kwargs)
    out = []
    for population in populations:
        tracker.observe(population)
        out.append(run_stop_reason(population, budget, elapsed=0.0, plateau=tracker))
    return out


def test_plateau_after_k_rounds_without_improvement():
    budget = Budget(steps=100, plateau=2)
    populations = rounds([(1.0, 0.5)] * 5)
    # best set in round 1; rounds 2 and 3 bring nothing new
    assert reasons(populations, budget) == [None, None, "plateau", "plateau", "plateau"]


def test_plateau_improvement_resets_the_count():
    budget = Budget(steps=100, plateau=2)
    populations = rounds([(1.0, 0.5), (1.0, 0.5), (1.0, 2.0), (1.0, 2.0), (2.0, 2.0)])
    assert reasons(populations, budget) == [None, None, None, None, "plateau"]


def test_plateau_small_improvements_do_not_count():
    budget = Budget(steps=100, plateau=2, min_delta=0.5)
    # +0.25 then +0.5 (not more than min_delta): still a plateau after round 3
    populations = rounds([(1.0,), (1.25,), (1.5,), (1.5,)])
    assert reasons(populations, budget) == [None, None, "plateau", "plateau"]
    # +0.75 is more than min_delta: the count restarts
    populations = rounds([(1.0,), (1.75,), (1.75,), (1.75,)])
    assert reasons(populations, budget) == [None, None, None, "plateau"]


def test_plateau_min_mode():
    budget = Budget(steps=100, plateau=2)
    populations = rounds([(1.0,), (0.5,), (0.75,), (0.5,), (0.5,)], mode="min")
    assert reasons(populations, budget) == [None, None, None, "plateau", "plateau"]


def test_plateau_needs_an_observed_score_and_the_option():
    budget = Budget(steps=100, plateau=1)
    population = pop(mk(0, 1.0, ready_count=50))
    # never observed
    assert run_stop_reason(population, budget, elapsed=0.0, plateau=PlateauTracker()) is None
    # no tracker
    assert run_stop_reason(population, budget, elapsed=0.0) is None
    # no plateau option
    tracker = PlateauTracker()
    tracker.observe(pop(mk(0, 1.0, ready_count=1)))
    assert run_stop_reason(population, Budget(steps=100), elapsed=0.0, plateau=tracker) is None
    assert run_stop_reason(population, budget, elapsed=0.0, plateau=tracker) == "plateau"
    # nobody scored: nothing to observe
    tracker = PlateauTracker()
    tracker.observe(pop(MemberView(id=0, hparams={}, ready_count=1)))
    assert run_stop_reason(population, budget, elapsed=0.0, plateau=tracker) is None


def test_plateau_waits_for_every_active_member():
    """Finished members do not hold the plateau back; a lagging active member does."""
    budget = Budget(steps=100, plateau=2)
    tracker = PlateauTracker()
    tracker.observe(pop(mk(0, 1.0, ready_count=1), mk(1, 0.5, ready_count=1)))
    lagging = pop(mk(0, 1.0, ready_count=3), mk(1, 0.5, ready_count=2))
    assert run_stop_reason(lagging, budget, elapsed=0.0, plateau=tracker) is None
    done = pop(mk(0, 1.0, ready_count=3), mk(1, 0.5, ready_count=2, status=FINISHED))
    assert run_stop_reason(done, budget, elapsed=0.0, plateau=tracker) == "plateau"


def test_plateau_counts_rounds_of_members_that_were_ahead():
    """Asynchronous: member 1 is ahead when member 0 improves; it must still do K rounds."""
    budget = Budget(steps=100, plateau=2)
    tracker = PlateauTracker()
    tracker.observe(pop(mk(0, 1.0, ready_count=3), mk(1, 0.5, ready_count=10)))
    # member 0 did 2 rounds since the improvement, member 1 none
    later = pop(mk(0, 1.0, ready_count=5), mk(1, 0.5, ready_count=10))
    assert run_stop_reason(later, budget, elapsed=0.0, plateau=tracker) is None


def test_plateau_counts_rounds_of_members_that_were_behind():
    """Asynchronous: the best member is ahead; the others' own K rounds suffice."""
    budget = Budget(steps=100, plateau=2)
    tracker = PlateauTracker()
    tracker.observe(pop(mk(0, 1.0, ready_count=5), mk(1, 0.5, ready_count=3)))
    # both did 2 rounds since the improvement, with no better score
    later = pop(mk(0, 1.0, ready_count=7), mk(1, 0.5, ready_count=5))
    tracker.observe(later)
    assert run_stop_reason(later, budget, elapsed=0.0, plateau=tracker) == "plateau"


# -- the plateau tracker's state, recorded and restored -------------------------------------


def test_observe_tells_when_the_state_changed():
    tracker = PlateauTracker(min_delta=0.5)
    assert tracker.observe(pop(MemberView(id=0, hparams={}, ready_count=1))) is False  # no score
    assert tracker.observe(pop(mk(0, 1.0, ready_count=1), mk(1, 0.2, ready_count=1))) is True
    assert tracker.observe(pop(mk(0, 1.5, ready_count=2), mk(1, 0.2, ready_count=2))) is False
    assert tracker.observe(pop(mk(0, 1.6, ready_count=3), mk(1, 0.2, ready_count=2))) is True
    assert tracker.event_data() == {"score": 1.6, "rounds": [3, 2]}


def best_event(data: dict[str, Any], step: int = 4) -> Event:
    # the data as it reads back from a durable store: JSON
    return Event(BEST_EVENT, 0, step, json.loads(json.dumps(data)), 0.0)


def test_restore_resumes_the_count_where_it_was():
    budget = Budget(steps=100, plateau=2)
    populations = rounds([(1.0, 0.5), (2.0, 0.5), (2.0, 0.5), (2.0, 0.5), (2.0, 0.5)])
    tracker = PlateauTracker()
    recorded = []
    for population in populations[:3]:  # the run is interrupted after round 3
        if tracker.observe(population):
            recorded.append(best_event(tracker.event_data()))
    assert len(recorded) == 2
    noise = Event("exploit", 1, 4, {"donor": 0}, 0.0)
    again = PlateauTracker.restore([recorded[0], noise, recorded[1]])
    assert (again.best, again.score, again.rounds_at_best) == (2.0, 2.0, {0: 2, 1: 2})
    out = []
    for population in populations[3:]:
        again.observe(population)
        out.append(run_stop_reason(population, budget, elapsed=0.0, plateau=again))
    # as if never interrupted: improved in round 2, so a plateau after round 4
    assert out == reasons(populations, budget)[3:] == ["plateau", "plateau"]


def test_restore_takes_the_best_score_first_recorded():
    # two workers recorded the same improvement, each when it saw it; and an older one
    events = [
        best_event({"score": 2.0, "rounds": [3, 1]}),
        best_event({"score": 1.0, "rounds": [1, 1]}),
        best_event({"score": 2.0, "rounds": [4, 2]}),
    ]
    tracker = PlateauTracker.restore(events)
    assert tracker.rounds_at_best == {0: 3, 1: 1}
    assert tracker.score == 2.0
    low = PlateauTracker.restore(events, mode="min")
    assert (low.score, low.best, low.rounds_at_best) == (1.0, -1.0, {0: 1, 1: 1})


def test_restore_of_nothing_is_a_fresh_tracker():
    tracker = PlateauTracker.restore(
        [Event("stop", 0, 4, {"reason": "budget"}, 0.0)], min_delta=0.3
    )
    assert tracker.best == -math.inf
    assert tracker.min_delta == 0.3
    population = pop(mk(0, 1.0, ready_count=50))
    assert not tracker.plateaued(population, 1)
