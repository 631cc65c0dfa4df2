"""A commit in SQL: what it writes (:class:`Commit`), the member as it finds it
(:class:`Standing`), and its writes (:func:`write_commit`), which both SQL stores make once
the contract's checks (:func:`genepool.store._commits.check_commit`) pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from genepool.member import Event, MemberView, Report
from genepool.store._codec import view_json
from genepool.store._commits import check_commit, releases_pin
from genepool.store._leases import Lease
from genepool.store._snapshots import RunCache
from genepool.store._sqlrows import event_row, member_columns, report_row
from genepool.store._statements import D_PIN, I_EVENTS, I_PIN, I_REPORTS, S_COLLECTED, U_MEMBER
from genepool.store._transactions import Tx

__all__ = ["Commit", "Rows", "Standing", "commit_rows", "write_commit"]


class Commit(NamedTuple):
    """What a commit writes with its lease (see :meth:`Store.commit`)."""

    lease: Lease
    member: MemberView | None = None
    reports: Sequence[Report] = ()
    events: Sequence[Event] = ()
    pin: str | None = None
    release: bool = False

    @property
    def writes(self) -> bool:
        """Whether it writes anything beside the release of its lease."""
        return bool(self.member is not None or self.reports or self.events or self.pin is not None)


class Standing(NamedTuple):
    """A member as a commit finds it, which :func:`~genepool.store._commits.check_commit`
    judges the commit by: the token of its current lease (``None``: nobody holds it), its
    status and its checkpoint's id; on SQLite, its cached view too."""

    token: int | None
    status: str
    checkpoint: str | None
    view: MemberView | None = None


class Rows(NamedTuple):
    """A commit's rows: its reports', its events' and its member's JSON. A store makes
    them before the write transaction begins where it can (:func:`commit_rows`), so that
    the database's write lock is held for the statements alone: with several writers,
    that time is what bounds them."""

    reports: list[dict[str, Any]]
    events: list[dict[str, Any]]
    view: str | None


def commit_rows(commit: Commit, *, run_id: int, metric: str | None) -> Rows:
    """The rows ``commit`` writes in the run ``run_id`` whose score is ``metric``."""
    return Rows(
        reports=[report_row(r, run_id=run_id, metric=metric) for r in commit.reports],
        events=[event_row(e, run_id=run_id) for e in commit.events],
        view=None if commit.member is None else view_json(commit.member),
    )


def write_commit(
    tx: Tx,
    st: RunCache,
    *,
    version: int | None,
    commit: Commit,
    standing: Standing,
    lock: AbstractContextManager[Any],
    rows: Rows | None = None,
) -> Callable[[], None]:
    """A commit's writes, in ``tx`` (which the caller commits), once the contract's
    checks pass (:func:`~genepool.store._commits.check_commit`, against the member's
    ``standing``); returns what brings the cache up to date once ``tx`` committed.

    Args:
        tx: The write transaction.
        st: The run's cache.
        version: The run's version this write makes (``None``: it bumped none).
        commit: What to write.
        standing: The member as the commit finds it.
        lock: The store's lock, which guards the cache.
        rows: ``commit``'s rows, made before ``tx`` began; ``None``: made here.
    """
    lease, member = commit.lease, commit.member
    check_commit(
        lease,
        current=standing.token,
        status=standing.status,
        member=member,
        pin=commit.pin,
        collected=lambda pin: tx.first(S_COLLECTED, {"r": st.id, "c": pin}) is not None,
    )
    if rows is None:
        rows = commit_rows(commit, run_id=st.id, metric=st.metric)
    unchanged = member is not None and member is standing.view
    text = None if unchanged else rows.view
    if releases_pin(member=member, checkpoint=standing.checkpoint, pin=commit.pin):
        tx.run(D_PIN, {"r": st.id, "m": lease.member})
    if commit.pin is not None:
        tx.run(I_PIN, {"run_id": st.id, "member": lease.member, "checkpoint": commit.pin})
    params: dict[str, Any] = {}
    if member is not None and text is not None:
        params.update(member_columns(member, text))
    if commit.release:
        params["holder"] = params["expires"] = None
    if params:
        if version is not None:
            params["version"] = version
        tx.run(U_MEMBER, {**params, "b_run": st.id, "b_id": lease.member})
    if rows.reports:
        tx.many(I_REPORTS, rows.reports)
    if rows.events:
        tx.many(I_EVENTS, rows.events)

    def cache() -> None:
        if version is None:
            return
        with lock:
            own = st.own(lease.member, version) if params else None
            if own is not None:
                if member is not None and text is not None:
                    st.replace_view(own, member, text)
                if commit.release:
                    own.holder = own.holder_text = own.expires = None
            elif not params:
                st.advance(version)

    return cache
