"""Injectable clocks: the system's, and a manual one that makes timed runs testable."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Anything that tells the time in seconds."""

    def now(self) -> float:
        """Seconds since an arbitrary origin (only differences matter)."""
        ...


class SystemClock:
    """Wall time (``time.time``): what a real run uses."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told, or by ``tick`` seconds each time it is read.

    Example:
        >>> clock = ManualClock(tick=0.5)
        >>> clock.now(), clock.now()
        (0.0, 0.5)
    """

    def __init__(self, start: float = 0.0, *, tick: float = 0.0) -> None:
        self._t = float(start)
        self.tick = float(tick)

    def now(self) -> float:
        t = self._t
        self._t += self.tick
        return t

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._t += seconds
