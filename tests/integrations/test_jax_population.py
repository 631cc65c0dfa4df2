"""The JAX population (gpj.run): every member stepped by one vmap, an ordinary run
(decisions, events, lineage, checkpoints, resume), exploits by index copy with the decided
values in effect, a member's trajectory its own, and replay of a member alone."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import genepool as gp  # noqa: E402
from genepool.integrations import jax as gpj  # noqa: E402
from genepool.integrations.jax._population import _Members  # noqa: E402
from genepool.integrations.jax._stack import Stack  # noqa: E402

from .test_jax import BUDGET, FUNCTIONS, READY, SPACE, N, X, Y, evaluate, forward, init  # noqa: E402

ADAM = optax.inject_hyperparams(optax.adamw)(learning_rate=0.01, b1=0.9, weight_decay=1e-3)
ADAM_SPACE = gp.Space(
    learning_rate=gp.Float(1e-3, 0.05, log=True),
    b1=gp.Float(0.8, 0.95),
    b2=gp.Float(0.9, 0.999),
    weight_decay=gp.Float(1e-4, 1e-2, log=True),
)


def adam_update(params: dict[str, Any], opt_state: Any, key: Any) -> tuple[Any, Any, Any]:
    i = jax.random.randint(key, (8,), 0, 64)

    def loss_fn(p: dict[str, Any]) -> Any:
        return ((forward(p, X[i]) - Y[i]) ** 2).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = ADAM.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


ADAM_FUNCTIONS = {"init": init, "update": adam_update, "optimizer": ADAM, "evaluate": evaluate}


def settings(**more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        **FUNCTIONS,
        "space": SPACE,
        "metric": "val",
        "population": N,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 3,
        "exploit": gp.Truncation(0.25),
    }
    return base | more


def params_of(result: gp.Result) -> dict[int, dict[str, np.ndarray[Any, Any]]]:
    return {m.id: result.load(m.id)["params"] for m in result.members}


def differ(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[m][k] - b[m][k]).max()) for m in a for k in a[m])


def changed(result: gp.Result) -> set[str]:
    """The hyperparameters some exploit changed (explored)."""
    return {
        name
        for e in result.events
        if e.kind == "exploit"
        for name, value in e.data["new_hparams"].items()
        if value != e.data["old_hparams"][name]
    }


# -- an ordinary run ---------------------------------------------------------------------------
def test_the_result_is_an_ordinary_runs() -> None:
    result = gpj.run(**settings())
    assert result.stop_reason == "budget"
    assert {m.step for m in result.members} == {BUDGET}
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    recipient = exploits[-1].member
    assert result.population[recipient].parent == exploits[-1].data["donor"]
    assert len(result.lineage(recipient).jumps) >= 1
    assert [r.step for r in result.reports if r.member == 0] == list(range(1, BUDGET + 1))
    assert {"loss", "mae", "val"} <= result.reports[0].metrics.keys()
    best = result.load()  # plain data: params rebuilt in the structure of a fresh init
    params = gpj.from_plain(best["params"], like=init(jax.random.key(0)), where="the best")
    assert float(evaluate(params)["val"]) == pytest.approx(result.best.score, abs=1e-6)
    assert best["step"] == BUDGET


def test_after_an_exploit_the_slice_holds_the_donors_state_and_the_decided_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked right after each round's start: an exploited member's slice is its donor's
    checkpoint (params and optimizer state: the momentum trace, the count), at the donor's
    step, and its entries of opt_state.hyperparams are the claim's values."""
    checked: list[int] = []
    start = _Members.start

    def checking(self: _Members, claims: dict[int, Any]) -> None:
        start(self, claims)
        in_effect = self.stack.hparams()
        for m, claim in claims.items():
            assert in_effect[m] == pytest.approx(dict(claim.hparams), rel=1e-6)
            ck = claim.checkpoint
            if ck is None or ck.member == m:
                continue
            assert claim.step == ck.step  # no restart from step 0
            mine, donors = self.checkpoint_state(m, claim), ck.load()
            for part in ("params", "opt_state"):
                for k, v in donors[part].items():
                    if "hyperparams" not in k:
                        np.testing.assert_array_equal(mine[part][k], v)
            checked.append(m)

    monkeypatch.setattr(_Members, "start", checking)
    result = gpj.run(**settings())
    assert len(checked) == sum(e.kind == "exploit" for e in result.events) >= 2


# -- a member's trajectory is its own ----------------------------------------------------------
def test_a_members_trajectory_does_not_depend_on_the_others() -> None:
    first = {"learning_rate": 0.1, "momentum": 0.5}
    others = [{"learning_rate": 0.02 * (i + 1), "momentum": 0.3} for i in range(1, N)]
    changed_others = [{"learning_rate": 0.25, "momentum": 0.8} for _ in range(1, N)]
    runs = [
        gpj.run(**settings(exploit=None, initial=[first, *configs]))
        for configs in (others, changed_others)
    ]
    a, b = (params_of(r)[0] for r in runs)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    reports = [[r.metrics for r in run.reports if r.member == 0] for run in runs]
    assert reports[0] == reports[1]
    assert len(reports[0]) == BUDGET


@pytest.mark.parametrize(
    ("functions", "space"),
    [(FUNCTIONS, SPACE), (ADAM_FUNCTIONS, ADAM_SPACE)],
    ids=["sgd with momentum", "adamw"],
)
def test_every_members_line_replays_alone(functions: dict[str, Any], space: gp.Space) -> None:
    """Each member's schedule, replayed alone through gpj.trainable (the same code, a stack
    of one), ends at the member's score and params to float32 rounding; gp.run trains the
    same population one member at a time with the same decisions."""
    result = gpj.run(**settings(**functions, space=space))
    assert any(e.kind == "exploit" for e in result.events)
    assert changed(result) == set(space)
    member = gpj.trainable(**functions, ready=gp.Every(READY))
    finals = params_of(result)
    for m in result.members:
        replayed = gp.replay(member, result.schedule(m.id))
        assert replayed.step == BUDGET
        assert replayed.score == pytest.approx(m.score, abs=1e-5)
        for name, value in replayed.state["params"].items():
            np.testing.assert_allclose(value, finals[m.id][name], atol=1e-5, rtol=0)
    args = settings(**functions, space=space)
    for key in functions:
        del args[key]
    alone = gp.run(member, args.pop("space"), **args, synchronous=True)
    kinds = ("exploit", "explore")
    assert [(e.kind, e.member, e.step) for e in alone.events if e.kind in kinds] == [
        (e.kind, e.member, e.step) for e in result.events if e.kind in kinds
    ]
    assert differ(params_of(alone), finals) < 1e-5


def test_another_seed_trains_another_member() -> None:
    result = gpj.run(**settings())
    member = gpj.trainable(**FUNCTIONS, ready=gp.Every(READY))
    replayed = gp.replay(member, result.schedule(), seed=99)
    assert replayed.score != pytest.approx(result.best.score, abs=1e-6)


# -- a member that goes NaN fails alone ----------------------------------------------------------
def test_a_diverging_member_fails_alone_and_the_others_are_bit_identical() -> None:
    sane = [{"learning_rate": 0.05 * (i + 1), "momentum": 0.5} for i in range(N)]
    sick = [dict(c) for c in sane]
    sick[2]["learning_rate"] = 1e12  # its params overflow within a step or two
    space = gp.Space(learning_rate=gp.Float(0.01, 1e12, log=True), momentum=gp.Float(0.1, 0.9))
    runs = [
        gpj.run(**settings(space=space, exploit=None, initial=configs, max_failures=2))
        for configs in (sick, sane)
    ]
    failures = [e for e in runs[0].events if e.kind == "failure"]
    assert failures
    assert {e.member for e in failures} == {2}
    assert "non-finite score" in failures[0].data["error"]
    for m in (0, 1, 3):
        a, b = (run.load(m)["params"] for run in runs)
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert [r.metrics for r in runs[0].reports if r.member == m] == [
            r.metrics for r in runs[1].reports if r.member == m
        ]
    assert runs[0].population[2].status == "failed"


# -- resume ------------------------------------------------------------------------------------
def test_a_stopped_run_resumes_from_its_durable_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped by an error in the middle of a round after a resident round: every member
    falls back to its last durable checkpoint, and the run ends as one never stopped."""
    storage = f"sqlite:///{tmp_path}/pbt.db"
    given = {"checkpoint_every": 2, "budget": gp.Budget(steps=18)}
    calls = [0]
    step = Stack.step

    def failing(self: Stack, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 11:  # the second step of round 4: round 3 was resident
            raise RuntimeError("power cut")
        return step(self, *args)

    monkeypatch.setattr(Stack, "step", failing)
    with pytest.raises(RuntimeError, match="power cut"):
        gpj.run(**settings(storage=storage, **given))
    monkeypatch.setattr(Stack, "step", step)
    with gp.Result.open(storage) as stopped:
        assert {m.step for m in stopped.members} == {9}
    resumed = gpj.run(**settings(storage=storage, **given))
    assert {m.step for m in resumed.members} == {18}
    fallbacks = [e for e in resumed.events if e.kind == "fallback"]
    assert sorted(e.member for e in fallbacks) == list(range(N))
    assert {e.step for e in fallbacks} == {6}
    straight = gpj.run(**settings(storage=f"sqlite:///{tmp_path}/straight.db", **given))
    a, b = params_of(resumed), params_of(straight)
    assert all(np.array_equal(a[m][k], b[m][k]) for m in a for k in a[m])
    assert [(m.generation, m.parent, m.score) for m in resumed.members] == [
        (m.generation, m.parent, m.score) for m in straight.members
    ]


# -- exploits by index copy ------------------------------------------------------------------
@pytest.mark.parametrize(
    "copies", [{0: 1, 1: 2}, {1: 0, 2: 1, 3: 2}, {0: 1, 1: 0}, {0: 1, 1: 2, 2: 0, 3: 0}]
)
def test_copies_read_every_donor_before_it_is_overwritten(copies: dict[int, int]) -> None:
    from genepool.integrations.jax._hparams import Hyperparams
    from genepool.integrations.jax._program import program

    prog = program(**FUNCTIONS)
    _, opt_state, _ = prog.check()
    keys = np.stack([gpj.initial_key(0, i) for i in range(N)])
    stack = Stack(prog, keys, Hyperparams(opt_state, SPACE))
    stack.step(keys, np.zeros(N, np.int64), np.ones(N, bool))  # moments that differ
    before = [stack.member_state(i, None, step=1, key=None, owner=(i, 0)) for i in range(N)]
    stack.copy(copies)
    for m in range(N):
        got = stack.member_state(m, None, step=1, key=None, owner=(m, 0))
        want = before[copies.get(m, m)]
        for part in ("params", "opt_state"):
            assert all(np.array_equal(got[part][k], want[part][k]) for k in want[part])


# -- refusals before the run is created -------------------------------------------------------
def wrong_structure(params: Any, opt_state: Any, key: Any) -> Any:
    return {"w": params["w1"]}, opt_state, 0.0


def returns_two(params: Any, opt_state: Any, key: Any) -> Any:
    return params, opt_state


HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"init": 3}, "'init'"),
    ({"init": lambda key: 1 / 0}, "'init'"),
    ({"update": "sgd"}, "'update'"),
    ({"update": wrong_structure}, "'update'"),
    ({"update": returns_two}, "'update'"),
    ({"evaluate": lambda p: 0.5}, "'evaluate'"),
    ({"evaluate": lambda p: {"loss": p["b2"].sum()}}, "'evaluate'"),
    ({"optimizer": "sgd"}, "'optimizer'"),
    ({"optimizer": optax.sgd(0.1)}, "inject_hyperparams"),
    ({"metric": "accuracy"}, "'metric'"),
    ({"space": gp.Space(learning_rate=gp.Float(0.01, 0.1), dropout=gp.Float(0, 0.5))}, "'dropout'"),
    ({"space": gp.Space(learning_rate=gp.Choice(["fast", "slow"]))}, "'space'"),
    ({"space": {"learning_rate": gp.Float(0.01, 0.1)}}, "'space'"),
    ({"hparams": {"lr": 3}}, "'hparams'"),
    ({"checkpoint_every": 0}, "'checkpoint_every'"),
    ({"checkpoint_every": 3, "keep": 2}, "'keep'"),
    ({"synchronous": False}, "'synchronous'"),
]


@pytest.mark.parametrize(("override", "named"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_arguments_are_refused_before_the_run_is_created(
    override: dict[str, Any], named: str
) -> None:
    store = gp.MemoryStore()
    with pytest.raises(gp.InvalidArgumentError, match=named):
        gpj.run(**settings(storage=store, **override))
    assert store.runs() == []  # nothing written


def test_a_space_name_mapped_to_its_key_is_set_there() -> None:
    space = gp.Space(lr=gp.Float(0.01, 0.3, log=True), momentum=gp.Float(0.1, 0.9))
    result = gpj.run(**settings(space=space, hparams={"lr": "learning_rate"}))
    state = result.load()
    lr = state["opt_state"]["hyperparams/learning_rate"]
    assert float(lr) == pytest.approx(result.best.hparams["lr"], rel=1e-6)
    assert result.best.score is not None
    assert math.isfinite(result.best.score)
