"""The JAX / optax integration, one member at a time: hyperparameters written into and read
back from ``opt_state.hyperparams``, exploits that load the donor's params and optimizer
state with the decided values in effect, no restart from step 0, a resumed run that
continues, the state in the safe checkpoint format, and the refusals."""

from __future__ import annotations

import difflib
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import genepool as gp  # noqa: E402
from genepool.checkpoints import decode, encode  # noqa: E402
from genepool.integrations import jax as gpj  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N, READY, BUDGET = 4, 3, 12
_x = np.random.default_rng(0).normal(size=(96, 5)).astype(np.float32)
X = jnp.asarray(_x)
Y = jnp.tanh(X @ jnp.asarray(np.random.default_rng(1).normal(size=(5, 1)), jnp.float32))
OPT = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
SPACE = gp.Space(learning_rate=gp.Float(0.01, 0.3, log=True), momentum=gp.Float(0.1, 0.9))


# -- one member's training, in plain JAX ----------------------------------------------------
def init(key: Any) -> dict[str, Any]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (5, 8)) / 2,
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 1)) / 3,
        "b2": jnp.zeros(1),
    }


def forward(params: dict[str, Any], x: Any) -> Any:
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def update(params: dict[str, Any], opt_state: Any, key: Any) -> tuple[Any, Any, Any]:
    i = jax.random.randint(key, (8,), 0, 64)

    def loss_fn(p: dict[str, Any]) -> Any:
        err = forward(p, X[i]) - Y[i]
        return (err**2).mean(), jnp.abs(err).mean()

    (loss, mae), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = OPT.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {"loss": loss, "mae": mae}


def evaluate(params: dict[str, Any]) -> dict[str, Any]:
    return {"val": -((forward(params, X[64:]) - Y[64:]) ** 2).mean()}


FUNCTIONS: dict[str, Any] = {"init": init, "update": update, "optimizer": OPT, "evaluate": evaluate}
STEP, EVALUATE = jax.jit(update), jax.jit(evaluate)


# -- the trainables under test, recording what each step starts from ---------------------
def sums(state: dict[str, Any]) -> tuple[float, float]:
    """Checksums of a saved state's params and of its optimizer state but its
    hyperparameters (the momentum trace, the counts)."""
    params = sum(float(np.asarray(v, np.float64).sum()) for v in state["params"].values())
    opt = sum(
        float(np.asarray(v, np.float64).sum())
        for k, v in state["opt_state"].items()
        if "hyperparams" not in k
    )
    return params, opt


class Recording:
    """Records, before each step, the member's step, generation, the values in effect in
    ``opt_state.hyperparams`` and its state's checksums; and each state it saves."""

    seen: ClassVar[list[dict[str, Any]]] = []
    saved: ClassVar[dict[tuple[int, int], tuple[float, float]]] = {}
    interrupt: ClassVar[tuple[int, int] | None] = None  # (member, step): SIGINT there

    def step(self) -> Any:
        member = self.member  # type: ignore[attr-defined]
        if Recording.interrupt == (member.id, member.step):
            Recording.interrupt = None
            os.kill(os.getpid(), signal.SIGINT)
        Recording.seen.append(
            {
                "member": member.id,
                "at": member.step,
                "generation": member.generation,
                "in_effect": dict(self.hparams_in_effect()),  # type: ignore[attr-defined]
                "sums": sums(self.save()),
            }
        )
        return super().step()  # type: ignore[misc]

    def save(self) -> Any:
        state = super().save()  # type: ignore[misc]
        Recording.saved[(self.member.id, self.member.step)] = sums(state)  # type: ignore[attr-defined]
        return state


class FromFunctions(Recording, gpj.trainable(**FUNCTIONS, ready=gp.Every(READY))):  # type: ignore[misc]
    """The functions of a plain script as a trainable (gpj.trainable)."""


class OwnLoop(Recording, gpj.OptaxTrainable):
    """A training loop of one's own over an OptaxState that keeps a key."""

    def build(self, hparams: Any) -> gpj.OptaxState:
        params = init(self.next_key())
        return gpj.OptaxState(params=params, opt_state=OPT.init(params), key=self.next_key())

    def step(self) -> Any:
        super().step()  # records
        s = self.state
        s.key, sub = jax.random.split(s.key)
        s.params, s.opt_state, metrics = STEP(s.params, s.opt_state, sub)
        s.step += 1
        return {k: float(v) for k, v in metrics.items()} | {"val": float(EVALUATE(s.params)["val"])}


TRAINABLES = [pytest.param(FromFunctions, id="gpj.trainable"), pytest.param(OwnLoop, id="own loop")]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Recording.seen, Recording.saved, Recording.interrupt = [], {}, None


def run(trainable: Any, storage: str | None = None, **more: Any) -> gp.Result:
    settings: dict[str, Any] = {
        "metric": "val",
        "population": N,
        "ready": gp.Every(READY),
        "budget": gp.Budget(steps=BUDGET),
        "seed": 3,
        "exploit": gp.Truncation(0.25),
        "storage": storage,
    }
    settings |= more
    return gp.run(trainable, settings.pop("space", SPACE), **settings)


# -- exploits: the decided values in effect, the donor's state, no restart ---------------------
@pytest.mark.parametrize("trainable", TRAINABLES)
def test_an_exploit_loads_the_donors_state_with_the_decided_values_in_effect(
    trainable: Any,
) -> None:
    result = run(trainable)
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert len(exploits) >= 2, "the run made too few exploits: the test shows little"
    for e in exploits:
        after = next(
            s
            for s in Recording.seen
            if s["member"] == e.member and s["generation"] == e.data["generation"]
        )
        assert after["at"] == e.data["donor_step"]  # the donor's step: no restart
        for name, value in e.data["new_hparams"].items():  # read from opt_state.hyperparams
            assert after["in_effect"][name] == pytest.approx(value, rel=1e-6)
        assert after["sums"] == Recording.saved[(e.data["donor"], e.data["donor_step"])]
    firsts: dict[int, int] = {}
    for s in Recording.seen:
        firsts.setdefault(s["member"], s["at"])
    assert firsts == dict.fromkeys(range(N), 0)
    assert sorted(s["at"] for s in Recording.seen).count(0) == N  # step 0 once per member
    assert {m.step for m in result.members} == {BUDGET}


@pytest.mark.parametrize("trainable", TRAINABLES)
def test_a_seeded_run_is_reproduced(trainable: Any) -> None:
    first, second = run(trainable), run(trainable)
    assert [(r.member, r.step, r.metrics) for r in first.reports] == [
        (r.member, r.step, r.metrics) for r in second.reports
    ]
    other = run(trainable, seed=4)
    assert [r.metrics for r in other.reports] != [r.metrics for r in first.reports]


@pytest.mark.parametrize("trainable", TRAINABLES)
def test_an_interrupted_run_resumes_from_its_checkpoints(trainable: Any, tmp_path: Path) -> None:
    """Synchronous: the decisions do not depend on the order members train in after the
    resume, so the run ends as one that was not interrupted."""
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    Recording.interrupt = (1, 7)  # in the middle of its third round
    stopped = run(trainable, storage, synchronous=True)
    assert stopped.stop_reason == "interrupted"
    at_stop = {m.id: m.step for m in stopped.members}
    assert max(at_stop.values()) < BUDGET
    Recording.seen = []
    resumed = run(trainable, storage, synchronous=True)
    assert resumed.stop_reason == "budget"
    assert {m.step for m in resumed.members} == {BUDGET}
    firsts: dict[int, int] = {}
    for s in Recording.seen:
        firsts.setdefault(s["member"], s["at"])
    assert all(at > 0 for at in firsts.values())  # from their checkpoints, not step 0
    assert firsts == {m: at for m, at in at_stop.items() if at < BUDGET}
    straight = run(trainable, f"sqlite:///{tmp_path / 'straight.db'}", synchronous=True)
    assert [(e.kind, e.member, e.step) for e in resumed.events] == [
        (e.kind, e.member, e.step) for e in straight.events
    ]
    for m in range(N):  # the keys come from the members' streams: the same run
        a, b = resumed.load(m), straight.load(m)
        for name in a["params"]:
            np.testing.assert_array_equal(a["params"][name], b["params"][name])


def test_the_function_api_restores_the_state_and_applies_the_decided_values() -> None:
    """A function trainable over an OptaxState: each (re)start restores the state it is
    given (the donor's after an exploit) and applies the member's values."""
    starts: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []

    def train(member: gp.Member) -> None:
        state = fresh_state(key=jax.random.key(0))
        state.restore(member)
        starts.append((member.id, state.step, dict(member.hparams), state.in_effect()))
        while member.running:
            state.key, sub = jax.random.split(state.key)
            state.params, state.opt_state, _ = STEP(state.params, state.opt_state, sub)
            state.step += 1
            member.report(val=float(EVALUATE(state.params)["val"]), state=state.state_dict)

    result = run(train)
    assert any(e.kind == "exploit" for e in result.events)
    assert {m.step for m in result.members} == {BUDGET}
    for _, _, decided, in_effect in starts:
        assert in_effect == pytest.approx(decided, rel=1e-6)
    assert sorted(step for _, step, _, _ in starts).count(0) == N  # from step 0 once each


# -- the state: plain data, restored into the structure of a fresh one -------------------------
def fresh_state(**more: Any) -> gpj.OptaxState:
    params = init(jax.random.key(0))
    return gpj.OptaxState(params=params, opt_state=OPT.init(params), **more)


def test_the_state_round_trips_through_the_safe_format() -> None:
    state = fresh_state(key=jax.random.key(5))
    state.apply({"learning_rate": 0.02, "momentum": 0.5})
    state.params, state.opt_state, _ = STEP(state.params, state.opt_state, jax.random.key(1))
    state.step, state.counters, state.metrics = 1, {"epoch": 2}, {"val": -0.5}
    blob = encode({"state": state.state_dict()})  # no trust: plain data only
    back = fresh_state(key=jax.random.key(9))
    back.load_state_dict(decode(blob)["state"], {"learning_rate": 0.02, "momentum": 0.5})
    for a, b in zip(
        jax.tree_util.tree_leaves((state.params, state.opt_state)),
        jax.tree_util.tree_leaves((back.params, back.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree_util.tree_structure(back.opt_state) == jax.tree_util.tree_structure(
        state.opt_state
    )
    assert (back.step, back.counters, back.metrics) == (1, {"epoch": 2}, {"val": -0.5})
    np.testing.assert_array_equal(jax.random.key_data(back.key), jax.random.key_data(state.key))
    assert back.in_effect() == pytest.approx({"learning_rate": 0.02, "momentum": 0.5}, rel=1e-6)


def test_a_state_of_another_structure_is_refused() -> None:
    saved = fresh_state().state_dict()
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    params = init(jax.random.key(0))
    other = gpj.OptaxState(params=params, opt_state=adam.init(params))
    with pytest.raises(gp.CheckpointError, match="another tree's"):
        other.load_state_dict(saved)
    wider = {**saved, "params": {**saved["params"], "w1": np.zeros((5, 9), np.float32)}}
    with pytest.raises(gp.CheckpointError, match="'w1'"):
        fresh_state().load_state_dict(wider)
    for bad in ({"format": "genepool.torch"}, [1, 2], {**saved, "version": 99}):
        with pytest.raises(gp.CheckpointError):
            fresh_state().load_state_dict(bad)


# -- refusals ----------------------------------------------------------------------------------
def test_a_name_no_inject_hyperparams_holds_is_refused() -> None:
    with pytest.raises(gp.InvalidArgumentError) as err:
        fresh_state().apply({"learning_rate": 0.1, "dropout": 0.2})
    message = str(err.value)
    for part in (
        "'space'",
        "'dropout'",
        "'learning_rate'",
        "'momentum'",
        "Fix:",
        "inject_hyperparams",
    ):
        assert part in message
    renamed = fresh_state(hparams={"lr": "learning_rate"}, ignore=["dropout"])
    renamed.apply({"lr": 0.05, "dropout": 0.2})  # dropout: the user's code applies it
    assert renamed.in_effect() == pytest.approx({"lr": 0.05}, rel=1e-6)
    with pytest.raises(gp.InvalidArgumentError, match="'dropout'"):
        run(
            FromFunctions,
            space=gp.Space(learning_rate=gp.Float(0.01, 0.1), dropout=gp.Float(0, 0.5)),
        )


def test_a_chain_of_inject_hyperparams_is_addressed_by_path() -> None:
    params = init(jax.random.key(0))
    chain = optax.chain(
        optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0),
        optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
        optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=0.1),
    )
    state = gpj.OptaxState(params=params, opt_state=chain.init(params))
    state.apply({"max_norm": 2.0, "learning_rate": 0.3, "weight_decay": 0.01})
    assert float(state.opt_state[1].hyperparams["learning_rate"]) == pytest.approx(0.3)
    twice = optax.chain(OPT, OPT)
    with pytest.raises(gp.InvalidArgumentError, match="by its path"):
        gpj.OptaxState(params=params, opt_state=twice.init(params)).apply({"learning_rate": 0.1})
    second = gpj.OptaxState(
        params=params, opt_state=twice.init(params), hparams={"lr": "1/learning_rate"}
    )
    second.apply({"lr": 0.2})
    assert [float(s.hyperparams["learning_rate"]) for s in second.opt_state] == pytest.approx(
        [0.1, 0.2]
    )


def test_a_schedule_and_a_state_without_inject_hyperparams_are_refused() -> None:
    params = init(jax.random.key(0))
    scheduled = optax.inject_hyperparams(optax.sgd)(
        learning_rate=optax.linear_schedule(0.1, 0.0, 10)
    )
    with pytest.raises(gp.InvalidArgumentError, match="schedule"):
        gpj.OptaxState(params=params, opt_state=scheduled.init(params)).apply(
            {"learning_rate": 0.1}
        )
    with pytest.raises(gp.InvalidArgumentError, match="inject_hyperparams"):
        gpj.OptaxState(params=params, opt_state=optax.sgd(0.1).init(params))


def test_a_value_not_in_effect_after_apply_raises() -> None:
    """An int leaf (inject_hyperparams given an int) cannot hold 2.5: the value read back
    is not the decided one."""
    params = init(jax.random.key(0))
    clip = optax.inject_hyperparams(optax.clip)(max_delta=1)
    state = gpj.OptaxState(params=params, opt_state=clip.init(params))
    state.apply({"max_delta": 3})
    with pytest.raises(gp.HyperparameterNotAppliedError, match="max_delta"):
        state.apply({"max_delta": 2.5})


# -- the example, the extra --------------------------------------------------------------------
def code_lines(path: Path) -> list[str]:
    """The file's lines after its module docstring."""
    return path.read_text().split('"""', 2)[2].splitlines()


def test_the_pbt_example_adds_at_most_10_lines_to_the_plain_one() -> None:
    """examples/jax_pbt.py is examples/jax_plain.py with at most 10 lines added or changed
    (imports and blank lines count; the module docstring does not)."""
    plain, pbt = (code_lines(ROOT / "examples" / f"jax_{name}.py") for name in ("plain", "pbt"))
    added = [line for line in difflib.ndiff(plain, pbt) if line.startswith("+ ")]
    assert 0 < len(added) <= 10, added


def test_the_examples_functions_train_a_population() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        example = importlib.import_module("jax_pbt")
    finally:
        sys.path.remove(str(ROOT / "examples"))
    space = gp.Space(learning_rate=gp.Float(0.005, 0.5, log=True), momentum=gp.Float(0.5, 0.99))
    result = gpj.run(
        init=example.init,
        update=example.update,
        optimizer=example.optimizer,
        evaluate=example.evaluate,
        space=space,
        metric="val_acc",
        population=2,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
        seed=0,
    )
    assert {m.step for m in result.members} == {4}
    assert 0.0 <= result.best.score <= 1.0  # type: ignore[operator]


def test_without_jax_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax", None)  # import now fails
    for name in [m for m in sys.modules if m.startswith("genepool.integrations.jax")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[jax\]'"):
        importlib.import_module("genepool.integrations.jax")


def test_import_genepool_does_not_import_jax() -> None:
    code = "import genepool, sys; print('jax' in sys.modules, 'optax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
