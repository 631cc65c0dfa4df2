"""The members' sessions a worker keeps resident between their rounds: a bounded cache.

A session holds a member's live model (and a function trainable's thread). Keeping it
between rounds saves reloading the member's checkpoint; the cache is bounded (``limit``,
the least recently used closed first), and every entry is checked against the store at
each claim (:meth:`Resident.serves`): the store is the truth, the cache only a cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genepool._sessions import _Session
from genepool.member import ACTIVE, MemberView, Population

__all__ = ["Resident", "Residents"]

log = logging.getLogger("genepool.worker")

#: A worker keeps at most this many members' sessions resident by default (see
#: :func:`genepool.run`'s ``max_resident``).
MAX_RESIDENT = 32


@dataclass
class Resident:
    """A member's live session, and what it was started from: the checkpoint, the
    generation and the hyperparameters it holds."""

    session: _Session
    checkpoint: str | None
    generation: int
    hparams: Mapping[str, Any]

    def serves(self, view: MemberView) -> str | None:
        """How this session can train ``view``: ``"as is"``; ``"switch"`` to the donor's
        weights of an exploit written since this worker trained it (a write that left the
        loading to the member's next round); ``None``: not at all, the member moved on
        without it (another worker trained it, or a failed round set it back), and it
        starts again from its checkpoint."""
        ckpt = view.checkpoint.id if view.checkpoint is not None else None
        if (
            self.checkpoint == ckpt
            and self.generation == view.generation
            and self.hparams == view.hparams
            and self.session.member.step == view.step
        ):
            return "as is"
        if (
            view.checkpoint is not None
            and view.checkpoint.member != view.id
            and not view.failed
            and self.generation < view.generation
        ):
            return "switch"
        return None


def _close(member: int, session: _Session) -> None:
    """End a session (its thread, and what it holds); a broken trainable that fails to
    close is dropped anyway."""
    try:
        session.close()
    except Exception:
        log.debug("closing member %d's session raised", member, exc_info=True)


class Residents:
    """The members' sessions a worker keeps between their rounds: a cache of at most
    ``limit``, the least recently used closed first. A member closed, or dropped when
    another worker trained it meanwhile, starts again from its checkpoint when this worker
    next trains it, as it would after a resume.

    Args:
        limit: How many sessions at most (``RunContext.max_resident``).
        hint: Whether a trainable may lower ``limit`` (see :attr:`Member.resident_limit`).
    """

    def __init__(self, limit: int, *, hint: bool = True) -> None:
        self.limit = limit
        self._hint = hint
        self._sessions: OrderedDict[int, Resident] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, member: int) -> bool:
        return member in self._sessions

    def members(self) -> list[int]:
        """The resident members, least recently used first."""
        return list(self._sessions)

    def get(self, member: int) -> Resident | None:
        """The member's session, now the most recently used; ``None`` if not resident."""
        res = self._sessions.get(member)
        if res is not None:
            self._sessions.move_to_end(member)
        return res

    def make_room(self) -> None:
        """Close the least recently used sessions until one more fits: before a session
        starts, so that no more than ``limit`` models are ever held at once."""
        if self._hint:
            for res in self._sessions.values():
                asked = res.session.asks_resident
                if asked is not None and asked < self.limit:
                    self.limit = max(1, asked)
        while len(self._sessions) >= self.limit:
            member, res = self._sessions.popitem(last=False)
            _close(member, res.session)

    def put(self, member: int, res: Resident) -> None:
        """Keep ``res`` as the member's session (call :meth:`make_room` before starting it)."""
        self._sessions[member] = res
        self._sessions.move_to_end(member)

    def pop(self, member: int) -> Resident | None:
        """Forget the member's session, left open for the caller to end."""
        return self._sessions.pop(member, None)

    def drop(self, member: int) -> None:
        """Close the member's session, if resident."""
        res = self._sessions.pop(member, None)
        if res is not None:
            _close(member, res.session)

    def drop_stale(self, population: Population) -> None:
        """Close the sessions that can no longer train their member as the store has it:
        another worker trained it (its checkpoint moved on) or ended it."""
        stale = []
        for member, res in self._sessions.items():
            view = population[member]
            if view.status != ACTIVE or res.serves(view) is None:
                stale.append(member)
        for member in stale:
            self.drop(member)

    def forget_all(self) -> None:
        """Let go of every session without closing it (the run aborts: a function
        trainable's thread may hang, and nobody waits for it)."""
        self._sessions.clear()

    def close_all(self) -> None:
        """Close every session."""
        while self._sessions:
            member, res = self._sessions.popitem(last=False)
            _close(member, res.session)
