"""``genepool.run``: build a population and train it with PBT."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np

from genepool._capacity import check_capacity
from genepool._create import create_or_resume, settings_of
from genepool._errors import invalid
from genepool._faults import give_back_abandoned
from genepool._rng import init_stream
from genepool._settings import check
from genepool._storage import closes_the_stores_it_opens, open_storage
from genepool.checkpoints import (
    CheckpointStore,
    MemoryCheckpoints,
    check_run_name,
)
from genepool.clock import Clock, SystemClock
from genepool.executors import Executor, ProcessExecutor, SerialExecutor
from genepool.executors.processes import refuse_in_memory
from genepool.loggers._base import Logger
from genepool.loggers._feed import check_loggers, feeding
from genepool.member import Mode
from genepool.policy import Budget, Explore, Perturb, Policy, Ready, Select, Truncation
from genepool.result import Result
from genepool.space import Space
from genepool.store import MemoryStore, Store, check_url
from genepool.trainable import TrainableLike, check_trainable
from genepool.worker import MAX_RESIDENT, RunContext, collect_orphans

__all__ = ["check_arguments", "load_best", "run"]

log = logging.getLogger("genepool")

_DEFAULT = object()


@contextmanager
def _graceful_interrupt(event: threading.Event, ctx: RunContext) -> Iterator[None]:
    """First Ctrl-C: members checkpoint, then the run stops. A second one raises at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if event.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        log.warning("Interrupted: members checkpoint, then the run stops (Ctrl-C again to abort)")
        ctx.stop_reason = "interrupted"
        event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@closes_the_stores_it_opens
def run(
    trainable: TrainableLike,
    space: Space,
    *,
    metric: str,
    ready: Ready,
    budget: Budget,
    mode: Mode = "max",
    population: int | None = None,
    initial: Sequence[Mapping[str, Any]] | None = None,
    exploit: Select | Any | None = _DEFAULT,
    explore: Explore | Any | None = _DEFAULT,
    seed: int | None = None,
    name: str = "run",
    max_failures: int = 3,
    storage: str | Store | None = None,
    checkpoints: str | os.PathLike[str] | CheckpointStore | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    resume: bool | None = None,
    revive: bool = False,
    allow_config_change: bool = False,
    synchronous: bool = False,
    aligned: bool | None = None,
    lease_seconds: float = 30.0,
    progress_timeout: float | None = None,
    max_crashes: int = 3,
    max_ahead: int | None = None,
    max_resident: int | None = None,
    keep: int = 1,
    fsync: bool = False,
    clock: Clock | None = None,
    recent_window: int = 100,
    metrics_every: int = 1,
    store: Store | None = None,
    progress: bool = False,
    trust_checkpoints: bool = False,
    loggers: Sequence[Logger] | None = None,
) -> Result:
    """Train a population with Population Based Training.

    Args:
        trainable: A :class:`~genepool.Trainable` subclass, or a function taking a
            :class:`~genepool.Member` that loops and calls ``member.report(...)``.
        space: The hyperparameters and their bounds.
        metric: The reported metric that ranks members.
        ready: When a member may compare itself with the population (``gp.Every(4)``).
        budget: When the run ends (``gp.Budget(steps=200)``).
        mode: ``"max"`` if a higher ``metric`` is better, ``"min"`` otherwise.
        population: How many members (default: one per ``initial`` config).
        initial: Starting configs, one per member; missing keys, and members beyond
            ``len(initial)``, are sampled from the space.
        exploit: Who copies whom: ``gp.Truncation(0.2)`` (default), ``gp.Tournament()``,
            ``gp.WelchTTest()``, or ``None`` to never copy.
        explore: How copied hyperparameters change: ``gp.Perturb()`` (default),
            ``gp.Resample(p)``, ``gp.GaussianNoise(sigma)``, ``gp.ExploreFunction(fn)``, or
            ``None`` to copy them unchanged.
        seed: The run seed; ``None`` draws one (``result.seed`` tells which).
        name: The run's name in the store.
        max_failures: Consecutive failed rounds after which a member is stopped.
        storage: The datastore: ``"sqlite:///pbt.db"`` (durable, resumable: the embedded
            default for several workers), ``"postgresql://..."`` (several machines),
            ``"memory"``, or a :class:`~genepool.store.Store`. Default: in memory for one
            worker; a SQLite file in a new temporary directory for several.
        checkpoints: A directory, or a checkpoint store. Default: in memory with an
            in-memory store, else ``<database file>.checkpoints`` beside a SQLite file.
            The run's folder in it (``<checkpoints>/<name>/``) belongs to the datastore
            of the run that first wrote it, which a marker in it names
            (``genepool-owner.json``); a run of another datastore is refused it (use
            another folder or name), and no run deletes another datastore's checkpoints.
            With an in-memory store and a folder on disk, the store is gone when the
            process ends while the checkpoints stay: running the script again starts a
            new run (a new in-memory store), which is refused the folder the earlier run
            left (so that its best model is not deleted). Pass a durable ``storage`` to
            resume a run instead, or a new folder each time.
        workers: How many worker processes (1: this process, serially).
        executor: How workers run; default ``SerialExecutor()`` for one worker, else
            ``ProcessExecutor(workers=workers)``.
        resume: ``None`` (default): continue the run named ``name`` if the store has it,
            else start it. ``True``: it must exist. ``False``: it must not.
        revive: Resuming, make the run's failed members active again first (from their
            last checkpoint, their crash and failure counts cleared; a ``"revive"``
            event each), as ``genepool revive`` does.
        allow_config_change: Resume even if the run's settings differ from the stored ones.
        synchronous: Decide in generations: a ready member waits until every active
            member has finished the same round, so all compare scores of the same round.
            A finished or failed member never holds the others up.
        aligned: Compare members at the same point of training: a member that decides
            is compared with each other at the latest ready both have reached, not with
            the other's latest score, which may be a round older or newer (a score that
            rises with training would otherwise make whoever trained furthest look
            best). ``None`` (default): on for an asynchronous run, off for a synchronous
            one (where every member decides on the same round anyway).
        lease_seconds: How long a worker's claim on a member lasts without a heartbeat.
        progress_timeout: Seconds without a step after which a member is taken for hung
            in its code: its worker stops renewing its lease, another worker takes the
            member over from its checkpoint once the lease runs out (a crash counted:
            ``max_crashes`` of them stop it), and a worker process or Ray actor ends
            itself twice that long later, to be replaced. Default: ten times the
            worker's slowest round so far, at least ten minutes.
        max_crashes: A member whose worker died this many times is stopped as failed.
        max_ahead: No member may run more than this many ready rounds ahead of the
            slowest (workers time-sharing a large population).
        max_resident: How many members' sessions (a model in memory, on the device with a
            GPU; a function trainable's thread) each worker keeps between their rounds;
            the least recently used is closed first, and starts again from its checkpoint
            when next trained. Default: ``min(ceil(population / workers), 32)``, or ``1``
            when the trainable asks for it (a torch model on a CUDA device: see
            :attr:`genepool.Member.resident_limit`). Lower it when members' models do not
            all fit in memory at once.
        keep: How many checkpoints each member keeps beyond its current one (and the one
            an exploit pinned): its previous ones, which it falls back to when its current
            checkpoint is torn or missing (a ``"fallback"`` event; with none readable, it
            takes the best other member's current checkpoint, else starts afresh). A run
            holds at most ``population x (keep + 1)`` checkpoints, plus pinned ones.
            ``0``: only the current ones.
        fsync: Flush each checkpoint's files and folder to the disk before the store
            records it, so that a machine that loses power (not only a process that
            dies) keeps every checkpoint the store names. Off by default: a crash of a
            process loses nothing either way, and a torn checkpoint after a power loss
            falls back to the member's previous one (see ``keep``). For checkpoints in
            a folder or an fsspec URL that this call opens; a checkpoint store passed in
            is built with its own ``fsync=``.
        clock: The time source (default: the system's); a ``ManualClock`` in tests.
        recent_window: How many recent scores each member keeps for ``WelchTTest``.
        metrics_every: Store the reported metrics other than ``metric`` only at steps that
            are multiples of this, and at the last step of each ready round (a long run
            with many metrics stays small); ``metric`` itself is stored at every step.
        store: Same as ``storage`` given a :class:`~genepool.store.Store` (kept for
            symmetry with ``checkpoints``).
        progress: Show a live table of the population on the terminal (rich).
        trust_checkpoints: Let checkpoints hold any Python object (stored with pickle),
            and read checkpoints in genepool's first format (a pickle). Reading such a
            checkpoint can run code, so this makes the checkpoint storage (and whoever can
            write to it) as trusted as this code. Off by default: checkpoints hold plain
            data, NumPy arrays and torch tensors, and reading one never runs code. It is
            never read from the store or the checkpoints: each call that reads says so.
        loggers: Where else to send the run as it goes: ``[gp.MLflowLogger(...),
            gp.WandbLogger(...)]``, or your own :class:`~genepool.Logger`. A thread of
            this process reads what the run wrote to its store (every second, less often
            for a large run, and once more at the end) and sends each member's scores,
            hyperparameters and events, and at the end each member's lineage curve (see
            :mod:`genepool.loggers`). A logger that fails is warned about and dropped;
            the run goes on. A resumed run is sent whole again.

    Returns:
        A :class:`~genepool.Result`: ``result.best.hparams``, ``result.best.score``,
        ``result.load()`` for the best state, ``result.to_frame()`` for the history.

    Example:
        >>> import genepool as gp
        >>> def train(member):
        ...     x = 0.0 if member.restore() is None else member.restore()
        ...     while member.running:
        ...         x += member.hparams["lr"]
        ...         member.report(score=-abs(1 - x), state=lambda: x)
        >>> result = gp.run(
        ...     train, gp.Space(lr=gp.Float(0.001, 0.1, log=True)), metric="score",
        ...     population=4, ready=gp.Every(5), budget=gp.Budget(steps=40), seed=0,
        ... )
        >>> result.best.step
        40
    """
    # validate, open the storage, create or resume, execute
    args = locals()
    policy = check_arguments(args)  # before any store or file is touched
    seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else int(seed)
    clock = clock or SystemClock()
    the_store, the_checkpoints = open_storage(
        storage if storage is not None else store, checkpoints, workers, clock, fsync=fsync
    )
    seed, members, resumed = create_or_resume(
        "run", the_store, the_checkpoints, args=args, settings=settings_of(args, policy), seed=seed
    )
    ctx = RunContext(
        name=name,
        trainable=trainable,
        policy=policy,
        metric=metric,
        seed=seed,
        store=the_store,
        checkpoints=the_checkpoints,
        clock=clock,
        started=clock.now(),
        recent_window=recent_window,
        metrics_every=metrics_every,
        synchronous=synchronous,
        lease_seconds=lease_seconds,
        progress_timeout=progress_timeout,
        max_crashes=max_crashes,
        max_ahead=max_ahead,
        max_resident=(
            max_resident
            if max_resident is not None
            else _default_max_resident(len(members), executor, workers)
        ),
        resident_hint=max_resident is None,
        keep=keep,
        trust_checkpoints=trust_checkpoints,
    )
    log.info("run %r: %d members, seed %d", name, len(members), seed)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_graceful_interrupt(ctx.stop_event, ctx))
        if progress:
            from genepool._progress import live_progress

            stack.enter_context(live_progress(the_store, name, metric=metric))
        if executor is None:
            executor = SerialExecutor() if workers == 1 else ProcessExecutor(workers=workers)
        if resumed:
            give_back_abandoned(the_store, name)  # by a run of this process that met a fault
            _tidy(ctx)
        stack.enter_context(feeding(check_loggers(loggers, owner="run"), the_store, name))
        reason = executor.run(ctx)
        _tidy(ctx)
    return Result(
        name=name,
        seed=seed,
        metric=metric,
        stop_reason=reason,
        store=the_store,
        checkpoints=the_checkpoints,
        trust=trust_checkpoints,
        owns_store=not isinstance(storage if storage is not None else store, Store),
    )


def check_arguments(args: Mapping[str, Any], *, owner: str = "run") -> Policy:
    """Check :func:`run`'s arguments, every one of them (``args``: its ``locals()`` on
    entry), without touching a store or a file: each against the table of settings
    (:data:`genepool._settings.RUN`), then what they must be together. Returns the
    policy they make. ``genepool run --check`` checks a config file with it, and
    :class:`genepool.AskTell` its settings (``owner``: who the messages name).

    Raises:
        InvalidArgumentError: The first argument that is wrong, with how to fix it.
    """
    check(owner, args)
    check_run_name(args["name"], owner=owner, name="name")
    check_trainable(args["trainable"])
    check_loggers(args.get("loggers"), owner=owner)
    space: Space = args["space"]
    initial = args["initial"]
    population = args["population"]
    if population is None and not initial:
        raise invalid(
            owner,
            "population",
            "set",
            "population=None and no initial configs",
            "Fix: population=16, or initial=[{...}, {...}].",
        )
    if initial is not None:
        if population is not None and len(initial) > population:
            raise invalid(
                owner,
                "initial",
                f"at most population={population} configs",
                f"{len(initial)} configs",
                "Fix: raise population or drop configs.",
            )
        rng = init_stream(0)  # only to check the configs: the run draws with its seed
        for i, config in enumerate(initial):
            space.complete(config, rng, name=f"initial[{i}]")
    exploit, explore, synchronous = args["exploit"], args["explore"], args["synchronous"]
    policy = Policy(
        space=space,
        ready=args["ready"],
        exploit=Truncation() if exploit is _DEFAULT else exploit,
        explore=Perturb() if explore is _DEFAULT else explore,
        budget=args["budget"],
        max_failures=args["max_failures"],
        aligned=not synchronous if args["aligned"] is None else args["aligned"],
        population=population if population is not None else len(initial or ()),
    )
    window = getattr(policy.exploit, "window", 0)
    if window > args["recent_window"]:
        raise invalid(
            owner,
            "recent_window",
            "at least the WelchTTest window",
            f"{args['recent_window']} < {window}",
            f"Fix: recent_window={window}.",
        )
    storage, store, checkpoints = args["storage"], args["store"], args["checkpoints"]
    if store is not None and storage is not None:
        raise invalid(
            owner, "store", "given once", "both store= and storage=", "Fix: pass only storage=."
        )
    if isinstance(storage, str):
        check_url(storage, owner=owner, name="storage")
    if args["executor"] is None and args["workers"] > 1:
        refuse_in_memory(
            store=storage == "memory" or isinstance(store or storage, MemoryStore),
            checkpoints=isinstance(checkpoints, MemoryCheckpoints),
        )
    in_memory = (store or storage) in (None, "memory") or isinstance(store or storage, MemoryStore)
    steps = policy.budget.steps if policy.ready.counter == "steps" else None
    check_capacity(
        population if population is not None else len(initial),
        hparams=len(space),
        recent_window=args["recent_window"],
        keep=args["keep"],
        reports_per_member=int(steps or 0) if in_memory and args["workers"] == 1 else 0,
    )
    if args["fsync"] and isinstance(checkpoints, CheckpointStore) and not checkpoints.fsync:
        raise invalid(
            owner,
            "fsync",
            "False with a checkpoint store built without fsync",
            f"fsync=True and {checkpoints!r}",
            "Fix: build the store with fsync=True (LocalCheckpoints(path, fsync=True)), "
            "or pass checkpoints= a path.",
        )
    return policy


def _default_max_resident(population: int, executor: Executor | None, workers: int) -> int:
    """``min(ceil(population / workers), MAX_RESIDENT)``: each worker's share of the
    population, where the executor's own count of workers wins over ``workers``."""
    if isinstance(executor, SerialExecutor):
        count = 1
    else:
        count = getattr(executor, "workers", workers) if executor is not None else workers
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        count = 1  # an executor that does not say: as many as one worker could hold
    return max(1, min(-(-population // count), MAX_RESIDENT))


def _tidy(ctx: RunContext) -> None:
    """Delete the checkpoints of the run that nothing refers to (left by a worker that
    died); a failure to do so is only logged."""
    try:
        collect_orphans(ctx)
    except Exception:
        log.warning("could not delete the checkpoints nothing refers to", exc_info=True)


def load_best(storage: str | Store, name: str = "run", *, trust: bool = False) -> Any:
    """The state of the best member of a run in a durable store (its final checkpoint).

    It only reads, as :meth:`genepool.Result.open` does: a database that does not exist
    is a :class:`~genepool.StorageError`, never created.

    ``trust=True`` also reads checkpoints that hold pickled objects, or are in genepool's
    first format: reading those can run code, so pass it only for checkpoint storage as
    trusted as this code (see :meth:`genepool.Result.open`).
    """
    with Result.open(storage, name, trust=trust) as result:
        return result.load()
