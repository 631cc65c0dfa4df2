"""The worker's side of a trainable: a session adapts one member's trainable to a driver.

A driver (the worker, replay) never calls the user's code directly: it holds a
:class:`_Session` and talks to it through its methods (start, run a round, save, switch,
finish). :func:`make_session` picks the adapter: a :class:`~genepool.trainable.Trainable`
class is called step by step (:class:`_ClassSession`); a training function runs in a thread
of its own and hands control back at each ``member.report`` (:class:`_FunctionSession`).
The user's side, what they write, is :mod:`genepool.trainable`.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from genepool._errors import TrainableError
from genepool.trainable import Member, Trainable, TrainableLike, check_trainable

__all__ = ["JOIN_SECONDS", "Observe", "make_session"]

log = logging.getLogger("genepool")

#: How long a worker waits for a training function to end once told to stop (seconds).
#: One that does not (it ignores ``member.running``, and catches ``BaseException``
#: around ``member.report``) is left running, and a warning names its member.
JOIN_SECONDS = 60.0
#: How often the worker, waiting for a function trainable, lets a signal's handler run.
SIGNAL_CHECK_SECONDS = 0.1


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
        # in short waits: the kernel may hand a Ctrl-C to the function's thread, and a
        # wait without a timeout is woken only by a signal sent to this one, so Python's
        # handler (it runs in the main thread, between waits) would never see it
        while not self._to_worker.acquire(timeout=SIGNAL_CHECK_SECONDS):
            pass

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


def make_session(trainable: TrainableLike, member: Member) -> _Session:
    """The session adapter for a trainable class or function."""
    check_trainable(trainable)
    if isinstance(trainable, type):
        return _ClassSession(trainable, member)
    return _FunctionSession(trainable, member)
