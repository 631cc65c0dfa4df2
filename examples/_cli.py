"""The command line the examples share: ``python examples/<task>.py --method pbt --seed 0``.

Each example defines ``run(method=, seed=, size=, workers=, storage=, progress=)``; this
parses the same flags for all of them and prints one JSON line with the best member.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable

import _methods

import genepool as gp


def main(
    *,
    doc: str,
    task: str,
    metric: str,
    sizes: Iterable[str],
    run: Callable[..., gp.Result],
    argv: list[str] | None = None,
) -> None:
    """Parse the flags, run the example once and print its best member as JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--method", choices=_methods.METHODS, default="pbt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(sizes), default="full")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", default=None, help="a store URL (default: temporary)")
    parser.add_argument("--progress", action="store_true", help="a live table while it runs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run(
        method=args.method,
        seed=args.seed,
        size=args.size,
        workers=args.workers,
        storage=args.storage,
        progress=args.progress,
    )
    best = result.best
    print(
        json.dumps(
            {
                "task": task,
                "method": args.method,
                "seed": args.seed,
                "size": args.size,
                "metric": metric,
                "score": best.score if best.score is not None else math.nan,
                "best_member": best.id,
                "hparams": dict(best.hparams),
                "exploits": sum(e.kind == "exploit" for e in result.events),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
