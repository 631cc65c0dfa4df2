"""Send a run where users already look: MLflow and Weights & Biases.

``gp.run(..., loggers=[gp.MLflowLogger(...), gp.WandbLogger(...)])`` (and ``gp.AskTell``,
and ``genepool run --logger``) sends each member's scores and hyperparameters over steps,
every exploit and explore as a tagged event, and, when the run ends, each member's lineage
as one continuous curve (its ancestors' scores up to each exploit, as
:meth:`genepool.Result.ancestry_scores` reads them). A tracker takes 0.13 to 0.65 ms of
CPU a value, so a logger sends at most :data:`RATE` (5) points a second of the whole run
(each member's curve at one point every ``population / rate`` seconds and its last; a step
slower than that is sent every time; ``rate=None``: every point). A thread of the driver
reads what the run wrote to its store and hands it to the loggers in batches: no logger
call sits inside a member's round, and a logger that fails is warned about and dropped
while the run goes on. :func:`export_logs` (``genepool export-logs``) sends a run
afterwards, with the same code.

Write your own by implementing :class:`Logger` (``start``, ``log``, ``finish``).
MLflow and W&B are extras (``pip install 'genepool[mlflow]'``, ``'genepool[wandb]'``),
imported only when a logger starts.
"""

from genepool.loggers._base import (
    LINEAGE_POINTS,
    RATE,
    Batch,
    LineagePoint,
    LoggedEvent,
    Logger,
    MemberPoint,
    RunInfo,
)
from genepool.loggers._feed import LogFeed, export_logs
from genepool.loggers._mlflow import MLflowLogger
from genepool.loggers._wandb import WandbLogger

__all__ = [
    "LINEAGE_POINTS",
    "RATE",
    "Batch",
    "LineagePoint",
    "LogFeed",
    "LoggedEvent",
    "Logger",
    "MLflowLogger",
    "MemberPoint",
    "RunInfo",
    "WandbLogger",
    "export_logs",
]
