"""Ray actors as workers: the same worker loop on every node of a Ray cluster.

Each worker is a Ray actor that runs :class:`~genepool.worker.Worker` exactly as a local
worker process does; the actors meet only through the store and the checkpoints. The
driver starts them with the resources declared per worker, watches them, starts a new one
when one dies (its node went down, or its process), and forwards a stop, with the
supervisor it shares with local worker processes (:mod:`genepool.executors._supervisor`).
It holds no state of its own that a crash could lose: a member whose worker died is taken over from
its last checkpoint by the next claim once its lease has expired (at once when the store
sees the holder's process gone on its own machine).

Where the state lives across nodes:

* the store: PostgreSQL, which every node reaches; or a SQLite file served by genepool's
  store server (``store_server=True``: a Ray actor on the driver's node owns the file).
  A SQLite file opened by every worker directly works only while the whole cluster is the
  driver's machine, and is refused otherwise.
* the checkpoints: a directory that every node sees at the same path (a shared
  filesystem), or any checkpoint store all nodes reach.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import (
    HyperparameterNotAppliedError,
    InvalidArgumentError,
    StaleLeaseError,
    StorageError,
    TrainableError,
    invalid,
)
from genepool._ray import import_ray, unwrap
from genepool._redact import redact_url
from genepool.checkpoints import LocalCheckpoints, MemoryCheckpoints
from genepool.executors._bootstrap import THREAD_VARS, pack, run_worker, unpack
from genepool.executors._supervisor import Supervision, supervise
from genepool.store import MemoryStore, Store
from genepool.worker import RunContext

__all__ = ["RayExecutor"]

log = logging.getLogger("genepool.executors")

#: Errors no new worker can get past (the trainable breaks its contract, the setup is
#: wrong): the run ends and the driver raises them.
_FATAL = (TrainableError, HyperparameterNotAppliedError, InvalidArgumentError)

#: Resource names that are Ray's own options rather than custom resources.
_OPTIONS = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}
_MISSPELT = {"cpu": "CPU", "gpu": "GPU", "num_cpus": "CPU", "num_gpus": "GPU", "cpus": "CPU"}


def _sqlite_url(store: Store) -> str | None:
    """The URL of a SQLStore on a SQLite file opened directly, else ``None``."""
    from genepool.store.sql import SQLStore

    if isinstance(store, SQLStore) and store.url.startswith("sqlite:"):
        return store.url
    return None


class _RayWorker:
    """The body of one worker actor: the worker loop, and a door to stop it.

    The actor is threaded (two calls at once), so :meth:`stop` runs while :meth:`run`
    trains.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ctx: RunContext | None = None
        self._stop: str | None = None  # a stop that arrived before the run started

    def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        ray = import_ray("RayExecutor")
        return str(ray.get_runtime_context().get_node_id())

    def run(self, path: list[str], blob: bytes, index: int, driver_node: str) -> str:
        """Train until no member is left to train; return why the run ended."""
        for entry in path:  # the driver's modules, where this node has them too
            if entry not in sys.path and os.path.isdir(entry):
                sys.path.append(entry)
        try:
            shared = unpack(blob)
        except ImportError as err:  # the user's code is not on this node
            raise invalid(
                "RayExecutor",
                "runtime_env",
                "an environment in which every node can import the run's code",
                f"{type(err).__name__}: {err} on node {self.node()}",
                "Fix: runtime_env={'working_dir': '.'} (ship this directory) or "
                "{'py_modules': [...]}, or install the code on every node.",
            ) from None
        node = self.node()
        url = _sqlite_url(shared.store)
        if url is not None and node != driver_node:
            raise invalid(
                "run",
                "storage",
                "a store every Ray node can reach",
                f"{redact_url(url)!r}, a SQLite file on the driver's node, opened from node {node}",
                "Fix: storage='postgresql://user@host/database', or "
                "RayExecutor(..., store_server=True).",
            )
        return run_worker(
            shared,
            # the node id in the name tells apart workers on nodes that share a host name
            name=f"ray-{index}-{node[:8]}-{os.getpid()}",
            idle_wait=0.05,
            prepare=self._open,
        )

    def _open(self, ctx: RunContext) -> None:
        """Open the door for a stop: one that came before the run started goes through."""
        with self._lock:
            self._ctx = ctx
            if self._stop is not None:
                ctx.stop_reason = ctx.stop_reason or self._stop
                ctx.stop_event.set()

    def stop(self, reason: str) -> None:
        """Members checkpoint, then the worker ends (as on Ctrl-C in a local worker)."""
        with self._lock:
            self._stop = reason
            ctx = self._ctx
            if ctx is not None:
                ctx.stop_reason = ctx.stop_reason or reason
                ctx.stop_event.set()


class _Actor:
    """One worker actor (a :class:`~genepool.executors._supervisor.WorkerHandle`)."""

    def __init__(self, ray: Any, index: int, handle: Any, run: Any, node: Any) -> None:
        self._ray = ray
        self.index = index
        self.handle = handle
        self.run = run  # the ObjectRef of its run(): ready when it ends, or dies
        self._node = node  # the ObjectRef of its node(): ready once it runs somewhere

    def placed(self) -> bool:
        ready, _ = self._ray.wait([self._node], timeout=0)
        return bool(ready)

    def stop(self, reason: str) -> None:
        """Members checkpoint, then the worker ends (see :meth:`_RayWorker.stop`)."""
        self.handle.stop.remote(reason)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(self.handle, no_restart=True)

    def outcome(self) -> bool:
        """Whether the worker ended normally; raises what no new worker could get past."""
        ray = self._ray
        try:
            reason = ray.get(self.run)
        except ray.exceptions.RayTaskError as err:
            cause = unwrap(err)
            if isinstance(cause, _FATAL):
                raise cause from None
            if isinstance(cause, StorageError) and not isinstance(cause, StaleLeaseError):
                raise cause from None  # the storage failed, not the member: the run stops
            log.warning("worker %d failed: %s", self.index, err)
        except ray.exceptions.RayError as err:  # its process or its node died
            log.warning("worker %d is lost: %s", self.index, str(err).splitlines()[0])
        else:
            log.debug("worker %d ended: %s", self.index, reason)
            return True
        self.kill()
        return False

    def close(self) -> None:
        self.kill()


class _Actors:
    """Starts the worker actors of one run, and waits for them (the supervisor's
    launcher)."""

    def __init__(self, executor: RayExecutor, ray: Any, blob: Any, driver_node: str) -> None:
        self.executor = executor
        self.ray = ray
        self.blob = blob  # the run, packed and put in Ray's object store
        self.driver_node = driver_node
        self.actor_class = ray.remote(_RayWorker).options(**executor._actor_options())
        self.path = [] if executor._has_code_env() else list(sys.path)

    def start(self, index: int) -> _Actor:
        handle = self.actor_class.remote()
        run = handle.run.remote(self.path, self.blob, index, self.driver_node)
        self.executor.started_workers += 1
        return _Actor(self.ray, index, handle, run, handle.node.remote())

    def replace(self, dead: _Actor) -> _Actor:
        return self.start(dead.index)

    def wait(self, handles: Sequence[_Actor], timeout: float) -> list[_Actor]:
        done, _ = self.ray.wait([a.run for a in handles], num_returns=1, timeout=timeout)
        return [a for a in handles if a.run in done]


class RayExecutor:
    """Runs ``workers`` worker actors on a Ray cluster.

    Each worker is a Ray actor with ``resources_per_worker``, running the same worker
    loop as a local worker process. A population larger than ``workers`` (or than the
    cluster) is time-shared: each worker claims the member furthest behind, one ready
    round at a time. A worker that dies (its node went down) is replaced while members
    are left; its member goes on from its last checkpoint once its lease expires
    (``lease_seconds`` of :func:`genepool.run`). Ctrl-C in the driver reaches every
    worker: members checkpoint, then the run stops.

    Connects with ``ray.init(address=address)`` (``None``: the ``RAY_ADDRESS``
    environment variable, else a new local Ray instance) unless Ray is already
    initialised in this process, in which case that connection is used; a connection the
    executor made is closed when the run ends.

    User code reaches the nodes through Ray's runtime environment (``runtime_env``, e.g.
    ``{"working_dir": "."}`` or ``{"pip": [...]}``); a trainable defined in the driver's
    script travels by value. Storage must be reachable from every node: PostgreSQL, or
    a SQLite file served by genepool's store server (``store_server=True``); checkpoints
    in a directory every node sees at the same path.

    Args:
        workers: How many worker actors.
        resources_per_worker: Ray resources per worker: ``"CPU"``, ``"GPU"`` (fractions
            allowed, e.g. ``0.5`` to share a GPU between two workers), ``"memory"``
            (bytes) and custom resources by name. Default ``{"CPU": 1}``; ``"CPU"`` is 1
            unless given. BLAS / OpenMP / torch threads in each worker are capped to its
            CPUs (at least 1), unless ``runtime_env`` sets the variables.
        address: The cluster to connect to (``"ray://head:10001"``, ``"auto"``, ...).
        runtime_env: Ray's runtime environment for the workers (merged with the job's).
        max_restarts: How many dead workers may be replaced during the run (default: 10
            per worker).
        grace_seconds: How long workers may take to end once no member is left, or after
            a stop, before they are killed (one hung in user code never ends by itself).
        store_server: Serve a ``sqlite:///`` storage to every node from a store server
            on the driver's node (:class:`~genepool.store.RemoteStore`), started and
            ended with the run.

    Raises:
        MissingDependencyError: Ray is not installed (``pip install 'genepool[ray]'``).

    Example:
        >>> import genepool as gp  # doctest: +SKIP
        >>> result = gp.run(  # doctest: +SKIP
        ...     train, space, metric="score", population=32, ready=gp.Every(5),
        ...     budget=gp.Budget(steps=500), storage="sqlite:///pbt.db",
        ...     checkpoints="/shared/pbt-checkpoints",
        ...     executor=gp.RayExecutor(
        ...         workers=8, resources_per_worker={"CPU": 2, "GPU": 0.5},
        ...         runtime_env={"working_dir": "."}, store_server=True,
        ...     ),
        ... )
    """

    def __init__(
        self,
        *,
        workers: int,
        resources_per_worker: Mapping[str, float] | None = None,
        address: str | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        max_restarts: int | None = None,
        grace_seconds: float = 10.0,
        store_server: bool = False,
    ) -> None:
        import_ray("RayExecutor")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise invalid("RayExecutor", "workers", "an integer >= 1", repr(workers))
        self.resources = _check_resources(resources_per_worker)
        if address is not None and not isinstance(address, str):
            raise invalid("RayExecutor", "address", "a Ray address string or None", repr(address))
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise invalid("RayExecutor", "runtime_env", "a dict or None", repr(runtime_env))
        if max_restarts is not None and (
            isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0
        ):
            raise invalid(
                "RayExecutor", "max_restarts", "an integer >= 0 or None", repr(max_restarts)
            )
        if (
            isinstance(grace_seconds, bool)
            or not isinstance(grace_seconds, (int, float))
            or not grace_seconds >= 0
        ):
            raise invalid("RayExecutor", "grace_seconds", "a number >= 0", repr(grace_seconds))
        if not isinstance(store_server, bool):
            raise invalid("RayExecutor", "store_server", "True or False", repr(store_server))
        self.workers = workers
        self.address = address
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self.max_restarts = max_restarts if max_restarts is not None else 10 * workers
        self.grace_seconds = float(grace_seconds)
        self.store_server = store_server
        #: Threads per worker: its CPUs, at least 1.
        self.threads_per_worker = max(1, math.floor(self.resources.get("CPU", 1.0)))
        #: Worker actors started so far (read by tests).
        self.started_workers = 0

    # -- the run -----------------------------------------------------------------------
    def run(self, ctx: RunContext) -> str:
        """Start the workers, replace dead ones, and wait until the run ends."""
        ray = import_ray("RayExecutor")
        owned = False
        if not ray.is_initialized():
            ray.init(address=self.address)
            owned = True
        elif self.address is not None:
            log.info("Ray is already initialised here: address=%r is not used", self.address)
        try:
            return self._run(ray, ctx)
        finally:
            if owned:
                ray.shutdown()

    def _run(self, ray: Any, ctx: RunContext) -> str:
        driver_node = str(ray.get_runtime_context().get_node_id())
        worker_store = self._check_storage(ray, ctx, driver_node)
        server = None
        if self.store_server:
            from genepool.store.server import RemoteStore

            url = _sqlite_url(ctx.store)
            assert url is not None  # checked above
            server = RemoteStore.start(url, node=driver_node)
            worker_store = server
        try:
            blob = pack(dataclasses.replace(ctx, store=worker_store), self.threads_per_worker)
            how = Supervision(
                workers=self.workers,
                max_restarts=self.max_restarts,
                grace_seconds=self.grace_seconds,
                check_every=0.5,
                kill_after_stop=True,
            )
            return supervise(ctx, _Actors(self, ray, ray.put(blob), driver_node), how)
        finally:
            if server is not None:
                with contextlib.suppress(Exception):
                    server.shutdown()

    # -- set-up ------------------------------------------------------------------------
    def _check_storage(self, ray: Any, ctx: RunContext, driver_node: str) -> Store:
        """Refuse storage the workers cannot share; the store the workers open."""
        fix = (
            "Fix: storage='postgresql://user@host/database', or storage='sqlite:///pbt.db' "
            "with RayExecutor(..., store_server=True)."
        )
        if isinstance(ctx.store, MemoryStore):
            raise invalid(
                "run", "storage", "a durable store for Ray workers", "the in-memory store", fix
            )
        if isinstance(ctx.checkpoints, MemoryCheckpoints) or getattr(
            ctx.checkpoints, "process_local", False
        ):
            raise invalid(
                "run",
                "checkpoints",
                "a checkpoint directory for Ray workers",
                f"checkpoints in this process's memory ({ctx.checkpoints!r})",
                "Fix: checkpoints='/shared/dir' (a directory every node sees) or an object "
                "store URL ('s3://bucket/prefix').",
            )
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        others = [n for n in nodes if n.get("NodeID") != driver_node]
        url = _sqlite_url(ctx.store)
        if self.store_server and url is None:
            raise invalid(
                "RayExecutor",
                "store_server",
                "used with a 'sqlite:///' storage (it serves a SQLite file)",
                f"store_server=True with {ctx.store!r}",
                "Fix: drop store_server=True: every node connects to a PostgreSQL "
                "database directly.",
            )
        if url is not None and not self.store_server and others:
            raise invalid(
                "run",
                "storage",
                "a store every Ray node can reach",
                f"{redact_url(url)!r}, a SQLite file on this machine, on a Ray cluster of "
                f"{len(nodes)} nodes",
                "Fix: a PostgreSQL URL (storage='postgresql://user@host/database'), or "
                "genepool's store server, which serves the SQLite file from this node to "
                "every worker: executor=RayExecutor(..., store_server=True).",
            )
        local = isinstance(ctx.checkpoints, LocalCheckpoints) or str(
            getattr(ctx.checkpoints, "url", "")
        ).startswith("file:")
        if local and others:
            log.warning(
                "checkpoints in %r: every one of the %d nodes must see this directory at "
                "the same path (a shared filesystem)",
                ctx.checkpoints,
                len(nodes),
            )
        if not any(_fits(n.get("Resources", {}), self.resources) for n in nodes):
            log.warning(
                "no node of the cluster has %s free or in total: the workers wait until one joins",
                self.resources,
            )
        if url is not None and not self.store_server:
            from genepool.store.server import absolute_sqlite_url
            from genepool.store.sql import SQLStore

            absolute = absolute_sqlite_url(url)
            if absolute != url:  # workers may start in another directory
                store = SQLStore(absolute)
                store.close()
                return store
        return ctx.store

    def _actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"max_concurrency": 2, "num_cpus": 1.0}
        custom = {}
        for name, amount in self.resources.items():
            if name in _OPTIONS:
                options[_OPTIONS[name]] = int(amount) if name == "memory" else amount
            else:
                custom[name] = amount
        if custom:
            options["resources"] = custom
        env = dict(self.runtime_env or {})
        env_vars = {k: str(self.threads_per_worker) for k in THREAD_VARS}
        env_vars.update(env.get("env_vars") or {})  # the user's values win
        env["env_vars"] = env_vars
        options["runtime_env"] = env
        return options

    def _has_code_env(self) -> bool:
        """Whether the runtime environment brings the user's code to the nodes itself."""
        env = self.runtime_env or {}
        return bool(env.get("working_dir") or env.get("py_modules"))

    def __repr__(self) -> str:
        return f"RayExecutor(workers={self.workers}, resources_per_worker={self.resources})"


def _check_resources(resources: Mapping[str, float] | None) -> dict[str, float]:
    """The resources per worker, checked: names to amounts >= 0 (``"CPU"`` defaults to 1)."""
    if resources is None:
        return {"CPU": 1.0}
    if not isinstance(resources, Mapping):
        raise invalid(
            "RayExecutor",
            "resources_per_worker",
            "a dict of Ray resources, e.g. {'CPU': 2, 'GPU': 0.5}",
            repr(resources),
        )
    out: dict[str, float] = {"CPU": 1.0}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise invalid(
                "RayExecutor", "resources_per_worker", "keyed by resource names", repr(name)
            )
        if name in _MISSPELT:
            raise invalid(
                "RayExecutor",
                "resources_per_worker",
                "keyed by Ray's resource names",
                repr(name),
                f"Fix: {_MISSPELT[name]!r} (Ray's names are 'CPU', 'GPU', 'memory' and "
                "custom resources).",
            )
        if (
            isinstance(amount, bool)
            or not isinstance(amount, (int, float))
            or not math.isfinite(amount)
            or amount < 0
        ):
            raise invalid(
                "RayExecutor",
                "resources_per_worker",
                "amounts that are numbers >= 0",
                f"{name}={amount!r}",
            )
        out[name] = float(amount)
    return out


def _fits(total: Mapping[str, float], request: Mapping[str, float]) -> bool:
    """Whether a node with resources ``total`` could ever hold one worker."""
    return all(total.get(name, 0.0) >= amount for name, amount in request.items() if amount > 0)
