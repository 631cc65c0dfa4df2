"""A run in Weights & Biases: one W&B run per member, grouped."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import missing_dependency
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
from genepool.loggers._mlflow import lineage_text, member_name

__all__ = ["WandbLogger"]

log = logging.getLogger("genepool.loggers")


def _same_process_settings(wandb: Any) -> Any:
    """The settings of every member's W&B run after the first: all are made in the same
    process, so the first alone records the installed packages, the machine and the git
    commit, and samples the machine's system metrics (each run would record the same;
    listing the packages costs 0.3 to 0.5 CPU-second, the machine and git 5 ms a run, and
    each sampler runs in W&B's service beside the workers). ``None`` (W&B's defaults)
    where this W&B has no such settings."""
    try:
        return wandb.Settings(
            x_save_requirements=False,
            x_disable_stats=True,
            x_disable_machine_info=True,
            disable_git=True,
        )
    except Exception as err:  # a W&B without these (private) settings: its defaults
        log.debug("W&B's defaults for every member's run: %s", err)
        return None


def _first_run_settings(wandb: Any) -> Any:
    """The first member's W&B run's settings: W&B's, but not listing the installed
    packages itself (the logger lists them as it is made, and writes them in the run's
    ``requirements.txt``, as W&B would). ``None`` (W&B's defaults, which list them) where
    this W&B has no such setting."""
    try:
        return wandb.Settings(x_save_requirements=False)
    except Exception as err:  # a W&B without this (private) setting: its defaults
        log.debug("W&B's defaults for the first member's run: %s", err)
        return None


def installed_packages() -> str:
    """The installed packages, a ``name==version`` line each, sorted: the
    ``requirements.txt`` W&B writes for a run. Listing them reads every package's metadata
    (0.3 CPU-second here): done when the logger is made, where the user's script waits
    for W&B to load anyway, not in the run, where the workers would wait."""
    lines = set()
    for found in importlib.metadata.distributions():
        try:
            name = found.metadata["Name"]
        except (KeyError, UnicodeDecodeError, TypeError):  # a broken package's metadata
            continue
        if name:
            lines.add(f"{name}=={found.version}")
    return "".join(f"{line}\n" for line in sorted(lines))


def _load_what_init_loads() -> None:
    """Load the W&B module ``wandb.init`` loads on its first run (W&B Launch's staged
    inputs: 0.7 CPU-second here, with cProfile) as the logger is made, where the user's
    script waits for W&B anyway, rather than in the run, where the workers would."""
    try:
        importlib.import_module("wandb.sdk.launch.inputs.internal")
    except Exception as err:  # another W&B: it loads what it needs when it needs it
        log.debug("W&B's first run will load its own modules: %s", err)


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
    first member's run alone lists the installed packages, records the machine and the git
    commit, and samples the machine's system metrics: every run is made in the driver's
    process, so each would hold the same. Needs
    ``wandb`` (``pip install 'genepool[wandb]'``).

    Args:
        project: The W&B project. Default: W&B's own (``WANDB_PROJECT``).
        entity: The W&B entity (user or team). Default: W&B's own.
        group: The group of the members' runs. Default: the run's name.
        mode: ``"online"``, ``"offline"`` (write files only: send them later with
            ``wandb sync``) or ``"disabled"``. Default: W&B's own (``WANDB_MODE``).
        dir: The folder W&B writes its files into (``<dir>/wandb/``). Default: W&B's own.
        tags: Tags for every member's run.

        rate: The most points a second sent of the whole run (:data:`genepool.loggers.RATE`,
            5, by default): each member's curve at one point every ``population / rate``
            seconds of the run's clock or more, and its last point; its lineage curve the
            same. Each point is a row W&B takes about 0.65 ms of CPU for (0.4 ms in the
            driver, 0.25 ms in its service; offline, benchmarks/logger_cost.py), taken
            from the workers: steps slower than ``population / rate`` seconds are all sent, a
            population stepping every 10 ms is sampled. ``None``: every point
            (``gp.export_logs`` can send them all afterwards). Events are all sent.
        every: Of the points, send those at the steps that are multiples of this (and the
            lineage's last step). ``1`` (default): every step.
        lineage_points: The most points of each member's lineage curve, spread evenly
            over its steps (first and last kept): the curve is sent when the run ends,
            while the run waits, so it is bounded (:data:`genepool.loggers.LINEAGE_POINTS`,
            1,000, by default). ``None``: every step.

    W&B is loaded, and the installed packages listed, when the logger is made (not when
    genepool is imported); its service starts with the run.

    Raises:
        InvalidArgumentError: ``rate`` is not a number of points a second > 0 or
            ``None``, ``every`` not a whole number >= 1, ``lineage_points`` not one
            >= 2 or ``None``, or ``mode`` not one of W&B's.
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
        rate: float | None = RATE,
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
        self.rate = check_rate(rate, "WandbLogger")
        self.every = check_every(every, "WandbLogger")
        self.lineage_points = check_lineage_points(lineage_points, "WandbLogger")
        self.tags = list(tags)
        #: Each member's W&B run.
        self.runs: dict[int, Any] = {}
        self._metric = "score"
        self._defined: set[tuple[int, str]] = set()
        self._paced = Paced(self.rate, 0)
        _load_what_init_loads()
        self._packages = installed_packages()

    def __repr__(self) -> str:
        return f"WandbLogger(project={self.project!r}, mode={self.mode!r}, dir={self.dir!r})"

    def start(self, run: RunInfo) -> None:
        """Start a W&B run per member."""
        import wandb

        self._metric = run.metric
        self._paced = Paced(self.rate, len(run.members))
        if self.dir is not None:
            os.makedirs(self.dir, exist_ok=True)
        for i, (member, hparams) in enumerate(sorted(run.members.items())):
            settings = _first_run_settings(wandb) if i == 0 else _same_process_settings(wandb)
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
                settings=settings,
            )
            if i == 0 and settings is not None:  # the packages, listed as the logger was made
                self._write_packages(one)
            self.runs[member] = one
            one.define_metric("step")
            one.define_metric("lineage/step")
            one.define_metric("lineage/*", step_metric="lineage/step")
            for name in ("hparams/*", "event/*"):
                one.define_metric(name, step_metric="step")

    def _write_packages(self, one: Any) -> None:
        """The installed packages into a run's ``requirements.txt``, where W&B writes them."""
        try:
            with open(os.path.join(one.dir, "requirements.txt"), "w") as out:
                out.write(self._packages)
        except OSError as err:  # a disabled run's folder, say: the run goes on without
            log.debug("W&B's first run keeps no requirements.txt: %s", err)

    def log(self, batch: Batch) -> None:
        """Write the batch: a row per report sent and per event."""
        self._rows(self._paced.take(thinned(batch.points, self.every)))
        for e in batch.events:
            one = self.runs.get(e.member)
            if one is None:
                continue
            event: dict[str, Any] = {"step": e.step, "event/kind": e.kind, "event/text": e.text}
            if e.donor is not None:
                event["event/exploit"] = e.donor
            one.log(event)

    def _rows(self, points: Sequence[MemberPoint]) -> None:
        """A row per point."""
        for p in points:
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

    def finish(self, lineages: Mapping[int, Sequence[LineagePoint]]) -> None:
        """Write each member's last point (if not sent yet) and lineage curve; finish every
        W&B run."""
        self._rows(self._paced.rest())
        interval = self._paced.interval
        for member, points in sorted(lineages.items()):
            one = self.runs.get(member)
            if one is None:
                continue
            for p in lineage_thinned(points, self.every, self.lineage_points, interval):
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
