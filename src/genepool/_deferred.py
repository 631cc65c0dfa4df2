"""The deferred write: a round's last write, joined to the worker's next claim.

A member that goes on after its round (or exploits, in a store that can) needs its round
recorded and its lease released; the worker's next step is to claim a member. Where the
store commits and claims in one write (``fuses_commit_and_claim``: SQLite), the round's
last write waits here and goes with that claim: one write a round instead of two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from genepool.member import Event, MemberView, Report
from genepool.store import Lease, Store

__all__ = ["DeferredWrite", "LastWrite"]


@dataclass
class LastWrite:
    """A round's last write, left for the worker's next claim to make with it."""

    lease: Lease
    member: MemberView | None
    reports: Sequence[Report]
    events: Sequence[Event]
    #: an exploit's pin on the donor's checkpoint, and what to do instead if the store
    #: refuses it (the checkpoint was collected meanwhile)
    pin: str | None = None
    abandon: Callable[[], None] | None = None


class DeferredWrite:
    """Holds at most one :class:`LastWrite` until the next claim (or the worker's end).

    Args:
        store: The run's store; a write is deferred only where it fuses a commit and a
            claim.
    """

    def __init__(self, store: Store) -> None:
        self.enabled = bool(getattr(store, "fuses_commit_and_claim", False))
        self.pending: LastWrite | None = None

    def leave(
        self,
        lease: Lease,
        member: MemberView | None = None,
        reports: Sequence[Report] = (),
        events: Sequence[Event] = (),
        *,
        pin: str | None = None,
        abandon: Callable[[], None] | None = None,
    ) -> bool:
        """Leave the write that ends ``lease`` for the next claim; ``False`` when the store
        cannot join them, and the caller writes now."""
        if not self.enabled:
            return False
        self.pending = LastWrite(lease, member, reports, events, pin=pin, abandon=abandon)
        return True

    def take(self) -> LastWrite | None:
        """The write left, now the caller's to make; ``None`` if none."""
        last, self.pending = self.pending, None
        return last
