"""The global random states a torch training loop draws from (torch, NumPy, Python's
``random``), saved as plain tensors and numbers and set back: a member's data stream,
for :mod:`genepool.integrations.torch` and :mod:`genepool.integrations.lightning`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["global_rng_state", "reseed_global_rng", "set_global_rng_state"]


def global_rng_state() -> dict[str, Any]:
    """The global torch, NumPy and Python random states, as tensors, numbers and strings
    (what a checkpoint stores as is)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }


def set_global_rng_state(rng: Mapping[str, Any]) -> None:
    """Set the global random states from :func:`global_rng_state`'s value."""
    torch.set_rng_state(rng["torch"].cpu())
    n = rng["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].cpu().numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["gauss"],
        )
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))


def reseed_global_rng(rng: np.random.Generator) -> None:
    """Seed the global torch, NumPy and Python random states from ``rng`` (a member's own
    stream): a new data stream, drawn from the member's."""
    seed = int(rng.integers(2**31))
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
