"""The decision of PB2 and PB2-Mix: new hyperparameters for an exploited member, as a pure
function of the window of past rounds.

PB2 (Parker-Holder, Nguyen and Roberts, NeurIPS 2020) models the improvement of the score
per unit of the ready counter as a time-varying Gaussian process over (time,
hyperparameters) and picks the point of highest upper confidence bound, ``mean +
sqrt(beta_t) * std``, inside the space's bounds. PB2-Mix (Parker-Holder et al., 2021)
first draws the unordered choices with a time-varying EXP3 bandit (:mod:`._pb2_exp3`), then
runs the GP conditioned on them. :func:`suggest` does both, from a window of :class:`Row`.

The data: numeric values (floats, integers, ordered choices as their index) are scaled to
[0, 1] inside their bounds (log-scale values in log space); unordered choices are codes
that the kernel compares for equality; times are ``(t - now)`` in units of the median gap
between the window's distinct times (about one round); improvements are standardised and
clipped to 3 standard deviations. A row whose improvement is NaN or infinite (a failed or
diverged member) is dropped and counted in ``info["dropped"]``.

Pending suggestions (members PB2 gave values this round that have not reported since) join
the GP as fantasies at time ``now``, with the kernel kept: a "constant liar" (Ginsbourger,
Le Riche and Carraro, 2010) whose lie is the window's mean improvement, or the GP's own
mean there when that is lower (the "kriging believer"). PB2 itself uses the believer alone
(GP-BUCB, Desautels et al., 2014): that leaves the mean unchanged and shrinks the standard
deviation by one noisy observation's worth, which moves the next point of highest UCB very
little once data are dense (a batch of 8 measured within 0.01 of each other in the unit
cube). The lie lowers the mean around each pending point that looks better than average,
so the next point moves about a length scale away and a batch spreads over the promising
region, without being pushed to the edges of the space as the pessimistic lie (the
minimum) does. The pending members' categories use up their share of the bandit's batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from genepool._errors import invalid
from genepool.policy._checks import check_integer, check_number, shown
from genepool.policy._pb2_exp3 import draw_arm
from genepool.policy._pb2_kernel import (
    BOUNDS,
    blas_threads,
    condition,
    fit_gp,
    maximise_ucb,
    predict,
)
from genepool.space import Choice, Domain, Float, Int, Space

__all__ = ["Row", "beta", "check_space", "suggest"]

Array = npt.NDArray[np.float64]
OWNER = "PB2"
#: At most this many combinations of unordered choices make one joint bandit; beyond it,
#: each unordered choice has its own.
JOINT_ARMS = 64


@dataclass(frozen=True)
class Row:
    """One past exploration: at ``time`` (the ready counter), a member whose values were
    ``hparams`` improved its score by ``improvement`` per unit of the ready counter."""

    time: float
    hparams: Mapping[str, Any]
    improvement: float


def beta(n: int) -> float:
    """PB2's ``beta_t`` after ``n`` observations: ``max(0, 0.2 * log(0.4 * n))``, the
    schedule of the PB2 authors' code (the theory's ``beta_t`` is far too wide in practice).
    UCB adds ``sqrt(beta_t)`` standard deviations (not variances, as Ray Tune does)."""
    return max(0.0, 0.2 * math.log(0.4 * n)) if n > 0 else 0.0


def _numeric(domain: Domain) -> bool:
    return isinstance(domain, (Float, Int)) or (isinstance(domain, Choice) and domain.ordered)


def _to_unit(domain: Domain, value: Any) -> float:
    """``value`` (valid) as a position in [0, 1] of the domain's own scale."""
    if isinstance(domain, Choice):
        span = len(domain.options) - 1
        return domain.index(value) / span if span else 0.0
    assert isinstance(domain, (Float, Int))
    if domain.log:
        low = math.log(domain.low)
        return (math.log(value) - low) / (math.log(domain.high) - low)
    return (float(value) - domain.low) / (float(domain.high) - domain.low)


def _from_unit(domain: Domain, unit: float) -> Any:
    """The value at position ``unit`` of the domain: inside its bounds, of its type."""
    unit = min(1.0, max(0.0, float(unit)))
    if isinstance(domain, Choice):
        return domain.options[round(unit * (len(domain.options) - 1))]
    assert isinstance(domain, (Float, Int))
    if domain.log:
        low, high = math.log(domain.low), math.log(domain.high)
        value = math.exp(low + unit * (high - low))
    else:
        value = domain.low + unit * (float(domain.high) - domain.low)
    if isinstance(domain, Int):
        return min(domain.high, max(domain.low, round(value)))
    return min(domain.high, max(domain.low, value))


def check_space(space: Any, *, mix: Any) -> None:
    """Refuse a space PB2 cannot model: nothing to explore, a domain other than a float,
    an integer or a choice, or (without ``mix``, PB2-Mix) an unordered choice."""
    if not isinstance(space, Space):
        raise invalid(OWNER, "space", "a gp.Space", shown(space))
    if not space.mutable_names:
        raise invalid(
            OWNER,
            "space",
            "a space with at least one value to explore",
            f"only fixed values {sorted(space)}",
            "Fix: declare a hyperparameter with gp.Float, gp.Int or gp.Choice.",
        )
    other = [n for n in space.mutable_names if not isinstance(space[n], (Float, Int, Choice))]
    if other:
        raise invalid(
            OWNER,
            "space",
            "made of gp.Float, gp.Int, gp.Choice and fixed values",
            f"the domain(s) {[repr(space[n]) for n in other]} for {other}",
            "Fix: PB2 models those four kinds only; use another explore for this space.",
        )
    if type(mix) is not bool:
        raise invalid(OWNER, "mix", "True or False", shown(mix))
    unordered = [n for n in space.mutable_names if not _numeric(space[n])]
    if unordered and not mix:
        raise invalid(
            OWNER,
            "space",
            "made of floats, integers and ordered choices (PB2 models values on a scale)",
            f"the unordered choices {unordered}",
            "Fix: use PB2-Mix (gp.PB2Mix(), or mix=True here), which draws them with a "
            "bandit, or gp.Choice([...], ordered=True) for values on a scale.",
        )


def _check_inputs(
    space: Any, now: Any, rng: Any, state: Any, mix: Any, window: Any, min_rows: Any, fit: Any
) -> None:
    check_space(space, mix=mix)
    check_number(OWNER, "now", now)
    if not isinstance(rng, np.random.Generator):
        raise invalid(OWNER, "rng", "a numpy Generator (np.random.default_rng(seed))", shown(rng))
    check_integer(OWNER, "window", window, at_least=1)
    check_integer(OWNER, "min_rows", min_rows, at_least=2)
    check_integer(OWNER, "fit_rows", fit, at_least=2)
    if state is None:
        return
    if not isinstance(state, Mapping) or set(state) != set(BOUNDS):
        raise invalid(
            OWNER,
            "state",
            f"None or the kernel parameters of a previous decision (keys {sorted(BOUNDS)})",
            shown(state),
            "Fix: pass info['kernel'] of the previous suggestion, or None.",
        )
    for name in BOUNDS:
        check_number(OWNER, f"state[{name!r}]", state[name], above=0)


def _sequence(value: Any, name: str, must: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise invalid(OWNER, name, must, shown(value))
    return value


@dataclass
class _Layout:
    """How hyperparameters become numbers: ``numeric`` names (a position in [0, 1] each)
    and ``unordered`` names (a code each: the option's index)."""

    space: Space
    numeric: list[str]
    unordered: list[str]

    def encode(self, config: Any, what: str) -> tuple[list[float], list[int]]:
        """``config``'s positions and codes, checked against the space."""
        if not isinstance(config, Mapping):
            raise invalid(OWNER, what, "a dict of hyperparameters", shown(config))
        names = self.numeric + self.unordered
        missing = [n for n in names if n not in config]
        if missing:
            raise invalid(OWNER, what, f"a value for each of {names}", f"none for {missing}")
        checked = {n: self.space[n].validate(config[n], name=f"{what}[{n!r}]") for n in names}
        units = [_to_unit(self.space[n], checked[n]) for n in self.numeric]
        return units, [self.choice(n).index(checked[n]) for n in self.unordered]

    def choice(self, name: str) -> Choice:
        domain = self.space[name]
        assert isinstance(domain, Choice)
        return domain

    def size(self, group: Sequence[str]) -> int:
        return math.prod(len(self.choice(n).options) for n in group)

    def groups(self) -> list[list[str]]:
        """The unordered choices grouped into bandits: one joint bandit over their
        combinations, or (more than :data:`JOINT_ARMS` of them) one bandit each."""
        if not self.unordered:
            return []
        if self.size(self.unordered) <= JOINT_ARMS:
            return [list(self.unordered)]
        return [[n] for n in self.unordered]

    def arms(self, group: Sequence[str], codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The arm of each row of ``codes`` in a bandit over ``group``'s combinations."""
        arm = np.zeros(codes.shape[0], dtype=np.int64)
        for name in group:
            arm = arm * len(self.choice(name).options) + codes[:, self.unordered.index(name)]
        return arm

    def codes_of(self, group: Sequence[str], arm: int) -> dict[str, int]:
        out = {}
        for name in reversed(group):
            arm, out[name] = divmod(arm, len(self.choice(name).options))
        return out


@dataclass
class _Window:
    """The window as numbers: rows sorted by time."""

    times: Array
    gains: Array
    units: Array  # rows x numeric, in [0, 1]
    codes: npt.NDArray[np.int64]  # rows x unordered
    dropped: int


def _read_rows(layout: _Layout, rows: Sequence[Any], window: int) -> _Window:
    """The last ``window`` rows as numbers, without those whose improvement is not finite."""
    times, gains, units, codes, dropped = [], [], [], [], 0
    for i in range(max(0, len(rows) - window), len(rows)):
        row, where = rows[i], f"rows[{i}]"
        if not isinstance(row, Row):
            raise invalid(OWNER, where, "a Row(time, hparams, improvement)", shown(row))
        check_number(OWNER, f"{where}.time", row.time)
        gain = row.improvement
        if isinstance(gain, (bool, np.bool_)) or not isinstance(
            gain, (int, float, np.integer, np.floating)
        ):
            raise invalid(OWNER, f"{where}.improvement", "a number (NaN is dropped)", shown(gain))
        if not math.isfinite(float(gain)):
            dropped += 1
            continue
        u, c = layout.encode(row.hparams, f"{where}.hparams")
        times.append(float(row.time))
        gains.append(float(gain))
        units.append(u)
        codes.append(c)
    order = np.argsort(np.array(times), kind="stable")
    return _Window(
        times=np.array(times)[order],
        gains=np.array(gains)[order],
        units=np.array(units, dtype=np.float64).reshape(len(times), len(layout.numeric))[order],
        codes=np.array(codes, dtype=np.int64).reshape(len(times), len(layout.unordered))[order],
        dropped=dropped,
    )


def _random(
    space: Space, rng: np.random.Generator, reason: str, info: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    rules = {n: ("random" if n in space.mutable_names else "fixed") for n in space}
    return space.sample(rng), {**info, "rules": rules, "fallback": reason}


def suggest(
    space: Space,
    rows: Sequence[Row],
    *,
    now: float,
    rng: np.random.Generator,
    pending: Sequence[Mapping[str, Any]] = (),
    state: Mapping[str, float] | None = None,
    mix: bool = True,
    window: int = 1000,
    min_rows: int = 4,
    fit_rows: int = 250,
    threads: int | None = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """New hyperparameters for an exploited member, chosen by PB2 (PB2-Mix with ``mix``).

    Args:
        space: The search space: every value returned lies inside it, with its type.
        rows: The window of past explorations, oldest first; the last ``window`` are used.
        now: The time of this decision, in the units of ``Row.time``.
        rng: The generator of every draw (the same generator state, the same result).
        pending: The hyperparameters PB2 gave this round to members that have not
            reported since (the batch so far).
        state: The previous decision's ``info["kernel"]``: the kernel's fit starts there.
        mix: Whether unordered choices are allowed (drawn by EXP3, as in PB2-Mix).
        window: How many of the last rows to use (PB2: 1,000).
        min_rows: Below this many rows with a finite improvement, or with fewer than two
            distinct times, the values are drawn at random from the space.
        fit_rows: The kernel's parameters are fitted on the last ``fit_rows`` rows; the
            GP is then conditioned on all of them.
        threads: The BLAS threads of the GP's linear algebra (``None``: leave the
            process's setting). One by default: matrices of W = 1,000 rows gain little
            from threads, and beside training processes that hold every core, BLAS
            threads wait on each other (measured: a p95 of 1.4 s instead of 0.16 s).

    Returns:
        The hyperparameters (every name of the space) and what chose them (``info``):
        ``rules`` (each name: "gp", "exp3", "random" or "fixed"), ``fallback`` (why values
        were drawn at random, else None), ``mean`` and ``std`` (the GP's prediction of the
        improvement at the chosen point, in the improvements' units), ``beta``, ``kernel``
        (to pass back as ``state``), ``at_bound`` (kernel parameters at a bound), ``exp3``
        (each bandit's probabilities), ``rows`` (used), ``dropped`` (not finite) and
        ``pending``.

    Raises:
        InvalidArgumentError: A bad argument, or a row or pending value outside the space.
    """
    _check_inputs(space, now, rng, state, mix, window, min_rows, fit_rows)
    if threads is not None:
        check_integer(OWNER, "threads", threads, at_least=1)
    layout = _Layout(
        space,
        numeric=[n for n in space.mutable_names if _numeric(space[n])],
        unordered=[n for n in space.mutable_names if not _numeric(space[n])],
    )
    rows = _sequence(rows, "rows", "a list of Row(time, hparams, improvement)")
    pending = _sequence(pending, "pending", "a list of hyperparameter dicts")
    data = _read_rows(layout, rows, window)
    waiting = [layout.encode(p, f"pending[{i}]") for i, p in enumerate(pending)]
    info: dict[str, Any] = {
        "mean": None,
        "std": None,
        "beta": None,
        "kernel": dict(state) if state is not None else None,
        "at_bound": [],
        "exp3": None,
        "rows": data.times.size,
        "dropped": data.dropped,
        "pending": len(waiting),
    }
    distinct = np.unique(data.times)
    if data.times.size < min_rows:
        return _random(space, rng, f"{data.times.size} rows, fewer than {min_rows}", info)
    if distinct.size < 2:
        return _random(space, rng, "every row has the same time", info)
    spread = float(data.gains.std())
    y = (
        np.clip((data.gains - data.gains.mean()) / spread, -3.0, 3.0)
        if spread > 0
        else np.zeros_like(data.gains)
    )
    out = {n: d.sample(rng) for n, d in space.items() if not d.mutable}  # fixed: no draw
    rules = dict.fromkeys(out, "fixed")
    chosen: dict[str, int] = {}
    if layout.unordered:
        rounds = np.searchsorted(distinct, data.times).astype(np.int64)
        span = float(y.max() - y.min())
        reward = (y - y.min()) / span if span > 0 else np.full_like(y, 0.5)
        bandits = []
        pending_codes = np.array([c for _, c in waiting], dtype=np.int64).reshape(
            len(waiting), len(layout.unordered)
        )
        for group in layout.groups():
            arm, detail = draw_arm(
                arms=layout.arms(group, data.codes),
                rounds=rounds,
                rewards=reward,
                n_arms=layout.size(group),
                pending=[int(a) for a in layout.arms(group, pending_codes)],
                rng=rng,
            )
            chosen.update(layout.codes_of(group, arm))
            bandits.append({"names": list(group), **detail})
        for n in layout.unordered:
            out[n] = layout.choice(n).options[chosen[n]]
            rules[n] = "exp3"
        info["exp3"] = bandits
    if layout.numeric:
        unit = float(np.median(np.diff(distinct)))  # about one round
        tau = (data.times - float(now)) / unit
        with blas_threads(threads):
            point, found = _gp_point(layout, data, tau, y, waiting, chosen, state, fit_rows, rng)
        for j, n in enumerate(layout.numeric):
            out[n] = _from_unit(space[n], point[j])
            rules[n] = "gp"
        scale = spread if spread > 0 else 1.0
        found["mean"] = float(data.gains.mean() + scale * found["mean"])
        found["std"] = float(scale * found["std"])
        info.update(found)
    return {n: out[n] for n in space}, {
        **info,
        "rules": {n: rules[n] for n in space},
        "fallback": None,
    }


def _gp_point(
    layout: _Layout,
    data: _Window,
    tau: Array,
    y: Array,
    waiting: Sequence[tuple[list[float], list[int]]],
    chosen: Mapping[str, int],
    state: Mapping[str, float] | None,
    fit_rows: int,
    rng: np.random.Generator,
) -> tuple[Array, dict[str, Any]]:
    """The numeric values' positions of highest UCB at time ``now`` (``tau = 0``), the
    unordered choices at ``chosen``, and the GP's prediction there (standardised; from
    the data alone, without the pending fantasies)."""
    cats = len(layout.unordered)
    X = np.hstack([tau[:, None], data.units, data.codes.astype(np.float64)])
    model, params, at_bound = fit_gp(X, y, n_categorical=cats, start=state, fit_rows=fit_rows)
    honest = model
    if waiting:
        P = np.array([[0.0, *u, *c] for u, c in waiting], dtype=np.float64)
        believed, _ = predict(model, P)
        lie = np.minimum(believed, y.mean())  # the constant liar, never above the believer
        model = condition(np.vstack([X, P]), np.concatenate([y, lie]), params, n_categorical=cats)
    b = beta(y.size)
    fixed = np.array([0.0] + [float(chosen[n]) for n in layout.unordered])
    seeds = data.units[np.argsort(-y, kind="stable")[:5]]
    point = maximise_ucb(model, fixed, len(layout.numeric), math.sqrt(b), seeds, rng)
    decoded = [
        _to_unit(layout.space[n], _from_unit(layout.space[n], point[j]))
        for j, n in enumerate(layout.numeric)
    ]
    mean, std = predict(honest, np.array([[0.0, *decoded, *fixed[1:]]]))  # without the lies
    found = {
        "mean": float(mean[0]),
        "std": float(std[0]),
        "beta": b,
        "kernel": params,
        "at_bound": at_bound,
    }
    return point, found
