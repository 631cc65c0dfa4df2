"""The Ray executor on a real local Ray cluster of two nodes (``tests/_ray_cluster.py``).

The cluster is started once per session (``ray_cluster`` in ``tests/conftest.py``); the
driver is connected to its head node. Nodes are killed by a test thread once a trainable
has written a marker file (``tests/executors/_ray_trainables.py``), never after a sleep.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest

import genepool as gp
from genepool.member import Report
from tests._ray_cluster import LocalCluster, import_ray_or_skip
from tests.executors import _ray_trainables as R

BUDGET = 12
READY = 4
LEASE = 3.0


def _run(tmp_path: Path, trainable: object, space: gp.Space, executor: gp.RayExecutor, **options):
    settings: dict[str, object] = {
        "population": 8,
        "budget": gp.Budget(steps=BUDGET),
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        **options,
    }
    return gp.run(
        trainable,  # type: ignore[arg-type]
        space,
        metric="score",
        ready=gp.Every(READY),
        seed=0,
        executor=executor,
        lease_seconds=LEASE,
        **settings,  # type: ignore[arg-type]
    )


def _no_restart_from_zero(reports: tuple[Report, ...]) -> None:
    """Once a member has trained past its first ready (so it has a checkpoint), it never
    trains step 1 again: a lost member goes on from its checkpoint."""
    checkpointed: set[int] = set()
    for report in reports:
        if report.step == 1:
            assert report.member not in checkpointed, f"member {report.member} restarted at 0"
        if report.step > READY:
            checkpointed.add(report.member)


def _wait(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (a safety net ends the wait after a long time)."""
    deadline = time.monotonic() + R.PATIENCE
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def _when(path: Path, then: Callable[[], None], errors: list[str]) -> threading.Thread:
    """A thread that waits for ``path`` to appear, then calls ``then``."""

    def wait() -> None:
        deadline = time.monotonic() + R.PATIENCE
        while not path.exists():
            if time.monotonic() > deadline:
                errors.append(f"{path} never appeared")
                return
            time.sleep(0.02)
        try:
            then()
        except Exception as err:  # pragma: no cover - reported by the test
            errors.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


@pytest.mark.ray
def test_a_population_of_8_finishes_its_budget_across_two_nodes(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    assert ray_cluster.alive() == 2
    log, meet = tmp_path / "log.txt", tmp_path / "meet"
    meet.mkdir()
    executor = gp.RayExecutor(workers=2, store_server=True)
    result = _run(tmp_path, R.NodeClimber, R.space(str(log), str(meet)), executor)
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    assert executor.started_workers == 2
    lines = R.read_log(str(log))
    assert {line[3] for line in lines if line[0] == "step"} == {
        ray_cluster.head_id,
        ray_cluster.worker_id,
    }
    assert {line[4] for line in lines if line[0] == "start"} == {"1"}  # threads: its 1 CPU
    _no_restart_from_zero(result.reports)
    assert result.best.score is not None
    assert result.best.score > 0.1


@pytest.mark.ray
def test_with_postgresql_every_node_reaches_the_store_directly(
    ray_cluster: LocalCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from genepool.store.sql import SQLStore
    from tests.store.test_contract import postgres_url

    store = SQLStore(postgres_url(request))  # skipped without a server (failed on CI)
    request.addfinalizer(store.close)
    log, meet = tmp_path / "log.txt", tmp_path / "meet"
    meet.mkdir()
    executor = gp.RayExecutor(workers=2)
    result = _run(
        tmp_path,
        R.NodeClimber,
        R.space(str(log), str(meet)),
        executor,
        population=4,
        storage=store,
        checkpoints=str(tmp_path / "checkpoints"),
    )
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    lines = R.read_log(str(log))
    assert len({line[3] for line in lines if line[0] == "step"}) == 2
    _no_restart_from_zero(result.reports)


@pytest.mark.ray
def test_killing_a_node_mid_run_loses_no_member(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    log, meet, marker = tmp_path / "log.txt", tmp_path / "meet", tmp_path / "marker"
    hold = tmp_path / "go"
    meet.mkdir()
    # A trainable on the worker node writes the marker past its first checkpoint, then
    # waits to be killed; the others wait for the 'go' file from then on. The test kills
    # that node and starts a new one in its place (from the main thread, as Ray requires:
    # the run goes on in a thread), waits until the driver has started a new worker
    # (members are left), then lets the trainables go on.
    doomed = ray_cluster.worker_id
    space = R.space(
        str(log), str(meet), marker=str(marker), at=READY + 2, doom=doomed, hold=str(hold)
    )
    executor = gp.RayExecutor(workers=2, store_server=True)
    outcome: list[gp.Result | BaseException] = []

    def run() -> None:
        try:
            outcome.append(_run(tmp_path, R.NodeClimber, space, executor))
        except BaseException as err:  # pragma: no cover - raised below
            outcome.append(err)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    _wait(lambda: marker.exists() or not runner.is_alive())
    assert marker.exists(), f"the marker was never written: {outcome}"
    ray_cluster.replace_worker_node()
    _wait(lambda: executor.started_workers >= 3 or not runner.is_alive())
    hold.touch()
    runner.join(timeout=R.PATIENCE)
    assert len(outcome) == 1, "the run did not end"
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    lost, died_at = (int(x) for x in marker.read_text(encoding="utf-8").split())
    assert result.stop_reason == "budget"
    assert all(m.status == "finished" and m.step == BUDGET for m in result.members)
    assert result.population[lost].crashes == 0  # counted at the takeover, cleared since
    assert executor.started_workers >= 3, "the lost worker was not replaced"
    _no_restart_from_zero(result.reports)
    # the lost member went on from the checkpoint it had when its node died: its next step
    # is past its first ready and not past the step it died in (a worker that still holds
    # that checkpoint's state resident goes on from it without a restart)
    lines = R.read_log(str(log))
    died = ["step", str(lost), str(died_at), doomed]
    at = next(i for i, x in enumerate(lines) if x == died)
    following = [int(x[2]) for x in lines[at + 1 :] if x[0] == "step" and x[1] == str(lost)]
    assert following, f"member {lost} never trained again"
    assert READY < following[0] <= died_at
    assert ray_cluster.alive() == 2


@pytest.mark.ray
def test_ctrl_c_in_the_driver_reaches_the_workers(
    ray_cluster: LocalCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log, meet, marker = tmp_path / "log.txt", tmp_path / "meet", tmp_path / "marker"
    meet.mkdir()
    errors: list[str] = []
    _when(marker, lambda: os.kill(os.getpid(), signal.SIGINT), errors)
    # fractional CPUs and a custom resource: both workers may share a node
    executor = gp.RayExecutor(
        workers=2, resources_per_worker={"CPU": 0.5, "slot": 1}, store_server=True
    )
    caplog.set_level(logging.DEBUG, logger="genepool.executors")
    result = _run(
        tmp_path,
        R.Marker,
        R.space(str(log), str(meet), marker=str(marker), at=READY + 2),
        executor,
        population=4,
        budget=gp.Budget(steps=10**9),
        exploit=None,  # the interrupted member holds a checkpoint of its own
    )
    assert errors == []
    assert result.stop_reason == "interrupted"
    assert any(m.status == "active" for m in result.population)
    # each worker ended by itself once its member had checkpointed, none was killed
    ended = [r.getMessage() for r in caplog.records if "ended: " in r.getMessage()]
    assert len(ended) == 2
    assert all(message.endswith("interrupted") for message in ended)
    assert not any("killing" in r.getMessage() for r in caplog.records)
    member, step = (int(x) for x in marker.read_text(encoding="utf-8").split())
    stopped = result.population[member]
    assert stopped.checkpoint is not None
    assert stopped.checkpoint.member == member
    assert stopped.step >= step


@pytest.mark.ray
def test_sqlite_on_a_cluster_of_several_nodes_is_refused(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    assert ray_cluster.alive() == 2
    with pytest.raises(gp.InvalidArgumentError, match="on a Ray cluster of 2 nodes") as info:
        _run(tmp_path, R.NodeClimber, R.space(str(tmp_path / "log")), gp.RayExecutor(workers=2))
    message = str(info.value)
    assert "storage='postgresql://" in message
    assert "store_server=True" in message


@pytest.mark.ray
def test_an_in_memory_store_is_refused(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="the in-memory store"):
        _run(
            tmp_path,
            R.NodeClimber,
            R.space(str(tmp_path / "log")),
            gp.RayExecutor(workers=2),
            storage="memory",
        )


@pytest.mark.ray
def test_checkpoints_in_the_driver_memory_are_refused(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    pytest.importorskip("fsspec")
    with pytest.raises(gp.InvalidArgumentError, match="in this process's memory"):
        _run(
            tmp_path,
            R.NodeClimber,
            R.space(str(tmp_path / "log")),
            gp.RayExecutor(workers=2, store_server=True),
            checkpoints="memory://genepool-ray-test",
        )


@pytest.mark.ray
def test_the_store_server_runs_on_the_driver_node_and_travels_pickled(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    import ray

    from genepool.store import RemoteStore

    store = RemoteStore.start(f"sqlite:///{tmp_path / 'pbt.db'}")
    try:
        node, pid = ray.get(store.server.where.remote())
        assert node == ray_cluster.head_id
        assert pid != os.getpid()
        assert store.url == f"sqlite:///{tmp_path / 'pbt.db'}"
        members = [gp.MemberView(id=i, hparams={"lr": 0.1}) for i in range(2)]
        assert store.create_run("run", config={"mode": "max"}, members=members)
        copy = cloudpickle.loads(cloudpickle.dumps(store))
        assert isinstance(copy, RemoteStore)
        assert len(copy.population("run")) == 2
        with pytest.raises(KeyError):
            copy.run_config("nope")
    finally:
        store.shutdown()


def test_a_relative_sqlite_path_is_made_absolute(tmp_path: Path, monkeypatch) -> None:
    from genepool.store.server import absolute_sqlite_url

    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite_url("sqlite:///pbt.db") == f"sqlite:///{tmp_path / 'pbt.db'}"
    assert absolute_sqlite_url("sqlite:////abs/pbt.db") == "sqlite:////abs/pbt.db"
    assert absolute_sqlite_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_without_ray_the_errors_name_the_extra(monkeypatch) -> None:
    from genepool.store import RemoteStore

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[ray\]'"):
        gp.RayExecutor(workers=2)
    with pytest.raises(gp.MissingDependencyError, match=r"genepool\[ray\]"):
        RemoteStore.start("sqlite:///pbt.db")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"workers": 0}, "'workers' parameter of RayExecutor must be an integer >= 1"),
        ({"resources_per_worker": {"cpu": 1}}, "Fix: 'CPU'"),
        ({"resources_per_worker": {"num_gpus": 1}}, "Fix: 'GPU'"),
        ({"resources_per_worker": {"GPU": -1}}, "GPU=-1"),
        ({"resources_per_worker": [("CPU", 1)]}, "a dict of Ray resources"),
        ({"max_restarts": -1}, "'max_restarts'"),
        ({"grace_seconds": float("nan")}, "'grace_seconds'"),
        ({"store_server": "yes"}, "'store_server'"),
    ],
)
def test_bad_arguments_are_refused_with_a_fix(options: dict[str, object], match: str) -> None:
    import_ray_or_skip()
    settings = {"workers": 2, **options}
    with pytest.raises(gp.InvalidArgumentError, match=match):
        gp.RayExecutor(**settings)  # type: ignore[arg-type]


def test_resources_become_actor_options() -> None:
    import_ray_or_skip()
    executor = gp.RayExecutor(
        workers=2, resources_per_worker={"CPU": 2.5, "GPU": 0.5, "memory": 1e9, "slot": 1}
    )
    options = executor._actor_options()
    assert options["num_cpus"] == 2.5
    assert options["num_gpus"] == 0.5
    assert options["memory"] == 10**9
    assert options["resources"] == {"slot": 1.0}
    assert options["max_concurrency"] == 2
    assert executor.threads_per_worker == 2
    assert options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"
    mine = gp.RayExecutor(
        workers=1, runtime_env={"env_vars": {"OMP_NUM_THREADS": "7"}, "working_dir": "."}
    )
    env = mine._actor_options()["runtime_env"]
    assert env["env_vars"]["OMP_NUM_THREADS"] == "7"  # the user's value wins
    assert env["env_vars"]["MKL_NUM_THREADS"] == "1"
    assert env["working_dir"] == "."


@pytest.mark.ray
def test_a_worker_that_cannot_import_the_code_says_how_to_ship_it(
    ray_cluster: LocalCluster, tmp_path: Path, monkeypatch
) -> None:
    from genepool.executors.ray import _RayWorker

    (tmp_path / "gp_only_on_the_driver.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gp_only_on_the_driver  # type: ignore[import-not-found]

    blob = cloudpickle.dumps((gp_only_on_the_driver.Thing(), 0, 1))
    monkeypatch.delitem(sys.modules, "gp_only_on_the_driver")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(gp.InvalidArgumentError, match="No module named") as info:
        _RayWorker().run([], blob, 0, ray_cluster.head_id)
    assert "runtime_env={'working_dir': '.'}" in str(info.value)
