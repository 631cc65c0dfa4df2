"""Rows: what the SQL store writes in each table's row, and what it reads back from one.

A member's row holds its view as JSON (:mod:`genepool.store._codec`) and, beside it, the
columns claims and collection read without parsing it (:func:`member_columns`). A
report's row keeps the decision metric in a column of its own when it is a finite float
(:func:`report_row`). Reading checks each value's type: a row genepool did not write
raises :class:`~genepool.store._codec.Corrupt`, saying where it is.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from genepool.member import Event, MemberView, Report
from genepool.store._codec import (
    Corrupt,
    dumps,
    encode_map,
    holder_from_json,
    is_int,
    is_num,
    json_object,
)
from genepool.store._leases import holds

__all__ = [
    "EVENTS_TABLE",
    "MEMBERS_TABLE",
    "REPORTS_TABLE",
    "RUNS_TABLE",
    "event_row",
    "events_from",
    "held_row",
    "member_columns",
    "member_row",
    "metric_of",
    "new_member_row",
    "report_row",
    "reports_from",
    "run_row",
]

RUNS_TABLE = "genepool_runs"
MEMBERS_TABLE = "genepool_members"
REPORTS_TABLE = "genepool_reports"
EVENTS_TABLE = "genepool_events"


def member_row(run: str, run_id: int, member: int) -> str:
    """Where a member's row is, for an error."""
    return f"run_id={run_id}, id={member} (run {run!r}, member {member})"


def metric_of(config: Mapping[str, Any]) -> str | None:
    """The run's decision metric, from its config."""
    metric = config.get("metric")
    return metric if isinstance(metric, str) else None


def run_row(run: str, *, config: Mapping[str, Any], created: float) -> dict[str, Any]:
    """A new run's row: ``config`` (as :func:`~genepool.store._codec.encode_map` makes it)
    as JSON, with a hash of it."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    row = {"name": run, "config": dumps(config), "config_hash": digest, "created": created}
    return {**row, "version": 1}


def new_member_row(m: MemberView, text: str, *, run_id: int) -> dict[str, Any]:
    """A new member's row (its view's JSON ``text``): version 1, and no lease."""
    lease = {"version": 1, "token": 0, "expires": None, "holder": None}
    return {"run_id": run_id, "id": m.id, **lease, **member_columns(m, text)}


def held_row(holder: str | None, expires: float | None, now: float) -> bool:
    """Whether a member row's lease (its holder's JSON, and its expiry) holds the member
    at ``now`` (:func:`~genepool.store._leases.holds`; the JSON is read only if the lease
    has not run out)."""
    if holder is None or expires is None or expires <= now:
        return False
    return holds(holder=holder_from_json(holder), expires=expires, now=now)


def member_columns(m: MemberView, text: str) -> dict[str, Any]:
    """The member row's columns for a view (its JSON ``text``, and the columns claims
    read)."""
    return {
        "view": text,
        "status": m.status,
        "ready_count": int(m.ready_count),
        "step": int(m.step),
        "pending": bool(m.pending),
        "checkpoint": None if m.checkpoint is None else m.checkpoint.id,
    }


def report_row(report: Report, *, run_id: int, metric: str | None) -> dict[str, Any]:
    """A report's row; a finite float ``metric`` is kept in the score column only."""
    metrics: Mapping[str, Any] = report.metrics
    score = None
    if metric is not None and metric in metrics:
        value = metrics[metric]
        if type(value) is float and math.isfinite(value):  # kept in its own column only
            score = value
            metrics = {k: v for k, v in metrics.items() if k != metric}
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            as_float = float(value)  # a copy for queries; the exact value stays in JSON
            score = as_float if math.isfinite(as_float) else None
    return {
        "run_id": run_id,
        "member": int(report.member),
        "step": int(report.step),
        "time": float(report.time),
        "score": score,
        "metrics": dumps(encode_map(metrics)),
    }


def event_row(event: Event, *, run_id: int) -> dict[str, Any]:
    """An event's row."""
    return {
        "run_id": run_id,
        "kind": str(event.kind),
        "member": int(event.member),
        "step": int(event.step),
        "data": dumps(encode_map(event.data)),
        "time": float(event.time),
    }


def reports_from(
    rows: Sequence[Sequence[Any]], *, run: str, metric: str | None
) -> tuple[Report, ...]:
    """The reports of ``run`` from their rows (``S_REPORTS``).

    Raises:
        Corrupt: A row genepool did not write.
    """
    reports = []
    for seq, member, step, at, score, metrics_text in rows:
        try:
            # a report of the decision score alone stores "{}": no JSON to parse
            metrics = {} if metrics_text == "{}" else json_object(metrics_text, "metrics")
            if not (is_int(member) and is_int(step) and is_num(at)):
                raise Corrupt(
                    f"its member, step or time is not a number ({member!r}, {step!r}, {at!r})"
                )
            if score is not None and not is_num(score):
                raise Corrupt(f"its score is {score!r}")
        except Corrupt as err:
            raise err.at(REPORTS_TABLE, f"seq={seq} (run {run!r})") from None
        if score is not None and metric is not None and metric not in metrics:
            metrics = {metric: score, **metrics}
        reports.append(Report(member, step, metrics, at))
    return tuple(reports)


def events_from(rows: Sequence[Sequence[Any]], *, run: str) -> tuple[Event, ...]:
    """The events of ``run`` from their rows (``S_EVENTS``).

    Raises:
        Corrupt: A row genepool did not write.
    """
    events = []
    for seq, kind, member, step, data, at in rows:
        try:
            details = json_object(data, "data")
            if not (type(kind) is str and is_int(member) and is_int(step) and is_num(at)):
                raise Corrupt(
                    f"its kind, member, step or time has the wrong type ({kind!r}, "
                    f"{member!r}, {step!r}, {at!r})"
                )
        except Corrupt as err:
            raise err.at(EVENTS_TABLE, f"seq={seq} (run {run!r})") from None
        events.append(Event(kind, member, step, details, at))
    return tuple(events)
