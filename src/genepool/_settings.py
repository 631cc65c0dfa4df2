"""A run's settings, declared once: what each may be (tables of
:mod:`genepool._constraints`).

:data:`RUN` maps each setting of :func:`genepool.run` to the constraints its value may
meet (an interval, a set of options, a type), and :func:`check` tests values against it
with one message shape::

    The 'workers' parameter of run must be an integer in [1, 1024]. Got 0 instead. Fix: ...

``gp.run``, :meth:`genepool.Result.open`, the config file of ``genepool run`` (and its
``--check``) all check with it, so a value gets the same answer wherever it is given.

Example:
    >>> check("run", {"workers": 2, "lease_seconds": 30.0})
    >>> check("run", {"workers": 0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    genepool._errors.InvalidArgumentError: The 'workers' parameter of run must be ... Got 0 ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genepool import _constraints
from genepool._constraints import (
    BOOL,
    NONE,
    HasMethod,
    Interval,
    ListOfTables,
    Options,
    Setting,
    Text,
    TypeOf,
)
from genepool.checkpoints import CheckpointStore
from genepool.policy import Budget, Ready
from genepool.space import Space
from genepool.store import Store

__all__ = ["CONFIG_FILE", "READ_BACK", "RUN", "check"]


#: Every setting of :func:`genepool.run`: what its value may be.
RUN: dict[str, Setting] = {
    "space": Setting((TypeOf((Space,), "a gp.Space"),), "Fix: gp.Space(lr=gp.Float(1e-4, 1e-1))."),
    "metric": Setting((Text("the name of a reported metric"),), "Fix: metric='accuracy'."),
    "ready": Setting((TypeOf((Ready,), "a ready rule (gp.Every(4))"),), "Fix: ready=gp.Every(4)."),
    "budget": Setting((TypeOf((Budget,), "a gp.Budget"),), "Fix: budget=gp.Budget(steps=200)."),
    "mode": Setting((Options(("max", "min")),)),
    "population": Setting((Interval("int", 1, 1_000_000), NONE), "Fix: population=16."),
    "initial": Setting((ListOfTables(), NONE), "Fix: initial=[{'lr': 0.01}, {'lr': 0.1}]."),
    "seed": Setting((Interval("int", 0, 2**63 - 1), NONE), "Fix: seed=0."),
    "name": Setting((Text("a run name"),), "Fix: name='run'."),
    "max_failures": Setting((Interval("int", 1, 10**9),), "Fix: max_failures=3."),
    "storage": Setting(
        (Text("a store URL"), TypeOf((Store,), "a gp.Store"), NONE),
        "Fix: storage='sqlite:///pbt.db', 'postgresql://user@host/db' or 'memory'.",
    ),
    "checkpoints": Setting(
        (
            Text("a folder or an fsspec URL", path=True),
            TypeOf((CheckpointStore,), "a gp.CheckpointStore"),
            NONE,
        ),
        "Fix: checkpoints='checkpoints/' (a folder every worker can reach).",
    ),
    "workers": Setting(
        (Interval("int", 1, 1024),), "Fix: workers=2 (worker processes; 1 trains in this process)."
    ),
    "executor": Setting((HasMethod("run", "an executor (gp.ProcessExecutor(workers=2))"), NONE)),
    "resume": Setting((BOOL, NONE), "Fix: resume=None continues the run if it exists."),
    "revive": Setting((BOOL,)),
    "allow_config_change": Setting((BOOL,)),
    "synchronous": Setting((BOOL,)),
    "aligned": Setting((BOOL, NONE), "Fix: aligned=None (on for an asynchronous run)."),
    "lease_seconds": Setting(
        (Interval("real", 0, None, closed="neither"),),
        "Fix: lease_seconds=30 (how long a claim lasts without a heartbeat).",
    ),
    "progress_timeout": Setting(
        (Interval("real", 0, None, closed="neither"), NONE),
        "Fix: progress_timeout=None (ten times the slowest round, at least ten minutes).",
    ),
    "max_crashes": Setting(
        (Interval("int", 1, 10**9),), "Fix: max_crashes=3 (worker deaths before it stops)."
    ),
    "max_ahead": Setting(
        (Interval("int", 0, 10**9), NONE),
        "Fix: max_ahead=None (no limit), or how many ready rounds, e.g. max_ahead=2.",
    ),
    "max_resident": Setting(
        (Interval("int", 1, 1_000_000), NONE),
        "Fix: pass how many members' sessions a worker may keep, e.g. max_resident=4.",
    ),
    "keep": Setting(
        (Interval("int", 0, 1_000_000),),
        "Fix: pass how many previous checkpoints each member keeps, e.g. keep=1.",
    ),
    "fsync": Setting((BOOL,)),
    "clock": Setting((HasMethod("now", "a clock (gp.ManualClock())"), NONE)),
    "recent_window": Setting((Interval("int", 2, 1_000_000),), "Fix: recent_window=100."),
    "metrics_every": Setting((Interval("int", 1, 10**9),), "Fix: metrics_every=1."),
    "store": Setting((TypeOf((Store,), "a gp.Store"), NONE), "Fix: pass the URL as storage=."),
    "progress": Setting((BOOL,)),
    # never from a file or a store: it lets checkpoints run code when read
    "trust_checkpoints": Setting((BOOL,)),
    # each item checked by genepool.loggers (a logger; in a config file, a logger's name)
    "loggers": Setting(
        (TypeOf((list, tuple), "a list of loggers"), NONE),
        "Fix: loggers=[gp.MLflowLogger(tracking_uri='sqlite:///mlflow.db')] (in a config "
        "file: loggers = ['mlflow:sqlite:///mlflow.db', 'wandb:my-project']).",
    ),
}

#: The settings a config file of ``genepool run`` may hold at its top level (beside its
#: tables ``space``, ``ready``, ``budget``, ``exploit`` and ``explore``): those that are
#: plain data. ``trust_checkpoints`` is a flag only, never read from a file.
CONFIG_FILE = frozenset(RUN) - {
    "space",
    "ready",
    "budget",
    "executor",
    "clock",
    "store",
    "progress",
    "trust_checkpoints",
}


#: What reading a run back (:meth:`genepool.Result.open`) takes: a store is required.
READ_BACK: dict[str, Setting] = {
    **RUN,
    "storage": Setting(
        (Text("a store URL"), TypeOf((Store,), "a gp.Store")),
        "Fix: storage='sqlite:///pbt.db' (the run's store).",
    ),
}


def check(owner: str, values: Mapping[str, Any], table: Mapping[str, Setting] = RUN) -> None:
    """Check ``values`` against ``table`` (a run's settings by default): see
    :func:`genepool._constraints.check`.

    Raises:
        InvalidArgumentError: ``The 'x' parameter of owner must be ... Got ... instead.``
    """
    _constraints.check(owner, values, table)
