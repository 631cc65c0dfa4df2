"""``genepool.run``: build a population and train it with PBT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool._rng import init_stream
from genepool.checkpoints import CheckpointStore, MemoryCheckpoints
from genepool.clock import Clock, SystemClock
from genepool.executors import SerialExecutor
from genepool.member import MemberView, Mode
from genepool.policy import Budget, Explore, Perturb, Policy, Ready, Select, Truncation
from genepool.result import Result
from genepool.space import Space
from genepool.store import MemoryStore, Store
from genepool.trainable import TrainableLike, check_trainable
from genepool.worker import RunContext

__all__ = ["run"]

log = logging.getLogger("genepool")

_DEFAULT = object()


def _initial_configs(
    space: Space,
    population: int | None,
    initial: Sequence[Mapping[str, Any]] | None,
    seed: int,
) -> list[dict[str, Any]]:
    if initial is not None and (isinstance(initial, Mapping) or not isinstance(initial, Sequence)):
        raise invalid("run", "initial", "a list of dicts (one per member)", repr(initial))
    given = list(initial or [])
    if population is None:
        if not given:
            raise invalid(
                "run",
                "population",
                "set",
                "population=None and no initial configs",
                "Fix: population=16, or initial=[{...}, {...}].",
            )
        population = len(given)
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise invalid("run", "population", "an integer >= 1", repr(population))
    if len(given) > population:
        raise invalid(
            "run",
            "initial",
            f"at most population={population} configs",
            f"{len(given)} configs",
            "Fix: raise population or drop configs.",
        )
    rng = init_stream(seed)
    configs = [space.complete(c, rng, name=f"initial[{i}]") for i, c in enumerate(given)]
    configs.extend(space.sample(rng) for _ in range(population - len(given)))
    return configs


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
    store: Store | None = None,
    checkpoints: CheckpointStore | None = None,
    clock: Clock | None = None,
    recent_window: int = 100,
    synchronous: bool = False,
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
        store: The datastore (default: in memory).
        checkpoints: Where checkpoints go (default: in memory).
        clock: The time source (default: the system's); a ``ManualClock`` in tests.
        recent_window: How many recent scores each member keeps for ``WelchTTest``.
        synchronous: Decide in generations: a ready member waits until every active
            member has finished the same round, so all compare scores of the same round.
            A finished or failed member never holds the others up.

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
    if not isinstance(space, Space):
        raise invalid("run", "space", "a gp.Space", repr(space))
    if not isinstance(metric, str) or not metric:
        raise invalid("run", "metric", "the name of a reported metric", repr(metric))
    if mode not in ("max", "min"):
        raise invalid("run", "mode", "'max' or 'min'", repr(mode))
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise invalid("run", "seed", "an integer >= 0 or None", repr(seed))
    seed = int(seed)
    if not isinstance(synchronous, bool):
        raise invalid("run", "synchronous", "True or False", repr(synchronous))
    if isinstance(recent_window, bool) or not isinstance(recent_window, int) or recent_window < 2:
        raise invalid("run", "recent_window", "an integer >= 2", repr(recent_window))
    check_trainable(trainable)
    policy = Policy(
        space=space,
        ready=ready,
        exploit=Truncation() if exploit is _DEFAULT else exploit,
        explore=Perturb() if explore is _DEFAULT else explore,
        budget=budget,
        max_failures=max_failures,
    )
    window = getattr(policy.exploit, "window", 0)
    if window > recent_window:
        raise invalid(
            "run", "recent_window", "at least the WelchTTest window", f"{recent_window} < {window}"
        )
    configs = _initial_configs(space, population, initial, seed)
    clock = clock or SystemClock()
    store = store if store is not None else MemoryStore(clock=clock)
    checkpoints = checkpoints if checkpoints is not None else MemoryCheckpoints()
    members = [MemberView(id=i, hparams=c) for i, c in enumerate(configs)]
    config = {
        "mode": mode,
        "metric": metric,
        "seed": seed,
        "space": repr(space),
        "initial": configs,
        "ready": repr(ready),
        "exploit": repr(policy.exploit),
        "explore": repr(policy.explore),
        "budget": repr(budget),
        "synchronous": synchronous,
    }
    if not store.create_run(name, config=config, members=members):
        raise invalid(
            "run",
            "name",
            "a new run name for this store",
            repr(name),
            "Fix: choose another name (resuming a run comes with durable stores).",
        )
    ctx = RunContext(
        name=name,
        trainable=trainable,
        policy=policy,
        metric=metric,
        seed=seed,
        store=store,
        checkpoints=checkpoints,
        clock=clock,
        started=clock.now(),
        recent_window=recent_window,
        synchronous=synchronous,
    )
    log.info("run %r: %d members, seed %d", name, len(members), seed)
    with _graceful_interrupt(ctx.stop_event, ctx):
        reason = SerialExecutor().run(ctx)
    return Result(
        name=name,
        seed=seed,
        metric=metric,
        stop_reason=reason,
        store=store,
        checkpoints=checkpoints,
    )
