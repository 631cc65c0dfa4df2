"""The user's side: a :class:`Trainable` class, or a plain function that calls ``report``.

Both are driven by the same worker loop, through a small "session" adapter each. The
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
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from genepool._errors import TrainableError, invalid

__all__ = ["Member", "Trainable", "TrainableLike"]

log = logging.getLogger("genepool")

#: How long a worker waits for a training function to end once told to stop (seconds).
#: One that does not (it ignores ``member.running``, and catches ``BaseException``
#: around ``member.report``) is left running, and a warning names its member.
JOIN_SECONDS = 60.0


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

Observe = Callable[[Mapping[str, Any]], bool]


class _Returned(Exception):
    """The user's function returned: the member can train no more."""


class _Unwind(BaseException):
    """Raised inside the user's function to end it (a restart or the end of the run)."""


def _overrides(obj: object, name: str) -> bool:
    return getattr(type(obj), name) is not getattr(Trainable, name)


class _Session(ABC):
    """Adapts one member's trainable to the worker loop.

    A driver holds a session and talks to it only through these methods: it starts the
    member (``start``), trains it a round (``run_round``, each report counted with
    ``advance``), checkpoints it (``save``, ``rng_state``), switches it to other weights or
    hyperparameters (``switch``, after ``place``), and ends it (``finish``, ``close``).
    """

    member: Member

    @abstractmethod
    def start(self, hparams: Mapping[str, Any], state: Any) -> None: ...

    def advance(self) -> int:
        """Count one step (a report) of the member; return its step now."""
        member = self.member
        member._step += 1
        return member._step

    def place(self, *, step: int, generation: int) -> None:
        """Set where the member's weights stand (as the store has them)."""
        self.member._step, self.member._generation = step, generation

    def reseed(self, seed: int, generation: int, attempt: int) -> None:
        """Start the member's stream of ``(generation, attempt)`` (an exploit)."""
        self.member._reseed(seed, generation, attempt)

    def rng_state(self) -> Any:
        """The member's stream's state, for a checkpoint."""
        return self.member._rng_state()

    @property
    def asks_resident(self) -> int | None:
        """How many sessions the member asks its worker to keep resident at most."""
        return self.member.resident_limit

    def finish(self) -> None:
        """End the member for good (its training is over): by default, :meth:`close`."""
        self.close()

    @abstractmethod
    def run_round(self, observe: Observe) -> None:
        """Train until ``observe`` returns True; user errors propagate."""

    @abstractmethod
    def save(self) -> Any: ...

    @abstractmethod
    def switch(self, hparams: Mapping[str, Any], state: Any) -> None:
        """Load ``state`` (``None``: keep the current one) and apply ``hparams`` after it."""

    @abstractmethod
    def hparams_in_effect(self) -> Mapping[str, Any] | None: ...

    @abstractmethod
    def close(self) -> None: ...


class _ClassSession(_Session):
    def __init__(self, cls: type[Trainable], member: Member) -> None:
        self.cls = cls
        self.member = member
        self.obj: Trainable | None = None

    def start(self, hparams: Mapping[str, Any], state: Any) -> None:
        self.member._hparams = MappingProxyType(dict(hparams))  # what setup is given
        obj = self.cls()
        obj.member = self.member
        obj.setup(hparams)
        if state is not None:
            obj.load(state)
            if _overrides(obj, "apply_hparams"):
                obj.apply_hparams(hparams)
        self.obj = obj

    def _obj(self) -> Trainable:
        if self.obj is None:
            raise TrainableError("the trainable was used before it was started")
        return self.obj

    def run_round(self, observe: Observe) -> None:
        obj = self._obj()
        step = obj.step
        while True:
            metrics = step()
            # ``type(...) is dict`` first: the ABC check costs tens of microseconds cold
            if type(metrics) is not dict and not isinstance(metrics, Mapping):
                raise TrainableError(
                    f"{self.cls.__name__}.step() must return a dict of metrics; it returned "
                    f"{type(metrics).__name__}."
                )
            if observe(metrics):
                return

    def save(self) -> Any:
        return self._obj().save()

    def switch(self, hparams: Mapping[str, Any], state: Any) -> None:
        obj = self._obj()
        if _overrides(obj, "apply_hparams"):
            if state is not None:
                obj.load(state)
            # self.member.hparams is what apply_hparams is given, from then on
            self.member._hparams = MappingProxyType(dict(hparams))
            obj.apply_hparams(hparams)
        else:
            self.start(hparams, obj.save() if state is None else state)

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        return self._obj().hparams_in_effect()

    def close(self) -> None:
        self.obj = None


class _FunctionSession(_Session):
    """Runs the user's function in a thread that only runs while the worker waits.

    The two threads hand control to each other with semaphores, so exactly one runs at a
    time and a serial run stays deterministic. The function keeps control for a whole
    ready round: per-step bookkeeping (``observe``) runs inside ``report``.
    """

    def __init__(self, fn: Callable[[Member], Any], member: Member) -> None:
        self.fn = fn
        self.member = member
        self.finishing = False
        self._unwind = False
        self._thread: threading.Thread | None = None
        self._live: threading.Thread | None = None  # the thread whose reports count
        self._state: Any = None
        self._has_state = False
        self._observe: Observe | None = None

    # -- worker side -------------------------------------------------------------------
    def start(self, hparams: Mapping[str, Any], state: Any) -> None:
        self.close()
        self.member._hparams = MappingProxyType(dict(hparams))
        self.member._restore_state = state
        self.member._session = self
        self.finishing = False
        self._unwind = False
        self._done = False
        self._error: BaseException | None = None
        self._has_state = False
        self._state = None
        self._to_fn = threading.Semaphore(0)
        self._to_worker = threading.Semaphore(0)
        self._thread = self._live = threading.Thread(
            target=self._main, name=f"genepool-member-{self.member.id}", daemon=True
        )
        self._thread.start()

    @property
    def stopping(self) -> bool:
        """Whether the function is being told to end (it sees ``member.running`` False)."""
        return self.finishing or self._unwind

    def _handoff(self) -> None:
        self._to_fn.release()
        self._to_worker.acquire()

    def run_round(self, observe: Observe) -> None:
        if self._thread is None or self._done:
            raise _Returned()
        self._observe = observe
        self._handoff()
        if self._done:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise _Returned()

    def save(self) -> Any:
        if not self._has_state:
            raise TrainableError(
                f"The function {getattr(self.fn, '__name__', self.fn)!r} gave no state to "
                "checkpoint. Fix: pass it to report: member.report(score=..., "
                "state=lambda: {...}); the library checkpoints at every ready."
            )
        return self._state() if callable(self._state) else self._state

    def switch(self, hparams: Mapping[str, Any], state: Any) -> None:
        self.start(hparams, self.save() if state is None else state)

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        return self.member.hparams

    def close(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._unwind = True
        self._end(thread)

    def finish(self) -> None:
        """Let the function see ``running == False`` and return by itself."""
        thread = self._thread
        if thread is None:
            return
        self.finishing = True
        self._thread = None
        self._end(thread)

    def _end(self, thread: threading.Thread) -> None:
        """Hand the function control to end, and wait for it to (``JOIN_SECONDS`` at
        most); one that does not is left behind, warned of, and can no longer report
        (its reports raise to unwind it)."""
        deadline = time.monotonic() + JOIN_SECONDS
        if not self._done:
            self._to_fn.release()
            self._to_worker.acquire(timeout=JOIN_SECONDS)
        thread.join(max(0.0, deadline - time.monotonic()))
        self._live = None
        self.member._session = None
        if thread.is_alive():
            log.warning(
                "member %d: the training function %r did not end within %.0f s of being "
                "told to stop, and is left running in its thread. Fix: loop on "
                "`while member.running:`, and let exceptions from member.report(...) "
                "through (do not catch BaseException around it).",
                self.member.id,
                getattr(self.fn, "__name__", self.fn),
                JOIN_SECONDS,
            )

    # -- function side -----------------------------------------------------------------
    def _main(self) -> None:
        to_worker = self._to_worker  # this start's: a later start makes new ones
        self._to_fn.acquire()
        try:
            if not self._unwind:
                self.fn(self.member)
        except _Unwind:
            pass
        except BaseException as err:  # handed to the worker thread, which re-raises it
            if self._live is threading.current_thread():
                self._error = err
        finally:
            if self._live is threading.current_thread():  # not a thread left behind
                self._done = True
                to_worker.release()

    def on_report(self, metrics: dict[str, Any], state: Any) -> None:
        if self.stopping or self._live is not threading.current_thread():
            raise _Unwind()
        if state is not None:
            self._state = state
            self._has_state = True
        observe = self._observe
        if observe is not None and observe(metrics):
            self._to_worker.release()
            self._to_fn.acquire()
            if self._unwind:
                raise _Unwind()


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


def make_session(trainable: TrainableLike, member: Member) -> _Session:
    """The session adapter for a trainable class or function."""
    check_trainable(trainable)
    if isinstance(trainable, type):
        return _ClassSession(trainable, member)
    return _FunctionSession(trainable, member)
