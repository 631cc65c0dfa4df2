"""The PostgreSQL store: claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, for workers on
several machines.

* **A claim** reads the run's active rows, picks from them
  (:func:`~genepool.store._claims.pick_claim`), then locks its pick ``SKIP LOCKED`` and
  checks that it has not changed (compare-and-set): a row another transaction holds is in
  use and passed over; a row that changed starts the claim again. Concurrent workers
  neither take the same member nor wait for each other.
* **A commit** locks the member's row (``FOR UPDATE``) and checks the lease on it
  (:func:`~genepool.store._commits.check_commit`). One that changes a member's view (or
  pins a checkpoint) also locks the run's row to bump its version: such writes commit in
  version order, which is what lets every process refresh its snapshot incrementally, and
  what :meth:`~genepool.store.Store.collect` serializes with.
* **A renewal** is one ``UPDATE ... RETURNING`` of a row that still holds the lease.

Lease times come from the database's clock (``clock_timestamp()``) unless a ``clock`` is
injected; this machine's clock may lag it by :data:`CLOCK_MARGIN_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from genepool._errors import StorageError, missing_dependency
from genepool._redact import redact_url
from genepool.clock import Clock
from genepool.member import ACTIVE, MemberView, Population
from genepool.store._claims import counts_a_crash, pick_claim, with_crash
from genepool.store._codec import Corrupt, holder_from_json, holder_json, view_from_json, view_json
from genepool.store._leases import Lease, WorkerInfo, stale_lease
from genepool.store._snapshots import RunCache
from genepool.store._sqlcommit import Commit, Standing, write_commit
from genepool.store._sqlrows import MEMBERS_TABLE, held_row, member_columns, member_row
from genepool.store._sqlstore import SQLStore, TxKind
from genepool.store._statements import (
    I_COLLECTED_POSTGRESQL,
    S_CLAIM_LOCK,
    S_CLAIM_ROWS,
    S_COMMIT_LOCK,
    S_LEASE,
    S_LOCK_RUN,
    S_USED,
    U_MEMBER,
    U_RENEW_DB_CLOCK,
    U_RENEW_GIVEN,
    Statement,
)
from genepool.store._transactions import AlchemyTx, Tx

if TYPE_CHECKING:
    from sqlalchemy import URL
    from sqlalchemy.engine import Engine

__all__ = ["CLOCK_MARGIN_SECONDS", "PostgreSQLStore"]

#: How far this machine's clock may lag the database's, in seconds: a lease is taken as
#: held that long after it ran out by this clock (:meth:`SQLStore.held`).
CLOCK_MARGIN_SECONDS = 60.0

_CLAIM_ATTEMPTS = 100
_CHUNK = 500  # ids per IN (...) list


class _Candidate(NamedTuple):
    """An active member's row as a claim reads it (``S_CLAIM_ROWS``)."""

    id: int
    ready_count: int
    step: int
    pending: bool
    token: int
    expires: float | None
    holder: str | None
    now: float  # the database's clock


class _Locked(NamedTuple):
    """A member's row as a claim locks it (``S_CLAIM_LOCK``)."""

    status: str
    ready_count: int
    step: int
    pending: bool
    token: int
    expires: float | None
    holder: str | None
    view: str


def _claim_fields(row: _Candidate | _Locked) -> tuple[Any, ...]:
    """What a claim decided on, which must not have changed when it locks the row."""
    return (row.ready_count, row.step, row.pending, row.token, row.expires, row.holder)


class _Retry(Exception):
    """The member a claim picked changed since it was read: claim again."""


class PostgreSQLStore(SQLStore, scheme="postgresql"):
    """A :class:`~genepool.store.SQLStore` on a PostgreSQL database: claims ``SKIP
    LOCKED`` (see the module's docstring)."""

    _I_COLLECTED: ClassVar[Statement] = I_COLLECTED_POSTGRESQL

    # -- opening -------------------------------------------------------------------------
    def _open_engine(self, sa_url: URL) -> Engine:
        from genepool.store import _sqlschema as schema

        if sa_url.drivername == "postgresql+psycopg":
            _require_psycopg()
        return schema.postgresql_engine(sa_url, self._echo, read_only=self._read_only)

    def _setup(self) -> str:
        from genepool.store import _sqlschema as schema

        engine = self._require_engine()
        return schema.setup_postgresql(engine, repr(self), redact_url(self.url))

    def __reduce__(self) -> tuple[Any, ...]:
        """The store travels as its URL: the process it goes to opens its own connection."""
        return (_reopen, (self.url, self._clock, self._echo, self._read_only))

    @contextmanager
    def _begin(self, kind: TxKind) -> Iterator[Tx]:
        """A transaction on a connection of the engine's pool (threads share it); a
        ``read`` sees one consistent snapshot."""
        with self._require_engine().connect() as conn:
            if kind == "read":
                conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
            yield AlchemyTx(conn)

    def _clock_margin(self) -> float:
        # leases are timed by the database's clock: a margin for this machine's
        return 0.0 if self._clock is not None else CLOCK_MARGIN_SECONDS

    # -- leases --------------------------------------------------------------------------
    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        for _attempt in range(_CLAIM_ATTEMPTS):
            try:
                with self._tx("write") as tx:
                    st = self._state(tx, run)
                    return self._try_claim(
                        tx, st, worker=worker, lease_seconds=lease_seconds, max_ahead=max_ahead
                    )
            except _Retry:
                continue
        raise StorageError(
            f"run {run!r}: no claim succeeded in {_CLAIM_ATTEMPTS} attempts (the members "
            "kept changing under it)"
        )

    def _try_claim(
        self,
        tx: Tx,
        st: RunCache,
        *,
        worker: WorkerInfo,
        lease_seconds: float,
        max_ahead: int | None,
    ) -> Lease | None:
        """Pick from the active rows, then lock the pick ``SKIP LOCKED`` and check that it
        has not changed; :class:`_Retry` if it has."""
        rows = [_Candidate._make(r) for r in tx.all(S_CLAIM_ROWS, {"r": st.id})]
        if not rows:
            return None
        now = self._clock.now() if self._clock is not None else float(rows[0].now)
        seen = {r.id: r for r in rows}
        views = [
            MemberView(
                id=r.id,
                hparams=_NO_HPARAMS,
                step=r.step,
                ready_count=r.ready_count,
                pending=r.pending,
            )
            for r in rows
        ]
        skipped: set[int] = set()

        def held(member: int) -> bool:
            r = seen[member]
            try:
                return member in skipped or held_row(r.holder, r.expires, now)
            except Corrupt as err:
                raise err.at(MEMBERS_TABLE, member_row(st.name, st.id, member)) from None

        while (best := pick_claim(views, held, max_ahead)) is not None:
            where = {"b_run": st.id, "b_id": best.id}
            found = tx.first(S_CLAIM_LOCK, where)
            if found is None:  # another transaction has the row: it is in use
                skipped.add(best.id)
                continue
            locked = _Locked._make(found)
            if locked.status != ACTIVE or _claim_fields(locked) != _claim_fields(seen[best.id]):
                raise _Retry  # it changed since it was read
            token, expires = int(locked.token) + 1, now + lease_seconds
            params: dict[str, Any] = {"token": token, "expires": expires}
            params["holder"] = holder_json(worker)
            # never released: its holder died or hung (with its driver: no crash)
            try:
                left = None if locked.holder is None else holder_from_json(locked.holder)
                view = with_crash(view_from_json(locked.view)) if counts_a_crash(left) else None
            except Corrupt as err:
                raise err.at(MEMBERS_TABLE, member_row(st.name, st.id, best.id)) from None
            if view is not None:
                params.update(member_columns(view, view_json(view)))
                params["version"] = self._bump(tx, st)
            tx.run(U_MEMBER, {**params, **where})
            return Lease(st.name, best.id, token, worker, expires)
        return None

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        with self._tx("write") as tx:
            st = self._state(tx, lease.run)
            where = {"b_run": st.id, "b_id": lease.member}
            if self._clock is not None:
                stmt, extra = U_RENEW_GIVEN, {"exp": self._clock.now() + lease_seconds}
            else:
                stmt, extra = U_RENEW_DB_CLOCK, {"secs": float(lease_seconds)}
            found = tx.scalar(stmt, {**where, "b_token": lease.token, **extra})
            if found is None:
                current = tx.first(S_LEASE, where)
                tx.rollback()
                token, holder = current if current is not None else (None, None)
                raise stale_lease(lease, current=None if holder is None else token)
            expires = float(found)
        return replace(lease, expires=expires)

    # -- writes --------------------------------------------------------------------------
    def _commit(self, commit: Commit) -> Population:
        lease = commit.lease
        rows = self._rows(commit)
        with self._tx("write") as tx:
            st = self._state(tx, lease.run)
            locked = tx.first(S_COMMIT_LOCK, {"b_run": st.id, "b_id": lease.member})
            if locked is None:
                raise StorageError(f"the lease names member {lease.member}, not one of the run's")
            token, holder, status, checkpoint = locked
            standing = Standing(
                token=None if holder is None else token, status=status, checkpoint=checkpoint
            )
            # a new view or pin changes what collect may take: serialize with it
            changes = commit.member is not None or commit.pin is not None
            version = self._bump(tx, st) if changes else None
            cache = write_commit(
                tx,
                st,
                version=version,
                commit=commit,
                standing=standing,
                lock=self._lock,
                rows=rows,
            )
            tx.commit()
            cache()
        return self.population(lease.run)

    def _used(self, tx: Tx, st: RunCache, candidates: Sequence[str]) -> set[str]:
        # commits that change views or pins hold this lock: serialize with them
        tx.run(S_LOCK_RUN, {"r": st.id})
        used: set[str] = set()
        for start in range(0, len(candidates), _CHUNK):
            chunk = candidates[start : start + _CHUNK]
            used.update(row[0] for row in tx.all(S_USED, {"r": st.id, "c": chunk}))
        return used


#: A claim's views are read for their claim order only.
_NO_HPARAMS: Mapping[str, Any] = MappingProxyType({})


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise missing_dependency("psycopg", "postgres", "A PostgreSQL store") from None


def _reopen(url: str, clock: Clock | None, echo: bool, read_only: bool = False) -> SQLStore:
    return PostgreSQLStore(url, clock=clock, echo=echo, read_only=read_only)
