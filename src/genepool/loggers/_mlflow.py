"""A run in MLflow: one parent run, and a nested run per member."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import missing_dependency
from genepool._redact import redact_url
from genepool.analysis._curves import number
from genepool.loggers._base import (
    LINEAGE_POINTS,
    RATE,
    Batch,
    LineagePoint,
    MemberPoint,
    Paced,
    RunInfo,
    check_every,
    check_lineage_points,
    check_rate,
    lineage_thinned,
    thinned,
)

__all__ = ["MLflowLogger", "lineage_text"]

#: What one ``log_batch`` call of MLflow takes at most.
_METRICS, _PARAMS, _TAGS = 1000, 100, 100
#: MLflow's longest tag value and param value.
_TAG_CHARS, _PARAM_CHARS = 5000, 6000


def member_name(member: int) -> str:
    """A member's run name (``member_007``), as the TensorBoard export names its folder."""
    return f"member_{member:03d}"


def lineage_text(points: Sequence[LineagePoint]) -> str:
    """A lineage curve's line as text: ``member 3 (steps 1-10) -> member 0 (steps 11-20)``."""
    parts: list[list[int]] = []  # [member, first step, last step]
    for point in points:
        if parts and parts[-1][0] == point.member:
            parts[-1][2] = point.step
        else:
            parts.append([point.member, point.step, point.step])
    return " -> ".join(f"member {m} (steps {a}-{b})" for m, a, b in parts)


class _Steps:
    """A step function (hyperparameters, the member along a lineage) sent where it changes:
    at its first point, at the point before each change and at the change, and at its last
    (:meth:`last`), so that a chart draws the same steps from a few values."""

    def __init__(self) -> None:
        self._values: dict[str, float] | None = None
        self._held: tuple[int, int, dict[str, float]] | None = None

    def add(self, step: int, when: int, values: dict[str, float]) -> list[Any]:
        """The points to send for this one (``(step, millis, values)``)."""
        out = []
        if values != self._values:
            if self._held is not None:
                out.append(self._held)
            out.append((step, when, values))
            self._held = None
        else:
            self._held = (step, when, values)
        self._values = values
        return out

    def last(self) -> list[Any]:
        """The last point, if it is not sent yet."""
        held, self._held = self._held, None
        return [held] if held is not None else []


def _metrics(points: list[Any]) -> list[Any]:
    from mlflow.entities import Metric

    return [Metric(k, v, when, step) for step, when, values in points for k, v in values.items()]


def _hparams(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        value = number(v)
        if value is not None:
            out[f"{prefix}{k}"] = value
    return out


def _millis(when: float) -> int:
    return int((when if math.isfinite(when) and when > 0 else time.time()) * 1000)


class MLflowLogger:
    """Sends a run to MLflow: a parent run named after the PBT run, and under it one run
    per member (``member_000``, ...).

    Each member's run holds its initial hyperparameters as params; its metrics at each
    step, and the hyperparameters that trained it as ``hparams/<name>``; each event as a
    tag ``genepool.event.<n>`` (``"exploit at step 10: ..."``) and an exploit also as the
    metric ``event/exploit`` (the donor's id, at the step the member left). When the run
    ends, its lineage curve: ``lineage/<metric>`` (each step's score from the ancestor
    that trained it), ``lineage/member`` and ``lineage/hparams/<name>``, and the tag
    ``genepool.lineage`` (the line as text). The hyperparameters and ``lineage/member``
    are step functions: each is written at its first and last step and on both sides of
    each change (a chart draws the same steps from far fewer values). Needs ``mlflow-skinny``
    (``pip install 'genepool[mlflow]'``).

    Args:
        tracking_uri: Where MLflow writes: ``"sqlite:///mlflow.db"``, an HTTP server, or a
            folder (``"file:///path/mlruns"``; MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true``
            in the environment for a folder). Default: MLflow's own (``MLFLOW_TRACKING_URI``).
        experiment: The MLflow experiment (made if missing). Default: the run's name.
        run_name: The parent run's name. Default: the run's name.
        tags: More tags for the parent run.

        rate: The most points a second sent of the whole run (:data:`genepool.loggers.RATE`,
            5, by default): each member's curve at one point every ``population / rate``
            seconds of the run's clock or more, and its last point; its lineage curve the
            same. Each value is a write MLflow takes 0.13 to 0.5 ms of CPU for (its folder
            and SQLite stores, benchmarks/logger_cost.py), taken from the workers: steps slower than
            ``population / rate`` seconds are all sent, a population stepping every 10 ms
            is sampled. ``None``: every point (``gp.export_logs`` can send them all
            afterwards). Events are all sent, each tag with the hyperparameters it set.
        every: Of the points, send those at the steps that are multiples of this (and the
            lineage's last step). ``1`` (default): every step.
        lineage_points: The most points of each member's lineage curve, spread evenly
            over its steps (first and last kept): the curve is sent when the run ends,
            while the run waits, so it is bounded (:data:`genepool.loggers.LINEAGE_POINTS`,
            1,000, by default). ``None``: every step.

    MLflow is loaded when the logger is made (not when genepool is imported), so that a run
    does not wait for it.

    Raises:
        InvalidArgumentError: ``rate`` is not a number of points a second > 0 or
            ``None``, ``every`` not a whole number >= 1, or ``lineage_points`` not one
            >= 2 or ``None``.
        MissingDependencyError: MLflow is not installed.

    Example:
        >>> import genepool as gp
        >>> logger = gp.MLflowLogger(tracking_uri="sqlite:///mlflow.db", experiment="pbt")
        >>> result = gp.run(train, space, metric="score", ready=gp.Every(5),
        ...                 budget=gp.Budget(steps=100), loggers=[logger])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        rate: float | None = RATE,
        every: int = 1,
        lineage_points: int | None = LINEAGE_POINTS,
    ) -> None:
        try:  # here, once: not in the run's way (MLflow takes a CPU-second or two to load)
            import mlflow.tracking  # noqa: F401
        except ImportError:
            raise missing_dependency("mlflow-skinny", "mlflow", "MLflowLogger") from None
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.rate = check_rate(rate, "MLflowLogger")
        self.every = check_every(every, "MLflowLogger")
        self.lineage_points = check_lineage_points(lineage_points, "MLflowLogger")
        self.tags = dict(tags or {})
        self.parent_id: str | None = None
        #: Each member's MLflow run id.
        self.run_ids: dict[int, str] = {}
        self._client: Any = None
        self._metric = "score"
        self._events: dict[int, int] = {}
        self._hparams: dict[int, _Steps] = {}
        self._paced = Paced(self.rate, 0)

    def __repr__(self) -> str:
        uri = None if self.tracking_uri is None else redact_url(self.tracking_uri)
        return f"MLflowLogger(tracking_uri={uri!r}, experiment={self.experiment!r})"

    def start(self, run: RunInfo) -> None:
        """Make the experiment (if missing), the parent run and a run per member."""
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = self._client = MlflowClient(tracking_uri=self.tracking_uri)
        name = self.experiment or run.name
        found = client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else client.create_experiment(name)
        self._metric = run.metric
        self._paced = Paced(self.rate, len(run.members))
        tags = {
            "genepool.run": run.name,
            "genepool.metric": run.metric,
            "genepool.mode": run.mode,
            "genepool.seed": str(run.seed),
            **self.tags,
        }
        parent = client.create_run(experiment, run_name=self.run_name or run.name, tags=tags)
        self.parent_id = parent.info.run_id
        for member, hparams in sorted(run.members.items()):
            child = client.create_run(
                experiment,
                run_name=member_name(member),
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    "genepool.run": run.name,
                    "genepool.member": str(member),
                },
            )
            self.run_ids[member] = child.info.run_id
            params = [Param(str(k), str(v)[:_PARAM_CHARS]) for k, v in hparams.items()]
            for i in range(0, len(params), _PARAMS):
                client.log_batch(child.info.run_id, params=params[i : i + _PARAMS])

    def log(self, batch: Batch) -> None:
        """Write the batch: one ``log_batch`` per member (or per 1,000 metrics)."""
        from mlflow.entities import Metric, RunTag

        metrics = self._points(self._paced.take(thinned(batch.points, self.every)))
        tags: dict[int, list[Any]] = {}
        for e in batch.events:
            n = self._events[e.member] = self._events.get(e.member, 0) + 1
            text = f"{e.kind} at step {e.step}: {e.text}"[:_TAG_CHARS]
            tags.setdefault(e.member, []).append(RunTag(f"genepool.event.{n:05d}", text))
            if e.donor is not None:
                metric = Metric("event/exploit", float(e.donor), _millis(e.time), e.step)
                metrics.setdefault(e.member, []).append(metric)
        for member in sorted({*metrics, *tags}):
            self._write(member, metrics.get(member, []), tags.get(member, []))

    def _points(self, points: Sequence[MemberPoint]) -> dict[int, list[Any]]:
        """The MLflow metrics of these points, by member: their metrics, and the
        hyperparameters where they change."""
        from mlflow.entities import Metric

        metrics: dict[int, list[Any]] = {}
        for p in points:
            when = _millis(p.time)
            out = metrics.setdefault(p.member, [])
            out.extend(Metric(k, v, when, p.step) for k, v in p.metrics.items())
            steps = self._hparams.setdefault(p.member, _Steps())
            out.extend(_metrics(steps.add(p.step, when, _hparams(p.hparams, "hparams/"))))
        return metrics

    def _write(self, member: int, metrics: list[Any], tags: list[Any]) -> None:
        run_id = self.run_ids.get(member)
        if run_id is None:  # a member the run did not have when it started
            return
        calls = max(-(-len(metrics) // _METRICS), -(-len(tags) // _TAGS))
        for i in range(calls):
            self._client.log_batch(
                run_id,
                metrics=metrics[i * _METRICS : (i + 1) * _METRICS],
                tags=tags[i * _TAGS : (i + 1) * _TAGS],
            )

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        """Write each member's last point and step functions' last values (where not
        sent yet) and its lineage curve; end every run."""
        from mlflow.entities import Metric, RunTag

        metrics = self._points(self._paced.rest())  # each member's last point, if not sent
        for member, steps in self._hparams.items():  # each step function's last value
            metrics.setdefault(member, []).extend(_metrics(steps.last()))
        self._hparams.clear()
        tags: dict[int, list[Any]] = {}
        interval = self._paced.interval
        for member, points in sorted(lineages.items()):
            out = metrics.setdefault(member, [])
            line = _Steps()  # the member and the hyperparameters, where they change
            for p in lineage_thinned(points, self.every, self.lineage_points, interval):
                when = _millis(p.time)
                out.append(Metric(f"lineage/{self._metric}", p.score, when, p.step))
                values = {"lineage/member": float(p.member)}
                values.update(_hparams(p.hparams, "lineage/hparams/"))
                out.extend(_metrics(line.add(p.step, when, values)))
            out.extend(_metrics(line.last()))
            tags[member] = [RunTag("genepool.lineage", lineage_text(points)[:_TAG_CHARS])]
        for member in sorted({*metrics, *tags}):
            self._write(member, metrics.get(member, []), tags.get(member, []))
        for run_id in [*self.run_ids.values(), self.parent_id]:
            if run_id is not None:
                self._client.set_terminated(run_id)
