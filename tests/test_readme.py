"""The README's example runs as shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_finds_a_good_member(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.best.step == 100  # type: ignore[attr-defined]
    assert result.best.score > 0.99  # type: ignore[attr-defined]
    assert "lr" in capsys.readouterr().out


def test_readme_ask_tell_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    asktell = [b for b in blocks if "gp.AskTell(" in b]
    assert asktell, "the README has no ask/tell example"
    assert len(asktell[0].strip().splitlines()) <= 15
    namespace: dict[str, object] = {}
    exec(compile(asktell[0], str(README), "exec"), namespace)
    pbt = namespace["pbt"]
    assert pbt.stop_reason == "budget"  # type: ignore[attr-defined]
    assert pbt.result().best.step == 100  # type: ignore[attr-defined]
    assert pbt.result().best.score > 0.99  # type: ignore[attr-defined]
    assert "lr" in capsys.readouterr().out


def test_readme_vectorised_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    vectorised = [b for b in blocks if "gpv.run(" in b]
    assert vectorised, "the README has no vectorised example"
    namespace: dict[str, object] = {}
    exec(compile(vectorised[0], str(README), "exec"), namespace)
    result = namespace["vec"]
    assert result.best.step == 200  # type: ignore[attr-defined]
    assert len(result.population) == 16  # type: ignore[attr-defined]
    assert result.best.score < 0.05  # type: ignore[attr-defined]
    assert any(e.kind == "exploit" for e in result.events)  # type: ignore[attr-defined]
    printed = capsys.readouterr().out.splitlines()
    assert "lr" in printed[0]
    replayed = float(printed[1])  # the best member retraced alone
    assert replayed == pytest.approx(result.best.score, rel=1e-4)  # type: ignore[attr-defined]
