"""The report's decisions table: what gp.PB2 and gp.Calm recorded of their choices, escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import genepool as gp
from genepool.analysis import write_report

HOSTILE = "<b>bold</b>"


def climb(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        bonus = 0.5 if member.hparams["opt"] == "sgd" else 0.0
        x += float(member.hparams["lr"]) + bonus + 0.1 * float(member.rng.standard_normal())
        member.report(score=x, state=x)


def run(**rules: Any) -> gp.Result:
    space = gp.Space(lr=gp.Float(1e-3, 1.0, log=True), opt=gp.Choice([HOSTILE, "sgd"]))
    return gp.run(
        climb,
        space,
        metric="score",
        population=4,
        ready=gp.Every(2),
        budget=gp.Budget(steps=16),
        seed=2,
        progress=False,
        **rules,
    )


def test_the_table_shows_which_rule_chose_each_value_and_the_donors_lead(tmp_path: Path):
    result = run(exploit=gp.Calm(gp.Truncation(), lead=0.1), explore=gp.PB2Mix())
    raw = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    section = raw.split('<section id="decisions">', 1)[1].split("</section>", 1)[0]
    rows = section.count("<tr data-m=")
    exploits = sum(e.kind == "exploit" for e in result.events)
    assert rows == exploits > 0
    assert "opt: exp3" in section
    assert "lr: gp" in section or "at random" in section
    assert ": clear" in section
    assert HOSTILE not in raw  # a value of the space is text, never markup
    judged_values = [e.data["new_hparams"]["opt"] for e in result.events if e.kind == "exploit"]
    if HOSTILE in judged_values:
        assert "opt = &lt;b&gt;bold&lt;/b&gt;" in section


def test_a_run_whose_rules_say_nothing_says_so(tmp_path: Path):
    result = run(explore=gp.Perturb())
    raw = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "record no account of their choices" in raw
