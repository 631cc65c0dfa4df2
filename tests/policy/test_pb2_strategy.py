"""gp.PB2 and gp.PB2Mix as explore strategies: the intervals each member keeps (in its
view, in the store), the window and pending points handed to the model, and the events."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import genepool as gp
from genepool import round as rounds
from genepool.member import CheckpointRef, MemberView, Mode, Population
from genepool.policy import _pb2
from genepool.store._codec import view_from_json, view_json


def climb(member: gp.Member) -> None:
    """A score that climbs faster with a rate near 0.1 (in log space), with some noise."""
    x = member.restore() or 0.0
    while member.running:
        lr = float(member.hparams["lr"])
        x += 1.0 / (1.0 + 4.0 * np.log10(lr / 0.1) ** 2) + 0.05 * member.rng.standard_normal()
        member.report(score=x, state=x)


def pb2_run(explore: gp.Explore | None = None, **options: Any) -> gp.Result:
    settings: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "ready": gp.Every(2),
        "budget": gp.Budget(steps=16),
        "explore": gp.PB2() if explore is None else explore,
        "seed": 3,
        "progress": False,
    }
    settings.update(options)
    return gp.run(climb, gp.Space(lr=gp.Float(1e-3, 1.0, log=True)), **settings)


def view(i: int, *, counter: float, score: float | None, member: int | None = None) -> MemberView:
    ckpt = CheckpointRef(f"c{i}", i if member is None else member, int(counter), counter, score, {})
    return MemberView(id=i, hparams={"lr": 0.1}, checkpoint=ckpt, score=score)


# -- the intervals a member keeps --------------------------------------------------------


def test_an_interval_is_the_change_per_unit_of_the_counter_since_the_start_checkpoint():
    start = view(0, counter=4.0, score=1.0)
    assert rounds._with_interval(start, 6.0, 2.0, 8) == ((6.0, 0.5, {"lr": 0.1}),)
    # from a donor's checkpoint (after an exploit): measured from the donor's score
    copied = view(0, counter=2.0, score=3.0, member=5)
    assert rounds._with_interval(copied, 6.0, 2.0, 8) == ((6.0, -0.25, {"lr": 0.1}),)


def test_no_interval_without_a_start_and_the_latest_kept():
    fresh = MemberView(id=0, hparams={"lr": 0.1})
    assert rounds._with_interval(fresh, 2.0, 1.0, 8) == ()
    unscored = view(0, counter=2.0, score=None)
    assert rounds._with_interval(unscored, 4.0, 1.0, 8) == ()
    full = dataclasses.replace(
        view(0, counter=8.0, score=0.0), intervals=tuple((t, 0.0, {}) for t in (2.0, 4.0, 6.0))
    )
    assert [t for t, _, _ in rounds._with_interval(full, 10.0, 1.0, 3)] == [4.0, 6.0, 10.0]
    # a member that copied a donor behind it keeps none from after the donor's point
    rewound = dataclasses.replace(full, checkpoint=view(0, counter=2.0, score=0.0).checkpoint)
    assert [t for t, _, _ in rounds._with_interval(rewound, 4.0, 1.0, 8)] == [2.0, 4.0]


def test_a_run_without_pb2_keeps_no_intervals():
    result = pb2_run(gp.Perturb())
    assert all(m.intervals == () for m in result.population)


def test_the_store_keeps_the_intervals_and_reads_an_older_view_without_them(tmp_path: Path):
    result = pb2_run(storage=f"sqlite:///{tmp_path / 'pbt.db'}")
    views = list(result.population)
    assert all(0 < len(m.intervals) <= 32 for m in views)
    for m in views:
        assert view_from_json(view_json(m)) == m
    older = json.loads(view_json(views[0]))
    del older["intervals"]  # a view written before intervals were kept
    assert view_from_json(json.dumps(older)).intervals == ()


# -- the decision ------------------------------------------------------------------------


def test_exploits_record_what_chose_their_values_and_pb2_models_once_data_suffice():
    result = pb2_run()
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    for event in exploits:
        explored = event.data["explored"]
        assert explored["rule"] == "PB2"
        json.dumps(explored)
    rules = [set(e.data["explored"]["rules"].values()) for e in exploits]
    assert {"gp"} in rules  # the model chose, once the window held enough intervals


def test_a_seeded_run_with_pb2_repeats():
    def summary(result: gp.Result) -> list[Any]:
        return [(e.kind, e.member, e.step, sorted(e.data.items())) for e in result.events]

    assert summary(pb2_run(clock=gp.ManualClock(tick=0.001))) == summary(
        pb2_run(clock=gp.ManualClock(tick=0.001))
    )


def test_the_window_is_the_populations_latest_intervals_and_pending_are_the_copies(
    monkeypatch: pytest.MonkeyPatch,
):
    seen: dict[str, Any] = {}

    def suggest(space: gp.Space, rows: Any, **kwargs: Any) -> Any:
        seen.update(rows=list(rows), **kwargs)
        return {"lr": 0.1}, {"rules": {"lr": "gp"}}

    monkeypatch.setattr(_pb2, "suggest", suggest)
    a = dataclasses.replace(
        view(0, counter=6.0, score=1.0),
        intervals=((2.0, 1.0, {"lr": 0.2}), (6.0, 3.0, {"lr": 0.3})),
        curve=((6.0, 1.0),),
    )
    b = dataclasses.replace(view(1, counter=4.0, score=2.0), intervals=((4.0, 2.0, {"lr": 0.4}),))
    copied = dataclasses.replace(view(2, counter=4.0, score=2.0, member=1), hparams={"lr": 0.5})
    space = gp.Space(lr=gp.Float(1e-3, 1.0, log=True))
    pb2 = gp.PB2(window=2)
    modes: tuple[tuple[Mode, float], ...] = (("max", 1.0), ("min", -1.0))
    for mode, sign in modes:
        new, info = pb2.explore_in(
            space,
            {"lr": 0.2},
            np.random.default_rng(0),
            population=Population((a, b, copied), mode),
            member=a,
        )
        assert new == {"lr": 0.1}
        assert info == {"rule": "PB2", "rules": {"lr": "gp"}, "state": None}
        # the latest two, oldest first; PB2 maximises the improvement
        assert seen["rows"] == [
            _pb2.Row(4.0, {"lr": 0.4}, sign * 2.0),
            _pb2.Row(6.0, {"lr": 0.3}, sign * 3.0),
        ]
        assert seen["pending"] == [{"lr": 0.5}]
        assert seen["now"] == 6.0
        assert seen["mix"] is False
        assert seen["state"] is None  # no decision fitted a kernel yet


def test_the_next_fit_starts_from_the_latest_decisions_kernel(monkeypatch: pytest.MonkeyPatch):
    """Each decision leaves its kernel in the member's view; the next starts from the
    latest one in the snapshot (warm, and still a function of the snapshot alone)."""
    result = pb2_run()
    states = [m.explore_state for m in result.population if m.explore_state is not None]
    assert states
    assert all(set(s) == {"time", "kernel"} for s in states)
    latest = max(states, key=lambda s: s["time"])
    seen: dict[str, Any] = {}

    def suggest(space: gp.Space, rows: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return {"lr": 0.1}, {"rules": {"lr": "gp"}, "kernel": {"eps": 0.5}}

    monkeypatch.setattr(_pb2, "suggest", suggest)
    population = result.population
    member = population[0]
    space = gp.Space(lr=gp.Float(1e-3, 1.0, log=True))
    _, info = gp.PB2().explore_in(
        space, member.hparams, np.random.default_rng(0), population=population, member=member
    )
    assert seen["state"] == latest["kernel"]
    assert info is not None
    assert info["state"] == {"time": member.curve[-1][0], "kernel": {"eps": 0.5}}


def test_pb2_mix_chooses_unordered_values_and_pb2_refuses_them():
    space = gp.Space(lr=gp.Float(1e-3, 1.0, log=True), opt=gp.Choice(["sgd", "adam", "rms"]))

    def run(explore: gp.Explore) -> gp.Result:
        return gp.run(
            climb,
            space,
            metric="score",
            population=4,
            ready=gp.Every(2),
            budget=gp.Budget(steps=12),
            explore=explore,
            seed=1,
            progress=False,
        )

    result = run(gp.PB2Mix())
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    assert all(e.data["new_hparams"]["opt"] in ("sgd", "adam", "rms") for e in exploits)
    with pytest.raises(gp.InvalidArgumentError, match="PB2Mix"):
        run(gp.PB2())


def test_pb2_is_called_with_the_population_and_its_settings_are_checked():
    with pytest.raises(gp.InvalidArgumentError, match=r"gp.run\(\.\.\., explore=gp.PB2\(\)\)"):
        gp.PB2().explore(gp.Space(lr=gp.Float(0.1, 1.0)), {"lr": 0.5}, np.random.default_rng(0))
    with pytest.raises(gp.InvalidArgumentError, match="window"):
        gp.PB2(window=1)
    with pytest.raises(gp.InvalidArgumentError, match="per_member"):
        gp.PB2Mix(per_member=0)


def test_a_config_file_names_pb2_and_its_settings():
    from genepool import _config

    made = _config._rule("explore", {"rule": "pb2", "window": 500}, _config._EXPLORE)
    assert isinstance(made, gp.PB2)
    assert made.window == 500
    assert isinstance(_config._rule("explore", "pb2mix", _config._EXPLORE), gp.PB2Mix)


def test_a_saved_old_database_reads_without_intervals_and_takes_a_pb2_run(tmp_path: Path):
    """tests/data/manifest-v1 (genepool 0.1.0, schema version 1, views with no intervals):
    its members read with none, PB2 decides on them (at random, flagged, until data
    come), and a new PB2 run in the same database keeps and reads back its intervals."""
    shutil.copytree(
        Path(__file__).parents[1] / "data" / "manifest-v1", tmp_path, dirs_exist_ok=True
    )
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = gp.Result.open(url, "old").population
    assert all(m.intervals == () and m.explore_state is None for m in old)
    space = gp.Space(lr=gp.Float(0.1, 1.0))
    new, info = gp.PB2().explore_in(
        space, {"lr": 0.5}, np.random.default_rng(0), population=old, member=old[0]
    )
    assert 0.1 <= new["lr"] <= 1.0
    assert info is not None
    assert info["fallback"]
    result = pb2_run(storage=url, name="pb2")
    assert all(len(m.intervals) > 0 for m in gp.Result.open(url, "pb2").population)
    assert result.stop_reason == "budget"


def test_each_member_keeps_enough_intervals_for_the_window_at_the_runs_population():
    assert gp.PB2().intervals_for(4) == 250  # 4 x 250 = the window of 1,000
    assert gp.PB2(window=100).intervals_for(64) == 2
    assert gp.PB2(per_member=8).intervals_for(4) == 8
    assert gp.PB2().intervals_for(None) == 32
    policy = gp.Policy(
        space=gp.Space(lr=gp.Float(0.1, 1.0)),
        ready=gp.Every(2),
        exploit=gp.Truncation(),
        explore=gp.PB2(),
        budget=gp.Budget(steps=4),
        population=8,
    )
    assert policy.intervals == 125
