"""The vectorised driver: a population trained at once equals it trained one by one, and
its run is an ordinary run (decisions, events, lineage, checkpoints, resume)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

import genepool as gp
from genepool import vectorised as gpv
from genepool._errors import CheckpointError, InvalidArgumentError
from genepool.asktell import Claim
from genepool.vectorised._hparams import Targets
from genepool.vectorised._inputs import Probed, Steps
from genepool.vectorised._optim import SGD, Adam, AdamW
from genepool.vectorised._population import _Members, initial_seed
from genepool.vectorised._stack import Dropout, StackedMembers

N = 4
_gen = torch.Generator().manual_seed(0)
X = torch.randn(96, 5, dtype=torch.float64, generator=_gen)
Y = torch.tanh(X @ torch.randn(5, 1, dtype=torch.float64, generator=_gen))
EVAL = (X[64:], Y[64:])

SGD_SPACE = gp.Space(
    lr=gp.Float(0.01, 0.3, log=True),
    momentum=gp.Float(0.1, 0.9),
    weight_decay=gp.Float(1e-4, 1e-2, log=True),
    max_norm=gp.Float(0.5, 5.0),
    dropout=gp.Float(0.0, 0.3),
    loss_weight=gp.Float(0.5, 2.0),
)
ADAM_SPACE = gp.Space(
    lr=gp.Float(1e-3, 0.05, log=True),
    beta1=gp.Float(0.8, 0.95),
    beta2=gp.Float(0.9, 0.999),
    eps=gp.Float(1e-8, 1e-6, log=True),
    weight_decay=gp.Float(1e-4, 1e-2, log=True),
)
OPTIMIZERS: dict[str, Any] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


@pytest.fixture(autouse=True)
def deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), Dropout(0.1), nn.Linear(8, 1)).double()


def data(generator: torch.Generator, member: int) -> tuple[Tensor, Tensor]:
    idx = torch.randint(0, 64, (8,), generator=generator)
    return X[idx], Y[idx]


def loss(model: Callable[..., Tensor], batch: tuple[Tensor, Tensor]) -> Any:
    out = model(batch[0])
    return F.mse_loss(out, batch[1]), {"mae": (out - batch[1]).abs().mean()}


def evaluate(model: Callable[..., Tensor], batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    return {"val": -F.mse_loss(model(batch[0]), batch[1])}


def settings(**more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": mlp,
        "loss": loss,
        "data": data,
        "evaluate": evaluate,
        "eval_data": EVAL,
        "metric": "val",
        "space": SGD_SPACE,
        "population": N,
        "ready": gp.Every(3),
        "budget": gp.Budget(steps=12),
        "seed": 3,
        "exploit": gp.Truncation(0.25),
    }
    return base | more


# -- the reference: the same run, one member at a time -----------------------------------------
def one_by_one(**given: Any) -> gp.Result:
    """The run of ``settings(**given)`` through ask/tell, each member its own 1-member
    stack and optimizer, trained in turn; every start loads the checkpoint's payload (no
    in-place copy), and every member is evaluated alone."""
    args = settings(**given)
    kind, options = args.pop("optimizer", "sgd"), args.pop("optimizer_options", {})
    space, draw = args.pop("space"), args.pop("data")
    for key in ("model", "loss", "evaluate", "eval_data"):
        del args[key]
    with gp.AskTell(space, synchronous=True, **args) as pbt:
        configs = [m.hparams for m in pbt.ctx.store.population(pbt.name)]
        while True:
            with contextlib.ExitStack() as open_claims:
                claims = []
                while (claim := pbt.ask()) is not None:
                    claims.append(open_claims.enter_context(claim))
                if not claims:
                    return pbt.result()
                for claim in sorted(claims, key=lambda c: c.member):
                    how = (kind, options, draw)
                    state = train_alone(claim, pbt.ctx.seed, configs[claim.member], how)
                    pbt.tell(claim, state=state)


def train_alone(
    claim: Claim, seed: int, config: Mapping[str, Any], how: tuple[str, dict[str, Any], Any]
) -> dict[str, Any]:
    """One member's round, alone: its state at the end."""
    m = claim.member
    kind, options, draw = how
    stack = StackedMembers(mlp, seeds=[initial_seed(seed, m)])
    columns = {k: [v] for k, v in config.items() if k not in ("dropout", "loss_weight")}
    opt = OPTIMIZERS[kind](stack.params, **options, **columns)
    evaluated = None
    if claim.checkpoint is not None:
        state = claim.checkpoint.load()
        stack.load_member_state(0, state["model"])
        opt.load_member_state(0, state["optimizer"])
        evaluated = state["metrics"] or None
    weight = torch.ones(1, dtype=torch.float64)
    for name, value in claim.hparams.items():
        if name == "dropout":
            stack.set_dropout(0, value)
        elif name == "loss_weight":
            weight[0] = value
        else:
            opt.set(0, **{name: value})
    generator = torch.Generator().manual_seed(int(claim.rng.integers(2**63)))
    stack.set_generator(0, generator)

    def scored() -> dict[str, float]:
        batch = tuple(t.expand(1, *t.shape) for t in EVAL)
        return {k: float(v[0]) for k, v in stack.evaluate(evaluate, batch).items()}

    evaluated = evaluated or scored()
    while not claim.ready:
        x, y = draw(generator, m)
        out = stack.gradients(loss, (x[None], y[None]), weights=weight)
        opt.step(out.grads)
        if claim.ends_next():
            evaluated = scored()
        claim.report(loss=float(out.loss[0]), mae=float(out.metrics["mae"][0]), **evaluated)
    return {
        "format": 1,
        "model": stack.member_state(0),
        "optimizer": opt.member_state(0),
        "metrics": dict(evaluated),
    }


def final_models(result: gp.Result) -> dict[int, dict[str, Tensor]]:
    return {m.id: result.load(m.id)["model"] for m in result.members}


def max_difference(a: dict[int, dict[str, Tensor]], b: dict[int, dict[str, Tensor]]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[m][k] - b[m][k]).abs().max()) for m in a for k in a[m])


def changed(result: gp.Result) -> set[str]:
    """The hyperparameters some exploit changed (explored)."""
    return {
        name
        for e in result.events
        if e.kind == "exploit"
        for name, value in e.data["new_hparams"].items()
        if value != e.data["old_hparams"][name]
    }


# -- must show: vectorised equals one by one ---------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "space", "options"),
    [("sgd", SGD_SPACE, {"nesterov": True}), ("adam", ADAM_SPACE, {}), ("adamw", ADAM_SPACE, {})],
)
def test_vectorised_equals_one_by_one(kind: str, space: gp.Space, options: dict[str, Any]) -> None:
    given = {"space": space, "optimizer": kind, "optimizer_options": options}
    vectorised = gpv.run(**settings(**given))
    alone = one_by_one(**given)
    exploits = [e for e in vectorised.events if e.kind == "exploit"]
    assert len(exploits) >= 2
    assert changed(vectorised) == set(space)
    assert [(e.member, e.step, e.data["donor"]) for e in alone.events if e.kind == "exploit"] == [
        (e.member, e.step, e.data["donor"]) for e in exploits
    ]
    assert max_difference(final_models(vectorised), final_models(alone)) < 1e-10
    assert [m.score for m in vectorised.members] == pytest.approx(
        [m.score for m in alone.members], abs=1e-10
    )


# -- must show: a member's trajectory is its own -----------------------------------------------
def test_a_members_trajectory_does_not_depend_on_the_others() -> None:
    """Member 0 with the same config, the others changed: its reports and final weights
    are bit-identical (no exploit: nobody copies anyone; its explores are its own)."""
    first = {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3, "max_norm": 2.0}
    first |= {"dropout": 0.2, "loss_weight": 1.0}
    others = [dict(first, lr=0.02 * (i + 1), dropout=0.05 * i) for i in range(1, N)]
    changed_others = [dict(c, lr=0.3, momentum=0.8, loss_weight=2.0) for c in others]
    runs = [
        gpv.run(**settings(exploit=None, initial=[first, *configs]))
        for configs in (others, changed_others)
    ]
    a, b = (final_models(r)[0] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    reports = [[r.metrics for r in run.reports if r.member == 0] for run in runs]
    assert reports[0] == reports[1]
    assert len(reports[0]) == 12
    assert any(e.kind == "explore" and e.member == 0 for e in runs[0].events)


# -- must show: a member that goes NaN fails alone ---------------------------------------------
def poisoned(member: int, calls: list[int], at: int = 4) -> Callable[[torch.Generator, int], Any]:
    """``data``, whose batch for ``member`` at its draw ``at`` (its step ``at``) is NaN."""

    def draw(generator: torch.Generator, m: int) -> tuple[Tensor, Tensor]:
        x, y = data(generator, m)
        if m == member:
            calls.append(m)
            if len(calls) == at:
                return x * math.nan, y
        return x, y

    return draw


@pytest.mark.parametrize("at", [2, 4], ids=["fresh again", "from its checkpoint"])
def test_a_nan_member_fails_alone_and_the_others_are_bit_identical(at: int) -> None:
    sick = gpv.run(**settings(exploit=None, data=poisoned(2, [], at)))
    well = gpv.run(**settings(exploit=None))
    failures = [e for e in sick.events if e.kind == "failure"]
    assert [(e.member, e.step) for e in failures] == [(2, at)]  # failed at its NaN step
    assert "non-finite score" in failures[0].data["error"]
    a, b = final_models(sick), final_models(well)
    for m in (0, 1, 3):
        assert all(torch.equal(a[m][k], b[m][k]) for k in a[m])
    assert all(bool(torch.isfinite(t).all()) for t in a[2].values())  # retried
    assert sick.population[2].step == 12


def test_a_nan_member_is_exploited_at_once() -> None:
    result = gpv.run(**settings(data=poisoned(1, [])))
    kinds = [(e.kind, e.member) for e in result.events if e.kind in ("failure", "exploit")]
    assert ("failure", 1) in kinds
    after = kinds[kinds.index(("failure", 1)) + 1]
    assert after == ("exploit", 1)  # decided at its failure: it copies a donor
    assert all(bool(torch.isfinite(t).all()) for t in final_models(result)[1].values())


# -- must show: an ordinary run ----------------------------------------------------------------
def test_the_result_is_an_ordinary_runs() -> None:
    result = gpv.run(**settings())
    assert result.stop_reason == "budget"
    assert {m.step for m in result.members} == {12}
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    assert all(e.data["donor"] != e.member for e in exploits)
    recipient = exploits[-1].member
    assert result.population[recipient].generation >= 1
    assert result.population[recipient].parent == exploits[-1].data["donor"]
    line = result.lineage(recipient)
    assert line.ancestors[-1] == recipient
    assert len(line.jumps) >= 1
    best = mlp()
    best.load_state_dict(result.load()["model"])  # the best member, a plain module
    best.eval()
    with torch.no_grad():
        score = float(evaluate(best, EVAL)["val"])
    assert score == pytest.approx(result.best.score, abs=1e-12)
    steps = [r.step for r in result.reports if r.member == 0]
    assert steps == list(range(1, 13))
    assert {"loss", "mae", "val"} <= result.reports[0].metrics.keys()


# -- must show: a stopped run resumes from its checkpoints ------------------------------------
def test_a_run_stopped_by_an_error_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    calls: list[int] = []

    def failing(generator: torch.Generator, m: int) -> tuple[Tensor, Tensor]:
        calls.append(m)
        if calls.count(1) == 8:  # member 1's second step of its third round
            raise RuntimeError("power cut")
        return data(generator, m)

    storage = f"sqlite:///{tmp_path}/pbt.db"
    with pytest.raises(RuntimeError, match="power cut"):
        gpv.run(**settings(data=failing, storage=storage))
    with gp.Result.open(storage) as stopped:
        assert {m.step for m in stopped.members} == {6}
        assert stopped.stop_reason == "interrupted"
    resumed = gpv.run(**settings(storage=storage))
    straight = gpv.run(**settings(storage=f"sqlite:///{tmp_path}/straight.db"))
    a, b = final_models(resumed), final_models(straight)
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])
    assert [e.kind for e in resumed.events] == [e.kind for e in straight.events]
    resumed.close()
    straight.close()


# -- must show: hostile inputs ------------------------------------------------------------------
def vector_loss(model: Callable[..., Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    return (model(batch[0]) - batch[1]).pow(2)  # not a scalar


def ragged(generator: torch.Generator, member: int) -> tuple[Tensor, Tensor]:
    return X[: 8 + (member == 2)], Y[: 8 + (member == 2)]


HOSTILE: list[tuple[dict[str, Any], str]] = [
    ({"model": 3}, "'model'"),
    ({"model": lambda: nn.Sequential(nn.Linear(5, 1), nn.Dropout(0.1))}, "'model'"),
    ({"model": lambda: "a module"}, "'model'"),
    ({"loss": "mse"}, "'loss'"),
    ({"loss": vector_loss}, "'loss'"),
    ({"data": None}, "'data'"),
    ({"data": lambda g, m: [1, 2]}, "'data'"),
    ({"eval_data": None}, "'eval_data'"),
    ({"evaluate": None}, "'evaluate'"),
    ({"eval_data": [1, 2]}, "'eval_data'"),
    ({"evaluate": lambda model, batch: 0.5}, "'evaluate'"),
    ({"evaluate": lambda model, batch: {"mae": model(batch[0]).mean()}}, "'evaluate'"),
    ({"metric": "accuracy"}, "'metric'"),
    ({"space": gp.Space(lr=gp.Float(0.01, 0.1), batch_size=gp.Int(8, 64))}, "'space'"),
    ({"space": gp.Space(lr=gp.Choice(["fast", "slow"]))}, "'space'"),
    ({"space": {"lr": gp.Float(0.01, 0.1)}}, "'space'"),
    ({"optimizer": "rmsprop"}, "'optimizer'"),
    ({"optimizer_options": {"lr": 0.1}}, "'optimizer_options'"),
    ({"optimizer_options": {"amsgrad": True}}, "'optimizer_options'"),
    ({"optimizer_options": {"nesterov": "yes"}}, "'optimizer_options'"),
    ({"optimizer_options": [("nesterov", True)]}, "'optimizer_options'"),
    ({"checkpoint_every": 0}, "'checkpoint_every'"),
    ({"checkpoint_every": 2.0}, "'checkpoint_every'"),
    ({"checkpoint_every": True}, "'checkpoint_every'"),
    ({"checkpoint_every": 3, "keep": 2}, "'keep'.*keep=3"),
    ({"synchronous": False}, "'synchronous'"),
    ({"device": "no-such-device"}, "'device'"),
]


@pytest.mark.parametrize(("override", "named"), HOSTILE, ids=[h[1] for h in HOSTILE])
def test_hostile_arguments_are_refused_before_the_run_is_created(
    override: dict[str, Any], named: str
) -> None:
    store = gp.MemoryStore()
    with pytest.raises(InvalidArgumentError, match=named):
        gpv.run(**settings(storage=store, **override))
    assert store.runs() == []  # nothing written


def test_a_space_name_that_maps_nowhere_lists_those_that_do() -> None:
    space = gp.Space(lr=gp.Float(0.01, 0.1), dropout_rate=gp.Float(0.0, 0.5))
    with pytest.raises(InvalidArgumentError) as err:
        gpv.run(**settings(space=space))
    for name in ("'dropout_rate'", "'lr'", "'momentum'", "'max_norm'", "'dropout.2'"):
        assert name in str(err.value)


def test_batches_of_other_shapes_for_other_members_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="'data'"):
        gpv.run(**settings(data=ragged))


# -- in-place exploits: every donor read before it is overwritten ------------------------------
@pytest.mark.parametrize(
    "copies", [{0: 1, 1: 2}, {1: 0, 2: 1, 3: 2}, {0: 1, 1: 0}, {0: 1, 1: 2, 2: 0, 3: 0}]
)
def test_copies_read_every_donor_before_it_is_overwritten(copies: dict[int, int]) -> None:
    """Chains and cycles of recipient <- donor: each recipient ends with what its donor
    held before any copy (a cycle through one donor's state kept aside)."""
    with gp.AskTell(SGD_SPACE, metric="val", population=N, ready=gp.Every(3), seed=1,
                    budget=gp.Budget(steps=3), synchronous=True) as pbt:  # fmt: skip
        steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=EVAL, metric="val")
        targets = Targets(SGD_SPACE, optimizer="sgd", options={}, dropouts=["2"])
        probed = Probed(targets, 0, torch.device("cpu"))
        members = _Members(pbt, model=mlp, probed=probed, steps=steps)
        out = members.stack.gradients(loss, steps.batch(members.stack, list(range(N))))
        members.opt.step(out.grads)  # moments that differ between members
        members.evaluated = [{"val": float(i)} for i in range(N)]
        before = [members._state(i) for i in range(N)]
        loads: dict[int, Any] = {}
        members._copy(dict(copies), loads)
        for m, state in loads.items():
            members._load(m, state)
        for m in range(N):
            want = before[copies.get(m, m)]
            got = members._state(m)
            assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
            moments = got["optimizer"]["momentum_buffer"]
            assert all(
                torch.equal(moments[k], want["optimizer"]["momentum_buffer"][k]) for k in moments
            )
            assert got["metrics"] == want["metrics"]


def test_a_state_that_is_no_vectorised_members_is_refused() -> None:
    with gp.AskTell(SGD_SPACE, metric="val", population=2, ready=gp.Every(3), seed=1,
                    budget=gp.Budget(steps=3), synchronous=True) as pbt:  # fmt: skip
        steps = Steps(loss=loss, data=data, evaluate=evaluate, eval_data=EVAL, metric="val")
        targets = Targets(SGD_SPACE, optimizer="sgd", options={}, dropouts=["2"])
        probed = Probed(targets, 0, torch.device("cpu"))
        members = _Members(pbt, model=mlp, probed=probed, steps=steps)
        good = members._state(1)
        for bad in ({"format": 2}, {**good, "model": {"0.weight": torch.zeros(3)}}, [1, 2]):
            with pytest.raises(CheckpointError, match="member 0's checkpoint 'x'"):
                members._load(0, bad, where="member 0's checkpoint 'x'")
