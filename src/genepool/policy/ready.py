"""Ready: when a member may compare itself with the population.

The worker asks :meth:`Ready.due` after every step, so it must be cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from genepool._errors import invalid
from genepool.policy._checks import check_number, shown

__all__ = ["Every", "Ready"]


class Ready(ABC):
    """When a member is ready for a decision.

    Attributes:
        counter: The counter it counts: ``"steps"`` (calls of ``step`` / ``report``), or the
            name of a cumulative counter the trainable reports with its metrics (samples,
            episodes, environment frames). The member's budget counts the same counter.
    """

    counter: str = "steps"

    @abstractmethod
    def due(self, *, counter: float, last: float, elapsed: float) -> bool:
        """Whether a member whose counter is ``counter`` is ready.

        Args:
            counter: The counter's value now.
            last: Its value at the member's last ready (or when it started, or at the
                checkpoint it was copied from).
            elapsed: Seconds since then, on the run's clock.
        """


class Every(Ready):
    """Ready every ``steps`` units of a counter, after an optional burn-in and minimum time.

    Args:
        steps: How many units of the counter between two readies (the paper's ``N``).
        counter: ``"steps"`` or the name of a cumulative counter in the reported metrics.
        burn_in: No ready before the counter reaches this value.
        min_seconds: No ready before this much wall time has passed since the last one.

    Example:
        >>> import genepool as gp
        >>> ready = gp.Every(4)
        >>> ready.due(counter=8, last=4, elapsed=0.0)
        True
        >>> ready = gp.Every(1000, counter="samples", burn_in=5000)
        >>> ready.due(counter=3000, last=2000, elapsed=1.0)
        False
    """

    def __init__(
        self,
        steps: float,
        *,
        counter: str = "steps",
        burn_in: float = 0,
        min_seconds: float = 0.0,
    ) -> None:
        check_number("Every", "steps", steps, above=0)
        if not isinstance(counter, str) or not counter:
            raise invalid("Every", "counter", "a non-empty string", shown(counter))
        check_number("Every", "burn_in", burn_in, at_least=0)
        check_number("Every", "min_seconds", min_seconds, at_least=0)
        self.steps = steps
        self.counter = counter
        self.burn_in = burn_in
        self.min_seconds = float(min_seconds)

    def due(self, *, counter: float, last: float, elapsed: float) -> bool:
        return (
            counter - last >= self.steps and counter >= self.burn_in and elapsed >= self.min_seconds
        )

    def __repr__(self) -> str:
        return (
            f"Every({self.steps!r}, counter={self.counter!r}, burn_in={self.burn_in!r}, "
            f"min_seconds={self.min_seconds!r})"
        )
