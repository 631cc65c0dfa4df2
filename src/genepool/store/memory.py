"""An in-memory store: the reference backend, for tests and serial runs in one process."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from genepool._errors import StorageError
from genepool.clock import Clock, SystemClock
from genepool.member import Event, MemberView, Mode, Population, Report
from genepool.store._base import History, HistoryAfter, Store, revive_ids, revived
from genepool.store._claims import counts_a_crash, pick_claim, with_crash
from genepool.store._commits import check_commit, releases_pin
from genepool.store._leases import Lease, WorkerInfo, check_lease, holds

__all__ = ["MemoryStore"]


@dataclasses.dataclass
class _Run:
    config: Mapping[str, Any]
    mode: Mode
    members: list[MemberView]
    snapshot: Population
    tokens: list[int]
    leases: list[Lease | None]
    reports: list[Report] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    #: checkpoint id -> the members that pin it; member -> the checkpoint it pins
    pins: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    pinned: dict[int, str] = dataclasses.field(default_factory=dict)
    #: checkpoint id -> how many times members' views name it (current or previous)
    named: Counter[str] = dataclasses.field(default_factory=Counter)
    collected: set[str] = dataclasses.field(default_factory=set)

    def renamed(self, old: MemberView, new: MemberView) -> None:
        """``new`` replaces ``old``: count the checkpoints each names (:attr:`named`)."""
        self.named.update(_named(new))
        for ref in _named(old):
            self.named[ref] -= 1
            if not self.named[ref]:
                del self.named[ref]

    def unpin(self, member: int) -> None:
        """The member pins nothing from now on."""
        held = self.pinned.pop(member, None)
        if held is not None:
            holders = self.pins[held]
            holders.discard(member)
            if not holders:
                del self.pins[held]


def _holds(lease: Lease | None, now: float) -> bool:
    """Whether ``lease`` (``None``: none) holds its member at ``now``."""
    return lease is not None and holds(holder=lease.worker, expires=lease.expires, now=now)


def _token(lease: Lease | None) -> int | None:
    """The token of the member's current lease; ``None`` when nobody holds it."""
    return None if lease is None else lease.token


def _named(view: MemberView) -> list[str]:
    """The checkpoints a view names: its current one and its previous ones."""
    current = [view.checkpoint.id] if view.checkpoint is not None else []
    return current + [ref.id for ref in view.previous]


class MemoryStore(Store):
    """Keeps everything in this process's memory; thread-safe; gone when the process ends.

    Each one is a new datastore, with an :attr:`identity` of its own: a checkpoint folder
    that a run of one wrote is refused to a run of another (a rerun of a script with an
    in-memory store included; see :func:`genepool.run`).

    Args:
        clock: Times leases (a :class:`~genepool.clock.ManualClock` in tests).
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._identity = uuid.uuid4().hex

    @property
    def identity(self) -> str:
        return self._identity

    def __repr__(self) -> str:
        return f"MemoryStore(identity={self._identity!r})"

    def _run(self, run: str) -> _Run:
        try:
            return self._runs[run]
        except KeyError:
            raise KeyError(f"no run named {run!r} in this store") from None

    def create_run(
        self, run: str, *, config: Mapping[str, Any], members: Sequence[MemberView]
    ) -> bool:
        with self._lock:
            if run in self._runs:
                return False
            rows = sorted(members, key=lambda m: m.id)
            if [m.id for m in rows] != list(range(len(rows))):
                raise StorageError("member ids must be 0 .. population - 1")
            mode: Mode = config.get("mode", "max")
            self._runs[run] = _Run(
                config=dict(config),
                mode=mode,
                members=list(rows),
                snapshot=Population(tuple(rows), mode),
                tokens=[0] * len(rows),
                leases=[None] * len(rows),
                named=Counter(ref for m in rows for ref in _named(m)),
            )
            return True

    def run_config(self, run: str) -> Mapping[str, Any]:
        with self._lock:
            return dict(self._run(run).config)

    def population(self, run: str) -> Population:
        with self._lock:
            return self._run(run).snapshot

    def held(self, run: str) -> frozenset[int]:
        with self._lock:
            now = self._clock.now()
            return frozenset(
                m for m, lease in enumerate(self._run(run).leases) if _holds(lease, now)
            )

    def claim(
        self, run: str, worker: WorkerInfo, *, lease_seconds: float, max_ahead: int | None = None
    ) -> Lease | None:
        with self._lock:
            r = self._run(run)
            now = self._clock.now()
            leases = r.leases
            best = pick_claim(r.snapshot, lambda member: _holds(leases[member], now), max_ahead)
            if best is None:
                return None
            left = leases[best.id]  # never released: its holder died or hung
            if counts_a_crash(None if left is None else left.worker):
                best = with_crash(best)
                self._write(r, best)
            r.tokens[best.id] += 1
            lease = Lease(run, best.id, r.tokens[best.id], worker, now + lease_seconds)
            r.leases[best.id] = lease
            return lease

    @staticmethod
    def _write(r: _Run, member: MemberView) -> None:
        r.renamed(r.members[member.id], member)
        r.members[member.id] = member
        r.snapshot = r.snapshot.with_members([member])

    def renew(self, lease: Lease, *, lease_seconds: float) -> Lease:
        with self._lock:
            r = self._run(lease.run)
            check_lease(lease, current=_token(r.leases[lease.member]))
            new = dataclasses.replace(lease, expires=self._clock.now() + lease_seconds)
            r.leases[lease.member] = new
            return new

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
        with self._lock:
            r = self._run(lease.run)
            old = r.members[lease.member]
            check_commit(
                lease,
                current=_token(r.leases[lease.member]),
                status=old.status,
                member=member,
                pin=pin,
                collected=r.collected.__contains__,
            )
            # all checks passed: apply
            checkpoint = None if old.checkpoint is None else old.checkpoint.id
            if releases_pin(member=member, checkpoint=checkpoint, pin=pin):
                r.unpin(lease.member)
            if pin is not None:
                r.pins.setdefault(pin, set()).add(lease.member)
                r.pinned[lease.member] = pin
            if member is not None:
                self._write(r, member)
            r.reports.extend(reports)
            r.events.extend(events)
            if release:
                r.leases[lease.member] = None
            return r.snapshot

    def collect(self, run: str, candidates: Sequence[str]) -> list[str]:
        with self._lock:
            r = self._run(run)
            out = [c for c in candidates if c not in r.named and c not in r.pins]
            r.collected.update(out)
            return out

    def revive(self, run: str, members: Sequence[int] | None = None) -> list[int]:
        with self._lock:
            r = self._run(run)
            ids = revive_ids(r.snapshot, members)
            now = self._clock.now()
            for i in ids:
                view, event = revived(r.members[i], now)
                self._write(r, view)
                r.leases[i] = None
                r.events.append(event)
            return ids

    def runs(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def history(self, run: str) -> History:
        with self._lock:
            r = self._run(run)
            return History(tuple(r.reports), tuple(r.events))

    history_in_order = True  # one write at a time: a row's position is its index

    def history_after(
        self, run: str, *, reports_after: int = -1, events_after: int = -1
    ) -> HistoryAfter:
        with self._lock:
            r = self._run(run)
            return HistoryAfter(
                r.snapshot,
                tuple(r.reports[reports_after + 1 :]),
                tuple(r.events[events_after + 1 :]),
                max(reports_after, len(r.reports) - 1),
                max(events_after, len(r.events) - 1),
            )

    def events(self, run: str) -> tuple[Event, ...]:
        with self._lock:
            return tuple(self._run(run).events)
