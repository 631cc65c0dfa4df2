"""What the report's decisions table shows: the exploits and explores whose rules recorded
why they chose as they did (an explore strategy's ``"explored"`` account, ``gp.PB2``'s; a
greediness control's ``"greedy"`` judgement, ``gp.Calm``'s), as text, the latest
:data:`MAX_JUDGED` of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genepool.member import Event

__all__ = ["MAX_JUDGED", "Judged", "judged"]


#: The report lists at most this many judged decisions (the latest).
MAX_JUDGED = 200


@dataclass(frozen=True)
class Judged:
    """An exploit or explore whose rules recorded why (``gp.PB2``, ``gp.Calm``), as text.

    Attributes:
        kind: ``"exploit"`` or ``"explore"``; ``member``, ``step`` and ``donor`` (or None).
        values: The new hyperparameters.
        chosen_by: Which rule chose each value (``"lr: gp"``), or why at random.
        prediction: The model's predicted improvement at the values (mean and standard
            deviation), or ``""``.
        lead: How the donor's lead compared with the bar (``gp.Calm``), or ``""``.
    """

    kind: str
    member: int
    step: int
    donor: int | None
    values: dict[str, Any]
    chosen_by: str
    prediction: str
    lead: str


def judged(events: Sequence[Event]) -> list[Judged]:
    """The latest :data:`MAX_JUDGED` exploits and explores carrying an explore strategy's
    account (``"explored"``) or a greediness control's (``"greedy"``)."""
    out: list[Judged] = []
    for e in reversed(events):
        if len(out) >= MAX_JUDGED:
            break
        if e.kind not in ("exploit", "explore"):
            continue
        explored, greedy = e.data.get("explored"), e.data.get("greedy")
        if not isinstance(explored, Mapping) and not isinstance(greedy, Mapping):
            continue
        chosen_by = prediction = lead = ""
        if isinstance(explored, Mapping):
            rules = explored.get("rules")
            if isinstance(rules, Mapping):
                chosen_by = ", ".join(f"{k}: {v}" for k, v in rules.items())
            if explored.get("fallback"):
                chosen_by = f"at random ({explored['fallback']})"
            mean, std = explored.get("mean"), explored.get("std")
            if isinstance(mean, int | float) and isinstance(std, int | float):
                prediction = f"{float(mean):.4g} \u00b1 {float(std):.4g}"
        if isinstance(greedy, Mapping):
            clear = "clear" if greedy.get("clear") else "not clear"
            lead = f"{greedy.get('lead')} against {greedy.get('spread_bar')}: {clear}"
        donor = e.data.get("donor", greedy.get("donor") if isinstance(greedy, Mapping) else None)
        values = e.data.get("new_hparams")
        out.append(
            Judged(
                kind=e.kind,
                member=e.member,
                step=e.step,
                donor=donor if isinstance(donor, int) else None,
                values=dict(values) if isinstance(values, Mapping) else {},
                chosen_by=chosen_by,
                prediction=prediction,
                lead=lead,
            )
        )
    return out[::-1]
