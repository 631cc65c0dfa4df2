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

from genepool._errors import (
    CheckpointError,
    GenepoolError,
    HyperparameterNotAppliedError,
    InvalidArgumentError,
    MissingDependencyError,
    StaleLeaseError,
    StorageError,
    TrainableError,
)
from genepool._run import run
from genepool.checkpoints import CheckpointStore, MemoryCheckpoints
from genepool.clock import ManualClock, SystemClock
from genepool.member import CheckpointRef, Event, MemberView, Population, Report
from genepool.policy import (
    Budget,
    Continue,
    Every,
    Exploit,
    Explore,
    ExploreFunction,
    GaussianNoise,
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
from genepool.result import MemberResult, Result
from genepool.space import Choice, Domain, Fixed, Float, Int, Space
from genepool.store import MemoryStore, Store
from genepool.trainable import Member, Trainable

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "CheckpointError",
    "CheckpointRef",
    "CheckpointStore",
    "Choice",
    "Continue",
    "Domain",
    "Event",
    "Every",
    "Exploit",
    "Explore",
    "ExploreFunction",
    "Fixed",
    "Float",
    "GaussianNoise",
    "GenepoolError",
    "HyperparameterNotAppliedError",
    "Int",
    "InvalidArgumentError",
    "ManualClock",
    "Member",
    "MemberResult",
    "MemberView",
    "MemoryCheckpoints",
    "MemoryStore",
    "MissingDependencyError",
    "Perturb",
    "Policy",
    "Population",
    "Ready",
    "Report",
    "Resample",
    "Result",
    "Select",
    "Space",
    "StaleLeaseError",
    "Stop",
    "StorageError",
    "Store",
    "SystemClock",
    "Tournament",
    "Trainable",
    "TrainableError",
    "Truncation",
    "WelchTTest",
    "__version__",
    "run",
]
