"""A hyperparameter schedule: what PBT found, as data that can be saved and replayed."""

from __future__ import annotations

import itertools
import json
import math
import os
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from genepool._errors import GenepoolError, InvalidArgumentError, invalid
from genepool.analysis._lineage import Change

__all__ = ["SCHEDULE_FORMAT", "SCHEDULE_VERSION", "Schedule", "ScheduleError"]

SCHEDULE_FORMAT = "genepool.schedule"
SCHEDULE_VERSION = 1


class ScheduleError(GenepoolError, ValueError):
    """A schedule file that cannot be read: not a schedule, a newer version, or malformed."""


@dataclass(frozen=True)
class Schedule:
    """The hyperparameters in effect at every step along one member's line.

    ``schedule.at(s)`` is what trained step ``s + 1`` (what a member standing at step ``s``
    uses next). Saved as JSON with :meth:`save`, read back with :meth:`load`, replayed with
    :func:`genepool.replay`.

    Example:
        >>> from genepool.analysis import Change, Schedule
        >>> s = Schedule(changes=[Change(0, {"lr": 0.1}, 0, 0, "start"),
        ...                       Change(8, {"lr": 0.05}, 3, 1, "exploit")], final_step=20)
        >>> s.at(7), s.at(8), s.at(19)
        ({'lr': 0.1}, {'lr': 0.05}, {'lr': 0.05})

    Attributes:
        changes: The changes, by step; the first is at step 0.
        final_step: The step the line reached.
        run: The run it was read from.
        member: The member whose line it is.
        metric: The run's metric, and ``score`` the member's final score on it.
        seed: The run's seed (a replay with it retraces the run's random streams).
    """

    changes: Sequence[Change]
    final_step: int
    run: str | None = None
    member: int | None = None
    metric: str | None = None
    score: float | None = None
    seed: int | None = None
    _steps: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        changes = tuple(self.changes)
        if not changes or changes[0].step != 0:
            raise invalid(
                "Schedule",
                "changes",
                "a non-empty sequence whose first change is at step 0",
                repr(changes[:1]),
                "Start the schedule with the starting hyperparameters at step 0.",
            )
        steps = tuple(c.step for c in changes)
        if any(b < a for a, b in itertools.pairwise(steps)):
            raise invalid("Schedule", "changes", "sorted by step", repr(steps))
        if not isinstance(self.final_step, int) or self.final_step < steps[-1]:
            raise invalid(
                "Schedule",
                "final_step",
                f"an int at least the last change's step ({steps[-1]})",
                repr(self.final_step),
            )
        object.__setattr__(self, "changes", changes)
        object.__setattr__(self, "_steps", steps)

    def at(self, step: int) -> dict[str, Any]:
        """The hyperparameters a member at ``step`` trains its next step with."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise invalid("Schedule.at", "step", "an int >= 0", repr(step))
        return dict(self.changes[bisect_right(self._steps, step) - 1].hparams)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    @property
    def names(self) -> list[str]:
        """Every hyperparameter name, in first-seen order."""
        seen: dict[str, None] = {}
        for c in self.changes:
            seen.update(dict.fromkeys(c.hparams))
        return list(seen)

    def per_step(self) -> list[dict[str, Any]]:
        """One row per trained step ``1 .. final_step``: ``step`` and the values that trained it."""
        return [{"step": s, **self.at(s - 1)} for s in range(1, self.final_step + 1)]

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the format's name and version."""
        return {
            "format": SCHEDULE_FORMAT,
            "version": SCHEDULE_VERSION,
            "run": self.run,
            "member": self.member,
            "metric": self.metric,
            "score": _finite_or_none(self.score),
            "seed": self.seed,
            "final_step": self.final_step,
            "changes": [
                {
                    "step": c.step,
                    "hparams": dict(c.hparams),
                    "member": c.member,
                    "generation": c.generation,
                    "cause": c.cause,
                }
                for c in self.changes
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """The schedule ``data`` describes (the output of :meth:`to_dict`)."""
        if not isinstance(data, Mapping) or data.get("format") != SCHEDULE_FORMAT:
            raise ScheduleError(
                "not a genepool schedule: expected a JSON object with "
                f'"format": "{SCHEDULE_FORMAT}"; write one with `genepool export`'
            )
        version = data.get("version")
        if not isinstance(version, int) or version > SCHEDULE_VERSION:
            raise ScheduleError(
                f"schedule format version {version!r} is newer than this genepool reads "
                f"({SCHEDULE_VERSION}); upgrade genepool"
            )
        try:
            changes = [
                Change(
                    int(c["step"]),
                    dict(c["hparams"]),
                    int(c["member"]),
                    int(c["generation"]),
                    str(c["cause"]),
                )
                for c in data["changes"]
            ]
            return cls(
                changes=changes,
                final_step=int(data["final_step"]),
                run=data.get("run"),
                member=data.get("member"),
                metric=data.get("metric"),
                score=data.get("score"),
                seed=data.get("seed"),
            )
        except (KeyError, TypeError, ValueError, InvalidArgumentError) as err:
            raise ScheduleError(f"malformed schedule: {err}") from err

    def to_json(self) -> str:
        """The schedule as JSON text."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """The schedule in JSON ``text``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ScheduleError(f"schedule is not valid JSON: {err}") from err
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the schedule to a JSON file."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Schedule:
        """Read a schedule written by :meth:`save` or ``genepool export``."""
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
