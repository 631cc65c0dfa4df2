"""The user's side: a :class:`Trainable` class, or a plain function that calls ``report``.

Both are driven by the same worker loop, through a small "session" adapter each
(:mod:`genepool._sessions`). The
library, not the user, decides when a checkpoint is taken: at every ready (before any
decision), and when the run stops.

Class API::

    class Toy(gp.Trainable):
        def setup(self, hparams):       # build from hyperparameters
            self.theta = np.array([0.9, 0.9]); self.h = np.array([hparams["h0"], hparams["h1"]])
        def step(self):                 # train a chunk, return metrics
            self.theta += 0.02 * self.h * -self.theta
            return {"Q": 1.2 - float(self.theta @ self.theta)}
        def save(self):                 # plain data
            return {"theta": self.theta.copy()}
        def load(self, state):
            self.theta = state["theta"].copy()
        def apply_hparams(self, hparams):   # new values mid-training (after a load)
            self.h = np.array([hparams["h0"], hparams["h1"]])

Function API::

    def train(member: gp.Member) -> None:
        state = member.restore()        # None at the start; the donor's state after an exploit
        theta = np.array([0.9, 0.9]) if state is None else state["theta"]
        h = np.array([member.hparams["h0"], member.hparams["h1"]])
        while member.running:
            theta += 0.02 * h * -theta
            member.report(Q=1.2 - float(theta @ theta), state=lambda: {"theta": theta.copy()})

A function is started again, from the checkpoint, whenever its hyperparameters change (an
exploit, or an explore without one): values it read at the start can never go stale.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from genepool._errors import TrainableError, invalid

if TYPE_CHECKING:
    from genepool._sessions import _FunctionSession

__all__ = ["Member", "Trainable", "TrainableLike"]


class Member:
    """A member as its training code sees it.

    Attributes:
        id: The member's number, 0 to population - 1.
        rng: The member's own random stream (a ``numpy.random.Generator``): seeded from the
            run seed, the member's id and its generation, reseeded on every exploit (so a
            copy does not train on the donor's batches), and saved in its checkpoints.
        resident_limit: How many members' sessions (their models) the worker training
            this member should keep resident at once; ``None``: as many as the run's
            default ``max_resident``. Set it (in ``setup`` or the function) to ``1`` when
            the model lives on a GPU, as :class:`~genepool.integrations.torch.TorchState`
            does for a CUDA device. The worker keeps the lowest one asked for; a
            ``max_resident`` given to :func:`genepool.run` wins.
    """

    def __init__(self, *, id: int, hparams: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.id = id
        self._rng: np.random.Generator | None = rng
        # a stream made on first use (see _keyed): the run seed, the key (generation,
        # attempt) and a state to start it at (from the member's own checkpoint)
        self._rng_seed = 0
        self._rng_key = (0, 0)
        self._rng_start: Any = None
        self._hparams: Mapping[str, Any] = MappingProxyType(dict(hparams))
        self._step = 0
        self._generation = 0
        self._session: _FunctionSession | None = None
        self._restore_state: Any = None
        self.resident_limit: int | None = None

    @classmethod
    def _keyed(
        cls,
        *,
        id: int,
        hparams: Mapping[str, Any],
        seed: int,
        generation: int,
        attempt: int,
        start: Any = None,
    ) -> Member:
        """A member whose stream (``genepool._rng.member_stream``, at state ``start`` if
        given) is made when the training code first uses it: many never do, and making
        one costs more than the rest of a ready round's bookkeeping."""
        member = cls(id=id, hparams=hparams, rng=None)  # type: ignore[arg-type]
        member._rng_seed, member._rng_key, member._rng_start = seed, (generation, attempt), start
        return member

    @property
    def rng(self) -> np.random.Generator:
        """The member's own random stream (see the class's attributes)."""
        rng = self._rng
        if rng is None:
            from genepool._rng import member_stream

            generation, attempt = self._rng_key
            rng = member_stream(self._rng_seed, self.id, generation, attempt)
            if self._rng_start is not None:
                rng.bit_generator.state = self._rng_start
            self._rng, self._rng_start = rng, None
        return rng

    @rng.setter
    def rng(self, rng: np.random.Generator) -> None:
        self._rng, self._rng_start = rng, None

    def _rng_state(self) -> Any:
        """The stream's state for a checkpoint: ``None`` for a stream never used, of
        attempt 0, which a resume from the checkpoint makes again as it was."""
        if self._rng is not None:
            return self._rng.bit_generator.state
        if self._rng_start is not None:
            return self._rng_start
        if self._rng_key[1] == 0:
            return None
        return self.rng.bit_generator.state

    def _reseed(self, seed: int, generation: int, attempt: int) -> None:
        """Start the stream of ``(generation, attempt)`` in place (the training code may
        hold the generator)."""
        if self._rng is None:
            self._rng_seed, self._rng_key, self._rng_start = seed, (generation, attempt), None
            return
        from genepool._rng import member_stream

        fresh = member_stream(seed, self.id, generation, attempt)
        self._rng.bit_generator.state = fresh.bit_generator.state

    @property
    def hparams(self) -> Mapping[str, Any]:
        """The hyperparameters in effect (read-only)."""
        return self._hparams

    @property
    def step(self) -> int:
        """The training the member's weights have had, in calls of ``step`` / ``report``."""
        return self._step

    @property
    def generation(self) -> int:
        """How many times this member has exploited another."""
        return self._generation

    @property
    def running(self) -> bool:
        """Function API: whether to keep training (``while member.running: ...``).

        False once the library stops the function (the run ends, or the member starts
        again from a checkpoint): ``member.report`` then raises to unwind it, and a loop
        that catches that still ends here.
        """
        session = self._session
        return session is not None and not session.stopping

    def restore(self) -> Any:
        """Function API: the state to start from, or ``None`` for a fresh start.

        After a resume this is the member's own last checkpoint; after an exploit, the
        donor's checkpoint (with this member's new hyperparameters in :attr:`hparams`).
        """
        return self._restore_state

    def report(
        self,
        metrics: Mapping[str, Any] | None = None,
        /,
        *,
        state: Callable[[], Any] | Any = None,
        **more: Any,
    ) -> None:
        """Function API: record one step's metrics.

        Args:
            metrics: The metrics as a dict (or give them as keyword arguments).
            state: A callable returning the state to checkpoint (called only when the
                library takes a checkpoint, with your loop paused inside this call), or
                the state itself.
            **more: Metrics as keyword arguments.
        """
        session = self._session
        if session is None:
            raise TrainableError(
                "Member.report() is for function trainables; a Trainable class returns its "
                "metrics from step()."
            )
        merged = dict(metrics) if metrics is not None else {}
        merged.update(more)
        session.on_report(merged, state)


class Trainable(ABC):
    """The class API: subclass it and implement ``setup``, ``step``, ``save`` and ``load``.

    The library sets :attr:`member` (id, hyperparameters, random stream) before calling
    :meth:`setup`. Override :meth:`apply_hparams` to take new hyperparameters in place; if
    you do not, the library builds the trainable again (``setup`` with the new values,
    then ``load`` of the state), which is always correct but slower. Override
    :meth:`hparams_in_effect` to have the library check, after every change, that the
    values your code really uses are the ones decided.
    """

    member: Member

    @abstractmethod
    def setup(self, hparams: Mapping[str, Any]) -> None:
        """Build the model (and optimizer, data, ...) from hyperparameters."""

    @abstractmethod
    def step(self) -> Mapping[str, Any]:
        """Train one chunk; return its metrics (they must include the run's metric)."""

    @abstractmethod
    def save(self) -> Any:
        """Return the whole training state as plain data."""

    @abstractmethod
    def load(self, state: Any) -> None:
        """Restore a state returned by :meth:`save` (maybe another member's)."""

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Take new hyperparameters mid-training (called after every ``load``)."""
        raise NotImplementedError

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        """The values the training code really uses now, to be checked; ``None``: no check."""
        return None


TrainableLike = type[Trainable] | Callable[[Member], Any]


def check_trainable(trainable: Any) -> None:
    """Raise unless ``trainable`` is a Trainable subclass or a function."""
    if inspect.isclass(trainable):
        if not issubclass(trainable, Trainable):
            raise invalid(
                "run",
                "trainable",
                "a subclass of gp.Trainable or a function (member) -> None",
                repr(trainable),
            )
        missing = sorted(getattr(trainable, "__abstractmethods__", ()))
        if missing:  # caught here, not when the first member starts
            raise invalid(
                "run",
                "trainable",
                "a gp.Trainable subclass that defines setup, step, save and load",
                f"{trainable.__name__}, which does not define {', '.join(missing)}",
                f"Fix: define {', '.join(missing)} in {trainable.__name__}.",
            )
    elif not callable(trainable):
        raise invalid("run", "trainable", "a gp.Trainable subclass or a function", repr(trainable))
