"""Lineage, schedules and scores along a line, on hand-built histories with known answers."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genepool import InvalidArgumentError
from genepool.analysis import (
    ancestry_scores,
    hparams_at_report,
    hparams_timeline,
    lineage,
    schedule_changes,
)
from genepool.member import Event, MemberView, Population, Report


def exploit(
    t: float, who: int, donor: int, donor_step: int, old_step: int, old: Any, new: Any, gen: int
) -> Event:
    return Event(
        "exploit",
        who,
        donor_step,
        {
            "donor": donor,
            "donor_step": donor_step,
            "old_step": old_step,
            "old_hparams": {"lr": old},
            "new_hparams": {"lr": new},
            "generation": gen,
        },
        t,
    )


def explore(t: float, who: int, step: int, old: Any, new: Any) -> Event:
    return Event("explore", who, step, {"old_hparams": {"lr": old}, "new_hparams": {"lr": new}}, t)


def population(steps: dict[int, tuple[int, float]]) -> Population:
    return Population(
        tuple(MemberView(id=i, hparams={"lr": lr}, step=s) for i, (s, lr) in sorted(steps.items()))
    )


# Three members A=0 (lr 0.1), B=1 (lr 0.2), C=2 (lr 0.3), ready every 10 steps.
#  t=1  step 10: B exploits A (A at 10)           -> B lr 0.12
#  t=2  step 20: A explores                        -> A lr 0.08
#  t=3  step 20: C exploits B (B at 20, B's line: A 0..10, B 10..20) -> C lr 0.15
#  t=4  step 30: A exploits C (C at 30): A's line: A 0..10, B 10..20, C 20..30, A 30..
#  t=5  step 35: C explores at 35                  -> C lr 0.2  (after A copied C: not A's)
#  t=6  step 40: B exploits A a second time, A at 40 -> B lr 0.07
#  final: A at 50 (lr 0.06 after explore at 45, t=7), B at 50, C at 50
EVENTS = [
    exploit(1, 1, 0, 10, 10, 0.2, 0.12, 1),
    explore(2, 0, 20, 0.1, 0.08),
    exploit(3, 2, 1, 20, 20, 0.3, 0.15, 1),
    exploit(4, 0, 2, 30, 30, 0.08, 0.18, 1),
    explore(5, 2, 35, 0.15, 0.2),
    exploit(6, 1, 0, 40, 40, 0.12, 0.07, 2),
    explore(7, 0, 45, 0.18, 0.06),
]
POP = population({0: (50, 0.06), 1: (50, 0.07), 2: (50, 0.2)})


def test_member_that_never_exploited_is_its_own_root() -> None:
    pop = population({0: (50, 0.1), 1: (50, 0.2)})
    line = lineage([], pop, 1)
    assert line.ancestors == (1,)
    assert line.jumps == ()
    assert (line.segments[0].start, line.segments[0].end) == (0, 50)


def test_lineage_follows_a_donor_that_was_itself_exploited() -> None:
    line = lineage(EVENTS, POP, 0)
    assert line.ancestors == (0, 1, 2, 0)
    assert [(s.member, s.start, s.end) for s in line.segments] == [
        (0, 0, 10),
        (1, 10, 20),
        (2, 20, 30),
        (0, 30, 50),
    ]
    assert [(j.recipient, j.donor, j.step) for j in line.jumps] == [
        (1, 0, 10),
        (2, 1, 20),
        (0, 2, 30),
    ]
    assert line.root == 0
    assert line.final_step == 50
    assert [line.owner(s) for s in (1, 10, 11, 20, 21, 30, 31, 50)] == [0, 0, 1, 1, 2, 2, 0, 0]
    with pytest.raises(InvalidArgumentError):
        line.owner(51)


def test_member_exploited_several_times_counts_only_its_last_jump() -> None:
    line = lineage(EVENTS, POP, 1)
    # B's last exploit copied A at 40, and A's line at that moment runs through B and C
    assert line.ancestors == (0, 1, 2, 0, 1)
    assert [(s.start, s.end) for s in line.segments] == [
        (0, 10),
        (10, 20),
        (20, 30),
        (30, 40),
        (40, 50),
    ]
    assert [s.generation for s in line.segments] == [0, 1, 1, 1, 2]


def test_schedule_along_the_line_has_the_values_in_effect_at_every_step() -> None:
    line = lineage(EVENTS, POP, 0)
    changes = schedule_changes(EVENTS, POP, line)
    assert [(c.step, c.hparams["lr"], c.member, c.cause) for c in changes] == [
        (0, 0.1, 0, "start"),
        (10, 0.12, 1, "exploit"),
        (20, 0.15, 2, "exploit"),
        (30, 0.18, 0, "exploit"),
        (45, 0.06, 0, "explore"),
    ]


def test_schedule_skips_changes_made_off_the_line() -> None:
    # A's explore at 20 (t=2) is not on B's line: B copied A at 10, before it
    line = lineage(EVENTS, POP, 2)
    changes = schedule_changes(EVENTS, POP, line)
    assert [(c.step, c.hparams["lr"], c.cause) for c in changes] == [
        (0, 0.1, "start"),
        (10, 0.12, "exploit"),
        (20, 0.15, "exploit"),
        (35, 0.2, "explore"),
    ]


def test_starting_hparams_come_from_the_first_change() -> None:
    tl = hparams_timeline(EVENTS, POP)
    assert tl[0][0][2] == {"lr": 0.1}
    assert tl[1][0][2] == {"lr": 0.2}
    assert tl[2][0][2] == {"lr": 0.3}


def test_hparams_at_report_uses_time_then_step_for_ties() -> None:
    tl = hparams_timeline(EVENTS, POP)[0]
    assert hparams_at_report(tl, Report(0, 15, {}, 1.5)) == {"lr": 0.1}
    assert hparams_at_report(tl, Report(0, 20, {}, 2.0)) == {"lr": 0.1}  # before the explore
    assert hparams_at_report(tl, Report(0, 21, {}, 2.0)) == {"lr": 0.08}  # same instant, after
    assert hparams_at_report(tl, Report(0, 31, {}, 4.5)) == {"lr": 0.18}


def test_scores_along_the_line_take_each_stretch_from_its_owner() -> None:
    reports = []
    for member, bias in ((0, 0.0), (1, 1000.0), (2, 2000.0)):
        for step in range(1, 51):
            # time: the report of step s is made at s / 10 (events happen at whole times)
            reports.append(Report(member, step, {"score": bias + step}, step / 10.0))
    line = lineage(EVENTS, POP, 0)
    got = ancestry_scores(reports, EVENTS, line, "score")
    assert [s for s, _, _ in got] == list(range(1, 51))
    assert [who for _, _, who in got] == [0] * 10 + [1] * 10 + [2] * 10 + [0] * 20
    assert got[14][1] == 1015.0
    assert got[25][1] == 2026.0


def test_redone_steps_count_once_with_their_last_report_before_the_cut() -> None:
    events = [exploit(10.0, 1, 0, 4, 4, 0.2, 0.1, 1)]
    pop = population({0: (4, 0.1), 1: (6, 0.1)})
    reports = [
        Report(0, 3, {"score": 1.0}, 1.0),
        Report(0, 4, {"score": 2.0}, 2.0),
        Report(0, 4, {"score": 3.0}, 3.0),  # step 4 redone after a resume: this one counts
        Report(0, 4, {"score": 99.0}, 11.0),  # after the copy: not on member 1's line
        Report(1, 5, {"score": 5.0}, 12.0),
        Report(1, 6, {"score": 6.0}, 13.0),
    ]
    got = ancestry_scores(reports, events, lineage(events, pop, 1), "score")
    assert got == [(3, 1.0, 0), (4, 3.0, 0), (5, 5.0, 1), (6, 6.0, 1)]


def test_unknown_member_is_refused_with_the_range() -> None:
    with pytest.raises(InvalidArgumentError, match="member"):
        lineage(EVENTS, POP, 7)


def test_a_copy_of_a_checkpoint_older_than_the_donors_own_exploit_follows_that_checkpoint():
    # D=1 trains 0..320 with lr 0.2 (explores to 0.25 at 160); then, at t=3, D exploits
    # E=2 (E at 300): D's line now runs E 0..300, D 300... But R=0 had decided, on a
    # population read before that, to copy D's checkpoint at 320 (D's generation 0), and
    # recorded the copy at t=4: R's line is D 0..320, R 320..
    def copy(t: float, who: int, donor: int, step: int, gen_of_donor: int | None) -> Event:
        e = exploit(t, who, donor, step, step, 0.1, 0.3, 1)
        return Event(e.kind, e.member, e.step, {**e.data, "donor_generation": gen_of_donor}, t)

    events = [
        explore(1, 1, 160, 0.2, 0.25),
        copy(3, 1, 2, 300, 0),  # D copies E's checkpoint at 300
        explore(3.5, 1, 310, 0.4, 0.5),  # D explores after its exploit (its generation 1)
        copy(4, 0, 1, 320, 0),  # R copies D's *generation 0* checkpoint at 320
    ]
    pop = population({0: (400, 0.3), 1: (400, 0.5), 2: (400, 0.4)})
    line = lineage(events, pop, 0)
    assert [(s.member, s.start, s.end, s.generation) for s in line.segments] == [
        (1, 0, 320, 0),
        (0, 320, 400, 1),
    ]
    changes = schedule_changes(events, pop, line)
    assert [(c.step, c.hparams["lr"], c.cause) for c in changes] == [
        (0, 0.2, "start"),
        (160, 0.25, "explore"),
        (320, 0.3, "exploit"),
    ]
    # without the recorded generation (an older run), the donor's last stretch before the
    # copy is taken, as before
    old = [*events[:3], exploit(4, 0, 1, 320, 320, 0.1, 0.3, 1)]
    assert lineage(old, pop, 0).ancestors == (2, 1, 0)


def _ancestry_scores_by_scanning(
    reports: list[Report], events: list[Event], line: Any, metric: str
) -> list[tuple[int, float, int]]:
    """The reference: every report scanned against the line's stretches of its member (the
    algorithm before the reports were indexed by step)."""
    cut = [
        events[s.until_event].time if s.until_event < len(events) else float("inf")
        for s in line.segments
    ]
    spans: dict[int, list[tuple[int, int, float]]] = {}
    for seg, limit in zip(line.segments, cut, strict=True):
        spans.setdefault(seg.member, []).append((seg.start, seg.end, limit))
    best: dict[int, tuple[float, int]] = {}
    for r in reports:
        for start, end, limit in spans.get(r.member, []):
            if start < r.step <= end and r.time <= limit:
                value = r.metrics.get(metric)
                if isinstance(value, int | float):
                    best[r.step] = (float(value), r.member)
                break
    return [(step, score, who) for step, (score, who) in sorted(best.items())]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_scores_along_a_line_are_those_of_scanning_every_report(data: st.DataObject) -> None:
    """Reports of several members, steps redone, late reports and text among numbers: the
    indexed reading gives what scanning every report gives."""
    from genepool.analysis._lineage import Lineage, Segment

    cuts = sorted(data.draw(st.lists(st.integers(1, 8), min_size=0, max_size=3, unique=True)))
    bounds = [0, *cuts, data.draw(st.integers(max(cuts, default=0) + 1, 10))]
    events = [Event("exploit", 0, 0, {}, float(t)) for t in range(len(bounds))]
    segments = tuple(
        Segment(
            member=data.draw(st.integers(0, 2)),
            start=a,
            end=b,
            generation=0,
            until_event=data.draw(st.sampled_from([i, len(events), len(events)])),
        )
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    )
    line = Lineage(member=segments[-1].member, segments=segments, jumps=())
    value = st.one_of(st.floats(-5, 5), st.floats(-5, 5), st.integers(-5, 5), st.just("text"))
    reports = data.draw(
        st.lists(
            st.builds(
                Report,
                st.integers(0, 2),
                st.integers(1, 10),
                st.one_of(st.fixed_dictionaries({"score": value}), st.just({})),
                st.floats(0, float(len(bounds))),
            ),
            min_size=8,
            max_size=60,
        )
    )
    expected = _ancestry_scores_by_scanning(reports, events, line, "score")
    assert ancestry_scores(reports, events, line, "score") == expected


def test_one_index_of_the_events_serves_every_members_line_and_schedule() -> None:
    """Built once for a whole population (the logger's and the report's loops), the index
    gives each member the line and schedule it gets alone; with a fallback among the
    events, the rolled-back change is left out of both."""
    from genepool.analysis._lineage import event_index

    fallback = Event("fallback", 1, 10, {"generation": 1, "step": 10}, 6.5)
    for events in (EVENTS, [*EVENTS, fallback]):
        index = event_index(events)
        for member in (0, 1, 2):
            alone = lineage(events, POP, member)
            assert lineage(events, POP, member, index=index) == alone
            expected = schedule_changes(events, POP, alone)
            assert schedule_changes(events, POP, alone, index=index) == expected
    assert 5 in event_index(EVENTS)[1]  # B's second exploit, at step 40
    assert 5 not in event_index([*EVENTS, fallback])[1]  # rolled back to generation 1


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hparams_of_many_reports_are_those_the_rule_reads_one_by_one(data: st.DataObject) -> None:
    """Changes whose clocks go back, equal instants, infinite and not-a-number times, and
    reports of members without a timeline: the binary search reads what the rule reads."""
    from genepool.analysis._lineage import hparams_of_reports

    time = st.one_of(st.integers(0, 6).map(float), st.sampled_from([math.inf, -math.inf, math.nan]))
    timelines = {
        member: [
            (t, s, {"change": (member, i)})
            for i, (t, s) in enumerate(
                data.draw(st.lists(st.tuples(time, st.integers(0, 6)), min_size=1, max_size=8))
            )
        ]
        for member in range(data.draw(st.integers(0, 3)))
    }
    reports = data.draw(
        st.lists(st.builds(Report, st.integers(0, 3), st.integers(0, 6), st.just({}), time))
    )
    expected = [
        hparams_at_report(timelines[r.member], r) if r.member in timelines else {} for r in reports
    ]
    assert hparams_of_reports(timelines, reports) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_timelines_read_on_are_those_of_the_events_read_whole(data: st.DataObject) -> None:
    """Events read in chunks, with fallbacks that roll back changes among them: after each
    chunk, the timelines kept up to date are those built from every event so far."""
    from genepool.analysis._lineage import TimelinesReadOn

    kind = st.sampled_from(["explore", "explore", "exploit", "fallback", "failure"])

    def event(i: int) -> Event:
        member, what = data.draw(st.integers(0, 2)), data.draw(kind)
        new = {"lr": float(i)}
        if what == "fallback":
            rollback = {"generation": data.draw(st.integers(0, 2)), "step": 0}
            return Event(what, member, data.draw(st.integers(0, 9)), rollback, float(i))
        if what == "exploit":
            details = {"donor": (member + 1) % 3, "donor_step": i, "new_hparams": new}
            return Event(what, member, i, {**details, "old_hparams": {"lr": -1.0}}, float(i))
        return Event(what, member, i, {"old_hparams": {"lr": -1.0}, "new_hparams": new}, float(i))

    everything = [event(i) for i in range(data.draw(st.integers(0, 16)))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(everything)), max_size=4)))
    read_on = TimelinesReadOn()
    for end in [*cuts, len(everything)]:
        events = everything[:end]
        assert read_on.read(events, POP) == hparams_timeline(events, POP)
