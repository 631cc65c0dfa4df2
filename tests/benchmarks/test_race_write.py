"""benchmarks/race_write.py and race_stats.py: the race's write-up from synthetic records."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import race_stats
import race_write
from benchutil import t_interval

Rec = dict[str, Any]
MODES = {"toy": "max", "wave": "max", "deceptive": "min", "rl": "max", "gan": "max"}
#: score = BASE[method] + 0.1 * (seed % 3) * STEP[method]: known paired differences
BASE = {"random": 1.0, "pbt": 2.0, "pb2": 2.5, "pbt_calm": 1.0, "tune_pbt": 2.0, "tune_pb2": 3.0}
BASE |= {"exploit_only": 1.5, "explore_only": 0.5}
STEP = {"random": 0.0, "pbt": 1.0, "pb2": 2.0, "pbt_calm": -1.0, "tune_pbt": 1.5, "tune_pb2": 0}
STEP |= {"exploit_only": 1.0, "explore_only": 1.0}
SEEDS = [0, 1, 2, 3, 4]


def score(task: str, method: str, seed: int) -> float:
    x = BASE[method] + 0.1 * (seed % 3) * STEP[method]
    return -x if MODES[task] == "min" else x  # lower is better there: the same ranking


def record(task: str, pop: int, method: str, seed: int, best: float | None = None) -> Rec:
    best = score(task, method, seed) if best is None else best
    rec: dict[str, Any] = {
        "format": 1,
        "task": task,
        "method": method,
        "framework": "ray-tune" if method.startswith("tune_") else "genepool",
        "seed": seed,
        "size": "full",
        "population": pop,
        "metric": "Q" if task != "deceptive" else "loss",
        "mode": MODES[task],
        "best_score": best,
        "final_scores": [best],
        "budget_steps": 20,
        "wall_s": 1.5,
        "exploits": 3 if method != "random" else 0,
        "population_curve": [[s, best * s / 20] for s in range(0, 21, 4 if seed % 2 else 5)],
        "settings": {},
        "genepool": "0",
        "python": "3.11",
    }
    if method == "pbt":
        change = {"member": 0, "generation": 0, "cause": "start", "step": 0, "hparams": {"lr": 0.1}}
        later = {**change, "step": 8, "hparams": {"lr": 0.05}, "cause": "exploit"}
        changes = [change, later]
        rec["schedule"] = {"format": "genepool.schedule", "version": 1, "final_step": 20}
        rec["schedule"]["changes"] = changes
    return rec


def cell(task: str, pop: int, method: str, group: str = "main") -> Rec:
    return {"task": task, "population": pop, "method": method, "seeds": SEEDS, "group": group}


def full_plan() -> list[Rec]:
    plan = [
        cell(t, p, m)
        for t in ("toy", "wave", "deceptive", "rl", "gan")
        for p in (4, 8)
        for m in ("random", "pbt", "pb2", "pbt_calm")
    ]
    plan += [cell(t, 4, m, "ray") for t in ("toy", "wave") for m in ("tune_pbt", "tune_pb2")]
    plan += [cell("gan", 8, m, "ablation") for m in ("exploit_only", "explore_only")]
    return plan + [
        cell("gan", p, m, "population_size") for p in (16, 32) for m in ("random", "pbt")
    ]


def all_records(plan: list[Rec]) -> list[Rec]:
    return [record(c["task"], c["population"], c["method"], s) for c in plan for s in c["seeds"]]


def comparison(summary: Rec, task: str, pop: int, a: str, b: str) -> Rec:
    found: Rec | None = race_stats._find(summary["comparisons"], task, pop, a, b)
    assert found is not None
    return found


def target(summary: Rec, i: int) -> Rec:
    found: Rec = summary["targets"][i]
    return found


def cell_of(summary: Rec, task: str, pop: int, method: str) -> Rec:
    key = (task, pop, method)
    found: Rec = next(
        c for c in summary["cells"] if (c["task"], c["population"], c["method"]) == key
    )
    return found


def test_paired_differences_interval_and_sign() -> None:
    plan = full_plan()
    recs = all_records(plan)
    s = race_write.summarise(recs, plan)
    assert s["runs_in"] == s["runs_planned"] == 5 * len(plan)
    for task in ("toy", "deceptive"):  # deceptive: lower is better, the sign is flipped
        c = comparison(s, task, 4, "pbt", "random")
        diffs = [1.0 + 0.1 * (seed % 3) for seed in SEEDS]
        assert c["differences"] == pytest.approx(diffs)
        assert c["mean"] == pytest.approx(statistics.fmean(diffs))
        assert c["interval"] == pytest.approx(list(t_interval(diffs) or ()))
        assert (c["wins"], c["ties"], c["losses"], c["verdict"]) == (5, 0, 0, "better")
        worse = comparison(s, task, 4, "pbt_calm", "pbt")
        assert worse["mean"] < 0
        assert worse["verdict"] == "worse"
        assert worse["losses"] == 5
    # the cell's mean is of the raw scores, in the metric's own direction
    deceptive = cell_of(s, "deceptive", 4, "pbt")
    assert deceptive["mean"] == pytest.approx(
        -statistics.fmean(score("toy", "pbt", x) for x in SEEDS)
    )
    assert json.loads(json.dumps(s)) == s  # JSON-ready
    renamed = [{**r, "metric": "mean_q"} if r["method"] == "tune_pbt" else r for r in recs]
    assert cell_of(race_write.summarise(renamed, plan), "toy", 4, "pbt")["metric"] == "Q / mean_q"
    flipped = [{**r, "mode": "min"} if r["method"] == "tune_pbt" else r for r in recs]
    with pytest.raises(ValueError, match="disagree on the mode"):
        race_write.summarise(flipped, plan)


def test_only_pairs_counted_and_partial_plan() -> None:
    plan = full_plan()
    recs = [r for r in all_records(plan) if not (r["method"] == "pb2" and r["seed"] >= 2)]
    failed = {**record("toy", 4, "pb2", 2), "best_score": None, "exploits": None}
    recs.append(failed)  # a run that failed: in, without a score
    recs.append(record("toy", 4, "pbt", 7))  # a seed not in the plan: left out
    recs.append({**record("toy", 4, "pbt", 0), "size": "smoke"})
    recs.append(record("toy", 4, "pbt", 0, best=99.0))  # a duplicate: the first one is kept
    s = race_write.summarise(recs, plan)
    assert s["ignored"] == {"other_size": 1, "unplanned": 1, "duplicate": 1}
    c = comparison(s, "toy", 4, "pb2", "random")
    assert (c["n"], c["planned"], c["runs_in"], c["complete"], c["seeds"]) == (
        2,
        5,
        8,
        False,
        [0, 1],
    )
    assert c["interval"] is not None
    pb2 = cell_of(s, "toy", 4, "pb2")
    assert (pb2["runs_in"], pb2["failed"], pb2["n"], pb2["planned"]) == (3, 1, 2, 5)
    assert (pb2["exploits"], pb2["wall_s"]) == (3, 1.5)  # the failed run has no count
    assert comparison(s, "toy", 4, "pbt", "random")["mean"] < 50  # not the duplicate
    # smoke records alone (benchmarks/paper.py --quick): their size is the one written up
    smoke = [{**r, "size": "smoke"} for r in all_records(plan)[:7]]
    assert race_write.summarise(smoke, plan)["size"] == "smoke"
    assert race_write.summarise(smoke, plan)["runs_in"] == 7
    assert race_write.summarise(smoke, plan, size="full")["ignored"]["other_size"] == 7
    assert s["runs_in"] == s["runs_planned"] - 10 * 3 + 1  # 10 pb2 cells, 3 of 5 seeds missing


def verdicts(records: list[Rec], plan: list[Rec]) -> list[str]:
    return [t["verdict"] for t in race_write.summarise(records, plan)["targets"]]


def test_targets_met_not_met_and_pending() -> None:
    plan = full_plan()
    recs = all_records(plan)
    # pbt and pb2 beat random everywhere; pb2 beats pbt everywhere; pbt against tune_pbt:
    # 0, -0.05, -0.1, 0, -0.05 (not shown worse); pb2 against tune_pb2: -0.5 to -0.1 (worse)
    assert verdicts(recs, plan) == ["met", "met", "not met"]
    s = race_write.summarise(recs, plan)
    rows = target(s, 2)["rows"]
    assert {(r["task"], r["a"], r["status"]) for r in rows} == {
        (t, a, st) for t in ("toy", "wave") for a, st in (("pbt", "not worse"), ("pb2", "worse"))
    }
    assert target(s, 0)["passing"] == 2  # rl and gan (translation is not planned here)
    # Ray Tune's PB2 worse than genepool's on every seed: the third target is met, "better"
    fair = [
        {**r, "best_score": score(r["task"], "pb2", r["seed"]) - 0.1 * (r["seed"] % 2 + 1)}
        if r["method"] == "tune_pb2"
        else r
        for r in recs
    ]
    assert verdicts(fair, plan)[2] == "met"
    rows = target(race_write.summarise(fair, plan), 2)["rows"]
    assert sorted(r["status"] for r in rows) == ["better", "better", "not worse", "not worse"]
    # PB2 loses to PBT on the paper tasks: the second target cannot be met any more
    worse = [
        {**r, "best_score": 0.0} if r["method"] == "pb2" and r["task"] in ("rl", "gan") else r
        for r in recs
    ]
    assert verdicts(worse, plan)[1] == "not met"
    # the runs of one paper task missing: the first target is met on one, not decided yet
    part = [
        r for r in recs if not (r["task"] == "gan" and r["method"] == "random" and r["seed"] > 2)
    ]
    v = verdicts(part, plan)[0]
    assert v.startswith("not decided yet (")
    assert v.endswith(" runs in)")
    runs = target(race_write.summarise(part, plan), 0)["runs"]
    assert runs == [56, 60]  # rl and gan x populations 4, 8 x 3 methods x 5 seeds; 4 missing
    assert v == "not decided yet (56 of 60 runs in)"
    # an interval above 0 on part of the seeds does not meet a target
    early = [r for r in recs if r["seed"] < 3]
    assert all(v.startswith("not decided yet") for v in verdicts(early, plan))
    # nothing left that could pass: not met although runs are missing
    bad = [{**r, "best_score": 0.0} if r["method"] in ("pbt", "pb2") else r for r in part]
    assert verdicts(bad, plan)[0] == "not met"


def test_not_won_sentences() -> None:
    plan = [cell("rl", 4, m) for m in ("random", "pbt", "pb2")]
    recs = all_records(plan)
    gain = [0.4, -0.6, 0.2, -0.3]  # pb2 - pbt; seed 4's pb2 run is not in
    recs = [r for r in recs if r["method"] != "pb2"]
    recs += [record("rl", 4, "pb2", s, best=score("rl", "pbt", s) + g) for s, g in enumerate(gain)]
    s = race_write.summarise(recs, plan)
    c = comparison(s, "rl", 4, "pb2", "pbt")
    assert c["verdict"] == "no difference shown"
    assert c["mean"] == pytest.approx(-0.075)
    want = (
        f"pb2 did not beat pbt on rl at population 4: mean gain {c['mean']:.4g} "
        f"({c['interval'][0]:.4g} to {c['interval'][1]:.4g}), 4 of 5 seeds."
    )
    assert s["not_won"] == [want]


def test_ranks_and_critical_difference_by_hand() -> None:
    plan = [cell("toy", 4, m) | {"seeds": [0, 1]} for m in ("random", "pbt", "pb2")]
    recs = [
        record("toy", 4, m, seed, best=v)
        for seed, row in enumerate([(1.0, 3.0, 2.0), (1.0, 2.0, 2.0)])
        for m, v in zip(("random", "pbt", "pb2"), row, strict=True)
    ]
    rk = race_write.summarise(recs, plan)["ranks"]
    # ranks within seed 0: random 3, pbt 1, pb2 2; seed 1: random 3, pbt and pb2 1.5 each
    assert rk["methods"] == ["random", "pbt", "pb2"]
    assert rk["blocks"] == 2
    assert rk["average"] == {"random": 3.0, "pbt": 1.25, "pb2": 1.75}
    # Friedman: sum of ranks 6, 2.5, 3.5; 12/(2*3*4) * (36 + 6.25 + 12.25) - 3*2*4 = 3.25;
    # one tie of two in 6 ranks: correction 1 - 6/(2*3*8) = 0.875
    assert rk["friedman"]["chi2"] == pytest.approx(3.25 / 0.875)
    assert rk["friedman"]["p"] == pytest.approx(math.exp(-3.25 / 0.875 / 2))  # chi2, 2 dof
    from scipy.stats import friedmanchisquare

    ref = friedmanchisquare([1.0, 1.0], [3.0, 2.0], [2.0, 2.0])
    assert rk["friedman"]["chi2"] == pytest.approx(ref.statistic)
    # Nemenyi: q_0.05 for 3 methods is 2.343 (Demsar 2006, table 5a); sqrt(3*4/(6*2)) = 1
    assert rk["cd"] == pytest.approx(2.343, abs=1e-3)
    assert rk["cliques"] == [["pbt", "pb2", "random"]]
    assert race_stats.cliques({"a": 1.0, "b": 1.5, "c": 2.6, "d": 3.0}, 1.2) == [
        ["a", "b"],
        ["b", "c"],
        ["c", "d"],
    ]
    # mode "min": the lowest score ranks first
    assert race_stats.rank_block([1.0, 3.0, 2.0], "min") == [1.0, 3.0, 2.0]
    assert race_stats.rank_block([1.0, 3.0, 3.0], "max") == [3.0, 1.5, 1.5]


def test_load_records_keeps_format_1_only(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(json.dumps(record("toy", 4, "pbt", 1)))
    (tmp_path / "a.json").write_text(json.dumps(record("toy", 4, "pbt", 0)))
    (tmp_path / "plan.json").write_text(json.dumps(full_plan()))
    (tmp_path / "old.json").write_text(json.dumps({"format": 0}))
    paper = {k: v for k, v in record("toy", 4, "pbt", 2).items() if k != "framework"}
    (tmp_path / "paper.json").write_text(json.dumps(paper))  # benchmarks/paper.py's own
    (tmp_path / "torn.json").write_text('{"format": 1, "ta')
    (tmp_path / "notes.txt").write_text("{}")
    assert [r["seed"] for r in race_write.load_records(tmp_path)] == [0, 1]


def write(tmp_path: Path, records: list[Rec], plan: list[Rec], notes: str | None = None) -> str:
    doc = tmp_path / "docs" / "results.md"
    race_write.write_doc(records, plan, doc, tmp_path / "docs" / "results", notes)
    return doc.read_text()


def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_doc_deterministic_and_from_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_matplotlib(monkeypatch)  # the figures are checked below: this test stays quick
    plan = full_plan()
    recs = [r for r in all_records(plan) if not (r["method"] == "random" and r["seed"] == 4)]
    plan.append(cell("translation", 4, "random"))  # planned, nothing in yet
    notes = "PB2 lost on the wave because *reasons*."
    first = write(tmp_path, recs, plan, notes)
    assert write(tmp_path, recs[::-1][::-1], plan, notes) == first
    assert "## Notes (written by hand after the results)" in first
    assert "*reasons*" in first
    assert "238 of 255 planned runs are in" in first
    assert "### translation, population 4\n\nNo run in yet (0 of 5).\n" in first
    assert "(toy: 5 seeds (0 to 4), wave: 5 seeds (0 to 4), deceptive: 5" in first
    assert "Nemenyi critical difference at 0.05: 0.7416; methods whose" in first  # k 4, N 40
    assert "\n\n\n" not in first
    assert "### 1. beats random search: **not decided yet (56 of 60 runs in)**" in first
    assert "### 2. PB2 beats PBT: **met**" in first
    assert "| rl | 4 | pbt - random | 4 of 5 | 1.075 | 0.9227 to 1.227 | runs missing" in first
    assert "- pbt_calm did worse than pbt on toy at population 4: mean gain -1.16 " in first
    assert "No figures: matplotlib is not installed" in first
    assert "![" not in first
    # every number comes from the records: one score changed changes the document
    changed = [dict(r) for r in recs]
    changed[0]["best_score"] += 0.125
    assert write(tmp_path, changed, plan, notes) != first
    # no notes: said so, and no notes section
    bare = write(tmp_path, recs, plan)
    assert "Notes (written by hand" not in bare
    assert "typed by hand. In" in bare
    assert "no hand-written notes" in bare
    # a plan without PB2-Mix says why; one with it does not
    assert "PB2-Mix is not in the plan" in first
    with_mix = [*plan, cell("toy", 4, "pb2mix")]
    assert "PB2-Mix is not in the plan" not in write(tmp_path, recs, with_mix, notes)


def test_figures_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plan = [cell("toy", 4, m) for m in ("random", "pbt", "pb2")]
    plan += [cell("gan", p, m) for p in (4, 8) for m in ("random", "pbt")]
    plan += [cell("gan", 8, "exploit_only", "ablation")]
    recs = all_records(plan)
    recs[0]["population_curve"] = []  # a run without a curve is drawn without one
    text = write(tmp_path, recs, plan)
    names = sorted(p.name for p in (tmp_path / "docs" / "results").iterdir())
    expect = ["race_ranks.png", "race_gan_ablation.png", "race_gan_population.png"]
    expect += [
        f"race_{k}{s}.png" for k in ("toy_p4", "gan_p4", "gan_p8") for s in ("", "_schedule")
    ]
    assert names == sorted(expect)
    for name in names:
        assert f"](results/{name})" in text
    assert "No figures" not in text


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_matplotlib(monkeypatch)
    plan = [cell("rl", 4, m) for m in ("random", "pbt")]
    for r in all_records(plan)[:3]:
        (tmp_path / f"{r['task']}-{r['method']}-{r['seed']}.json").write_text(json.dumps(r))
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "NOTES.md").write_text("Seed 3 crashed.")
    doc = tmp_path / "out" / "results.md"
    argv = ["--results", str(tmp_path), "--doc", str(doc), "--figures", str(tmp_path / "f")]
    assert race_write.main(argv) == 0
    text = doc.read_text()
    assert "3 of 10 planned runs are in" in text
    assert "Seed 3 crashed." in text
