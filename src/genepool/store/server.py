"""genepool's store server: one SQLite file served to a whole Ray cluster.

SQLite lives on one machine's disk, so workers on other nodes cannot open it. The store
server is a Ray actor, pinned to one node (by default the one that starts it: the
driver's), that owns the file and runs every :class:`~genepool.store.Store` method on the
real :class:`~genepool.store.SQLStore`; :class:`RemoteStore` is the ``Store`` the workers
hold, forwarding each call to the actor. A Ray user needs no database server.

Everything the contract promises holds through it, because the actor is only a door to
the one SQLStore: claims are still compare-and-set, leases are timed by the server's clock
(the clock of the database's machine), fencing tokens are checked by the database. The
actor runs calls from many workers at once (a threaded actor); the SQLStore serialises
them on its one SQLite connection, as it does for threads in one process.

The usual way is the executor's switch, which starts and ends the server with the run::

    gp.run(..., storage="sqlite:///pbt.db", executor=gp.RayExecutor(workers=8, store_server=True))

The file stays an ordinary SQLite database: afterwards ``gp.load_best("sqlite:///pbt.db")``
and ``genepool status`` read it directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from genepool._errors import GenepoolError, StorageError, invalid
from genepool._ray import import_ray, unwrap
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.member import Event, MemberView, Population, Report
from genepool.store._base import History, HistoryAfter, Lease, Store, WorkerInfo

__all__ = ["RemoteStore", "StoreServer", "absolute_sqlite_url"]

log = logging.getLogger("genepool.store")


def absolute_sqlite_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (against this process's working
    directory), so that a process started elsewhere opens the same file; other URLs are
    returned as they are."""
    u = sa.make_url(url)
    database = u.database or ""
    if (
        u.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
        or os.path.isabs(database)
    ):
        return url
    return u.set(database=os.path.abspath(database)).render_as_string(hide_password=False)


class StoreServer:
    """The body of the store server's actor: a :class:`~genepool.store.SQLStore` opened on
    the actor's node, with one method per store method. Start it with
    :meth:`RemoteStore.start` rather than directly.

    Args:
        url: The database (an absolute ``sqlite:////path`` URL; any SQLStore URL works).
        clock: Times leases; by default the machine's clock (tests inject their own).
    """

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        from genepool.store.sql import SQLStore

        self._store = SQLStore(url, clock=clock)
        log.info("store server for %r on pid %d", self._store, os.getpid())

    def create_run(
        self, run: str, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        return self._store.create_run(run, config=config, members=members)

    def run_config(self, run: str) -> Mapping[str, Any]:
        return dict(self._store.run_config(run))

    def population(self, run: str) -> Population:
        return self._store.population(run)

    def held(self, run: str) -> frozenset[int]:
        return self._store.held(run)

    def claim(
        self, run: str, worker: WorkerInfo, lease_seconds: float, max_ahead: int | None
    ) -> Lease | None:
        return self._store.claim(run, worker, lease_seconds=lease_seconds, max_ahead=max_ahead)

    def renew(self, lease: Lease, lease_seconds: float) -> Lease:
        return self._store.renew(lease, lease_seconds=lease_seconds)

    def commit(
        self,
        lease: Lease,
        member: MemberView | None,
        reports: Sequence[Report],
        events: Sequence[Event],
        pin: str | None,
        release: bool,
    ) -> Population:
        return self._store.commit(
            lease, member=member, reports=reports, events=events, pin=pin, release=release
        )

    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        return self._store.collect(run, candidates)

    def history(self, run: str) -> History:
        return self._store.history(run)

    def history_after(self, run: str, reports_after: int, events_after: int) -> HistoryAfter:
        return self._store.history_after(
            run, reports_after=reports_after, events_after=events_after
        )

    def events(self, run: str) -> tuple[Event, ...]:
        return self._store.events(run)

    def revive(self, run: str, members: list[int] | None = None) -> list[int]:
        return self._store.revive(run, members)

    def runs(self) -> list[str]:
        return self._store.runs()

    def identity(self) -> str:
        return self._store.identity

    def history_in_order(self) -> bool:
        return self._store.history_in_order

    def where(self) -> tuple[str, int]:
        """The Ray node id and the process id the server runs in."""
        ray = import_ray("The store server")
        return str(ray.get_runtime_context().get_node_id()), os.getpid()


class RemoteStore(Store):
    """The :class:`~genepool.store.Store` of a store server: every call runs on the server.

    Picklable: it travels to Ray actors (and worker processes) as the server's actor
    handle. Create one with :meth:`start`.

    Args:
        server: The server's Ray actor handle.
        url: The database the server owns (an absolute URL).

    Example:
        >>> store = RemoteStore.start("sqlite:///pbt.db")  # doctest: +SKIP
        >>> gp.run(..., storage=store, executor=gp.RayExecutor(workers=8))  # doctest: +SKIP
        >>> store.shutdown()  # doctest: +SKIP
    """

    def __init__(self, server: Any, *, url: str) -> None:
        self.server = server
        #: The database the server owns (its checkpoints default to ``<file>.checkpoints``).
        self.url = url
        self._identity: str | None = None
        self._in_order: bool | None = None

    @classmethod
    def start(
        cls,
        url: str,
        *,
        node: str | None = None,
        clock: Clock | None = None,
        max_concurrency: int = 64,
    ) -> RemoteStore:
        """Start a store server for ``url`` on a Ray node and return its store.

        Connects to Ray first if this process is not connected (``RAY_ADDRESS``, or a new
        local cluster), as any Ray call does.

        Args:
            url: A ``sqlite:///path`` URL; a relative path is taken from this process's
                working directory.
            node: The Ray node id to run on (the file lives there); default: this
                process's node.
            clock: Times leases (default: the server machine's clock).
            max_concurrency: How many calls the server runs at once (they queue for the
                database's one write lock anyway; readers do not wait).

        Raises:
            InvalidArgumentError: ``url`` is not a SQLite URL.
            MissingDependencyError: Ray is not installed (``pip install 'genepool[ray]'``).
        """
        if not isinstance(url, str) or not url.startswith("sqlite:"):
            raise invalid(
                "RemoteStore.start",
                "url",
                "a 'sqlite:///path' URL (the store server serves a SQLite file)",
                repr(redact_url(url) if isinstance(url, str) else url),
                "Fix: with PostgreSQL, pass the 'postgresql://...' URL as storage: every "
                "node connects to it directly.",
            )
        ray = import_ray("The store server")
        if not ray.is_initialized():
            ray.init()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = node or str(ray.get_runtime_context().get_node_id())
        absolute = absolute_sqlite_url(url)
        actor = ray.remote(StoreServer).options(
            num_cpus=0,
            max_concurrency=max_concurrency,
            max_restarts=3,  # all its state is in the file: a new process serves on
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        )
        handle = actor.remote(absolute, clock)
        store = cls(handle, url=absolute)
        node_id, pid = store._get(handle.where.remote())  # opened: errors surface here
        log.info("store server for %r on node %s (pid %d)", store, node_id[:12], pid)
        return store

    def shutdown(self) -> None:
        """End the server (its file stays; it can be opened again by a new server)."""
        ray = import_ray("The store server")
        ray.kill(self.server)

    def _get(self, ref: Any) -> Any:
        ray = import_ray("The store server")
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = unwrap(err)
            if isinstance(cause, (GenepoolError, KeyError)):  # the contract's own errors
                raise cause from None
            raise
        except ray.exceptions.RayActorError as err:
            raise StorageError(
                f"the store server for {redact_url(self.url)} is unreachable or died: {err}"
            ) from err

    # -- the contract ------------------------------------------------------------------
    def create_run(
        self, run: str, *, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        return bool(self._get(self.server.create_run.remote(run, dict(config), list(members))))

    def run_config(self, run: str) -> Mapping[str, Any]:
        config: Mapping[str, Any] = self._get(self.server.run_config.remote(run))
        return config

    def held(self, run: str) -> frozenset[int]:
        held: frozenset[int] = self._get(self.server.held.remote(run))
        return held

    def population(self, run: str) -> Population:
        pop: Population = self._get(self.server.population.remote(run))
        return pop

    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        lease: Lease | None = self._get(
            self.server.claim.remote(run, worker, lease_seconds, max_ahead)
        )
        return lease

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        renewed: Lease = self._get(self.server.renew.remote(lease, lease_seconds))
        return renewed

    def commit(
        self,
        lease: Lease,
        *,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        pin: str | None = None,
        release: bool = False,
    ) -> Population:
        pop: Population = self._get(
            self.server.commit.remote(lease, member, list(reports), list(events), pin, release)
        )
        return pop

    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        out: list[str] = self._get(self.server.collect.remote(run, list(candidates)))
        return out

    def history(self, run: str) -> History:
        found: History = self._get(self.server.history.remote(run))
        return found

    def history_after(
        self, run: str, *, reports_after: int = -1, events_after: int = -1
    ) -> HistoryAfter:
        found: HistoryAfter = self._get(
            self.server.history_after.remote(run, reports_after, events_after)
        )
        return found

    def events(self, run: str) -> tuple[Event, ...]:
        events: tuple[Event, ...] = self._get(self.server.events.remote(run))
        return events

    def revive(self, run: str, members: Sequence[int] | None = None) -> list[int]:
        wanted = None if members is None else list(members)
        ids: list[int] = self._get(self.server.revive.remote(run, wanted))
        return ids

    def runs(self) -> list[str]:
        names: list[str] = self._get(self.server.runs.remote())
        return names

    @property
    def identity(self) -> str:
        """The served database's identity (asked once)."""
        if self._identity is None:
            self._identity = str(self._get(self.server.identity.remote()))
        return self._identity

    @property
    def history_in_order(self) -> bool:  # type: ignore[override]
        """Whether the served store reads its history in order (SQLite does; asked once)."""
        if self._in_order is None:
            self._in_order = bool(self._get(self.server.history_in_order.remote()))
        return self._in_order

    def __repr__(self) -> str:
        return f"RemoteStore({redact_url(self.url)!r})"
