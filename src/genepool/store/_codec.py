"""The exact JSON codec: members, lease holders, configs, metrics and event data as the
JSON text the SQL store keeps.

The text round-trips exactly: floats (``repr`` precision, NaN and infinities included),
ints, bools, ``None``, nested mappings and lists, and tuples (tagged ``{"$t": [...]}``;
a mapping whose keys are not all strings, ``{"$d": [[key, value], ...]}``). NumPy scalars
and arrays are stored as the equivalent Python values.

Reading checks what it reads: text genepool did not write (JSON that does not parse, a
value of the wrong type) raises :class:`Corrupt`, which the store turns into a
:class:`~genepool.StorageError` naming the table and the row.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

from genepool._errors import StorageError
from genepool.member import ACTIVE, CheckpointRef, MemberView
from genepool.store._leases import WorkerInfo

__all__ = [
    "Corrupt",
    "dumps",
    "encode",
    "encode_map",
    "holder_from_json",
    "holder_json",
    "is_int",
    "is_num",
    "json_object",
    "loads",
    "view_from_json",
    "view_json",
]

_TUPLE, _DICT = "$t", "$d"
_TAGS = (_TUPLE, _DICT)
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _TUPLE in obj:
            return tuple(obj[_TUPLE])
        if _DICT in obj:
            return dict(obj[_DICT])
    return obj


loads = json.JSONDecoder(object_hook=_hook).decode


def encode(x: Any) -> Any:
    """``x`` as plain JSON values; tuples and mappings that JSON would not keep are tagged."""
    t = type(x)
    if t is float or t is int or t is str or t is bool or x is None:
        return x
    if t is list:
        return [encode(v) for v in x]
    if t is tuple:
        return {_TUPLE: [encode(v) for v in x]}
    if isinstance(x, Mapping):
        return encode_map(x)
    if isinstance(x, tuple):
        return {_TUPLE: [encode(v) for v in x]}
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, str):
        return str(x)
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x)
    tolist = getattr(x, "tolist", None)  # NumPy arrays and scalars
    if callable(tolist):
        return encode(tolist())
    raise StorageError(
        f"a value of type {t.__name__} ({x!r}) cannot be stored: use numbers, strings, "
        "booleans, None, lists, tuples and mappings"
    )


_PLAIN = (float, int, str)


def unstorable(metrics: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The first metric of a report that :func:`encode` cannot keep (a value of another
    type, or a list or dict that holds itself), as ``(name, value)``; ``None`` when every
    one can be kept. A number or a string (NumPy's float64 too) costs one type check."""
    for name, value in metrics.items():
        if isinstance(value, _PLAIN):  # every subclass of these is kept as the base
            continue
        try:
            encode(value)
        except (StorageError, RecursionError):  # RecursionError: a list in itself
            return name, value
    return None


def encode_map(m: Mapping[Any, Any]) -> Any:
    if all(type(k) is str for k in m) and not (len(m) == 1 and next(iter(m)) in _TAGS):
        return {k: encode(v) for k, v in m.items()}
    return {_DICT: [[encode(k), encode(v)] for k, v in m.items()]}


def view_json(m: MemberView) -> str:
    ck = m.checkpoint
    return dumps(
        {
            "id": encode(m.id),
            "hparams": encode_map(m.hparams),
            "step": encode(m.step),
            "generation": encode(m.generation),
            "parent": encode(m.parent),
            "status": m.status,
            "checkpoint": None if ck is None else _ref_json(ck),
            "score": encode(m.score),
            "recent": [encode(v) for v in m.recent],
            "failures": encode(m.failures),
            "ready_count": encode(m.ready_count),
            "stop_reason": m.stop_reason,
            "pending": bool(m.pending),
            "crashes": encode(m.crashes),
            "ready_counter": encode(m.ready_counter),
            **({"previous": [_ref_json(p) for p in m.previous]} if m.previous else {}),
            **({"curve": [[encode(c), encode(v)] for c, v in m.curve]} if m.curve else {}),
            **(
                {"intervals": [[encode(t), encode(d), encode_map(h)] for t, d, h in m.intervals]}
                if m.intervals
                else {}
            ),
            **(
                {"explore_state": encode_map(m.explore_state)}
                if m.explore_state is not None
                else {}
            ),
        }
    )


def _ref_json(ck: CheckpointRef) -> dict[str, Any]:
    return {
        "id": ck.id,
        "member": encode(ck.member),
        "step": encode(ck.step),
        "counter": encode(ck.counter),
        "score": encode(ck.score),
        "hparams": encode_map(ck.hparams),
    }


def _ref_from_json(ck: Any) -> CheckpointRef:
    return CheckpointRef(
        ck["id"], ck["member"], ck["step"], ck["counter"], ck["score"], ck["hparams"]
    )


class Corrupt(Exception):
    """A row whose stored text is not what genepool writes (bad JSON, or values of the
    wrong type): the store turns it into a :class:`~genepool.StorageError` that names the
    database, the table and the row."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.table: str | None = None
        self.row: str | None = None

    def at(self, table: str, row: str) -> Corrupt:
        """This error, saying where the row is (once: the innermost caller knows best)."""
        if self.table is None:
            self.table, self.row = table, row
        return self


def is_num(x: object) -> bool:
    return type(x) is float or type(x) is int


def is_int(x: object) -> bool:
    return type(x) is int


def json_object(text: object, what: str) -> dict[str, Any]:
    """The JSON object ``text`` holds; :class:`Corrupt` if it holds anything else."""
    if not isinstance(text, str):
        raise Corrupt(f"its {what} is {type(text).__name__}, not JSON text")
    try:
        d = loads(text)
    except ValueError as err:
        raise Corrupt(f"its {what} is not valid JSON ({err})") from None
    if type(d) is not dict:
        raise Corrupt(f"its {what} is {type(d).__name__} JSON, not an object")
    return d


def view_from_json(text: str) -> MemberView:
    """The member a row's ``view`` holds; :class:`Corrupt` if it is not one."""
    d = json_object(text, "view")
    try:
        ck = d.get("checkpoint")
        view = MemberView(
            id=d["id"],
            hparams=d["hparams"],
            step=d.get("step", 0),
            generation=d.get("generation", 0),
            parent=d.get("parent"),
            status=d.get("status", ACTIVE),
            checkpoint=None if ck is None else _ref_from_json(ck),
            score=d.get("score"),
            recent=tuple(d.get("recent", ())),
            failures=d.get("failures", 0),
            ready_count=d.get("ready_count", 0),
            stop_reason=d.get("stop_reason"),
            pending=d.get("pending", False),
            crashes=d.get("crashes", 0),
            ready_counter=d.get("ready_counter", 0.0),
            previous=tuple(_ref_from_json(p) for p in d.get("previous", ())),
            curve=tuple((c, v) for c, v in d.get("curve", ())),
            intervals=tuple((t, x, h) for t, x, h in d.get("intervals", ())),
            explore_state=d.get("explore_state"),
        )
    except KeyError as err:
        raise Corrupt(f"its view lacks {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise Corrupt(f"its view holds a value of the wrong type ({err})") from None
    wrong = _wrong_in_view(view)
    if wrong is not None:
        raise Corrupt(f"its view's {wrong}")
    return view


def _wrong_in_view(v: MemberView) -> str | None:
    """What in a decoded member has the wrong type, or ``None`` (checked field by field:
    a view is decoded whenever another process changed its member)."""
    if not is_int(v.id):
        return f"id is {v.id!r}"
    if type(v.hparams) is not dict:
        return f"hparams is {v.hparams!r}"
    for name in ("step", "generation", "failures", "ready_count", "crashes"):
        if not is_int(getattr(v, name)):
            return f"{name} is {getattr(v, name)!r}"
    if v.parent is not None and not is_int(v.parent):
        return f"parent is {v.parent!r}"
    if type(v.status) is not str:
        return f"status is {v.status!r}"
    if v.score is not None and not is_num(v.score):
        return f"score is {v.score!r}"
    if not all(is_num(x) for x in v.recent):
        return f"recent is {list(v.recent)!r}"
    if v.stop_reason is not None and type(v.stop_reason) is not str:
        return f"stop_reason is {v.stop_reason!r}"
    if type(v.pending) is not bool:
        return f"pending is {v.pending!r}"
    if not is_num(v.ready_counter):
        return f"ready_counter is {v.ready_counter!r}"
    if not all(is_num(c) and is_num(x) for c, x in v.curve):
        return f"curve is {list(v.curve)!r}"
    if not all(is_num(t) and is_num(x) and type(h) is dict for t, x, h in v.intervals):
        return f"intervals is {list(v.intervals)!r}"
    if v.explore_state is not None and type(v.explore_state) is not dict:
        return f"explore_state is {v.explore_state!r}"
    ck = v.checkpoint
    if ck is not None and not _good_ref(ck):
        return f"checkpoint is {ck!r}"
    for p in v.previous:
        if not _good_ref(p):
            return f"previous holds {p!r}"
    return None


def _good_ref(ck: CheckpointRef) -> bool:
    return (
        type(ck.id) is str
        and is_int(ck.member)
        and is_int(ck.step)
        and is_num(ck.counter)
        and (ck.score is None or is_num(ck.score))
        and type(ck.hparams) is dict
    )


def holder_json(w: WorkerInfo) -> str:
    return dumps(
        [w.name, w.host, w.pid, encode(w.started), w.proc_start, w.machine]
        + ([] if w.driver_pid is None else [w.driver_pid, w.driver_start])
    )


def holder_from_json(text: str) -> WorkerInfo:
    """The lease holder a row's ``holder`` holds; :class:`Corrupt` if it is not one.

    A holder written by a genepool older than ``WorkerInfo.machine`` has five fields: it
    reads back with the machine unknown (``""``), so its lease runs out rather than being
    taken at once (its process might be on another machine with the same host name). One
    that names the run's driver has eight, the driver's pid and start time last; one with
    six names none (its death counts a crash, as it always did)."""
    try:
        name, host, pid, started, proc_start, *rest = loads(text)
        if len(rest) not in (0, 1, 3):
            raise ValueError(f"{5 + len(rest)} fields, not 5, 6 or 8")
        machine: Any = rest[0] if rest else ""
        driver_pid, driver_start = rest[1:] if len(rest) == 3 else (None, None)
    except (ValueError, TypeError) as err:
        raise Corrupt(f"its holder is not a lease holder's JSON ({err})") from None
    if not (
        type(name) is str
        and type(host) is str
        and is_int(pid)
        and is_num(started)
        and (proc_start is None or is_int(proc_start))
        and type(machine) is str
        and (driver_pid is None or is_int(driver_pid))
        and (driver_start is None or is_int(driver_start))
    ):
        raise Corrupt(f"its holder holds values of the wrong type ({text[:200]!r})")
    return WorkerInfo(
        name=name,
        host=host,
        pid=pid,
        started=started,
        proc_start=proc_start,
        machine=machine,
        driver_pid=driver_pid,
        driver_start=driver_start,
    )
