"""Commits: what a write with a lease may change; the rules every backend keeps (see
:mod:`genepool.store._base` for the contract).

Before anything is written, a commit is refused when its lease is not the member's
current one (:func:`~genepool.store._leases.check_lease`), when it writes another
member's row or a member that is no longer active, or when it pins a checkpoint that was
collected (:func:`check_commit`). A member holds one pin at most, on the checkpoint its
weights come from: a new pin, or a checkpoint of its own, ends its previous pin
(:func:`releases_pin`).
"""

from __future__ import annotations

from collections.abc import Callable

from genepool._errors import CollectedPinError, StorageError
from genepool.member import ACTIVE, MemberView
from genepool.store._leases import Lease, check_lease

__all__ = ["check_commit", "releases_pin"]


def check_commit(
    lease: Lease,
    *,
    current: int | None,
    status: str,
    member: MemberView | None,
    pin: str | None,
    collected: Callable[[str], bool],
) -> None:
    """Refuse what the contract forbids a commit, before anything is written.

    Args:
        lease: The lease the commit is made with.
        current: The token of the member's current lease (``None``: nobody holds it).
        status: The member's status as it stands.
        member: The member's new view, if the commit writes one.
        pin: The checkpoint the commit pins, if any.
        collected: Whether a checkpoint was collected (asked of ``pin`` only).

    Raises:
        StaleLeaseError: The lease is not the member's current one.
        StorageError: The commit writes another member, or a member not active.
        CollectedPinError: ``pin`` was collected.
    """
    check_lease(lease, current=current)
    if member is not None:
        if member.id != lease.member:
            raise StorageError(f"lease for member {lease.member} cannot write {member.id}")
        if status != ACTIVE:
            raise StorageError(f"member {lease.member} is {status} and cannot change")
    if pin is not None and collected(pin):
        raise CollectedPinError(f"checkpoint {pin} was collected and cannot be pinned")


def releases_pin(*, member: MemberView | None, checkpoint: str | None, pin: str | None) -> bool:
    """Whether a commit ends the member's pin: it pins another checkpoint, or writes a new
    checkpoint of the member's own (a member holds one pin at most, on the checkpoint its
    weights come from).

    Args:
        member: The member's new view, if the commit writes one.
        checkpoint: The id of the member's checkpoint before the commit.
        pin: The checkpoint the commit pins, if any.
    """
    if pin is not None:
        return True
    return (
        member is not None
        and member.checkpoint is not None
        and member.checkpoint.member == member.id
        and (checkpoint is None or member.checkpoint.id != checkpoint)
    )
