"""What PBT found, read back from the store: lineage, schedules, histories, reports.

The functions here are pure: they take a run's events and population (what
:class:`genepool.Result` holds) and never touch a process, a file or a database.

Most users reach them through :class:`genepool.Result`: ``result.lineage()``,
``result.schedule()`` and ``result.history_frame()``; ``genepool report`` draws them.
"""

from typing import TYPE_CHECKING

from genepool._lazy import lazy_attributes
from genepool.analysis._lineage import (
    Change,
    Jump,
    Lineage,
    Segment,
    ancestry_scores,
    hparams_at_report,
    hparams_timeline,
    lineage,
    schedule_changes,
)
from genepool.analysis._schedule import SCHEDULE_VERSION, Schedule, ScheduleError

if TYPE_CHECKING:
    from genepool.analysis._figures import plot_overview, plot_report
    from genepool.analysis._report import write_report
    from genepool.analysis._tensorboard import TensorBoardLog, to_tensorboard

# the report, its figures and TensorBoard logs load on first use: a worker process, which
# imports this package through genepool, never needs them
_LAZY = {
    "plot_overview": "genepool.analysis._figures",
    "plot_report": "genepool.analysis._figures",
    "write_report": "genepool.analysis._report",
    "TensorBoardLog": "genepool.analysis._tensorboard",
    "to_tensorboard": "genepool.analysis._tensorboard",
}


__getattr__ = lazy_attributes(__name__, globals(), _LAZY)


__all__ = [
    "SCHEDULE_VERSION",
    "Change",
    "Jump",
    "Lineage",
    "Schedule",
    "ScheduleError",
    "Segment",
    "TensorBoardLog",
    "ancestry_scores",
    "hparams_at_report",
    "hparams_timeline",
    "lineage",
    "plot_overview",
    "plot_report",
    "schedule_changes",
    "to_tensorboard",
    "write_report",
]
