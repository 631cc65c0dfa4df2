"""A run in Weights & Biases: one W&B run per member, grouped."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import missing_dependency
from genepool.analysis._curves import number
from genepool.loggers._base import (
    LINEAGE_POINTS,
    Batch,
    LineagePoint,
    RunInfo,
    check_every,
    check_lineage_points,
    lineage_thinned,
    thinned,
)
from genepool.loggers._mlflow import lineage_text, member_name

__all__ = ["WandbLogger"]

log = logging.getLogger("genepool.loggers")


def _same_process_settings(wandb: Any) -> Any:
    """The settings of every member's W&B run after the first: all are made in the same
    process, so the first alone records the installed packages and samples the machine's
    system metrics (each run would record the same; listing the packages costs about 0.1
    CPU-second a run, and each sampler runs in W&B's service beside the workers). ``None``
    (W&B's defaults) where this W&B has no such settings."""
    try:
        return wandb.Settings(x_save_requirements=False, x_disable_stats=True)
    except Exception as err:  # a W&B without these (private) settings: its defaults
        log.debug("W&B's defaults for every member's run: %s", err)
        return None


class WandbLogger:
    """Sends a run to Weights & Biases: one W&B run per member (``<run>/member_000``, ...),
    all in the group named after the PBT run.

    Each member's W&B run has its initial hyperparameters as its config, and a history
    row per report: ``step`` (the x-axis of its charts), its metrics, and the
    hyperparameters that trained the step as ``hparams/<name>``. Each event is a row with
    ``event/kind`` and ``event/text`` (and, for an exploit, ``event/exploit``: the donor's
    id). After an exploit ``step`` goes back to the donor's, as the member's weights did
    (W&B's own ``_step`` keeps counting rows). When the run ends, the lineage curve: rows
    of ``lineage/step``, ``lineage/<metric>``, ``lineage/member`` and
    ``lineage/hparams/<name>``, and ``lineage`` (the line as text) in the summary. The
    first member's run alone lists the installed packages and samples the machine's system
    metrics: every run is made in the driver's process, so each would hold the same. Needs
    ``wandb`` (``pip install 'genepool[wandb]'``).

    Args:
        project: The W&B project. Default: W&B's own (``WANDB_PROJECT``).
        entity: The W&B entity (user or team). Default: W&B's own.
        group: The group of the members' runs. Default: the run's name.
        mode: ``"online"``, ``"offline"`` (write files only: send them later with
            ``wandb sync``) or ``"disabled"``. Default: W&B's own (``WANDB_MODE``).
        dir: The folder W&B writes its files into (``<dir>/wandb/``). Default: W&B's own.
        tags: Tags for every member's run.

        every: Send each member's points, and its lineage curve, at the steps that are
            multiples of this (and the lineage's last step); events are all sent. ``1``
            (default): every step. Each point is a row W&B's service processes: a long
            run of many members on a small machine may want ``every=10``.
        lineage_points: The most points of each member's lineage curve, spread evenly
            over its steps (first and last kept): the curve is sent when the run ends,
            while the run waits, so it is bounded (:data:`genepool.loggers.LINEAGE_POINTS`,
            1,000, by default). ``None``: every step.

    W&B is loaded when the logger is made (not when genepool is imported); its service
    starts with the run.

    Raises:
        InvalidArgumentError: ``every`` is not a whole number >= 1, or
            ``lineage_points`` not one >= 2 or ``None``.
        MissingDependencyError: wandb is not installed.

    Example:
        >>> import genepool as gp
        >>> logger = gp.WandbLogger(project="pbt", mode="offline", dir="wandb-runs")
        >>> result = gp.run(train, space, metric="score", ready=gp.Every(5),
        ...                 budget=gp.Budget(steps=100), loggers=[logger])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        mode: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        tags: Sequence[str] = (),
        every: int = 1,
        lineage_points: int | None = LINEAGE_POINTS,
    ) -> None:
        from genepool._errors import invalid

        try:  # here, once: not in the run's way
            import wandb  # noqa: F401
        except ImportError:
            raise missing_dependency("wandb", "wandb", "WandbLogger") from None
        if mode not in (None, "online", "offline", "disabled"):
            fix = "Fix: mode='offline' (files only), 'online', 'disabled', or None."
            raise invalid(
                "WandbLogger", "mode", "'online', 'offline', 'disabled' or None", repr(mode), fix
            )
        self.project = project
        self.entity = entity
        self.group = group
        self.mode = mode
        self.dir = None if dir is None else os.fspath(dir)
        self.every = check_every(every, "WandbLogger")
        self.lineage_points = check_lineage_points(lineage_points, "WandbLogger")
        self.tags = list(tags)
        #: Each member's W&B run.
        self.runs: dict[int, Any] = {}
        self._metric = "score"
        self._defined: set[tuple[int, str]] = set()

    def __repr__(self) -> str:
        return f"WandbLogger(project={self.project!r}, mode={self.mode!r}, dir={self.dir!r})"

    def start(self, run: RunInfo) -> None:
        """Start a W&B run per member."""
        import wandb

        self._metric = run.metric
        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        for i, (member, hparams) in enumerate(sorted(run.members.items())):
            one = wandb.init(
                project=self.project,
                entity=self.entity,
                group=self.group or run.name,
                job_type="member",
                name=f"{run.name}/{member_name(member)}",
                config={**hparams, "genepool/member": member, "genepool/seed": run.seed},
                tags=self.tags or None,
                mode=self.mode,  # type: ignore[arg-type]
                dir=self.dir,
                reinit="create_new",
                settings=None if i == 0 else _same_process_settings(wandb),
            )
            self.runs[member] = one
            one.define_metric("step")
            one.define_metric("lineage/step")
            one.define_metric("lineage/*", step_metric="lineage/step")
            for name in ("hparams/*", "event/*"):
                one.define_metric(name, step_metric="step")

    def log(self, batch: Batch) -> None:
        """Write the batch: a row per report and per event."""
        for p in thinned(batch.points, self.every):
            one = self.runs.get(p.member)
            if one is None:
                continue
            row: dict[str, Any] = {"step": p.step, **p.metrics}
            for name in p.metrics:
                if (p.member, name) not in self._defined:  # drawn against "step"
                    one.define_metric(name, step_metric="step")
                    self._defined.add((p.member, name))
            for k, v in p.hparams.items():
                value = number(v)
                if value is not None:
                    row[f"hparams/{k}"] = value
            one.log(row)
        for e in batch.events:
            one = self.runs.get(e.member)
            if one is None:
                continue
            event: dict[str, Any] = {"step": e.step, "event/kind": e.kind, "event/text": e.text}
            if e.donor is not None:
                event["event/exploit"] = e.donor
            one.log(event)

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        """Write each member's lineage curve; finish every W&B run."""
        for member, points in sorted(lineages.items()):
            one = self.runs.get(member)
            if one is None:
                continue
            for p in lineage_thinned(points, self.every, self.lineage_points):
                row: dict[str, Any] = {
                    "lineage/step": p.step,
                    f"lineage/{self._metric}": p.score,
                    "lineage/member": p.member,
                }
                for k, v in p.hparams.items():
                    value = number(v)
                    if value is not None:
                        row[f"lineage/hparams/{k}"] = value
                one.log(row)
            one.summary["lineage"] = lineage_text(points)
        for one in self.runs.values():
            one.finish()
