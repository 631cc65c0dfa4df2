"""Golden files of seeded serial runs: what a run decided (its lineage) and what it scored.

Issue 15 rewrites the round that every driver runs; these files, written before it, say
that a seeded serial run still makes the same decisions and the same scores after. A run
is compared by its snapshot: every exploit and stop event (without times and checkpoint
ids, which name storage, not behaviour) and every member's scores of the run's metric,
step by step. ``GENEPOOL_UPDATE_GOLDEN=1`` rewrites the files (only for a change meant to
alter behaviour, said in its commit).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import genepool as gp

GOLDEN = Path(__file__).parent / "data" / "golden"

#: What an event keeps in a snapshot: the decision, not when or where it was stored, nor
#: what was added to events after the golden files were written (an exploit's
#: ``ready_count``: the recipient's count of readies, for a rollback to its copy).
_DROPPED = {"time", "checkpoint", "traceback", "ready_count"}


def snapshot(result: gp.Result, metric: str) -> dict[str, Any]:
    """The lineage and the scores of ``result``, as plain JSON data."""
    events = [
        {k: v for k, v in sorted(e.items()) if k not in _DROPPED} for e in result.event_records()
    ]
    scores: dict[str, list[list[float]]] = {}
    for record in result.records():
        if metric in record:
            scores.setdefault(str(record["member"]), []).append(
                [int(record["step"]), float(record[metric])]
            )
    plain: dict[str, Any] = json.loads(
        json.dumps({"events": events, "scores": scores}, default=float)
    )
    return plain


def _close(a: Any, b: Any, path: str, rel: float = 1e-6) -> list[str]:
    """Where ``a`` and ``b`` differ (floats within a relative ``rel``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}", rel)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _close(x, y, f"{path}[{i}]", rel)
        ]
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float))
        if ok and (math.isclose(a, b, rel_tol=rel, abs_tol=1e-12) or (a != a and b != b)):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def check_golden(result: gp.Result, metric: str, name: str, *, rel: float = 1e-6) -> None:
    """Assert that ``result`` matches the golden file ``name`` (or write it, when asked):
    every decision exactly, every float within a relative ``rel``."""
    path = GOLDEN / f"{name}.json"
    now = snapshot(result, metric)
    if os.environ.get("GENEPOOL_UPDATE_GOLDEN") == "1" or not path.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{path} is missing: write it outside CI")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    golden = json.loads(path.read_text(encoding="utf-8"))
    differences = _close(golden, now, name, rel)
    assert not differences, f"{len(differences)} differences, first: " + "; ".join(differences[:5])
