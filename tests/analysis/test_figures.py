"""The report's PNG figures (matplotlib): every file written, any name drawn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import genepool as gp
from genepool.analysis import plot_overview, plot_report
from genepool.analysis._figures import FIGURES
from tests.analysis._runs import HOSTILE_RUN, failing_run, small_run, synthetic_result

pytest.importorskip("matplotlib")


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000


def test_plot_report_writes_every_figure(tmp_path: Path) -> None:
    paths = plot_report(small_run(), tmp_path / "figures", dpi=60)
    assert [p.name for p in paths] == list(FIGURES)
    for p in paths:
        assert p.parent == tmp_path / "figures"
        assert _is_png(p), p


def test_hostile_names_and_dollars_do_not_break_matplotlib(tmp_path: Path) -> None:
    # "$" starts mathematics in matplotlib's text: an odd number of them must not raise
    result = synthetic_result(HOSTILE_RUN + " cost$ $x^")
    paths = plot_report(result, tmp_path, title="a $ title", dpi=60)
    assert all(_is_png(p) for p in paths)


def test_failures_and_an_unscored_run_still_draw(tmp_path: Path) -> None:
    assert _is_png(plot_overview(failing_run(), tmp_path / "f.png", title="fails", dpi=60))
    store = gp.MemoryStore()
    store.create_run(
        "fresh",
        config={"metric": "score", "mode": "max", "seed": 0},
        members=[gp.MemberView(id=i, hparams={"lr": 0.1 * (i + 1)}) for i in range(3)],
    )
    fresh = gp.Result(
        name="fresh",
        seed=0,
        metric="score",
        stop_reason="running",
        store=store,
        checkpoints=gp.MemoryCheckpoints(),
    )
    assert _is_png(plot_overview(fresh, tmp_path / "e" / "overview.png", dpi=60))


def test_without_matplotlib_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(gp.MissingDependencyError, match=r"genepool\[plot\]"):
        plot_report(synthetic_result("plain"), tmp_path)
