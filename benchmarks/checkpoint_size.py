"""Checkpoint size and codec time of the torch examples (examples/rl, translation, gan).

Runs each example once (PBT, seed 0) at a small size into a SQLite store in a temporary
directory, then measures the payloads in its checkpoint folder: how many, their mean and
largest size, and the time to encode and decode the best member's payload, from and to
tensors (for the first layout, its ``torch.save`` and ``torch.load`` of the state
included). Run it under another genepool (``PYTHONPATH=<other checkout>/src``) to compare
formats. The last line is one JSON object.

    python benchmarks/checkpoint_size.py            # the three examples at size smoke
    python benchmarks/checkpoint_size.py --quick    # translation only
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import genepool as gp
from genepool import checkpoints
from genepool.store import open_store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str) -> Any:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _codec_kwargs(function: Any) -> dict[str, Any]:
    """``trust=True`` where the codec takes it (the safe format's), else nothing."""
    return {"trust": True} if "trust" in inspect.signature(function).parameters else {}


def measure(name: str, size: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "pbt.db"
        started = time.perf_counter()
        _example(name).run(method="pbt", seed=0, size=size, storage=f"sqlite:///{db}")
        seconds = time.perf_counter() - started
        sizes = [p.stat().st_size for p in Path(f"{db}.checkpoints").glob("*/m*/s*/payload.bin")]
        (name_in_store,) = open_store(f"sqlite:///{db}").runs()
        opened = gp.Result.open(f"sqlite:///{db}", name_in_store)
        best = opened.best.checkpoint
        assert best is not None
        blob = opened._checkpoints.get(best)
        kwargs = _codec_kwargs(checkpoints.decode)
        payload = checkpoints.decode(blob, **kwargs)
        plain = _tensors(payload["state"])
        decode_s = _timed(lambda: _tensors(checkpoints.decode(blob, **kwargs)["state"]))
        encode_s = _timed(
            lambda: checkpoints.encode({**payload, "state": _layout(plain, payload["state"])})
        )
    return {
        "example": name,
        "size": size,
        "run_seconds": round(seconds, 1),
        "checkpoints_on_disk": len(sizes),
        "payload_bytes_mean": round(statistics.fmean(sizes)),
        "payload_bytes_max": max(sizes),
        "best_payload_bytes": len(blob),
        "encode_ms": round(encode_s * 1e3, 3),
        "decode_ms": round(decode_s * 1e3, 3),
    }


def _tensors(state: Any) -> Any:
    """The state with its torch states as tensors: the first layout held ``torch.save``
    bytes, which a load reads with ``torch.load`` after the codec (timed with it, to
    compare alike)."""
    if isinstance(state, dict) and isinstance(state.get("genepool.torch"), bytes):
        import torch

        return torch.load(io.BytesIO(state["genepool.torch"]), weights_only=True)
    if isinstance(state, dict):
        return {k: _tensors(v) for k, v in state.items()}
    return state


def _layout(plain: Any, original: Any) -> Any:
    """``plain`` as ``original`` holds it (``torch.save`` bytes in the first layout)."""
    if isinstance(original, dict) and isinstance(original.get("genepool.torch"), bytes):
        import torch

        buffer = io.BytesIO()
        torch.save(plain, buffer)
        return {"genepool.torch": buffer.getvalue()}
    if isinstance(original, dict):
        return {k: _layout(plain[k], v) for k, v in original.items()}
    return plain


def _timed(fn: Any, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="translation only")
    args = parser.parse_args(argv)
    names = ["translation"] if args.quick else ["rl", "translation", "gan"]
    results = []
    for name in names:
        result = measure(name, "smoke")
        print(json.dumps(result), flush=True)
        results.append(result)
    print(json.dumps({"genepool": str(Path(gp.__file__).parent), "examples": results}))


if __name__ == "__main__":
    main()
