"""Create a run, or resume the one the store has: the step every driver takes after its
arguments are checked and its storage opened (:func:`genepool.run`, ask/tell).

A new run samples its members' first configs from the seed and records its settings
with their hash; a run the store has already is resumed only with the same settings
(``allow_config_change`` lifts that), its seed the stored one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import invalid
from genepool._rng import init_stream
from genepool.checkpoints import CheckpointStore, MemoryCheckpoints, Owner
from genepool.member import MemberView
from genepool.policy import Policy
from genepool.space import Space
from genepool.store import MemoryStore, Store
from genepool.version import __version__

__all__ = ["config_hash", "create_or_resume", "initial_configs", "settings_of"]

log = logging.getLogger("genepool")


def settings_of(args: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """The settings of a run that must match when it is resumed (``args``: the run's
    checked arguments)."""
    initial = args["initial"]
    return {
        "mode": args["mode"],
        "metric": args["metric"],
        "space": repr(args["space"]),
        "population": args["population"],
        "initial": [dict(c) for c in initial] if initial is not None else None,
        "seed": args["seed"],
        "ready": repr(args["ready"]),
        "exploit": repr(policy.exploit),
        "explore": repr(policy.explore),
        "budget": repr(args["budget"]),
        "max_failures": args["max_failures"],
        "synchronous": args["synchronous"],
        # only when given: the runs made before it existed resume with the same hash
        **({"aligned": args["aligned"]} if args["aligned"] is not None else {}),
    }


def config_hash(settings: Mapping[str, Any]) -> str:
    """A stable hash of a run's settings (what must match to resume it)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def initial_configs(
    space: Space,
    population: int | None,
    initial: Sequence[Mapping[str, Any]] | None,
    seed: int,
) -> list[dict[str, Any]]:
    """The members' first configs: ``initial`` completed from the space, then sampled
    ones up to ``population`` (the arguments were checked already)."""
    given = list(initial or [])
    population = len(given) if population is None else population
    rng = init_stream(seed)
    configs = [space.complete(c, rng, name=f"initial[{i}]") for i, c in enumerate(given)]
    configs.extend(space.sample(rng) for _ in range(population - len(given)))
    return configs


def create_or_resume(
    owner: str,
    store: Store,
    checkpoints: CheckpointStore,
    *,
    args: Mapping[str, Any],
    settings: Mapping[str, Any],
    seed: int,
) -> tuple[int, list[MemberView], bool]:
    """Create the run ``args["name"]`` in ``store``, or resume it.

    Args:
        owner: Who asks, for messages (``"run"``).
        store: The run's store.
        checkpoints: The run's checkpoint store (its folder is made the store's).
        args: The run's checked arguments (``name``, ``space``, ``population``,
            ``initial``, ``seed`` as given, ``resume``, ``revive``,
            ``allow_config_change``).
        settings: :func:`settings_of` the arguments.
        seed: The seed to create the run with (drawn when ``args["seed"]`` is None).

    Returns:
        The run's seed, its members, and whether it was resumed.

    Raises:
        InvalidArgumentError: ``resume=True`` and no such run; ``resume=False`` and the
            run exists; other settings than the stored run's.
    """
    name, user_seed = args["name"], args["seed"]
    digest = config_hash(settings)
    try:
        stored = store.run_config(name)
    except KeyError:
        stored = None
    if stored is None:
        if args["resume"] is True:
            raise invalid(
                owner,
                "resume",
                "False or None for a run the store does not have",
                f"resume=True and no run named {name!r}",
                "Fix: check name= and storage=, or drop resume=True.",
            )
        configs = initial_configs(args["space"], args["population"], args["initial"], seed)
        members = [MemberView(id=i, hparams=c) for i, c in enumerate(configs)]
        own_checkpoints(store, checkpoints, name, members)  # before the run exists
        config = {
            **settings,
            "hash": digest,
            "seed": seed,
            "initial": configs,
            "population": len(configs),
            "genepool": __version__,
        }
        if not store.create_run(name, config=config, members=members):
            raise invalid(
                owner,
                "name",
                "a new run name",
                repr(name),
                "Fix: another process created it meanwhile; run again to resume it.",
            )
        return seed, members, False
    if args["resume"] is False:
        raise invalid(
            owner,
            "name",
            "a run name not in the store (resume=False)",
            repr(name),
            "Fix: choose another name, or resume=None to continue that run.",
        )
    # the seed matches when it was not given (either time) or is the one the run used
    seeds = {user_seed}
    if user_seed in (None, stored.get("seed")):
        seeds |= {None, stored.get("seed")}
    digests = {config_hash({**settings, "seed": s}) for s in seeds}
    if stored.get("hash") not in digests and not args["allow_config_change"]:
        raise invalid(
            owner,
            "resume",
            "the same settings as the stored run",
            _diff(stored, settings),
            "Fix: run with the same settings, or pass allow_config_change=True.",
        )
    if args["revive"]:
        revived = store.revive(name)
        log.info("run %r: revived failed members %s", name, revived)
    members = list(store.population(name))
    own_checkpoints(store, checkpoints, name, members)
    log.info("resuming run %r", name)
    return int(stored["seed"]), members, True


def _diff(stored: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    changed = [
        f"{k}: stored {stored.get(k)!r}, now {v!r}"
        for k, v in settings.items()
        if v is not None
        and json.dumps(stored.get(k), default=repr, sort_keys=True)
        != json.dumps(v, default=repr, sort_keys=True)
    ]
    return "; ".join(changed) or "settings that hash differently"


def own_checkpoints(
    store: Store, checkpoints: CheckpointStore, name: str, members: Sequence[MemberView]
) -> None:
    """Make the run's checkpoint folder its datastore's, or refuse it (it belongs to
    another): see :meth:`~genepool.checkpoints.CheckpointStore.own`."""
    durable = not isinstance(store, MemoryStore)
    if not durable and not _process_local(checkpoints):
        log.warning(
            "run %r keeps its checkpoints in %r, which outlive this process, but its "
            "datastore in memory, which does not: once this process ends the run cannot be "
            "resumed, and running it again (a new in-memory store) is refused that folder, "
            "which belongs to this store. Pass a durable storage= (e.g. 'sqlite:///pbt.db') "
            "to be able to resume.",
            name,
            checkpoints,
        )
    owner = Owner(store=store.identity, shown=repr(store), durable=durable)
    referenced = {m.checkpoint.id for m in members if m.checkpoint is not None}
    checkpoints.own(name, owner, referenced=referenced)


def _process_local(checkpoints: CheckpointStore) -> bool:
    """Whether the checkpoints live in this process's memory (and go with it)."""
    return isinstance(checkpoints, MemoryCheckpoints) or bool(
        getattr(checkpoints, "process_local", False)
    )
