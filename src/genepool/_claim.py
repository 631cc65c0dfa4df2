"""A member claimed through ask/tell (:class:`genepool.AskTell`): the :class:`Claim` the
caller trains, and the :class:`Checkpoint` it starts from.

A claim is made once its checkpoint has been read (:meth:`AskTell.ask` falls back from one
that is torn or missing), so it says what the member really starts from. Its reports are
checked before they count: a report that raises has changed nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from genepool._errors import InvalidArgumentError, StaleLeaseError, invalid
from genepool._heartbeat import Heartbeat, Heartbeats
from genepool._redact import shown
from genepool._rng import member_stream
from genepool.checkpoints import CheckpointStore, LocalCheckpoints
from genepool.checkpoints._resident import ResidentCheckpoints
from genepool.member import MemberView
from genepool.round import RoundRecord, score_of
from genepool.store import Lease
from genepool.store._codec import unstorable

if TYPE_CHECKING:
    from genepool.asktell import AskTell

__all__ = ["Checkpoint", "Claim"]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """The checkpoint a claimed member starts from: its own, or a donor's after an exploit.

    Attributes:
        id: The checkpoint's id.
        member: Whose it is (the donor, after an exploit).
        step: The step its weights had reached.
        path: Its folder on this machine, where the checkpoints are a local folder (read
            it, never change it); ``None`` elsewhere.
    """

    id: str
    member: int
    step: int
    path: str | None
    _payload: Any = dataclasses.field(repr=False, compare=False)

    def load(self) -> Any:
        """The state handed to :meth:`AskTell.tell` when it was taken."""
        return self._payload["state"]


class Claim:
    """A member to train: its id, its hyperparameters and the checkpoint to start from.

    Use it as a context manager: while it is open its lease is kept alive from a thread
    (no other process takes the member); leaving it without :meth:`AskTell.tell` gives
    the member back untouched (it goes on from its checkpoint). Report each step with
    :meth:`report` until :attr:`ready`, then tell. A claim used without ``with`` must be
    told within the run's ``lease_seconds``.

    Attributes:
        member: The member's id.
        hparams: The hyperparameters to train with (after an exploit: the explored ones).
        step: The member's step: its checkpoint's, then one more for each report.
        generation: How many times it has exploited another.
        checkpoint: What to start from; ``None``: a fresh start. When the member's own
            checkpoint was torn or missing, the one it fell back to (a ``"fallback"``
            event says which).
        told: Whether it is done with: told, or found with its lease lost, or left
            without a tell (its member given back).
    """

    def __init__(
        self,
        owner: AskTell,
        lease: Lease,
        view: MemberView,
        payload: Any,
        *,
        worker: str,
        heartbeats: Heartbeats | None = None,
    ) -> None:
        """Made by :meth:`AskTell.ask`: ``payload`` is the checkpoint of ``view`` as read
        (``None``: it has none), ``worker`` the name its heartbeat goes by."""
        ctx = owner.ctx
        self._owner, self._lease, self._view, self._payload = owner, lease, view, payload
        self.member = view.id
        self.hparams: Mapping[str, Any] = dict(view.hparams)
        self.step = view.step
        self.generation = view.generation
        self.checkpoint: Checkpoint | None = None
        if view.checkpoint is not None:
            ref = view.checkpoint
            path = _local_path(ctx.checkpoints, ref.id)
            self.checkpoint = Checkpoint(ref.id, ref.member, ref.step, path, payload)
        self._own = view.checkpoint is not None and view.checkpoint.member == view.id
        self._rng: np.random.Generator | None = None
        now = ctx.clock.now()
        self._record = RoundRecord(
            view, policy=ctx.policy, metric=ctx.metric, metrics_every=ctx.metrics_every, began=now
        )
        self._beat = Heartbeat(ctx, name=worker, end_hung=False, shared=heartbeats)
        self._beat.progress(now)
        self._holding: contextlib.ExitStack | None = None
        self._ready = False
        self.told = False

    @property
    def ready(self) -> bool:
        """Whether the member is ready (or its budget used): tell its round now."""
        return self._ready

    def ends_next(self) -> bool:
        """Whether the next report ends the round, its score being a number: the member
        ready, or its budget used, one step on. For a driver that evaluates its members
        only at the step that ends their round (:func:`genepool.vectorised.run`). Known
        ahead only for a ready rule that counts steps: one that counts a reported metric
        gives ``True``; ``min_seconds`` is judged by the time now."""
        record, ctx = self._record, self._owner.ctx
        if self.told or self._ready:
            return False
        if record.counter_name != "steps":
            return True
        counter, elapsed = self.step + 1, ctx.clock.now() - record.began
        return ctx.policy.budget_reached(counter) or ctx.policy.ready.due(
            counter=counter, last=record.last_ready, elapsed=elapsed
        )

    def budget_used(self) -> bool:
        """Whether the member has used its budget (its round is its last)."""
        return self._owner.ctx.policy.budget_reached(self._record.counter)

    @property
    def rng(self) -> np.random.Generator:
        """The member's own random stream, as a trainable's ``member.rng``: seeded from
        the run seed, its id and generation, and saved in its checkpoints."""
        if self._rng is None:
            view = self._view
            rng = member_stream(self._owner.ctx.seed, view.id, view.generation, view.failures)
            start = self._payload.get("rng") if self._own and view.failures == 0 else None
            if start is not None:
                rng.bit_generator.state = start
            self._rng = rng
        return self._rng

    def report(self, metrics: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Record one step's metrics (a dict, or keyword arguments); the member is
        :attr:`ready` once they make it so (see the run's ``ready`` rule). A report that
        raises is not recorded.

        Raises:
            TrainableError: The run's metric (or the ready rule's counter) is missing or
                not a number.
            InvalidArgumentError: ``metrics`` is not a dict of metric names to numbers,
                strings, booleans, ``None`` or lists, tuples and dicts of them; or the
                member is ready already, or the claim was told.
        """
        if self.told or self._ready:
            when = "its round was told" if self.told else f"it was ready at step {self.step}"
            raise InvalidArgumentError(
                f"Claim.report was called for member {self.member} after {when}. Fix: "
                "report while not claim.ready, then tell the round (AskTell.tell) and ask "
                "again to train it further."
            )
        merged = self._checked(metrics, more)
        ctx = self._owner.ctx
        step = self.step = self.step + 1
        now = ctx.clock.now()
        self._beat.progress(now)
        record = self._record
        record.add(step, merged, now)
        if now - record.flushed_at >= ctx.flush_seconds:  # a long round: flush
            ctx.store.commit(self._lease, reports=record.take(now))
        if record.ends_round(step, merged, now):
            self._ready = True

    def _checked(
        self, metrics: Any, more: Mapping[str, Any], *, owner: str = "Claim.report"
    ) -> dict[str, Any]:
        """One step's metrics, ``metrics`` and ``more`` merged, once they are checked as
        :meth:`report` says (the run's metric and ready counter by :mod:`genepool.round`,
        the other values as the store keeps them); ``owner``: who the messages name."""
        if metrics is not None and not isinstance(metrics, Mapping):
            raise invalid(
                owner,
                "metrics",
                "a dict of metric names to values",
                shown(metrics),
                "Fix: claim.report({'score': 0.5}) or claim.report(score=0.5).",
            )
        merged = {**(metrics if metrics is not None else {}), **more}
        for name in merged:
            if not isinstance(name, str):
                fix = "Fix: name each metric with a string."
                raise invalid(owner, "metrics", "keyed by str", shown(name), fix)
        bad = unstorable(merged)
        if bad is not None:
            name, value = bad
            raise invalid(
                owner,
                "metrics",
                "numbers, strings, booleans, None, or lists, tuples and dicts of them",
                f"{name}={shown(value)}",
                f"Fix: report a plain value, e.g. {name}=float(value).",
            )
        ctx = self._owner.ctx
        fix = "include it in every report."
        score_of(ctx.metric, merged, fix=fix)
        counter = ctx.policy.ready.counter
        if counter != "steps":  # the ready rule counts a reported metric
            score_of(counter, merged, fix=fix + " The ready rule counts it.")
        return merged

    def __enter__(self) -> Claim:
        self._holding = contextlib.ExitStack()
        self._holding.enter_context(self._beat)
        self._holding.enter_context(self._beat.holding(self._lease))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holding is not None:
            self._holding.close()
            self._holding = None
        if not self.told:  # given back untouched: it goes on from its checkpoint
            self.told = True
            with contextlib.suppress(StaleLeaseError):
                self._owner.ctx.store.commit(self._lease, release=True)

    def _rng_state(self) -> Any:
        """The stream's state for the round's checkpoint (as ``Member._rng_state``)."""
        if self._rng is not None:
            return self._rng.bit_generator.state
        if self._own and self._view.failures == 0:
            return self._payload.get("rng")
        return None if self._view.failures == 0 else self.rng.bit_generator.state


def _local_path(checkpoints: CheckpointStore, checkpoint_id: str) -> str | None:
    """A checkpoint's folder, where the checkpoints are a local folder (none for a
    resident one: it is in memory)."""
    if isinstance(checkpoints, ResidentCheckpoints):
        if checkpoints.is_resident(checkpoint_id):
            return None
        checkpoints = checkpoints.durable
    if isinstance(checkpoints, LocalCheckpoints):
        return os.path.join(checkpoints.root, *checkpoint_id.split("/"))
    return None
