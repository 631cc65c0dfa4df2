"""TensorBoard event files of a run: every member's scores and hyperparameters, and lineages.

The layout under ``logdir`` (one TensorBoard *run* per folder)::

    member_000/            member 0's own reports, in the order it made them
    member_001/            ...
    lineage/member_000/    the line of member 0's final weights, as one curve
    lineage/member_001/    ...

A member's folder holds each numeric metric it reported under its own name (``Q``,
``accuracy``), the hyperparameters that trained each step under ``hparams/<name>``, and its
exploits, explores, failures and stops as text. After an exploit a member's own curve goes
back to the donor's step, as its weights did.

A ``lineage/`` folder reads as one curve across exploits: the run's metric along the
member's ancestry (each step's score from the member that trained it, see
:meth:`genepool.Result.ancestry_scores`), the schedule's values under ``hparams/<name>``,
and under ``lineage/member`` the member that trained each step, so every jump shows.
Metrics and hyperparameters share their tags in both kinds of folder, so TensorBoard draws
the lineage over the members' own curves.

Writing needs ``tensorboardX`` (``pip install 'genepool[tensorboard]'``); viewing needs
TensorBoard itself (``tensorboard --logdir DIR``). The files this module writes end in
``.genepool``; writing again into the same ``logdir`` replaces them, so a folder never holds
a run twice.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from genepool._errors import missing_dependency
from genepool.analysis._curves import CurveReader, describe_event, lineage_curves, number

if TYPE_CHECKING:
    from genepool.result import Result

__all__ = ["TensorBoardLog", "to_tensorboard"]

SUFFIX = ".genepool"
LINEAGE = "lineage"


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise missing_dependency(
            "tensorboardX", "tensorboard", "Writing TensorBoard logs"
        ) from None
    return SummaryWriter


def run_folder(member: int) -> str:
    """The folder name of a member's TensorBoard run (``member_007``)."""
    return f"member_{member:03d}"


def _scalars(
    writer: Any, values: Mapping[str, Any], step: int, walltime: float | None, prefix: str = ""
) -> None:
    for name, value in values.items():
        found = number(value)
        if found is not None:
            writer.add_scalar(prefix + str(name), found, step, walltime=walltime)


def _walltime(time: float) -> float | None:
    return time if math.isfinite(time) else None


class TensorBoardLog:
    """Writes a run into a TensorBoard log directory, and appends to it as the run goes.

    :meth:`update` writes the reports and events not written yet (call it again while the
    run goes: only what is new is appended); :meth:`write_lineages` writes every member's
    line (once the run has ended, or whenever asked: it replaces the lineages written
    before). ``genepool tensorboard --follow`` is this in a loop.

    Args:
        logdir: The log directory (created if missing). Event files an earlier log wrote
            into its member and lineage folders are removed.

    Example:
        >>> import tempfile
        >>> import genepool as gp
        >>> from genepool.analysis import TensorBoardLog
        >>> def train(member):
        ...     while member.running:
        ...         member.report(score=member.hparams["lr"] * member.step, state=0)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=2, ready=gp.Every(2), budget=gp.Budget(steps=4), seed=0)
        >>> with tempfile.TemporaryDirectory() as logdir, TensorBoardLog(logdir) as log:
        ...     log.update(result), sorted(p.name for p in log.write_lineages(result))
        (8, ['member_000', 'member_001'])
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self._writer_class = _summary_writer()
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._members: dict[int, Any] = {}
        self._lineages: dict[int, Any] = {}
        self._reader = CurveReader()
        for pattern in ("member_*", f"{LINEAGE}/member_*"):
            for folder in self.logdir.glob(pattern):
                self._remove_own_files(folder)

    @staticmethod
    def _remove_own_files(folder: Path) -> None:
        for old in folder.glob(f"events.out.tfevents.*{SUFFIX}"):
            old.unlink()

    def _writer(self, folder: Path) -> Any:
        return self._writer_class(logdir=str(folder), filename_suffix=SUFFIX, flush_secs=3600)

    def _member_writer(self, member: int) -> Any:
        writer = self._members.get(member)
        if writer is None:
            writer = self._members[member] = self._writer(self.logdir / run_folder(member))
        return writer

    def update(self, result: Result) -> int:
        """Append the reports and events made since the last update; return how many reports."""
        points = self._reader.read(result.reports, result.events, result.population)
        for point in points:  # in the order they were written, so per member too
            writer = self._member_writer(point.member)
            walltime = _walltime(point.time)
            _scalars(writer, point.metrics, point.step, walltime)
            _scalars(writer, point.hparams, point.step, walltime, prefix="hparams/")
        for event in self._reader.new_events(result.events):
            self._member_writer(event.member).add_text(
                "events", describe_event(event), event.step, walltime=_walltime(event.time)
            )
        for writer in self._members.values():
            writer.flush()
        return len(points)

    def write_lineages(self, result: Result, members: Iterable[int] | None = None) -> list[Path]:
        """Write the line of each member's weights (all by default); return their folders."""
        chosen = [m.id for m in result.population] if members is None else list(members)
        best = result.population.best()
        curves = lineage_curves(result, chosen)
        folders = []
        for member in chosen:
            folder = self.logdir / LINEAGE / run_folder(member)
            old = self._lineages.pop(member, None)
            if old is not None:
                old.close()
            self._remove_own_files(folder)
            writer = self._lineages[member] = self._writer(folder)
            for point in curves[member]:
                walltime = _walltime(point.time)
                writer.add_scalar(result.metric, point.score, point.step, walltime=walltime)
                writer.add_scalar(
                    f"{LINEAGE}/member", float(point.member), point.step, walltime=walltime
                )
                _scalars(writer, point.hparams, point.step, walltime, prefix="hparams/")
            line = result.lineage(member)
            path = " -> ".join(
                f"member {s.member} (steps {s.start + 1}-{s.end})" for s in line.segments
            )
            note = "the best member" if best is not None and best.id == member else "a member"
            score = result.schedule(member).score
            writer.add_text(
                LINEAGE, f"{note}; its line: {path}; final score {score}", line.final_step
            )
            writer.flush()
            folders.append(folder)
        return folders

    def close(self) -> None:
        """Flush and close every event file."""
        for writer in [*self._members.values(), *self._lineages.values()]:
            writer.close()
        self._members.clear()
        self._lineages.clear()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def to_tensorboard(result: Result, logdir: str | os.PathLike[str]) -> Path:
    """Write a run's members and lineages as TensorBoard runs under ``logdir``.

    See the module's docstring for the layout; view it with ``tensorboard --logdir``.
    ``genepool tensorboard --storage URL --logdir DIR [--follow]`` does the same from a
    shell, and with ``--follow`` keeps appending while the run goes.

    Args:
        result: The run (:func:`genepool.run`, or :meth:`genepool.Result.open`).
        logdir: The log directory (created if missing; what an earlier call wrote into it
            is replaced).

    Returns:
        The log directory.

    Example:
        >>> import tempfile
        >>> import genepool as gp
        >>> from genepool.analysis import to_tensorboard
        >>> def train(member):
        ...     while member.running:
        ...         member.report(score=member.hparams["lr"] * member.step, state=0)
        >>> result = gp.run(train, gp.Space(lr=gp.Float(0.1, 1.0)), metric="score",
        ...                 population=2, ready=gp.Every(2), budget=gp.Budget(steps=4), seed=0)
        >>> with tempfile.TemporaryDirectory() as logdir:
        ...     sorted(p.name for p in to_tensorboard(result, logdir).iterdir())
        ['lineage', 'member_000', 'member_001']
    """
    with TensorBoardLog(logdir) as log:
        log.update(result)
        log.write_lineages(result)
        return log.logdir
