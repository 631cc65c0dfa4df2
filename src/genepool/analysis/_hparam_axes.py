"""How the report draws each hyperparameter: on a linear or log scale, or as categories.

:func:`fit_axes` lays out an axis for every hyperparameter that varies in a run, from the
values seen and what the run's stored space declares (``log=True``, a ``Choice``'s order),
read from the space's repr without evaluating it; those that never vary are constants.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Axis", "fit_axes", "fmt_value", "is_number"]


@dataclass(frozen=True)
class Axis:
    """How a hyperparameter is drawn: on a linear or log scale, or as category levels.

    Attributes:
        name: The hyperparameter.
        kind: ``"linear"``, ``"log"`` or ``"category"``.
        levels: For categories, the labels of the levels, in order (values are indices).
    """

    name: str
    kind: str
    levels: tuple[str, ...] = ()
    _index: Mapping[tuple[str, str], int] = field(default_factory=dict, repr=False)

    def value(self, v: Any) -> float:
        """Where ``v`` sits on this axis: the number itself, or its level's index."""
        if self.kind == "category":
            return float(self._index.get(_cat_key(v), -1))
        return float(v)


def _cat_key(v: Any) -> tuple[str, str]:
    """A category's identity: its type and repr (so True and 1 stay apart)."""
    return (type(v).__name__, repr(v))


def fmt_value(v: Any) -> str:
    """A hyperparameter or score as a short text."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float | np.floating):
        return f"{float(v):.4g}"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, str):
        return v
    return repr(v)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a number (a bool is not)."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _declared(config: Mapping[str, Any], names: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """What the stored space says of each hyperparameter: ``("log", True)``,
    ``("options", [...])``; read from its repr without evaluating it."""
    text = config.get("space")
    out: dict[str, tuple[str, Any]] = {}
    if not isinstance(text, str):
        return out
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):  # a name that is no identifier: look for numbers only
        for name in names:
            for before in ("(", ", "):
                at = text.find(f"{before}{name}=")
                if at < 0:
                    continue
                rest = text[at + len(before) + len(name) + 1 :]
                if rest.startswith(("Float(", "Int(")):
                    out[name] = ("log", "log=True" in rest[: rest.find(")")])
                    break
        return out
    call = tree.body
    if not isinstance(call, ast.Call):
        return out
    for kw in call.keywords:
        dom = kw.value
        if kw.arg is None or not isinstance(dom, ast.Call) or not isinstance(dom.func, ast.Name):
            continue
        kind = dom.func.id
        if kind in ("Float", "Int"):
            log_kw = [k for k in dom.keywords if k.arg == "log"]
            is_log = (
                bool(log_kw)
                and isinstance(log_kw[0].value, ast.Constant)
                and (log_kw[0].value.value is True)
            )
            out[kw.arg] = ("log", is_log)
        elif kind == "Choice" and dom.args:
            try:
                options = ast.literal_eval(dom.args[0])
            except (ValueError, SyntaxError, TypeError):
                continue
            if isinstance(options, list):
                out[kw.arg] = ("options", options)
    return out


def fit_axes(
    values: Mapping[str, list[Any]], config: Mapping[str, Any]
) -> tuple[dict[str, Axis], dict[str, Any]]:
    """An axis for each hyperparameter whose ``values`` vary, and the value of each that
    does not; ``config`` is the run's stored configuration (its ``"space"``)."""
    declared = _declared(config, values)
    axes: dict[str, Axis] = {}
    constants: dict[str, Any] = {}
    for name, seen in values.items():
        keys: dict[tuple[str, str], Any] = {}
        for v in seen:
            keys.setdefault(_cat_key(v), v)
        if len(keys) <= 1:
            constants[name] = seen[0] if seen else None
            continue
        info = declared.get(name)
        if all(is_number(v) and math.isfinite(float(v)) for v in keys.values()):
            is_log = info is not None and info[0] == "log" and bool(info[1])
            if is_log and min(float(v) for v in keys.values()) <= 0:
                is_log = False
            axes[name] = Axis(name, "log" if is_log else "linear")
            continue
        ordered: list[Any] = []
        if info is not None and info[0] == "options":
            ordered = [o for o in info[1] if _cat_key(o) in keys]
        known = {_cat_key(o) for o in ordered}
        ordered += [v for k, v in keys.items() if k not in known]
        index = {_cat_key(v): i for i, v in enumerate(ordered)}
        axes[name] = Axis(name, "category", tuple(fmt_value(v) for v in ordered), index)
    return axes, constants
