"""genepool: Population Based Training (Jaderberg et al. 2017) that is correct and fast.

A population of models trains in parallel; when a member is *ready* it compares itself
with the others, and a member that lags *exploits* a better one (copies its weights and
hyperparameters) then *explores* (perturbs those hyperparameters). One run yields a trained
model and a hyperparameter schedule.

Example:
    >>> import genepool as gp
    >>> space = gp.Space(lr=gp.Float(1e-4, 1e-1, log=True), momentum=gp.Float(0.5, 0.99))
    >>> space["lr"]
    Float(0.0001, 0.1, log=True)
"""

from typing import TYPE_CHECKING

from genepool._errors import (
    CheckpointError,
    CollectedPinError,
    GenepoolError,
    HyperparameterNotAppliedError,
    InvalidArgumentError,
    MissingDependencyError,
    StaleLeaseError,
    StorageError,
    StorageFaultError,
    TrainableError,
)
from genepool._lazy import lazy_attributes
from genepool.checkpoints import CheckpointStore, LocalCheckpoints, MemoryCheckpoints
from genepool.clock import ManualClock, SystemClock
from genepool.member import CheckpointRef, Event, MemberView, Population, Report
from genepool.policy import (
    PB2,
    BestOf,
    Budget,
    Calm,
    Continue,
    Every,
    Exploit,
    Explore,
    ExploreFunction,
    GaussianNoise,
    MovingAverage,
    PB2Mix,
    Perturb,
    Policy,
    Ready,
    Resample,
    Select,
    Stop,
    Tournament,
    Truncation,
    WelchTTest,
)
from genepool.space import Choice, Domain, Fixed, Float, Int, Space
from genepool.store import MemoryStore, Store
from genepool.trainable import Member, Trainable
from genepool.version import __version__

if TYPE_CHECKING:
    from genepool._replay import ReplayResult, replay
    from genepool._run import load_best, run
    from genepool.asktell import AskTell
    from genepool.checkpoints.fsspec import FsspecCheckpoints
    from genepool.executors import Executor, ProcessExecutor, RayExecutor, SerialExecutor
    from genepool.loggers import Logger, MLflowLogger, WandbLogger, export_logs
    from genepool.result import MemberResult, Result

#: Loaded on first use (PEP 562): a worker process, which imports genepool to run the
#: worker loop, need not load the driver's side (run, replay, results, executors).
_LAZY = {
    "AskTell": "genepool.asktell",
    "FsspecCheckpoints": "genepool.checkpoints.fsspec",
    "ReplayResult": "genepool._replay",
    "replay": "genepool._replay",
    "load_best": "genepool._run",
    "run": "genepool._run",
    "Executor": "genepool.executors",
    "ProcessExecutor": "genepool.executors",
    "RayExecutor": "genepool.executors",
    "SerialExecutor": "genepool.executors",
    "Logger": "genepool.loggers",
    "MLflowLogger": "genepool.loggers",
    "WandbLogger": "genepool.loggers",
    "export_logs": "genepool.loggers",
    "MemberResult": "genepool.result",
    "Result": "genepool.result",
}


__getattr__ = lazy_attributes(__name__, globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "PB2",
    "AskTell",
    "BestOf",
    "Budget",
    "Calm",
    "CheckpointError",
    "CheckpointRef",
    "CheckpointStore",
    "Choice",
    "CollectedPinError",
    "Continue",
    "Domain",
    "Event",
    "Every",
    "Executor",
    "Exploit",
    "Explore",
    "ExploreFunction",
    "Fixed",
    "Float",
    "FsspecCheckpoints",
    "GaussianNoise",
    "GenepoolError",
    "HyperparameterNotAppliedError",
    "Int",
    "InvalidArgumentError",
    "LocalCheckpoints",
    "Logger",
    "MLflowLogger",
    "ManualClock",
    "Member",
    "MemberResult",
    "MemberView",
    "MemoryCheckpoints",
    "MemoryStore",
    "MissingDependencyError",
    "MovingAverage",
    "PB2Mix",
    "Perturb",
    "Policy",
    "Population",
    "ProcessExecutor",
    "RayExecutor",
    "Ready",
    "ReplayResult",
    "Report",
    "Resample",
    "Result",
    "Select",
    "SerialExecutor",
    "Space",
    "StaleLeaseError",
    "Stop",
    "StorageError",
    "StorageFaultError",
    "Store",
    "SystemClock",
    "Tournament",
    "Trainable",
    "TrainableError",
    "Truncation",
    "WandbLogger",
    "WelchTTest",
    "__version__",
    "export_logs",
    "load_best",
    "replay",
    "run",
]
