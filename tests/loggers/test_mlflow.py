"""MLflowLogger: a run written to a local MLflow store, read back with MLflow's client,
each member's curves and lineage checked against the run's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.analysis import hparams_at_report, hparams_timeline
from genepool.loggers import RATE
from tests.loggers._toy import (
    check_has_exploits,
    expected_lineage,
    own_scores,
    run_toy,
    sampled,
)

mlflow = pytest.importorskip("mlflow")


def read_back(uri: str, experiment: str) -> tuple[Any, Any, dict[int, Any]]:
    """The client, the parent run, and each member's run (by member id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    members = {}
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id:
            members[int(r.data.tags["genepool.member"])] = r
    return client, parent, members


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def expanded(sparse: list[tuple[int, float]], full: list[int]) -> list[float]:
    """A step function MLflow holds where it changes (``sparse``: its points in the order
    written), drawn at every step of ``full`` (the steps in the order written): each value
    carried on to the next point it has. Raises if ``sparse`` is not a subsequence of
    ``full`` that starts with its first step."""
    values, j = [], 0
    for step in full:
        if j < len(sparse) and sparse[j][0] == step:
            j += 1
        assert j > 0, "the first step's value is missing"
        values.append(sparse[j - 1][1])
    assert j == len(sparse), "a value at a step the curve does not have"
    return values


def check_written(uri: str, experiment: str, result: gp.Result, rate: float | None = RATE) -> None:
    """The run as MLflow holds it: as a logger with ``rate`` sends it."""
    client, parent, members = read_back(uri, experiment)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["genepool.run"] == result.name
    assert sorted(members) == [m.id for m in result.population]
    events = {m.id: [e for e in result.events if e.member == m.id] for m in result.population}
    for m in result.population:
        run = members[m.id]
        run_id = run.info.run_id
        assert run.info.run_name == f"member_{m.id:03d}"
        assert run.info.status == "FINISHED"
        # its own curve, in the order reported: at ``rate`` (the toy's clock paces it)
        assert history(client, run_id, result.metric) == own_scores(result, m.id, rate)
        first = next(r for r in result.reports if r.member == m.id)
        reports = [r for r in result.reports if r.member == m.id]
        timeline = hparams_timeline(result.events, result.population)[m.id]
        for hp in m.hparams:  # the params: the initial hyperparameters, that trained step 1
            sparse = history(client, run_id, f"hparams/{hp}")
            assert sparse[0][0] == first.step
            assert float(run.data.params[hp]) == pytest.approx(sparse[0][1])
            # a step function, written where it changes: each sent step's own value
            sent = sampled([(r.time, r) for r in reports], rate, len(result.population))
            trained = [float(hparams_at_report(timeline, r)[hp]) for r in sent]
            assert expanded(sparse, [r.step for r in sent]) == trained
            assert len(sparse) <= len(sent)
        # every event a tag, in order; each exploit a point at the step it left
        tags = sorted(k for k in run.data.tags if k.startswith("genepool.event."))
        kinds = [run.data.tags[k].split(" ", 1)[0] for k in tags]
        assert kinds == [e.kind for e in events[m.id]]
        exploits = [e for e in events[m.id] if e.kind == "exploit"]
        assert history(client, run_id, "event/exploit") == [
            (e.step, float(e.data["donor"])) for e in exploits
        ]
        # the lineage: one curve across exploits, as Result.ancestry_scores has it, at
        # ``rate``; who trained each of those steps, a step function
        expected = expected_lineage(result, m.id, rate)
        assert history(client, run_id, f"lineage/{result.metric}") == [
            (s, v) for s, v, _ in expected
        ]
        owners = history(client, run_id, "lineage/member")
        assert expanded(owners, [s for s, _, _ in expected]) == [float(w) for _, _, w in expected]
        ancestors = result.lineage(m.id).ancestors
        assert run.data.tags["genepool.lineage"].startswith(f"member {ancestors[0]} (steps 1-")


def test_a_run_in_a_folder_store(tmp_path: Path, file_store: str) -> None:
    logger = gp.MLflowLogger(tracking_uri=file_store, experiment="pbt")
    result = run_toy(tmp_path, [logger])
    check_has_exploits(result)
    check_written(file_store, "pbt", result)
    # the toy's clock moves slower than five points a second: some points were not sent
    assert all(
        len(own_scores(result, m.id, RATE)) < len(own_scores(result, m.id))
        for m in [*result.population]
    )


def test_two_workers_and_an_export_afterwards(tmp_path: Path, file_store: str) -> None:
    result = run_toy(tmp_path, [gp.MLflowLogger(tracking_uri=file_store)], workers=2)
    check_written(file_store, "toy", result)  # the experiment is named after the run
    result.close()
    with gp.Result.open(f"sqlite:///{tmp_path}/pbt.db", "toy") as opened:
        gp.export_logs(opened, [gp.MLflowLogger(tracking_uri=file_store, experiment="later")])
        check_written(file_store, "later", opened)


# MLflow's SQL store maps a table with a loader strategy SQLAlchemy 2.1 deprecates
@pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_a_run_in_a_sqlite_store(tmp_path: Path) -> None:
    pytest.importorskip("alembic")  # MLflow's SQL store needs it (the [mlflow] extra has it)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_toy(tmp_path, [gp.MLflowLogger(tracking_uri=uri, experiment="pbt")])
    check_written(uri, "pbt", result)


def test_a_store_mlflow_refuses_warns_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = "http://user:hunter2@127.0.0.1:9/"  # nothing listens: MLflow cannot reach it
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    logger = gp.MLflowLogger(tracking_uri=uri)
    assert "hunter2" not in repr(logger)
    with caplog.at_level("WARNING", logger="genepool.loggers"):
        result = run_toy(tmp_path, [logger])
    assert result.best.step == 12
    warned = [r.getMessage() for r in caplog.records if "MLflowLogger" in r.getMessage()]
    assert len(warned) == 1
    assert "dropped" in warned[0]
    assert "hunter2" not in warned[0]


def test_every_sends_every_nth_step_and_the_lineages_last(tmp_path: Path, file_store: str) -> None:
    logger = gp.MLflowLogger(tracking_uri=file_store, experiment="thin", every=5, rate=None)
    result = run_toy(tmp_path, [logger])
    client, _, members = read_back(file_store, "thin")
    for m in result.population:
        run_id = members[m.id].info.run_id
        own = own_scores(result, m.id)
        assert history(client, run_id, "score") == [(s, v) for s, v in own if s % 5 == 0]
        expected = [(s, v) for s, v, _ in expected_lineage(result, m.id)]
        kept = [(s, v) for s, v in expected if s % 5 == 0] + [expected[-1]]
        assert history(client, run_id, "lineage/score") == kept
        events = [e for e in result.events if e.member == m.id]
        tags = [k for k in members[m.id].data.tags if k.startswith("genepool.event.")]
        assert len(tags) == len(events)  # every event, however thin the points


def test_lineage_points_bounds_each_lineage_curve(tmp_path: Path, file_store: str) -> None:
    logger = gp.MLflowLogger(
        tracking_uri=file_store, experiment="bound", lineage_points=4, rate=None
    )
    result = run_toy(tmp_path, [logger])
    client, _, members = read_back(file_store, "bound")
    for m in result.population:
        run_id = members[m.id].info.run_id
        assert len(history(client, run_id, "score")) == len(own_scores(result, m.id))  # all
        expected = [(s, v) for s, v, _ in expected_lineage(result, m.id)]
        assert len(expected) == 12
        spread = [expected[i] for i in (0, 4, 7, 11)]  # 4 points, 11/3 apart, rounded
        assert history(client, run_id, "lineage/score") == spread


@pytest.mark.parametrize("every", [0, 2.5, True, "10"])
def test_every_must_be_a_whole_number_of_steps(every: object) -> None:
    with pytest.raises(gp.InvalidArgumentError, match="'every' parameter of MLflowLogger"):
        gp.MLflowLogger(every=every)  # type: ignore[arg-type]
    with pytest.raises(gp.InvalidArgumentError, match="'every' parameter of WandbLogger"):
        gp.WandbLogger(every=every)  # type: ignore[arg-type]
