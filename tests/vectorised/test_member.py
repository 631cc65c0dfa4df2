"""One member of a vectorised run alone (gpv.trainable): a replay retraces a member's
line through the same code, and gp.run trains the same population one member at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import genepool as gp
from genepool import vectorised as gpv
from genepool._errors import CheckpointError, InvalidArgumentError
from genepool._trainable_ref import load_trainable
from tests.test_cli import run_cli

from .test_population import ADAM_SPACE, data, evaluate, final_models, loss, mlp, settings

SPEC: dict[str, Any] = {
    "model": mlp,
    "loss": loss,
    "data": data,
    "evaluate": evaluate,
    "eval_data": settings()["eval_data"],
}


def member_of(**more: Any) -> type[gpv.VectorisedMember]:
    return gpv.trainable(**SPEC, ready=gp.Every(3), **more)


@pytest.mark.parametrize(
    "given",
    [{}, {"space": ADAM_SPACE, "optimizer": "adam"}],
    ids=["sgd, dropout, loss weight, clipping", "adam"],
)
def test_every_members_line_replays_alone(given: dict[str, Any]) -> None:
    """Each member's schedule, replayed through gp.replay, ends at the member's final
    weights and score (to rounding: one member computes alone what 4 computed at once)."""
    result = gpv.run(**settings(**given))
    assert any(e.kind == "exploit" for e in result.events)
    member = member_of(optimizer=given.get("optimizer", "sgd"))
    finals = final_models(result)
    for m in result.members:
        replayed = gp.replay(member, result.schedule(m.id))
        assert replayed.step == 12
        assert replayed.score == pytest.approx(m.score, abs=1e-10)
        for name, value in replayed.state["model"].items():
            torch.testing.assert_close(value, finals[m.id][name], atol=1e-10, rtol=0)


def test_another_seed_trains_another_member() -> None:
    result = gpv.run(**settings())
    replayed = gp.replay(member_of(), result.schedule(), seed=99)
    assert replayed.score != pytest.approx(result.best.score, abs=1e-6)


def test_gp_run_trains_the_same_population_one_member_at_a_time() -> None:
    """The worker (serial, synchronous) and the vectorised driver: the same decisions and,
    to rounding, the same weights."""
    args = settings()
    vectorised = gpv.run(**args)
    for key in SPEC:
        del args[key]
    alone = gp.run(member_of(), **args, synchronous=True)
    kinds = ("exploit", "explore")
    assert [(e.kind, e.member, e.step) for e in alone.events if e.kind in kinds] == [
        (e.kind, e.member, e.step) for e in vectorised.events if e.kind in kinds
    ]
    a, b = final_models(vectorised), final_models(alone)
    for m in a:
        for name in a[m]:
            torch.testing.assert_close(a[m][name], b[m][name], atol=1e-10, rtol=0)


def test_a_state_not_a_members_is_refused() -> None:
    member = member_of()()
    member.member = gp.Member(id=0, hparams={"lr": 0.1}, rng=np.random.default_rng(0))
    member.setup({"lr": 0.1})
    with pytest.raises(CheckpointError, match="not a vectorised member's"):
        member.load({"model": {}})


@pytest.mark.parametrize(
    ("more", "match"),
    [
        ({"ready": gp.Every(3, burn_in=6)}, r"'ready'.*gp.Every\(k\) counting steps"),
        ({"ready": gp.Every(2.5)}, r"'ready'"),
        ({"ready": gp.Every(4, counter="samples")}, r"'ready'"),
        ({"ready": 0}, r"'ready'"),
        ({"ready": "3"}, r"'ready'"),
        ({"ready": 3, "optimizer": "rmsprop"}, r"'optimizer'.*'adam'"),
        ({"ready": 3, "optimizer_options": {"betas": 1}}, r"'optimizer_options'"),
        ({"ready": 3, "model": "mlp"}, r"'model'"),
        ({"ready": 3, "data": None}, r"'data'"),
    ],
)
def test_bad_arguments_are_refused_by_name(more: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        gpv.trainable(**(SPEC | more))


SCRIPT = """
import torch
import genepool as gp
from genepool import vectorised as gpv

x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
data = gpv.Sample(x, x.sum(1, keepdim=True), batch_size=8)


def loss(model, batch):
    return torch.nn.functional.mse_loss(model(batch[0]), batch[1])


SPEC = dict(model=lambda: torch.nn.Linear(3, 1), loss=loss, data=data)
Member = gpv.trainable(**SPEC, ready=gp.Every(5))
"""


@pytest.mark.usefixtures("clean_imports")
def test_genepool_replay_retraces_a_vectorised_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "vec_train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    module = load_trainable(f"{script}:Member")[1]
    result = gpv.run(
        **module.SPEC,
        metric="loss",
        mode="min",
        population=4,
        seed=0,
        space=gp.Space(lr=gp.Float(0.01, 0.3, log=True), momentum=gp.Float(0.0, 0.9)),
        ready=gp.Every(5),
        budget=gp.Budget(steps=20),
    )
    path = tmp_path / "schedule.json"
    result.schedule().save(path)
    code, out, err = run_cli(
        capsys, "replay", f"{script}:Member", "--schedule", str(path), "--json"
    )
    assert code == 0, err
    replayed = json.loads(out.strip().splitlines()[-1])
    assert replayed["step"] == 20
    assert replayed["score"] == pytest.approx(result.best.score, rel=1e-5)


def test_gp_run_resumes_a_vectorised_runs_checkpoints(tmp_path: Path) -> None:
    """The state is shared: a vectorised run stopped by an error goes on one member at a
    time, from the checkpoints it wrote."""
    storage = f"sqlite:///{tmp_path}/pbt.db"
    calls: list[int] = []

    def failing(generator: torch.Generator, member: int) -> Any:
        calls.append(member)
        if len(calls) == 4 * 7 + 1:  # the second step of the third round
            raise RuntimeError("power cut")
        return data(generator, member)

    with pytest.raises(RuntimeError, match="power cut"):
        gpv.run(**settings(storage=storage, data=failing))
    args = settings(storage=storage)
    for key in SPEC:
        del args[key]
    finished = gp.run(member_of(), **args, synchronous=True)
    assert finished.stop_reason == "budget"
    assert {m.step for m in finished.members} == {12}
    steps = [r.step for r in finished.reports if r.member == 0]
    assert steps == list(range(1, 13))  # steps 1-6 vectorised, then on: no restart
    best = mlp()
    best.load_state_dict(finished.load()["model"])
