"""Ask/tell's run (:class:`genepool.AskTell`): its settings checked as :func:`genepool.run`
checks them, its storage opened, the run created or resumed, as :func:`genepool.run`
does all three (the same functions, not a copy)."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from genepool._context import RunContext
from genepool._create import create_or_resume, settings_of
from genepool._errors import invalid
from genepool._run import check_arguments, run
from genepool._storage import open_storage
from genepool.clock import SystemClock
from genepool.space import Space

__all__ = ["open_run"]


#: What :func:`genepool.run` takes that ask/tell does not: it starts no training.
_NOT_HERE = ("trainable", "workers", "executor", "max_resident", "progress")


def open_run(space: Space, settings: Mapping[str, Any]) -> tuple[RunContext, bool]:
    """Ask/tell's run (:class:`genepool.AskTell`): check ``settings`` as
    :func:`genepool.run` does, open the storage, create or resume the run. Returns its
    context, and whether the store was opened here (from a URL)."""
    parameters = inspect.signature(run).parameters
    known = [k for k in parameters if k not in ("trainable", "space", *_NOT_HERE)]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise invalid(
                "AskTell",
                key,
                "one of gp.run's settings, but " + ", ".join(_NOT_HERE),
                repr(key),
                f"Fix: {hint}see help(gp.AskTell).",
            )
    defaults = {
        k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty
    }
    for key in ("metric", "ready", "budget"):
        if key not in settings:
            raise invalid("AskTell", key, "given", "nothing", f"Fix: pass {key}=, as to gp.run.")
    args = {**defaults, **settings, "space": space, "trainable": _no_trainable, "workers": 1}
    policy = check_arguments(args, owner="AskTell")
    seed = args["seed"]
    seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else int(seed)
    clock = args["clock"] or SystemClock()
    given = args["storage"] if args["storage"] is not None else args["store"]
    store, checkpoints = open_storage(given, args["checkpoints"], 1, clock, fsync=args["fsync"])
    seed, _, _ = create_or_resume(
        "AskTell", store, checkpoints, args=args, settings=settings_of(args, policy), seed=seed
    )
    ctx = RunContext(
        name=args["name"],
        trainable=_no_trainable,
        policy=policy,
        metric=args["metric"],
        seed=seed,
        store=store,
        checkpoints=checkpoints,
        clock=clock,
        started=clock.now(),
        recent_window=args["recent_window"],
        metrics_every=args["metrics_every"],
        synchronous=args["synchronous"],
        lease_seconds=args["lease_seconds"],
        # a claim keeps its lease while open, however long a step takes, unless asked
        progress_timeout=args["progress_timeout"] or math.inf,
        heartbeat=True,
        max_crashes=args["max_crashes"],
        max_ahead=args["max_ahead"],
        keep=args["keep"],
        trust_checkpoints=args["trust_checkpoints"],
    )
    return ctx, isinstance(given, str)


def _no_trainable(member: Any) -> None:
    """The trainable of an ask/tell run: the caller trains, never a session."""
    raise TypeError("an ask/tell run trains no session")  # pragma: no cover
