"""What the policy decides for a member that is ready: plain data, one of four kinds.

The paper's loop, once a member is ready (``step`` and ``eval`` until ``ready``, then a
checkpoint), asks the policy what to do next. The answer is one of:

- :class:`Continue`: train on from the member's own weights with its own hyperparameters;
- :class:`Exploit`: copy a better member's weights (its checkpoint) and hyperparameters,
  then explore them: train on from the donor's weights with ``hparams``;
- :class:`Explore`: keep the member's own weights, with new hyperparameters (a run with
  exploration but no exploit);
- :class:`Stop`: the member trains no more (its budget is used, or it failed too often).

:data:`Decision` is their union; a driver matches it exhaustively
(``typing_extensions.assert_never`` in the last branch), so a new kind cannot be left
unhandled. :meth:`genepool.Policy.decide` makes decisions; the worker (and any other
driver) carries them out.

Example:
    >>> decision = Explore(hparams={"lr": 0.02})
    >>> isinstance(decision, (Continue, Exploit, Explore, Stop))
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genepool.member import CheckpointRef

__all__ = ["Continue", "Decision", "Exploit", "Explore", "Stop"]


@dataclass(frozen=True, slots=True)
class Continue:
    """Keep training from the member's own weights with its own hyperparameters."""


@dataclass(frozen=True, slots=True)
class Exploit:
    """Train on from the donor's checkpoint with the (explored) hyperparameters ``hparams``."""

    donor: int
    checkpoint: CheckpointRef
    hparams: Mapping[str, Any]
    #: The donor's generation in the population decided on: the stretch of its training
    #: that made ``checkpoint`` (it may have exploited again since that population was read).
    donor_generation: int | None = None
    #: How a greediness control (:class:`genepool.Calm`) judged the donor's lead, as plain
    #: data for the event; ``None`` without one.
    judgement: Mapping[str, Any] | None = None
    #: What chose ``hparams``, from an explore strategy that says (:class:`genepool.PB2`:
    #: its model's prediction, which rule chose each value); ``None`` otherwise.
    explored: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Explore:
    """Train on from the member's own weights with new hyperparameters ``hparams``."""

    hparams: Mapping[str, Any]
    #: Why no donor was copied, when a greediness control (:class:`genepool.Calm`) found
    #: none clearly better and explores from the member's own weights; ``None`` otherwise.
    judgement: Mapping[str, Any] | None = None
    #: What chose ``hparams`` (as :attr:`Exploit.explored`).
    explored: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The member trains no more (``reason``: ``"budget"``, ``"failed"``, ...)."""

    reason: str


Decision = Continue | Exploit | Explore | Stop
