"""Every argument of ``gp.run`` gets a clear answer (issue 14, "Inputs"): a value that is
wrong is a :class:`genepool.InvalidArgumentError` naming the argument, the value and the
fix, raised before anything is created; none is taken silently, none fails deep inside."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool._run import check_arguments
from genepool._settings import RUN, check


def _train(member: gp.Member) -> None:
    x = member.restore() or 0.0
    while member.running:
        x += member.hparams["lr"]
        member.report(score=x, state=x)


def _bound(**overrides: Any) -> dict[str, Any]:
    """A valid run's arguments, with gp.run's defaults, as check_arguments takes them."""
    import inspect

    args = {"trainable": _train, "space": gp.Space(lr=gp.Float(0.01, 0.1)), "metric": "score"}
    args.update(ready=gp.Every(2), budget=gp.Budget(steps=4), population=2, **overrides)
    bound = inspect.signature(gp.run).bind(**args)
    bound.apply_defaults()
    return dict(bound.arguments)


def _run(trainable: Any = _train, **overrides: Any) -> gp.Result:
    args: dict[str, Any] = {
        "metric": "score",
        "population": 2,
        "ready": gp.Every(2),
        "budget": gp.Budget(steps=4),
        "seed": 0,
    }
    args.update(overrides)
    return gp.run(trainable, gp.Space(lr=gp.Float(0.01, 0.1)), **args)


WRONG: list[tuple[str, Any]] = [
    # raw errors from deep inside before
    ("initial", {"lr": 0.1}),
    ("initial", [5]),
    ("checkpoints", 5),
    ("lease_seconds", "2"),
    ("max_ahead", "2"),
    ("max_crashes", None),
    # nonsense taken silently before
    ("lease_seconds", 0),
    ("lease_seconds", -1.0),
    ("lease_seconds", math.nan),
    ("lease_seconds", math.inf),
    ("progress_timeout", 0),
    ("progress_timeout", -1),
    ("max_crashes", 0),
    ("max_ahead", -3),
    ("max_ahead", 1.5),
    ("max_ahead", True),
    ("population", 2**1100),
    ("workers", 10**6),
    ("seed", 2**64),
    ("seed", -1),
    ("mode", "maximize"),
    ("resume", "yes"),
    ("fsync", 1),
    ("aligned", "no"),
    ("storage", 5),
    ("storage", "sqlite:///"),
    ("storage", "sqlite:///:memory:"),
    ("storage", "mysql://u@h/db"),
    ("clock", 5),
    ("executor", "processes"),
    ("max_failures", 0),
    ("recent_window", 1),
    ("metric", ""),
    ("metrics_every", 0.5),
    ("keep", -1),
    ("max_resident", 0),
]


@pytest.mark.parametrize(("name", "value"), WRONG, ids=[f"{n}={v!r}"[:40] for n, v in WRONG])
def test_a_wrong_argument_is_refused_by_name_before_anything_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gp.InvalidArgumentError, match=f"'{name}' parameter of run") as err:
        _run(**{name: value})
    assert "Got" in str(err.value)
    assert "instead" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no database, no checkpoints folder (./.checkpoints)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"storage": "memory"}, "'storage'"),
        ({"storage": gp.MemoryStore()}, "'storage'"),
        ({"store": gp.MemoryStore()}, "'storage'"),
        ({"checkpoints": gp.MemoryCheckpoints()}, "'checkpoints'"),
    ],
)
def test_worker_processes_with_an_in_memory_store_are_refused_before_they_start(
    overrides: dict[str, Any], named: str
) -> None:
    """Checked with the other arguments: before, the processes were being set up."""
    with pytest.raises(gp.InvalidArgumentError, match=f"{named}.*workers > 1"):
        check_arguments(_bound(workers=2, **overrides))


def test_every_argument_of_run_is_in_the_table() -> None:
    import inspect

    arguments = set(inspect.signature(gp.run).parameters) - {"trainable"}
    # exploit and explore: gp.Policy checks them (a rule, or None)
    assert arguments - {"exploit", "explore"} == set(RUN)


def test_the_message_names_the_argument_the_value_and_the_fix() -> None:
    with pytest.raises(gp.InvalidArgumentError) as err:
        check("run", {"lease_seconds": math.nan})
    assert str(err.value) == (
        "The 'lease_seconds' parameter of run must be a finite number > 0. Got nan instead. "
        "Fix: lease_seconds=30 (how long a claim lasts without a heartbeat)."
    )


def test_a_password_in_a_wrong_value_is_never_shown() -> None:
    with pytest.raises(gp.InvalidArgumentError) as err:
        check("run", {"storage": ["postgresql://u:hunter2@h/db"]})
    assert "hunter2" not in str(err.value)


def test_numbers_of_numpy_and_paths_are_taken(tmp_path: Path) -> None:
    import numpy as np

    result = _run(
        seed=np.int64(3),
        population=np.int32(2),
        lease_seconds=np.float32(30),
        checkpoints=tmp_path / "ckpt",
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
    )
    assert result.best.step == 4


def test_a_read_only_sqlite_url_is_refused_to_a_run_and_taken_to_read_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "pbt.db"
    _run(storage=f"sqlite:///{db}")
    with pytest.raises(gp.InvalidArgumentError, match=r"'storage'.*read-only.*mode=ro"):
        _run(storage=f"sqlite:///{db}?mode=ro", name="second")
    with pytest.raises(gp.InvalidArgumentError, match=r"'storage'.*read-only"):
        _run(storage=f"sqlite:///file:{db}?mode=ro&uri=true", name="second")
    with gp.Result.open(f"sqlite:///{db}?mode=ro") as result:
        assert result.best.step == 4
    with sqlite3.connect(db) as conn:  # the refused runs wrote nothing
        names = {r[0] for r in conn.execute("SELECT name FROM genepool_runs")}
    assert names == {"run"}


@pytest.mark.parametrize("score", ["1.5", True, b"1", [1.0], None])
def test_a_reported_score_that_is_no_number_is_refused(score: Any) -> None:
    def train(member: gp.Member) -> None:
        while member.running:
            member.report(score=score, state=lambda: 0)

    with pytest.raises(gp.TrainableError, match=r"metric 'score' must be a number"):
        _run(train, population=1)


def _holds_itself() -> list[Any]:
    looped: list[Any] = [1.0]
    looped.append(looped)
    return looped


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
@pytest.mark.parametrize("kind", ["function", "class"])
@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (object, "<object object"),
        (_holds_itself, "[1.0, [...]]"),
        (lambda: {1: {2, 3}}, "{1: {2, 3}}"),
    ],
)
def test_a_metric_the_store_cannot_keep_is_refused_on_every_store(
    tmp_path: Path, storage: str, kind: str, make: Any, shown: str
) -> None:
    """Every store refuses it alike, naming the metric and the fix, before it is kept (a
    SQL store raised a StorageError or a RecursionError at the write, the memory store kept
    it)."""
    value = make()

    def train(member: gp.Member) -> None:
        while member.running:
            member.report(score=1.0, info=value, state=lambda: 0)

    class Train(gp.Trainable):
        def setup(self, hparams: Any) -> None:
            pass

        def step(self) -> dict[str, Any]:
            return {"score": 1.0, "info": value}

        def save(self) -> Any:
            return 0

        def load(self, state: Any) -> None:
            pass

    url = None if storage == "memory" else f"sqlite:///{tmp_path}/pbt.db"
    trainable = train if kind == "function" else Train
    with pytest.raises(gp.TrainableError) as caught:
        _run(trainable, population=1, storage=url)
    message = str(caught.value)
    assert f"Member 0 reported info={shown}" in message
    assert "at step 1" in message
    assert "Fix: report a plain value, e.g. info=float(value)" in message


def test_a_score_of_numpy_or_a_0d_array_is_taken() -> None:
    import numpy as np

    def train(member: gp.Member) -> None:
        while member.running:
            member.report(score=np.array(member.step, dtype=np.float32), state=lambda: 0)

    assert _run(train, population=1).best.score == 3.0


def test_a_process_executor_given_an_in_memory_store_is_refused_before_it_starts() -> None:
    executor = gp.ProcessExecutor(workers=2)
    with pytest.raises(gp.InvalidArgumentError, match=r"'storage'.*workers > 1"):
        _run(storage="memory", executor=executor)
    assert executor.started_processes == 0
