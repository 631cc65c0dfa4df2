"""Loading a member into a session, as the store says it stands.

A member is trained from its checkpoint (its own, or a donor's after an exploit), in a
session kept resident between its rounds where possible (:mod:`genepool._residents`). When
its checkpoint is torn or missing it falls back, recorded as an event: to its previous
checkpoint, else the best member's, else a fresh start. Whatever it loads, the
hyperparameters in effect are then checked against the ones decided.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from genepool._collect import Collector
from genepool._errors import (
    CheckpointError,
    HyperparameterNotAppliedError,
    StorageError,
    TrainableError,
)
from genepool._residents import Resident, Residents
from genepool._sessions import _Session
from genepool._sessions import make_session as _make_session
from genepool.member import CheckpointRef, Event, MemberView, Population
from genepool.round import check_applied
from genepool.store import Lease
from genepool.trainable import Member

if TYPE_CHECKING:
    from genepool.worker import RunContext

__all__ = ["FALLBACK_EVENT", "Loader", "MemberCodeFailed", "Unreadable", "own_code"]

log = logging.getLogger("genepool.worker")

#: The kind of the event recorded when a member's checkpoint cannot be read and it goes on
#: from another (its previous one, a donor's) or from scratch.
FALLBACK_EVENT = "fallback"
#: What a :class:`CheckpointError` says of a checkpoint that is torn or gone (a member falls
#: back from it); any other (one that needs ``trust``, a newer format) stops the run.
_UNREADABLE = ("torn", "No checkpoint", "not a genepool checkpoint")


class Unreadable(CheckpointError):
    """A member's checkpoint is torn or missing (raised by :meth:`Loader.session_for`)."""

    def __init__(self, checkpoint_id: str, error: CheckpointError) -> None:
        super().__init__(str(error))
        self.checkpoint_id = checkpoint_id
        self.error = error


class MemberCodeFailed(Exception):
    """The member's own code outside ``step`` (``setup``, ``load``, ``save``,
    ``apply_hparams``) raised: a failure of that member, as one in ``step`` is."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


#: What a member's code may raise that is not its failure: genepool's own errors.
_NOT_THE_MEMBERS = (TrainableError, CheckpointError, HyperparameterNotAppliedError, StorageError)


def own_code(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, a call into the member's code: what it raises (but genepool's own
    errors) becomes a :class:`MemberCodeFailed`."""
    try:
        return call(*args)
    except _NOT_THE_MEMBERS:
        raise
    except Exception as err:
        raise MemberCodeFailed(err) from err


def _unreadable(err: CheckpointError) -> bool:
    """Whether ``err`` says a checkpoint is torn or missing, not refused (``trust``)."""
    text = str(err)
    return "trust" not in text and any(s in text for s in _UNREADABLE)


class Loader:
    """Brings members into sessions for a worker: its resident ones, or new ones started
    from their checkpoints.

    Args:
        ctx: The run.
        residents: The worker's resident sessions.
        collector: Where the checkpoints found unreadable go, to be deleted.
    """

    def __init__(self, ctx: RunContext, residents: Residents, collector: Collector) -> None:
        self.ctx = ctx
        self.residents = residents
        self.collector = collector

    def read(self, checkpoint_id: str) -> Any:
        """A checkpoint's payload; :class:`Unreadable` if it is torn or missing."""
        try:
            return self.ctx.read_checkpoint(checkpoint_id)
        except CheckpointError as err:
            if _unreadable(err):
                raise Unreadable(checkpoint_id, err) from err
            raise

    def load(
        self, lease: Lease, view: MemberView
    ) -> tuple[MemberView, Resident, Population | None]:
        """The member's session (:meth:`session_for`); when its checkpoint is torn or
        missing, it falls back first (:meth:`fall_back`): the view it goes on as, the
        session, and the population the fallback's write returned (``None``: none)."""
        pop = None
        try:
            return view, self.session_for(view), pop
        except Unreadable as err:
            view, pop = self.fall_back(lease, view, err)
        return view, self.session_for(view), pop

    def _as_taken(self, member: int, ref: CheckpointRef) -> dict[str, Any]:
        """The member's hyperparameters, generation, parent and count of readies when it
        held ``ref``: its own checkpoint's manifest says; for a donor's, the exploit that
        copied it (none found, or fields older genepools did not write: the member's
        own are kept)."""
        if ref.member == member:
            try:
                fields = self.ctx.checkpoints.manifest(ref.id).get("fields", {})
            except CheckpointError:
                return {}
            parent = fields.get("parent")
            parent_ok = "parent" in fields and (parent is None or type(parent) is int)
        else:
            copies = [
                e
                for e in self.ctx.store.events(self.ctx.name)
                if e.kind == "exploit" and e.member == member and e.data.get("checkpoint") == ref.id
            ]
            if not copies:
                return {}
            data = copies[-1].data
            fields = {**data, "hparams": data.get("new_hparams"), "parent": data.get("donor")}
            parent_ok = type(fields["parent"]) is int
        taken: dict[str, Any] = {}
        if isinstance(fields.get("hparams"), dict):
            taken["hparams"] = dict(fields["hparams"])
        for name in ("generation", "ready_count"):
            if type(fields.get(name)) is int:
                taken[name] = fields[name]
        if parent_ok:
            taken["parent"] = fields["parent"]
        return taken

    def fall_back(
        self, lease: Lease, view: MemberView, failed: Unreadable
    ) -> tuple[MemberView, Population]:
        """``view``'s checkpoint cannot be read: go on from its previous checkpoint (the
        newest that reads; the member rolled back to its step, hyperparameters and
        generation then), else a donor's (the best-scoring other member's current one,
        pinned as an exploit's), else from scratch. Written at once, with a ``"fallback"``
        event (data: the ``checkpoint`` that failed, the ``reason``, what it fell back
        ``to``: ``"previous"``, ``"donor"`` or ``"fresh"``, and the ``fallback``
        checkpoint, ``None`` for a fresh start); the unreadable checkpoints are handed to
        :meth:`Store.collect`."""
        ctx = self.ctx
        self.residents.drop(view.id)
        log.warning(
            "member %d: checkpoint %s cannot be read (%s); falling back",
            view.id,
            failed.checkpoint_id,
            failed.error,
        )
        bad = [failed.checkpoint_id]
        new: MemberView | None = None
        to, pin = "fresh", None
        for i, ref in enumerate(view.previous):
            if ref.id in bad:
                continue
            try:
                self.read(ref.id)
            except Unreadable:
                bad.append(ref.id)
                continue
            rest = tuple(p for p in view.previous[i + 1 :] if p.id not in bad)
            new = dataclasses.replace(
                view,
                checkpoint=ref,
                step=ref.step,
                score=ref.score,
                ready_counter=ref.counter,
                previous=rest,
                **self._as_taken(view.id, ref),
            )
            to = "previous"
            break
        if new is None:
            pop = ctx.store.population(ctx.name)
            others = pop.donors(exclude=view.id)
            donor = max(others, key=lambda m: (pop.fitness(m), -m.id)) if others else None
            donor_ref = donor.checkpoint if donor is not None else None
            if donor is not None and donor_ref is not None and donor_ref.id not in bad:
                try:
                    self.read(donor_ref.id)
                except Unreadable:
                    bad.append(donor_ref.id)
                else:
                    new = dataclasses.replace(
                        view,
                        checkpoint=donor_ref,
                        step=donor_ref.step,
                        score=donor_ref.score,
                        ready_counter=donor_ref.counter,
                        recent=(),
                        parent=donor.id,
                        previous=(),
                    )
                    to, pin = "donor", donor_ref.id
        if new is None:
            new = dataclasses.replace(
                view, checkpoint=None, step=0, score=None, ready_counter=0.0, recent=(), previous=()
            )
        data: dict[str, Any] = {
            "checkpoint": failed.checkpoint_id,
            "reason": str(failed.error),
            "to": to,
            "fallback": new.checkpoint.id if new.checkpoint is not None else None,
            "unreadable": bad,
        }
        if to == "previous":  # rolled back: the analysis drops the changes made since
            data |= {"generation": new.generation, "hparams": dict(new.hparams)}
        event = Event(FALLBACK_EVENT, view.id, new.step, data, ctx.clock.now())
        try:
            pop = ctx.store.commit(lease, member=new, events=[event], pin=pin)
        except StorageError:
            if pin is None:
                raise
            # the donor's checkpoint was collected meanwhile: start afresh instead
            new = dataclasses.replace(
                view, checkpoint=None, step=0, score=None, ready_counter=0.0, recent=(), previous=()
            )
            data = {**event.data, "to": "fresh", "fallback": None}
            event = dataclasses.replace(event, step=0, data=data)
            pop = ctx.store.commit(lease, member=new, events=[event])
        log.warning("member %d fell back to %s (%s)", view.id, to, event.data["fallback"])
        self.collector.replaced.extend(bad)
        return new, pop

    def session_for(self, view: MemberView) -> Resident:
        """The member's session, in the state the store says it is in; raises
        :class:`Unreadable` if its checkpoint is torn or missing."""
        res = self.residents.get(view.id)
        serves = res.serves(view) if res is not None else None
        if res is not None and serves == "as is":
            return res
        ctx = self.ctx
        ckpt = view.checkpoint.id if view.checkpoint is not None else None
        if res is not None and serves == "switch" and view.checkpoint is not None:
            # it exploited since this worker trained it, in a write that left the loading
            # of the donor's weights to its next round: switch the session to them
            payload = self.read(view.checkpoint.id)
            res.session.reseed(ctx.seed, view.generation, view.failures)
            res.session.place(step=view.step, generation=view.generation)
            own_code(res.session.switch, view.hparams, payload["state"])
            res.checkpoint, res.generation, res.hparams = ckpt, view.generation, view.hparams
            self.verify(res.session, view.hparams, view.id)
            return res
        if res is not None:
            self.residents.drop(view.id)
        self.residents.make_room()
        state = start = None
        if view.checkpoint is not None:
            payload = self.read(view.checkpoint.id)
            state = payload["state"]
            if view.checkpoint.member == view.id and view.failures == 0:  # its own
                start = payload.get("rng")
        handle = Member._keyed(
            id=view.id,
            hparams=view.hparams,
            seed=ctx.seed,
            generation=view.generation,
            attempt=view.failures,
            start=start,
        )
        session = _make_session(ctx.trainable, handle)
        session.place(step=view.step, generation=view.generation)
        own_code(session.start, view.hparams, state)
        self.verify(session, view.hparams, view.id)
        res = Resident(session, ckpt, view.generation, view.hparams)
        self.residents.put(view.id, res)
        return res

    def verify(self, session: _Session, decided: Mapping[str, Any], member: int) -> None:
        """The hyperparameters in effect in ``session`` are the ``decided`` ones.

        Raises:
            HyperparameterNotAppliedError: They differ.
        """
        check_applied(
            session.hparams_in_effect(),
            decided,
            who=f"Member {member}",
            fix="set them in apply_hparams(), after load() restored the donor's state (an "
            "optimizer's state carries its old values).",
        )
