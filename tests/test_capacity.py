"""A population too large for the machine's memory is refused up front, with the estimate
in the message (issue 15, "Scale"). The memory available is injected: nothing here
allocates much."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool import _capacity
from genepool._capacity import available_memory, check_capacity, estimate

SIZES: dict[str, Any] = {"hparams": 2, "recent_window": 100, "keep": 1, "reports_per_member": 20}


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"]
        member.report(score=x, state=x)


def test_the_estimate_grows_with_each_thing_a_member_keeps() -> None:
    base = estimate(1_000, **SIZES)
    assert estimate(2_000, **SIZES) == 2 * base
    assert estimate(1_000, **{**SIZES, "recent_window": 200}) > base
    assert estimate(1_000, **{**SIZES, "hparams": 20}) > base
    assert estimate(1_000, **{**SIZES, "keep": 3}) > base
    assert estimate(1_000, **{**SIZES, "reports_per_member": 0}) < base


def test_a_population_that_fits_passes() -> None:
    check_capacity(10_000, **SIZES, available=estimate(10_000, **SIZES))


def test_a_population_too_large_is_refused_with_the_estimate_and_the_fix() -> None:
    needed = estimate(1_000_000, **SIZES)
    with pytest.raises(gp.InvalidArgumentError) as err:
        check_capacity(1_000_000, **SIZES, available=needed // 10)
    message = str(err.value)
    assert "'population'" in message
    assert "population=1,000,000" in message
    assert "GiB" in message
    assert "available" in message
    assert "Fix: a population of at most 100,000" in message
    assert "sqlite" in message  # the reports need not stay in memory


def test_without_reports_in_memory_the_fix_names_no_store() -> None:
    sizes = {**SIZES, "reports_per_member": 0}
    with pytest.raises(gp.InvalidArgumentError, match="Fix: a population of at most") as err:
        check_capacity(1_000_000, **sizes, available=1 << 20)
    assert "sqlite" not in str(err.value)


def test_unknown_memory_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_capacity, "available_memory", lambda: None)
    check_capacity(10**12, **SIZES)  # nothing to compare with: no refusal


def test_the_memory_available_is_read_on_linux() -> None:
    found = available_memory()
    assert found is None or found > 0


def test_gp_run_refuses_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_capacity, "available_memory", lambda: 1 << 20)  # 1 MiB
    db = tmp_path / "pbt.db"
    with pytest.raises(gp.InvalidArgumentError, match="population=1,000") as err:
        gp.run(
            _train,
            gp.Space(lr=gp.Float(0.01, 0.1)),
            metric="score",
            population=1_000,
            ready=gp.Every(2),
            budget=gp.Budget(steps=4),
            storage=f"sqlite:///{db}",
        )
    assert "'population'" in str(err.value)
    assert not db.exists()  # refused before the store was opened


def test_gp_run_counts_the_reports_an_in_memory_store_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = {"hparams": 1, "recent_window": 100, "keep": 1}
    # room for 100 members on SQLite, not for their reports in memory as well
    room = estimate(100, **sizes, reports_per_member=0)
    assert estimate(100, **sizes, reports_per_member=1_000) > room
    monkeypatch.setattr(_capacity, "available_memory", lambda: room)
    args: dict[str, Any] = {
        "metric": "score",
        "population": 100,
        "ready": gp.Every(500),
        "budget": gp.Budget(steps=1_000),
    }
    with pytest.raises(gp.InvalidArgumentError, match="sqlite"):
        gp.run(_train, gp.Space(lr=gp.Float(0.01, 0.1)), **args)
