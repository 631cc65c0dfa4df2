"""Hostile values in every argument of ``gp.run`` (issue 14: every input gets a clear
answer).

A tiny valid run gets one or two of its arguments replaced by hostile values (wrong
types, NaN and infinities, huge integers, bools, unicode and empty strings, ``None``,
nested garbage, classes). Checking the arguments either accepts them or raises a
:class:`genepool.GenepoolError` whose message names a replaced argument; an accepted set
then runs for real, in a forked process so that a hang is caught: it ends, returning or
raising a :class:`genepool.GenepoolError`, within its time limit. Nothing else may escape.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import re
import tempfile
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import genepool as gp
from genepool._run import check_arguments
from tests.test_hostile_constructors import HOSTILE

#: How long one accepted run may take before it counts as hung (a valid run here takes
#: well under a second).
RUN_LIMIT_SECONDS = 10.0

#: Arguments whose valid values can make a run large (many members, many processes):
#: those values are checked, and run only when small.
SIZES = {"population": 4, "workers": 2, "max_resident": 10**6, "initial": 4}


#: Values that a run may well take in some argument (a small number, a rule, "max"): drawn
#: as often as hostile ones, so that many accepted sets run for real.
PLAUSIBLE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, 5),
    st.floats(0.0, 10.0),
    st.sampled_from(["memory", "max", "min", "score", "steps", "run", "ckpt"]),
    st.sampled_from(
        [
            gp.Every(1),
            gp.Budget(steps=2),
            gp.Truncation(),
            gp.Tournament(),
            gp.Perturb(),
            gp.Resample(),
            gp.Space(lr=gp.Float(0.01, 0.1)),
            [{"lr": 0.05}],
        ]
    ),
)


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"]
        member.report(score=x, state=x)


def _valid() -> dict[str, Any]:
    """The arguments of a tiny run that is valid."""
    return {
        "trainable": _train,
        "space": gp.Space(lr=gp.Float(0.01, 0.1)),
        "metric": "score",
        "population": 2,
        "ready": gp.Every(2),
        "budget": gp.Budget(steps=4),
        "seed": 0,
        "storage": "memory",
    }


#: Every argument of gp.run but the ones that only switch output on (progress).
ARGUMENTS = sorted(set(inspect.signature(gp.run).parameters) - {"progress"})


def _bound(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with gp.run's defaults filled in, as ``locals()`` sees them on entry."""
    bound = inspect.signature(gp.run).bind(**args)
    bound.apply_defaults()
    return dict(bound.arguments)


def _small(name: str, value: Any) -> bool:
    """Whether an accepted value keeps the run small enough to run here."""
    if name not in SIZES:
        return True
    size = len(value) if name == "initial" and value is not None else value
    return size is None or (isinstance(size, int) and size <= SIZES[name])


def _run_in_child(args: dict[str, Any], out: Connection) -> None:
    """Run in a fresh folder; send back ``("ok", "")``, ``("genepool", message)`` or
    ``("other", traceback)``."""
    os.chdir(tempfile.mkdtemp(prefix="genepool-hostile-"))
    try:
        gp.run(**args)
    except gp.GenepoolError as err:
        out.send(("genepool", str(err)))
    except BaseException:
        out.send(("other", traceback.format_exc()))
    else:
        out.send(("ok", ""))


def _run_forked(args: dict[str, Any]) -> tuple[str, str]:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run_in_child, args=(args, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(RUN_LIMIT_SECONDS):
            return ("hung", f"no answer within {RUN_LIMIT_SECONDS} s")
        outcome: tuple[str, str] = receive.recv()
        return outcome
    except EOFError:
        return ("other", f"the child died with exit code {child.exitcode}")
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)


def _answer(args: dict[str, Any], hostile: list[str]) -> tuple[str, str]:
    """Check the arguments, then run them if they are accepted and small."""
    try:
        check_arguments(_bound(args))
    except gp.GenepoolError as err:
        message = str(err)
        # by its name as a word: 'workers', workers=2, or "when workers > 1" in a message
        # about the storage that worker processes need
        named = any(re.search(rf"(?<![\w.]){re.escape(name)}\b", message) for name in hostile)
        assert named, f"the message names none of {hostile}: {message!r}"
        return ("refused", message)
    if not all(_small(name, args[name]) for name in hostile):
        return ("accepted", "not run: too large for a test")
    return _run_forked(args)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks each run to catch a hang")
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hostile_run_arguments_get_a_clear_answer(data: st.DataObject) -> None:
    hostile = data.draw(
        st.lists(st.sampled_from(ARGUMENTS), min_size=1, max_size=2, unique=True),
        label="hostile",
    )
    args = _valid()
    for name in hostile:
        args[name] = data.draw(st.one_of(HOSTILE, PLAUSIBLE, PLAUSIBLE), label=name)
    outcome, detail = _answer(args, hostile)
    event(outcome)
    assert outcome in ("refused", "accepted", "ok", "genepool"), detail


#: Numbers at the edges of what an argument may take: drawn alone, most are accepted and
#: the run goes for real.
EDGES: st.SearchStrategy[Any] = st.sampled_from(
    [0, 1, 2, 3, 0.0, 1e-300, 5e-324, 0.5, 1.0, 2**31, 2**63 - 1, 1e9, 1e300, None]
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks each run to catch a hang")
@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(ARGUMENTS), value=st.one_of(PLAUSIBLE, EDGES))
def test_plausible_run_arguments_run_or_get_a_clear_answer(name: str, value: Any) -> None:
    """One argument at a time, with values a run may well take: most run for real."""
    args = _valid()
    args[name] = value
    outcome, detail = _answer(args, [name])
    event(outcome)
    assert outcome in ("refused", "accepted", "ok", "genepool"), detail


#: Values hypothesis seldom draws together, each of which broke a run before.
KNOWN: list[tuple[str, Callable[[], Any]]] = [
    ("storage", lambda: "sqlite:///:memory:"),
    ("initial", lambda: {"lr": 0.05}),
    ("population", lambda: 2**1100),
    ("progress_timeout", lambda: 5e-324),
    ("lease_seconds", lambda: 1e-300),
    ("checkpoints", lambda: "\x00"),
    ("name", lambda: "🧬" * 300),
]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks each run to catch a hang")
@pytest.mark.parametrize(("name", "make"), KNOWN, ids=[name for name, _ in KNOWN])
def test_known_hostile_values_get_a_clear_answer(name: str, make: Callable[[], Any]) -> None:
    args = _valid()
    args[name] = make()
    outcome, detail = _answer(args, [name])
    assert outcome in ("refused", "accepted", "ok", "genepool"), detail
