"""The snapshot cache: what one process knows of a run's members, kept up to date by
reading only the rows written since.

Each member row carries the run version of its last write, and each write that changes a
member bumps the run's version. A process keeps the run's members parsed in memory
(:class:`RunCache`) and reads only the rows newer than its cache: a serial run re-reads
nothing, and a run of many workers re-parses only what the others changed. The snapshot
(:class:`~genepool.member.Population`) is made once, then replaced member by member
(:meth:`~genepool.member.Population.with_members`), so that snapshots already handed out
never change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genepool._errors import StorageError
from genepool.member import MemberView, Mode, Population
from genepool.store._codec import Corrupt, holder_from_json, view_from_json
from genepool.store._leases import WorkerInfo
from genepool.store._sqlrows import MEMBERS_TABLE, member_row

__all__ = ["CachedRow", "RunCache", "load_rows"]


@dataclass(eq=False, slots=True)
class CachedRow:
    """One member as this process last read it (with its lease, on SQLite)."""

    version: int
    view: MemberView
    text: str
    token: int
    expires: float | None
    holder: WorkerInfo | None
    holder_text: str | None


@dataclass(eq=False, slots=True)
class RunCache:
    """What this process knows of a run: its config and its members as of ``version``."""

    id: int
    config: dict[str, Any]
    mode: Mode
    metric: str | None
    version: int = 0
    rows: list[CachedRow] = field(default_factory=list)
    snapshot: Population | None = None
    name: str = ""

    def apply(self, rows: Sequence[Sequence[Any]]) -> None:
        """Bring the cache up to date with rows read from the database (in any order)."""
        changed: list[MemberView] = []
        try:
            for i, version, text, token, expires, holder in rows:
                view = self._apply_row(i, version, text, token, expires, holder)
                if view is not None:
                    changed.append(view)
        finally:  # the snapshot takes every view cached, even when a later row is corrupt
            if changed and self.snapshot is not None:
                self.snapshot = self.snapshot.with_members(changed)

    def _apply_row(
        self, i: int, version: int, text: str, token: int, expires: Any, holder: str | None
    ) -> MemberView | None:
        """Cache one row read from the database; its new view, if the view changed."""
        cached = self.rows
        if i >= len(cached):
            raise StorageError(f"member {i} is not one of the run's {len(cached)} members")
        r = cached[i]
        if version <= r.version:
            return None
        new_view, new_holder = text != r.text, holder != r.holder_text
        try:  # both read before the row changes: a corrupt row leaves it as it was
            view = view_from_json(text) if new_view else r.view
            worker = r.holder
            if new_holder:
                worker = None if holder is None else holder_from_json(holder)
        except Corrupt as err:
            self.version = 0  # read every newer row again next time: this one too
            raise err.at(MEMBERS_TABLE, member_row(self.name, self.id, i)) from None
        r.version = version
        if new_view:
            r.view, r.text = view, text
        r.token, r.expires = token, expires
        if new_holder:
            r.holder, r.holder_text = worker, holder
        if version > self.version:
            self.version = version
        return view if new_view else None

    def own(self, member: int, version: int) -> CachedRow | None:
        """The cached row to update with this process's own write at ``version``: ``None``
        when the cache is behind (a refresh will read the write) or already has it."""
        r = self.rows[member]
        if self.version < version - 1 or r.version >= version:
            return None
        r.version = version
        if version > self.version:
            self.version = version
        return r

    def advance(self, version: int) -> None:
        """Note a write at ``version`` that changed no member row."""
        if version - 1 <= self.version < version:
            self.version = version

    def replace_view(self, row: CachedRow, view: MemberView, text: str) -> None:
        """Cache ``view`` (as ``text``) as the member of ``row``: the snapshot, if made,
        becomes a new one with it (:meth:`Population.with_members`)."""
        row.view, row.text = view, text
        if self.snapshot is not None:
            self.snapshot = self.snapshot.with_members([view])

    def population(self) -> Population:
        """The snapshot of the cached members (made once, then updated per change)."""
        pop = self.snapshot
        if pop is None:
            pop = self.snapshot = Population(tuple([r.view for r in self.rows]), self.mode)
        return pop


def load_rows(
    rows: Sequence[Sequence[Any]], *, run: str, run_id: int
) -> tuple[list[CachedRow], int]:
    """A run's member rows (``S_ROWS_ALL``) read into the cache, and the newest version
    among them; :class:`~genepool.store._codec.Corrupt` names a row genepool did not
    write."""
    out: list[CachedRow] = []
    top = 0
    for expected, (i, version, text, token, expires, holder) in enumerate(rows):
        if i != expected:
            raise StorageError(f"the run's member rows are not 0 .. n - 1 (found {i})")
        try:
            holder_info = None if holder is None else holder_from_json(holder)
            view = view_from_json(text)
        except Corrupt as err:
            raise err.at(MEMBERS_TABLE, member_row(run, run_id, i)) from None
        out.append(CachedRow(version, view, text, token, expires, holder_info, holder))
        top = max(top, version)
    return out, top
