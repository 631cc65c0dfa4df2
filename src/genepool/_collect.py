"""Deleting checkpoints nothing refers to: the ones a worker's members replaced
(:class:`Collector`), and the orphans a dead worker left (:func:`collect_orphans`).

The store decides every delete (:meth:`genepool.store.Store.collect`): a member's current
checkpoint, one it keeps as a previous one, or a pinned one (an exploit's donor), is
never deleted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from genepool.member import ACTIVE, MemberView

if TYPE_CHECKING:
    from genepool.worker import RunContext

__all__ = ["ORPHAN_GRACE_SECONDS", "Collector", "collect_orphans"]

log = logging.getLogger("genepool.worker")

#: A worker hands the checkpoints its members replaced to :meth:`Store.collect` this many at
#: a time (one write for several rounds), and what is left when it ends.
COLLECT_BATCH = 8
#: ... but at once after writing a checkpoint this large (bytes), to keep disk use low.
COLLECT_AT_ONCE_BYTES = 1 << 20
#: While a member of the run is active, a checkpoint that nothing refers to is left alone
#: until it is this old (seconds): a worker may have written it and be about to record it.
ORPHAN_GRACE_SECONDS = 3600.0


class Collector:
    """The checkpoints a worker's members replaced, deleted a batch at a time once the
    store says nothing refers to them (the store remembers them as collected)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.replaced: list[str] = []
        #: Bytes of the last checkpoint the worker wrote.
        self.last_size = 0

    def replace(self, before: MemberView, after: MemberView, *, now: bool = True) -> None:
        """``after`` replaced ``before``: the checkpoints ``before`` held (its current and
        previous ones) that ``after`` no longer does are to go, once nothing refers to
        them; ``now=False``: the write that replaces them is not made yet, wait."""
        held = {ref.id for ref in after.previous}
        if after.checkpoint is not None:
            held.add(after.checkpoint.id)
        old = [before.checkpoint] if before.checkpoint is not None else []
        dropped = [ref.id for ref in (*old, *before.previous) if ref.id not in held]
        if not dropped:
            return
        self.replaced.extend(dropped)
        if now:
            self.maybe()

    def maybe(self) -> None:
        """:meth:`collect`, once a batch is due (or the last checkpoint was large)."""
        if len(self.replaced) >= COLLECT_BATCH or self.last_size > COLLECT_AT_ONCE_BYTES:
            self.collect()

    def collect(self) -> None:
        """Delete the replaced checkpoints that the store says nothing refers to."""
        if not self.replaced:
            return
        candidates = list(self.replaced)
        self.replaced.clear()
        for checkpoint_id in self.ctx.store.collect(self.ctx.name, candidates):
            self.ctx.checkpoints.discard(checkpoint_id)


def collect_orphans(ctx: RunContext, *, grace_seconds: float | None = None) -> list[str]:
    """Delete the run's checkpoints that nothing refers to, and return their ids.

    Those are checkpoints written by a worker that died before it recorded them, and
    replaced ones that a worker did not live to delete. The store decides, as for every
    delete (:meth:`Store.collect`): a member's current checkpoint, one it keeps as a
    previous one, or a pinned one, is never deleted. Nor is a checkpoint of another
    datastore (a run of the same name in the same folder, with another store): only
    those that belong to this run's datastore
    (:meth:`~genepool.checkpoints.CheckpointStore.owned_by`) are candidates.

    Only a worker holding a member's lease can record a checkpoint of it: the checkpoints
    are listed first, then the members held are read (:meth:`Store.held`), and a
    checkpoint of a member nobody holds is garbage however young (its writer is gone, or
    recorded it). One of a held member is left alone until it is ``grace_seconds`` old.
    The driver calls this when a run starts (resumes) and ends, and the process executor
    when one of its workers dies.

    Args:
        ctx: The run.
        grace_seconds: Leave alone the checkpoints of held members younger than this.
            Default: :data:`ORPHAN_GRACE_SECONDS` while a member is active; none once no
            member is (nothing can record a checkpoint any more), when the run's
            temporary directories (a torn write, the spare directories of a worker that
            died) are removed too.
    """
    store, checkpoints, run = ctx.store, ctx.checkpoints, ctx.name
    try:
        on_disk = checkpoints.ids(run)  # first: what a worker records later is listed here
        old = set(checkpoints.ids(run, older_than=grace_seconds or ORPHAN_GRACE_SECONDS))
    except NotImplementedError:  # a store that cannot list what it holds
        return []
    population, held = store.population(run), store.held(run)  # then who can record one
    done = not any(m.status == ACTIVE for m in population)
    if grace_seconds is None:
        grace_seconds = 0.0 if done else ORPHAN_GRACE_SECONDS
    current = {m.checkpoint.id for m in population if m.checkpoint is not None}

    def garbage(checkpoint_id: str) -> bool:
        if checkpoint_id in current:
            return False
        if grace_seconds <= 0 or checkpoint_id in old:
            return True
        member = _member_of(checkpoint_id)
        return member is not None and member not in held

    identity = store.identity
    candidates = checkpoints.owned_by(identity, [c for c in on_disk if garbage(c)])
    collected = store.collect(run, candidates) if candidates else []
    for checkpoint_id in collected:
        checkpoints.delete(checkpoint_id)
    if collected:
        log.info("deleted %d checkpoint(s) of run %r that nothing referred to", len(collected), run)
    if done and grace_seconds <= 0:  # in this datastore's folder only
        checkpoints.sweep(run=run, grace_seconds=0.0, owner=identity)
    return collected


def _member_of(checkpoint_id: str) -> int | None:
    """The member in a checkpoint id ``<run>/m<member>/<name>``; ``None`` if not one."""
    parts = checkpoint_id.split("/")
    if len(parts) == 3 and parts[1][:1] == "m" and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return None
