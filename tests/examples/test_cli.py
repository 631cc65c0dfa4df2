"""examples/_cli.py: the command line every example shares."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import _cli

import genepool as gp


def _train(member: gp.Member) -> None:
    x: float = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"]
        member.report(score=-abs(1.0 - x), state=float(x))


def _run(**kwargs: Any) -> gp.Result:
    _run.calls.append(kwargs)  # type: ignore[attr-defined]
    pbt = kwargs["method"] == "pbt"
    return gp.run(
        _train,
        gp.Space(lr=gp.Float(0.01, 0.2, log=True)),
        metric="score",
        population=4,
        ready=gp.Every(4),
        budget=gp.Budget(steps=16 if kwargs["size"] == "smoke" else 32),
        exploit=gp.Tournament() if pbt else None,
        seed=kwargs["seed"],
        storage=kwargs["storage"],
    )


def test_the_flags_reach_run_and_the_best_member_is_printed(capsys, tmp_path):
    _run.calls = []  # type: ignore[attr-defined]
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    argv = ["--method", "random", "--seed", "3", "--size", "smoke", "--storage", url]
    _cli.main(
        doc="Toy.\nMore.", task="toy", metric="score", sizes=["smoke", "full"], run=_run, argv=argv
    )
    assert _run.calls == [  # type: ignore[attr-defined]
        {
            "method": "random",
            "seed": 3,
            "size": "smoke",
            "workers": 1,
            "storage": url,
            "progress": False,
        }
    ]
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["task"] == "toy"
    assert (out["method"], out["seed"], out["size"], out["metric"]) == (
        "random",
        3,
        "smoke",
        "score",
    )
    assert out["exploits"] == 0
    best = gp.Result.open(url, "run").best
    assert out["best_member"] == best.id
    assert out["score"] == best.score
    assert set(out["hparams"]) == {"lr"}


def test_an_unknown_size_is_refused(capsys):
    with pytest.raises(SystemExit):
        _cli.main(
            doc="Toy.",
            task="toy",
            metric="score",
            sizes=["full"],
            run=_run,
            argv=["--size", "huge"],
        )
    assert "invalid choice" in capsys.readouterr().err
