"""Reading a run back from a durable store: Result.open and load_best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import genepool as gp


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"] * (1 - x)
        member.report(score=x, state=x)


def test_a_finished_run_reads_back_with_its_best_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    space = gp.Space(lr=gp.Float(0.01, 0.5, log=True))
    result = gp.run(
        _train,
        space,
        metric="score",
        population=4,
        ready=gp.Every(5),
        budget=gp.Budget(steps=20),
        seed=3,
        storage=url,
    )
    again = gp.Result.open(url)
    assert again.best == result.best
    assert again.seed == 3
    # the stored settings read back as the run wrote them, through either result
    assert again.config == result.config
    assert (again.config["metric"], again.config["seed"]) == ("score", 3)
    assert [r.metrics for r in again.reports] == [r.metrics for r in result.reports]
    assert gp.load_best(url) == pytest.approx(result.best.score)
    assert (tmp_path / "pbt.db.checkpoints").is_dir()


def test_opening_a_missing_run_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    gp.run(
        _train,
        gp.Space(lr=gp.Float(0.01, 0.5)),
        metric="score",
        population=2,
        ready=gp.Every(5),
        budget=gp.Budget(steps=5),
        seed=0,
        storage=url,
    )
    # a genepool error naming the argument, the value and the runs there are (a raw
    # KeyError before)
    with pytest.raises(gp.InvalidArgumentError, match=r"'name'.*one of \['run'\].*'other'"):
        gp.Result.open(url, "other")
    with gp.Result.open(url) as result:
        wrong: list[Any] = [99, -1, True, "0", 1.5]  # an IndexError, or another member, before
        for member in wrong:
            with pytest.raises(gp.InvalidArgumentError, match=r"'member' parameter of Result"):
                result.load(member)
        with pytest.raises(gp.InvalidArgumentError, match=r"'member' parameter of Result"):
            result.lineage(7)
        assert result.load(1) is not None
