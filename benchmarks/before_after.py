"""Before and after, in one sitting: benchmarks/overhead.py run on several commits,
interleaved, and each figure judged by the rule the issues set.

Each commit is checked out in a temporary git worktree and measured with this
environment's Python (``PYTHONPATH`` pointing at that worktree's ``src``, ``examples``
and ``benchmarks``): run 1 of every commit, then run 2 of every commit, and so on, so
that the VM's drift (tens of percent over an hour) falls on all of them alike.

The rule (issues 15 and 16): no figure's median after is worse than its worst before:
for a cost (microseconds per member-step) the median after is at most the largest
before; for a rate (reports per second, the process executor's efficiency) it is at
least the smallest before. The last line printed is one JSON object: every run's
figure, the medians and ranges, the judgement against each commit before, and for each
run the share of the CPU other processes took during each part (a disturbed run shows).

Usage::

    python benchmarks/before_after.py --before fafa392 4f96bd5 --after HEAD \\
        --runs 3 --parts memory,sqlite,processes,reports --out results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Figures where a higher value is better; every other figure is a cost.
RATES = ("efficiency", "per_s")


def figures(parts: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
    """Each figure of one overhead.py run, by a name that is the same across commits."""
    for row in parts.get("memory", {}).get("results", []):
        yield f"memory {row['api']} {row['population']} us", row["overhead_us_per_member_step"]
    for row in parts.get("sqlite", {}).get("results", []):
        name = f"sqlite {row['checkpoints']} {row['population']} us"
        yield name, row["overhead_us_per_member_step"]
    for population, value in parts.get("processes", {}).get("efficiency", {}).items():
        yield f"processes {population} efficiency", value
    reports = parts.get("reports", {})
    for key in ("sqlite_unbatched", "sqlite_batched", "postgresql_unbatched", "postgresql_batched"):
        value = reports.get(f"{key}_per_s")
        if value is not None:
            yield f"reports {key}_per_s", value


def other_share(parts: Mapping[str, Any]) -> dict[str, float | None]:
    """For each part of one overhead.py run, the share of the machine's CPU that other
    processes used while it ran (what disturbs a run's figures most; None: not known).
    The reports part's share includes the PostgreSQL server's work for it."""
    shares: dict[str, float | None] = {}
    for name, part in parts.items():
        load = part.get("machine", {})
        other, capacity = load.get("other_processes_cpu_s"), load.get("cpu_capacity_s")
        shares[name] = round(other / capacity, 4) if other is not None and capacity else None
    return shares


def is_rate(name: str) -> bool:
    return any(word in name for word in RATES)


def judge(found: Mapping[str, Mapping[str, list[float]]], before: list[str], after: str) -> Any:
    """For each figure: the median after against the worst before, for each commit before."""
    out: dict[str, Any] = {}
    for name, by_rev in found.items():
        if after not in by_rev:
            continue
        median = statistics.median(by_rev[after])
        rows = {}
        for rev in before:
            if rev not in by_rev:
                continue
            worst = min(by_rev[rev]) if is_rate(name) else max(by_rev[rev])
            holds = median >= worst if is_rate(name) else median <= worst
            rows[rev] = {"after_median": median, "before_worst": worst, "holds": holds}
        out[name] = rows
    return out


def run_overhead(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One overhead.py run in the worktree ``tree``; its JSON object."""
    paths = [str(tree / "src"), str(tree / "examples"), str(tree / "benchmarks")]
    command = [
        sys.executable,
        str(tree / "benchmarks" / "overhead.py"),
        "--parts",
        args.parts,
        "--repeats",
        str(args.repeats),
        "--process-repeats",
        str(args.process_repeats),
    ]
    if args.quick:
        command.append("--quick")
    env = {**os.environ, "PYTHONPATH": ":".join(paths)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", nargs="+", required=True, help="commits before")
    parser.add_argument("--after", default="HEAD", help="the commit after")
    parser.add_argument("--runs", type=int, default=3, help="runs of each commit")
    parser.add_argument("--parts", default="memory,sqlite,processes,reports")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--process-repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="overhead.py's smoke size")
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    args = parser.parse_args()
    if args.after in args.before or len(set(args.before)) < len(args.before):
        parser.error("--before and --after: each commit once (a worktree is made for each)")
    revs = [*args.before, args.after]
    resolved = {
        rev: subprocess.run(
            ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        for rev in revs
    }
    found: dict[str, dict[str, list[float]]] = {}
    # per commit, per run: the share of the machine's CPU other processes took in each part
    others: dict[str, list[dict[str, float | None]]] = {rev: [] for rev in revs}
    with tempfile.TemporaryDirectory(prefix="genepool-before-after-") as folder:
        trees = {}
        for rev in revs:
            tree = Path(folder) / resolved[rev]
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(tree), resolved[rev]],
                cwd=ROOT,
                check=True,
            )
            trees[rev] = tree
        try:
            for run in range(1, args.runs + 1):
                for rev in revs:
                    parts = run_overhead(trees[rev], args)["parts"]
                    for name, value in figures(parts):
                        found.setdefault(name, {}).setdefault(rev, []).append(value)
                    others[rev].append(other_share(parts))
                    print(
                        f"run {run} of {rev} ({resolved[rev]}) done; other processes' share "
                        f"of the CPU by part: {others[rev][-1]}",
                        flush=True,
                    )
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    summary = {
        "benchmark": "before_after",
        "commits": resolved,
        "runs": args.runs,
        "parts": args.parts,
        "repeats": args.repeats,
        "process_repeats": args.process_repeats,
        "quick": args.quick,
        "figures": found,
        "medians": {
            name: {rev: statistics.median(v) for rev, v in by_rev.items()}
            for name, by_rev in found.items()
        },
        "judged": judge(found, args.before, args.after),
        "other_processes_share": others,
    }
    summary["holds"] = all(
        row["holds"] for rows in summary["judged"].values() for row in rows.values()
    )
    for name, rows in summary["judged"].items():
        for rev, row in rows.items():
            mark = "ok " if row["holds"] else "NOT"
            print(
                f"{mark} {name}: after median {row['after_median']} vs {rev} worst "
                f"{row['before_worst']}"
            )
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
