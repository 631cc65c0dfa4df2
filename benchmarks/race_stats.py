"""The race's statistics (issue 21): pure data from the per-seed records and the plan.

``summarise(records, plan)`` returns a JSON-ready dict: per planned cell (task, population,
method) the runs in and the mean, sd and 95% t interval of the best final score; per planned
comparison the differences paired by seed ("better is positive": the sign is flipped where
lower is better), their mean, 95% t interval and wins/ties/losses; the issue's three targets
with their verdicts; the rank analysis (average ranks, Friedman test, Nemenyi critical
difference); and one generated sentence for every comparison the first method did not win.
Only planned seeds count: a record outside the plan is counted and left out, so no seed can
be added after the results are seen. ``race_write.py`` turns the summary into the document.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchutil import t_interval
from race_plan import PAPER_TASKS, TASKS

METHODS = (
    "random",
    "pbt",
    "pb2",
    "pb2mix",
    "pbt_calm",
    "exploit_only",
    "explore_only",
    "tune_pbt",
    "tune_pb2",
)
#: (a, b): the gain of ``a`` over ``b``, computed wherever the plan has both.
COMPARISONS = (
    ("pbt", "random"),
    ("pb2", "random"),
    ("pb2mix", "random"),
    ("pbt_calm", "random"),
    ("pb2", "pbt"),
    ("pbt_calm", "pbt"),
    ("pbt", "tune_pbt"),
    ("pb2", "tune_pb2"),
    ("pbt", "exploit_only"),
    ("pbt", "explore_only"),
    ("exploit_only", "random"),
    ("explore_only", "random"),
)
RANK_METHODS = ("random", "pbt", "pb2", "pbt_calm")

Key = tuple[str, int, str]  # (task, population, method)
#: The keys of a race record (benchmarks/paper.py's own older records lack ``framework``).
RECORD_KEYS = frozenset({"task", "method", "framework", "seed", "size", "population"}) | {
    *("metric", "mode", "best_score", "budget_steps", "wall_s", "exploits", "population_curve")
}


def load_records(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` in ``directory`` holding a race record, in file-name order.

    A race record is a JSON object with ``"format": 1`` and the race's keys (``framework``,
    ``population``, ``best_score``...): the older records of benchmarks/paper.py, also
    format 1 but without ``framework``, are left out, as is every other file.
    """
    out = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("format") == 1 and data.keys() >= RECORD_KEYS:
            out.append(data)
    return out


def fmt(x: float | None) -> str:
    """A number to 4 significant digits ("n/a" for none)."""
    return "n/a" if x is None else f"{x:.4g}"


def fmt_interval(iv: Sequence[float] | None) -> str:
    return "n/a" if iv is None else f"{fmt(iv[0])} to {fmt(iv[1])}"


def task_order(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)


def method_order(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def _cell_order(key: Key) -> tuple[Any, ...]:
    return (task_order(key[0]), key[1], method_order(key[2]))


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    mean = statistics.fmean(values) if values else None
    return mean, (statistics.stdev(values) if len(values) >= 2 else None)


def _mean_of(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The mean of ``key`` over the records that have a number there (``None``: none has)."""
    values = [float(r[key]) for r in records if finite(r.get(key))]
    return statistics.fmean(values) if values else None


def _interval(values: Sequence[float]) -> list[float] | None:
    iv = t_interval(values)
    return None if iv is None else [float(iv[0]), float(iv[1])]


def summarise(
    records: Iterable[Mapping[str, Any]],
    plan: Iterable[Mapping[str, Any]],
    size: str | None = None,
) -> dict[str, Any]:
    """The race's summary (JSON-ready) from the records of ``size`` and the plan.

    ``size=None``: ``"full"`` where any record is of that size, else the one size there is
    (a ``--quick`` run's ``"smoke"``); records of another size are counted and left out.
    """
    records = list(records)
    if size is None:
        sizes = {r.get("size") for r in records}
        size = "full" if "full" in sizes or len(sizes) != 1 else str(sizes.pop())
    planned: dict[Key, dict[str, Any]] = {}
    for c in plan:
        key = (str(c["task"]), int(c["population"]), str(c["method"]))
        cell = planned.setdefault(key, {"group": str(c["group"]), "seeds": set()})
        cell["seeds"].update(int(s) for s in c["seeds"])
    runs: dict[Key, dict[int, Mapping[str, Any]]] = {k: {} for k in planned}
    ignored = {"other_size": 0, "unplanned": 0, "duplicate": 0}
    modes: dict[str, tuple[str, str]] = {}
    for r in records:
        if r.get("size") != size:
            ignored["other_size"] += 1
            continue
        key = (str(r["task"]), int(r["population"]), str(r["method"]))
        seed = int(r["seed"])
        if key not in planned or seed not in planned[key]["seeds"]:
            ignored["unplanned"] += 1
            continue
        if seed in runs[key]:
            ignored["duplicate"] += 1  # the first one read (files in name order) is kept
            continue
        runs[key][seed] = r
        names, mode0 = modes.setdefault(key[0], (str(r["metric"]), str(r["mode"])))
        if mode0 != r["mode"]:  # the sign of every difference depends on it
            raise ValueError(f"task {key[0]}: records disagree on the mode ({mode0}, {r['mode']})")
        if r["metric"] not in names.split(" / "):  # e.g. Ray Tune's own name for it
            modes[key[0]] = (" / ".join(sorted([*names.split(" / "), str(r["metric"])])), mode0)

    def scores(key: Key) -> dict[int, float]:
        return {s: float(r["best_score"]) for s, r in runs[key].items() if finite(r["best_score"])}

    cells = []
    for key in sorted(planned, key=_cell_order):
        sc = scores(key)
        values = [sc[s] for s in sorted(sc)]
        mean, sd = _mean_sd(values)
        rs = [runs[key][s] for s in sorted(runs[key])]
        metric, mode = modes.get(key[0], (None, None))
        cells.append(
            {
                "task": key[0],
                "population": key[1],
                "method": key[2],
                "group": planned[key]["group"],
                "metric": metric,
                "mode": mode,
                "planned": len(planned[key]["seeds"]),
                "runs_in": len(rs),
                "seeds_in": sorted(runs[key]),
                "failed": len(rs) - len(sc),
                "n": len(values),
                "scores": [[s, sc[s]] for s in sorted(sc)],
                "mean": mean,
                "sd": sd,
                "interval": _interval(values),
                "wall_s": _mean_of(rs, "wall_s"),
                "max_wall_s": max(
                    (float(r["wall_s"]) for r in rs if finite(r["wall_s"])), default=None
                ),
                "exploits": _mean_of(rs, "exploits"),
                "budget_steps": sorted(
                    {int(r["budget_steps"]) for r in rs if finite(r["budget_steps"])}
                ),
            }
        )

    comparisons = []
    for task, pop in sorted({(k[0], k[1]) for k in planned}, key=lambda tp: _cell_order((*tp, ""))):
        sign = -1.0 if modes.get(task, ("", "max"))[1] == "min" else 1.0
        for a, b in COMPARISONS:
            ka, kb = (task, pop, a), (task, pop, b)
            if ka not in planned or kb not in planned:
                continue
            pairs = sorted(planned[ka]["seeds"] & planned[kb]["seeds"])
            sa, sb = scores(ka), scores(kb)
            seeds = [s for s in pairs if s in sa and s in sb]
            diffs = [sign * (sa[s] - sb[s]) for s in seeds]
            mean, sd = _mean_sd(diffs)
            iv = _interval(diffs)
            in_ = sum((s in runs[ka]) + (s in runs[kb]) for s in pairs)
            comparisons.append(
                {
                    "task": task,
                    "population": pop,
                    "a": a,
                    "b": b,
                    "planned": len(pairs),
                    "runs_in": in_,
                    "complete": in_ == 2 * len(pairs),
                    "n": len(seeds),
                    "seeds": seeds,
                    "differences": diffs,
                    "mean": mean,
                    "sd": sd,
                    "interval": iv,
                    "wins": sum(d > 0 for d in diffs),
                    "ties": sum(d == 0 for d in diffs),
                    "losses": sum(d < 0 for d in diffs),
                    "verdict": _verdict(iv),
                }
            )
    return {
        "size": size,
        "runs_planned": sum(c["planned"] for c in cells),
        "runs_in": sum(c["runs_in"] for c in cells),
        "ignored": ignored,
        "cells": cells,
        "comparisons": comparisons,
        "targets": targets(cells, comparisons),
        "ranks": ranks(runs, modes),
        "not_won": [
            not_won_sentence(c) for c in comparisons if c["n"] and c["verdict"] != "better"
        ],
    }


def _verdict(iv: Sequence[float] | None) -> str:
    if iv is None:
        return "too few pairs"
    if iv[0] > 0:
        return "better"
    return "worse" if iv[1] < 0 else "no difference shown"


def not_won_sentence(c: Mapping[str, Any]) -> str:
    """The generated sentence for a comparison whose first method did not win."""
    where = f"on {c['task']} at population {c['population']}"
    figures = (
        f"mean gain {fmt(c['mean'])} ({fmt_interval(c['interval'])}), "
        f"{c['n']} of {c['planned']} seeds"
    )
    if c["verdict"] == "worse":
        return f"{c['a']} did worse than {c['b']} {where}: {figures}."
    if c["verdict"] == "too few pairs":
        return f"{c['a']} is not shown to beat {c['b']} {where}: too few pairs; {figures}."
    return f"{c['a']} did not beat {c['b']} {where}: {figures}."


# -- the targets --------------------------------------------------------------------------
def _find(comparisons: Sequence[Mapping[str, Any]], task: str, pop: int, a: str, b: str) -> Any:
    for c in comparisons:
        if (c["task"], c["population"], c["a"], c["b"]) == (task, pop, a, b):
            return c
    return None


def _row(c: Mapping[str, Any], status: str) -> dict[str, Any]:
    keys = ("task", "population", "a", "b", "n", "planned", "mean", "interval", "complete")
    return {**{k: c[k] for k in keys}, "status": status}


def _runs(cells: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[int]:
    keys = {(r["task"], r["population"], m) for r in rows for m in (r["a"], r["b"])}
    chosen = [c for c in cells if (c["task"], c["population"], c["method"]) in keys]
    return [sum(c["runs_in"] for c in chosen), sum(c["planned"] for c in chosen)]


YES, NO, PENDING = "above 0", "not above 0", "runs missing"


def _above(c: Mapping[str, Any]) -> str:
    """Whether the interval is above 0 with every planned run in, or runs are missing."""
    if not c["complete"]:
        return PENDING + (" (above 0 so far)" if c["verdict"] == "better" else "")
    return YES if c["verdict"] == "better" else NO


def _verdict_word(state: str, runs: Sequence[int]) -> str:
    if state == PENDING:
        return f"not decided yet ({runs[0]} of {runs[1]} runs in)"
    return state


def targets(
    cells: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's three targets, each with its rows (figures), runs in and verdict.

    A target counts a comparison only once every planned run on both its sides is in (a
    failed run counts as in): an interval above 0 on part of the seeds is shown, and
    reported as runs missing, never "met".
    """
    out = []
    # (1) PBT or PB2 beats random search on at least two of the three paper experiments
    rows, yes, pending = [], 0, 0
    for task in PAPER_TASKS:
        found = [
            c
            for pop in (4, 8)
            for a in ("pbt", "pb2")
            if (c := _find(comparisons, task, pop, a, "random")) is not None
        ]
        states = [_above(c) for c in found]
        rows += [_row(c, s) for c, s in zip(found, states, strict=True)]
        yes += YES in states
        pending += YES not in states and any(x.startswith(PENDING) for x in states)
    state = "met" if yes >= 2 else "not met" if yes + pending < 2 else PENDING
    runs = _runs(cells, rows)
    out.append(
        {
            "name": "beats random search",
            "claim": "PBT or PB2 beats random search with a paired 95% interval above 0 "
            "(population 4 or 8) on at least two of the three paper experiments",
            "passing": yes,
            "unit": "of the 3 paper experiments",
            "rows": rows,
            "runs": runs,
            "verdict": _verdict_word(state, runs),
        }
    )
    # (2) PB2 beats PBT at population 4 on >= 2 tasks, >= 1 of them a paper experiment
    found = [c for t in TASKS if (c := _find(comparisons, t, 4, "pb2", "pbt")) is not None]
    rows = [_row(c, _above(c)) for c in found]
    got = [r["task"] for r in rows if r["status"] == YES]
    could = [r["task"] for r in rows if r["status"] != NO]
    paper_got = any(t in PAPER_TASKS for t in got)
    if len(got) >= 2 and paper_got:
        state = "met"
    elif len(could) < 2 or not any(t in PAPER_TASKS for t in could):
        state = "not met"
    else:
        state = PENDING
    runs = _runs(cells, rows)
    out.append(
        {
            "name": "PB2 beats PBT",
            "claim": "PB2 beats PBT at population 4 with a paired 95% interval above 0 on at "
            "least two of the six tasks, at least one of them a paper experiment",
            "passing": len(got),
            "unit": f"of the {len(rows)} tasks compared "
            f"({sum(t in PAPER_TASKS for t in got)} of them paper experiments)",
            "rows": rows,
            "runs": runs,
            "verdict": _verdict_word(state, runs),
        }
    )
    # (3) genepool's PBT and PB2 at least as good as Ray Tune's on the toy and the wave
    rows = []
    for task in ("toy", "wave"):
        for pop in (4, 8):
            for a, b in (("pbt", "tune_pbt"), ("pb2", "tune_pb2")):
                c = _find(comparisons, task, pop, a, b)
                if c is None:
                    continue
                iv = c["interval"]
                s = (
                    PENDING
                    if not c["complete"]
                    else "worse"
                    if iv is None or iv[1] < 0
                    else "better"
                    if iv[0] > 0
                    else "not worse"
                )
                rows.append(_row(c, s))
    states = [r["status"] for r in rows]
    state = "not met" if "worse" in states or not rows else PENDING if PENDING in states else "met"
    runs = _runs(cells, rows)
    out.append(
        {
            "name": "as good as Ray Tune",
            "claim": "genepool's PBT and PB2 at least as good as Ray Tune's at equal budget on "
            "the toy and the triangle wave: each paired interval's upper end at least 0",
            "passing": sum(s in ("not worse", "better") for s in states),
            "unit": f"of the {len(rows)} comparisons",
            "rows": rows,
            "runs": runs,
            "verdict": _verdict_word(state, runs) if rows else "not met (nothing planned)",
        }
    )
    return out


# -- ranks (critical-difference style) ----------------------------------------------------
def rank_block(values: Sequence[float], mode: str) -> list[float]:
    """Ranks within one block, 1 the best, ties given their average rank."""
    from scipy.stats import rankdata

    return [float(x) for x in rankdata([-v if mode == "max" else v for v in values])]


def friedman(block_ranks: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """Friedman's chi-square and p value from within-block ranks (tie-corrected)."""
    n = len(block_ranks)
    k = len(block_ranks[0]) if n else 0
    if k < 3 or n < 2:
        return None
    from scipy.stats import chi2

    sums = [sum(b[j] for b in block_ranks) for j in range(k)]
    stat = 12.0 / (n * k * (k + 1)) * sum(r * r for r in sums) - 3.0 * n * (k + 1)
    ties = sum(t**3 - t for b in block_ranks for t in (b.count(v) for v in set(b)))
    corr = 1.0 - ties / (n * k * (k * k - 1))
    if corr <= 0:
        return None
    stat /= corr
    return stat, float(chi2.sf(stat, k - 1))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of average ranks, ``k`` methods over ``n`` blocks."""
    from scipy.stats import studentized_range

    q = float(studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6.0 * n))


def cliques(avg: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal runs of methods (by average rank) whose ranks differ by less than ``cd``."""
    order = sorted(avg, key=lambda m: (avg[m], method_order(m)))
    out: list[list[str]] = []
    for i, m in enumerate(order):
        group = [x for x in order[i:] if avg[x] - avg[m] < cd]
        if len(group) > 1 and not (out and set(group) <= set(out[-1])):
            out.append(group)
    return out


def ranks(
    runs: Mapping[Key, Mapping[int, Mapping[str, Any]]], modes: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """Ranks over the blocks (task, population, seed) where every compared method has a score."""
    methods = [m for m in RANK_METHODS if any(k[2] == m for k in runs)]
    blocks: list[tuple[str, int, int]] = []
    block_ranks: list[list[float]] = []
    for task, pop in sorted({(k[0], k[1]) for k in runs}, key=lambda tp: _cell_order((*tp, ""))):
        have = [runs.get((task, pop, m), {}) for m in methods]
        seeds = sorted(
            set.intersection(*({s for s, r in h.items() if finite(r["best_score"])} for h in have))
            if have
            else set()
        )
        for s in seeds:
            blocks.append((task, pop, s))
            vals = [float(h[s]["best_score"]) for h in have]
            block_ranks.append(rank_block(vals, modes[task][1]))
    out: dict[str, Any] = {"methods": methods, "blocks": len(blocks)}
    if len(methods) < 2 or not blocks:
        return {**out, "average": {}, "per_task": {}, "friedman": None, "cd": None, "cliques": []}
    avg = {m: statistics.fmean(b[j] for b in block_ranks) for j, m in enumerate(methods)}
    per_task: dict[str, dict[str, Any]] = {}
    for task in sorted({b[0] for b in blocks}, key=task_order):
        mine = [r for b, r in zip(blocks, block_ranks, strict=True) if b[0] == task]
        per_task[task] = {
            "blocks": len(mine),
            "average": {m: statistics.fmean(r[j] for r in mine) for j, m in enumerate(methods)},
        }
    fr = friedman(block_ranks)
    cd = critical_difference(len(methods), len(blocks))
    return {
        **out,
        "average": avg,
        "per_task": per_task,
        "friedman": None if fr is None else {"chi2": fr[0], "p": fr[1]},
        "cd": cd,
        "cliques": cliques(avg, cd),
    }
