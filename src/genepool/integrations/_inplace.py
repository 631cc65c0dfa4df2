"""A framework's trainer as an ask/tell driver, with exploits in place: what the Lightning
and Hugging Face integrations share.

- :class:`Seat`: one member's trainer, its blocking ``fit``/``train`` running in a thread
  of its own; the driver and that thread hand control to each other, so exactly one runs
  at a time (a seeded run is reproduced).
- :func:`drive`: the driver's loop: ask for a member, give the claim to its seat (made the
  first time, or again after its trainer ended), until the run is over.
- :class:`InPlace`: the member's side of the round, called from the framework's callback:
  each evaluation is a step (:meth:`InPlace.evaluated`); a ready round is told with the
  trainer's state, then the trainer waits for the member's next claim and puts it in effect
  in place (:meth:`InPlace.take`): a checkpoint the trainer does not hold already loaded
  (a donor's after an exploit, its data stream reseeded from the member's own stream),
  the hyperparameters set and read back, the member's random states set back.

The framework's part (:class:`Framework`): what its state is, as saved and loaded, and the
:class:`~genepool.integrations.torch.TorchState` through which hyperparameters are set.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from genepool._claim import Claim
from genepool._errors import TrainableError
from genepool.asktell import AskTell
from genepool.integrations._torch_rng import (
    global_rng_state,
    reseed_global_rng,
    set_global_rng_state,
)
from genepool.integrations.torch import TorchState
from genepool.result import Result

__all__ = ["Framework", "InPlace", "Seat", "drive"]

#: How long (seconds) a wait for the other side of a handoff sleeps between checks, so
#: that a Ctrl-C reaches the main thread.
_WAIT = 0.2


class Unwind(BaseException):
    """Raised in a member's trainer to end its ``fit`` (the run is over, or aborts)."""


def drive(pbt: AskTell, make_seat: Callable[[Claim], Seat]) -> Result:
    """Train ``pbt``'s members, each in its seat (``make_seat(claim)`` for a member with
    none, or whose trainer ended), until the run is over; its result."""
    seats: dict[int, Seat] = {}
    try:
        while (claim := pbt.ask(timeout=float("inf"))) is not None:
            seat = seats.get(claim.member)
            if seat is None or seat.ended:
                seat = seats[claim.member] = make_seat(claim)
            with claim:
                seat.train(claim)
        return pbt.result()
    finally:
        for seat in seats.values():
            seat.close()


class Seat:
    """One member's trainer: :attr:`run` (its blocking ``fit``) in a thread of its own.

    Args:
        ended_early: The error's text when :attr:`run` returns with a claim untold (its
            member's budget not reached): what to change.

    Attributes:
        run: Trains until the framework's loop ends (set before the first :meth:`train`);
            the member's callback calls :meth:`pause` after each told round.
    """

    def __init__(self, *, ended_early: str) -> None:
        self.run: Callable[[], None] | None = None
        self.claim: Claim | None = None
        self.ended = False
        self.error: BaseException | None = None
        self._ended_early = ended_early
        self._to_trainer = threading.Semaphore(0)
        self._to_driver = threading.Semaphore(0)
        self._unwind = False
        self._thread = threading.Thread(target=self._main, name="genepool-trainer", daemon=True)

    # -- driver side -----------------------------------------------------------------
    def train(self, claim: Claim) -> None:
        """Train ``claim``'s round in this seat's trainer; raise what the trainer raised."""
        self.claim = claim
        if not self._thread.is_alive() and not self.ended:
            self._thread.start()
        else:
            self._to_trainer.release()
        _wait(self._to_driver)
        if self.error is not None:
            raise self.error
        if self.ended and not claim.told:
            raise TrainableError(
                f"member {claim.member}: the trainer ended at step {claim.step} of the "
                f"member, before its budget, with its round untold. Fix: {self._ended_early}"
            )

    def close(self) -> None:
        """End the trainer's loop if it waits for a claim."""
        if self._thread.is_alive():
            self._unwind = True
            self._to_trainer.release()
            self._thread.join()

    # -- trainer side ----------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self.run is not None:
                self.run()
        except Unwind:
            pass
        except BaseException as err:  # handed to the driver, which raises it
            self.error = err
        finally:
            self.ended = True
            self._to_driver.release()

    def pause(self) -> Claim:
        """From the trainer's thread, after a tell: hand control back and wait for the
        member's next claim, returned (:class:`Unwind` if the run is over)."""
        self._to_driver.release()
        _wait(self._to_trainer)
        if self._unwind or self.claim is None:
            raise Unwind()
        return self.claim


def _wait(semaphore: threading.Semaphore) -> None:
    while not semaphore.acquire(timeout=_WAIT):  # short waits: a Ctrl-C gets through
        pass


class Framework(ABC):
    """A member's trainer as a framework holds it, at one of its evaluation boundaries."""

    @abstractmethod
    def torch_state(self) -> TorchState:
        """Its models, optimizers and schedulers, with where each hyperparameter lives."""

    @abstractmethod
    def saved(self) -> dict[str, Any]:
        """Its state now (copies), in genepool's checkpoint format; ``"rng"`` is added."""

    @abstractmethod
    def load(self, payload: Mapping[str, Any], *, starting: bool) -> None:
        """Load a saved state (its own, or a donor's) in place: ``starting`` before the
        first step of its loop, else at the evaluation boundary where it was saved."""


class InPlace:
    """The member's side of the round in a framework's callback (one per seat)."""

    def __init__(self, pbt: AskTell, seat: Seat) -> None:
        self.pbt, self.seat = pbt, seat
        self._at: tuple[int, int] | None = None  # (step, generation) the trainer holds
        self._rng: dict[str, Any] | None = None  # the random states it paused with

    @property
    def claim(self) -> Claim:
        claim = self.seat.claim
        if claim is None or claim.told:  # pragma: no cover - drive() hands one
            raise TrainableError("the trainer's callback holds no open claim")
        return claim

    def evaluated(self, metrics: Mapping[str, Any], framework: Framework) -> None:
        """One evaluation, a step of the member: reported; if it makes the member ready,
        the round is told with ``framework``'s state, and the member's next claim is put
        in effect once it comes."""
        claim = self.claim
        claim.report(dict(metrics))
        if not claim.ready:
            return

        def state() -> dict[str, Any]:
            return {**framework.saved(), "rng": global_rng_state()}

        self.pbt.tell(claim, state=state)  # its decision comes as the next claim
        self._at = (claim.step, claim.generation)
        self._rng = global_rng_state()  # other members' trainers draw meanwhile
        self.seat.pause()
        self.take(framework, starting=False)

    def take(self, framework: Framework, *, starting: bool) -> None:
        """Put the claim in effect: its checkpoint loaded unless the trainer holds it
        already, its hyperparameters set and read back, the member's random states."""
        claim = self.claim
        ckpt = claim.checkpoint
        own = ckpt is not None and ckpt.member == claim.member
        held = own and self._at == (claim.step, claim.generation)
        if ckpt is not None and not held:
            payload = ckpt.load()
            framework.load(payload, starting=starting)
            if own:  # its own: its data stream goes on
                set_global_rng_state(payload["rng"])
            else:  # a donor's: a stream of its own, reseeded
                reseed_global_rng(claim.rng)
        elif ckpt is None and starting:
            reseed_global_rng(claim.rng)
        elif self._rng is not None:  # its own state, held here: its stream goes on
            set_global_rng_state(self._rng)
        framework.torch_state().apply(claim.hparams)
        self._at = (claim.step, claim.generation)
