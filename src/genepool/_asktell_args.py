"""What :class:`genepool.AskTell` checks of its callers' arguments (kept apart so that
``asktell.py`` holds the run)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from genepool._constraints import Interval, Options, Setting
from genepool._errors import invalid
from genepool._redact import shown

__all__ = ["ASK", "tell_steps"]

#: What :meth:`AskTell.ask` takes.
ASK = {
    "timeout": Setting(
        (Interval("real", 0, None), Options((math.inf,))),
        "Fix: timeout=0 (no wait), the seconds to wait, or math.inf (until a member is "
        "claimable or the run is over).",
    )
}


def tell_steps(metrics: Any) -> list[Mapping[str, Any]]:
    """``tell``'s ``metrics``: any iterable of steps' metrics but a string or a dict.

    Raises:
        InvalidArgumentError: It is not.
    """
    if not isinstance(metrics, (str, bytes, Mapping)) and isinstance(metrics, Iterable):
        return list(metrics)
    raise invalid(
        "AskTell.tell",
        "metrics",
        "a list of dicts, one per step",
        shown(metrics),
        "Fix: metrics=[{'score': 0.5}] (or report each step with claim.report(score=0.5)).",
    )
