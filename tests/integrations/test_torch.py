"""The torch integration: bit-exact save/restore, hyperparameters in effect, bad files."""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import genepool as gp  # noqa: E402
from genepool.checkpoints import decode, encode  # noqa: E402
from genepool.integrations import torch as gpt  # noqa: E402


@pytest.fixture(autouse=True)
def _deterministic() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def make(seed: int = 0, lr: float = 0.05) -> tuple[gpt.TorchState, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    ts = gpt.TorchState(
        models={"model": model},
        optimizers={"opt": opt},
        schedulers={"sched": sched},
        hparams={
            "lr": gpt.Optimizer("opt", "lr"),
            "beta1": gpt.Optimizer("opt", "betas", index=0),
            "dropout": gpt.Modules("model", torch.nn.Dropout, "p"),
        },
    )
    return ts, sched


def train(ts: gpt.TorchState, sched: Any, steps: int) -> None:
    model, opt = ts.models["model"], ts.optimizers["opt"]
    for _ in range(steps):
        # data drawn from every global stream the state carries
        x = torch.randn(8, 6) + float(np.random.standard_normal())
        y = x.sum(dim=1, keepdim=True)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ts.counters["batch"] = ts.counters.get("batch", 0) + 1


def params(ts: gpt.TorchState) -> list[Any]:
    return [p.detach().clone() for p in ts.models["model"].parameters()]


def test_restored_member_continues_exactly_as_one_that_never_stopped() -> None:
    ts, sched = make()
    train(ts, sched, 5)
    saved = ts.state_dict()
    train(ts, sched, 7)
    expected = params(ts)
    expected_lr = ts.optimizers["opt"].param_groups[0]["lr"]

    other, other_sched = make(seed=123, lr=0.9)  # different weights, rates and streams
    torch.manual_seed(999)
    np.random.seed(5)
    other.load_state_dict(saved)
    assert other.counters == {"batch": 5}
    train(other, other_sched, 7)
    got = params(other)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert other.optimizers["opt"].param_groups[0]["lr"] == expected_lr


def test_state_loads_with_weights_only_and_holds_only_plain_data(tmp_path: Any) -> None:
    ts, _ = make()
    path = str(tmp_path / "m.pt")
    ts.save_file(path)
    plain = torch.load(path, weights_only=True)
    assert plain["format"] == "genepool.torch"
    assert isinstance(plain["rng"]["torch"], torch.Tensor)
    ts2, _ = make(seed=1)
    ts2.load_file(path)
    assert all(torch.equal(a, b) for a, b in zip(params(ts), params(ts2), strict=True))


def test_after_an_exploit_the_explored_rate_is_in_effect_in_optimizer_and_scheduler() -> None:
    donor, donor_sched = make(lr=0.1)
    train(donor, donor_sched, 4)  # StepLR halved the rate once: 0.05 in effect, base 0.1
    assert donor.optimizers["opt"].param_groups[0]["lr"] == pytest.approx(0.05)
    copied = donor.state_dict()

    me, my_sched = make(seed=7, lr=0.3)
    me.load_state_dict(copied, {"lr": 0.02, "beta1": 0.8, "dropout": 0.4})
    group = me.optimizers["opt"].param_groups[0]
    # the schedule's base is the explored value; the current factor (0.5) is kept
    assert my_sched.base_lrs == [0.02]
    assert group["initial_lr"] == 0.02
    assert group["lr"] == pytest.approx(0.01)
    assert group["betas"] == (0.8, 0.99)
    assert me.in_effect()["dropout"] == 0.4
    assert all(m.p == 0.4 for m in me.models["model"].modules() if isinstance(m, torch.nn.Dropout))
    assert me.in_effect() == {"lr": 0.02, "beta1": 0.8, "dropout": 0.4}
    # the scheduler's next steps follow the explored base, not the donor's
    train(me, my_sched, 2)  # step 6: halved again
    assert group["lr"] == pytest.approx(0.005)
    assert my_sched.get_last_lr() == [pytest.approx(0.005)]


def test_plain_optimizer_restore_would_keep_the_donors_rate_the_integration_does_not() -> None:
    donor, _ = make(lr=0.1)
    me, _ = make(seed=1, lr=0.3)
    # what today's tools do: restore the optimizer and forget to set the new rate
    me.optimizers["opt"].load_state_dict(donor.optimizers["opt"].state_dict())
    assert me.optimizers["opt"].param_groups[0]["lr"] == 0.1
    me.load_state_dict(donor.state_dict(), {"lr": 0.3})
    assert me.in_effect()["lr"] == 0.3


def test_a_target_that_does_not_take_effect_is_caught() -> None:
    model = torch.nn.Linear(2, 1)
    ts = gpt.TorchState(
        models={"m": model},
        hparams={"scale": gpt.Custom(lambda state, v: None, lambda state: 1.0)},
    )
    with pytest.raises(gp.HyperparameterNotAppliedError, match="scale"):
        ts.apply({"scale": 2.0})


def test_a_gan_has_two_models_and_two_optimizers() -> None:
    g, d = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    og = torch.optim.Adam(g.parameters(), lr=1e-3)
    od = torch.optim.SGD(d.parameters(), lr=1e-2)
    ts = gpt.TorchState(
        models={"G": g, "D": d},
        optimizers={"G": og, "D": od},
        hparams={"lr_g": gpt.Optimizer("G", "lr"), "lr_d": gpt.Optimizer("D", "lr")},
    )
    saved = ts.state_dict()
    ts.apply({"lr_g": 2e-4, "lr_d": 5e-3})
    assert (og.param_groups[0]["lr"], od.param_groups[0]["lr"]) == (2e-4, 5e-3)
    ts.load_state_dict(saved, {"lr_g": 3e-4, "lr_d": 4e-3})
    assert ts.in_effect() == {"lr_g": 3e-4, "lr_d": 4e-3}


def test_bad_targets_are_refused_when_built() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(gp.InvalidArgumentError, match="optimizer"):
        gpt.TorchState(
            models={"m": model}, optimizers={"o": opt}, hparams={"lr": gpt.Optimizer("x", "lr")}
        )
    with pytest.raises(gp.InvalidArgumentError, match="betas"):
        gpt.TorchState(
            models={"m": model}, optimizers={"o": opt}, hparams={"b": gpt.Optimizer("o", "betas")}
        )
    with pytest.raises(gp.InvalidArgumentError, match="at least one module"):
        gpt.TorchState(models={"m": model}, hparams={"p": gpt.Modules("m", torch.nn.Dropout)})
    with pytest.raises(gp.InvalidArgumentError, match="models"):
        gpt.TorchState(models={})


class Evil:
    def __reduce__(self) -> Any:
        return (print, ("this must never run",))


def first_layout(ts: gpt.TorchState) -> bytes:
    """The state as the first layout held it: ``torch.save`` bytes of the plain dict."""
    buffer = io.BytesIO()
    torch.save({**ts._plain(), "version": 1}, buffer)
    return buffer.getvalue()


def test_the_first_layout_still_loads() -> None:
    ts, sched = make()
    train(ts, sched, 3)
    blob = first_layout(ts)
    expected = params(ts)
    other, _ = make(seed=123, lr=0.9)
    other.load_state_dict({"genepool.torch": blob})
    assert all(torch.equal(a, b) for a, b in zip(expected, params(other), strict=True))
    assert other.counters == ts.counters


def test_the_state_is_plain_data_that_the_checkpoint_format_keeps_exactly() -> None:
    ts, sched = make()
    train(ts, sched, 3)
    state = ts.state_dict()
    assert state["format"] == "genepool.torch"
    assert state["version"] == gpt.STATE_VERSION
    blob = encode({"state": state, "rng": None})
    assert b'"$p"' not in blob  # nothing pickled
    back = decode(blob)["state"]
    other, _other_sched = make(seed=123, lr=0.9)
    other.load_state_dict(back)
    assert all(torch.equal(a, b) for a, b in zip(params(ts), params(other), strict=True))
    assert back["models"]["model"]._metadata == state["models"]["model"]._metadata
    # a snapshot: training on does not change a state taken before
    before = [t.clone() for t in state["models"]["model"].values()]
    train(ts, sched, 2)
    assert all(
        torch.equal(a, b) for a, b in zip(before, state["models"]["model"].values(), strict=True)
    )


def test_a_newer_plain_state_is_refused() -> None:
    ts, _ = make()
    with pytest.raises(gp.CheckpointError, match="newer"):
        ts.load_state_dict({**ts.state_dict(), "version": gpt.STATE_VERSION + 1})


def test_torn_foreign_and_newer_states_give_a_clear_error() -> None:
    ts, _ = make()
    blob = first_layout(ts)
    with pytest.raises(gp.CheckpointError, match="torn"):
        ts.load_state_dict({"genepool.torch": blob[: len(blob) // 2]})
    buffer = io.BytesIO()
    torch.save({"format": "genepool.torch", "version": 1, "x": Evil()}, buffer)
    with pytest.raises(gp.CheckpointError, match="not a plain-tensor state"):
        ts.load_state_dict({"genepool.torch": buffer.getvalue()})
    with pytest.raises(gp.CheckpointError, match="not a genepool torch state"):
        ts.load_state_dict({"model": pickle.dumps(1)})
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)
    with pytest.raises(gp.CheckpointError, match="not a genepool torch state"):
        ts.load_state_dict({"genepool.torch": buffer.getvalue()})
    buffer = io.BytesIO()
    torch.save({"format": "genepool.torch", "version": 99}, buffer)
    with pytest.raises(gp.CheckpointError, match="newer"):
        ts.load_state_dict({"genepool.torch": buffer.getvalue()})


# -- end to end through gp.run: both APIs -------------------------------------------------
SPACE = gp.Space(lr=gp.Float(1e-3, 0.3, log=True), dropout=gp.Float(0.0, 0.5))


def regression_batch(rng: np.random.Generator) -> tuple[Any, Any]:
    x = torch.from_numpy(rng.standard_normal((16, 4)).astype(np.float32))
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def build(hparams: Mapping[str, Any]) -> gpt.TorchState:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.0), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=hparams["lr"], momentum=0.5)
    return gpt.TorchState(
        models={"model": model},
        optimizers={"opt": opt},
        hparams={
            "lr": gpt.Optimizer("opt", "lr"),
            "dropout": gpt.Modules("model", torch.nn.Dropout),
        },
    )


class Regress(gpt.TorchTrainable):
    def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
        return build(hparams)

    def step(self) -> dict[str, float]:
        s = self.state
        model, opt = s.models["model"], s.optimizers["opt"]
        x, y = regression_batch(self.member.rng)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.counters["steps"] = s.counters.get("steps", 0) + 1
        return {
            "score": -float(loss),
            "trained": s.counters["steps"],
            "lr_now": opt.param_groups[0]["lr"],
        }


def regress_fn(member: gp.Member) -> None:
    s = build(member.hparams)
    s.restore(member)
    model, opt = s.models["model"], s.optimizers["opt"]
    while member.running:
        x, y = regression_batch(member.rng)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s.counters["steps"] = s.counters.get("steps", 0) + 1
        member.report(
            score=-float(loss),
            trained=s.counters["steps"],
            lr_now=opt.param_groups[0]["lr"],
            state=s.state_dict,
        )


@pytest.mark.parametrize("trainable", [Regress, regress_fn], ids=["class", "function"])
def test_a_run_exploits_without_restarting_and_trains_with_the_explored_rate(
    trainable: Any,
) -> None:
    result = gp.run(
        trainable,
        SPACE,
        metric="score",
        population=4,
        ready=gp.Every(3),
        exploit=gp.Truncation(0.25),
        explore=gp.Perturb(),
        budget=gp.Budget(steps=15),
        seed=1,
    )
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits, "the run should exploit"
    frame = result.history_frame()
    # the saved counter travels with the weights: every report's step is the training had
    assert (frame["trained"] == frame["step"]).all()
    # and the rate that trained each step is the one decided for it
    assert np.allclose(frame["lr_now"], frame["hp.lr"])
    assert all(m.step == 15 for m in result.members)
