"""The stacked members: batched training equals each member trained alone in plain PyTorch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn import functional as F

from genepool._errors import InvalidArgumentError
from genepool.vectorised._stack import Dropout, StackedMembers, member_generator

N = 4
SEEDS = [11, 12, 13, 14]
LRS = torch.tensor([0.1, 0.05, 0.2, 0.3], dtype=torch.float64)
WEIGHTS = torch.tensor([1.0, 0.5, 2.0, 1.5])
RATES = [0.3, 0.0, 0.5, 1.0]

_data = torch.Generator().manual_seed(0)
X = torch.randn(40, 36, dtype=torch.float64, generator=_data)
Y = torch.randint(0, 3, (40,), generator=_data)
SMALL = (X[:8].view(4, 2, 36), Y[:8].view(4, 2))  # two examples per member


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(36, 8), nn.Tanh(), Dropout(0.2), nn.Linear(8, 3)).double()


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 6, 6)),
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        Dropout(0.1),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    ).double()


def batchnorm() -> nn.Module:
    return nn.Sequential(
        nn.Linear(36, 8), nn.BatchNorm1d(8), nn.ReLU(), Dropout(0.3), nn.Linear(8, 3)
    ).double()


def loss_fn(model: Callable[..., Tensor], batch: tuple[Tensor, Tensor]) -> Any:
    x, y = batch
    out = model(x)
    return F.cross_entropy(out, y), {"accuracy": (out.argmax(-1) == y).double().mean()}


def indices(seed: int, steps: int = 4, batch: int = 8) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, len(X), (N, batch), generator=g) for _ in range(steps)]


def train_stacked(
    stack: StackedMembers, steps: list[Tensor], lrs: Tensor = LRS, weights: Tensor = WEIGHTS
) -> None:
    for idx in steps:
        out = stack.gradients(loss_fn, (X[idx], Y[idx]), weights=weights)
        assert out.loss.shape == out.metrics["accuracy"].shape == (N,)
        for name, g in out.grads.items():
            stack.params[name] -= lrs.view(-1, *[1] * (g.dim() - 1)) * g


def train_alone(module: nn.Module, steps: list[Tensor], i: int) -> None:
    """Member ``i`` alone, plain PyTorch: its slice of each batch, an inline SGD step."""
    module.train()
    for idx in steps:
        loss, _ = loss_fn(module, (X[idx[i]], Y[idx[i]]))
        (loss * WEIGHTS[i].double()).backward()
        with torch.no_grad():
            for p in module.parameters():
                assert p.grad is not None
                p.sub_(float(LRS[i]) * p.grad)
                p.grad = None


def alone(factory: Callable[[], nn.Module], i: int) -> nn.Module:
    """Member ``i`` built as documented, without the stack."""
    torch.manual_seed(SEEDS[i])
    module = factory()
    for m in module.modules():
        if isinstance(m, Dropout):
            m.p, m.generator = RATES[i], member_generator(SEEDS[i], i, 0)
    return module


def assert_same(a: dict[str, Tensor], b: dict[str, Tensor], atol: float = 1e-12) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def stack_of(factory: Callable[[], nn.Module], rates: list[float] = RATES) -> StackedMembers:
    stack = StackedMembers(factory, seeds=SEEDS)
    for i, p in enumerate(rates):
        stack.set_dropout(i, p)
    return stack


@pytest.mark.parametrize("factory", [mlp, cnn, batchnorm])
def test_members_trained_batched_equal_each_trained_alone(factory):
    stack, steps = stack_of(factory), indices(1)
    singles = [alone(factory, i) for i in range(N)]
    for i, module in enumerate(singles):
        assert_same(stack.member_state(i), module.state_dict(), atol=0)
    train_stacked(stack, steps)
    for i, module in enumerate(singles):
        train_alone(module, steps, i)
        assert_same(stack.member_state(i), module.state_dict())
    if factory is batchnorm:  # the running statistics moved, and per member
        means = stack.buffers["1.running_mean"]
        assert not torch.equal(means[0], means[1])
        assert stack.buffers["1.num_batches_tracked"].tolist() == [4] * N


def test_a_members_trajectory_does_not_depend_on_the_others():
    ours, theirs = stack_of(batchnorm), stack_of(batchnorm, [0.3, 0.9, 0.0, 0.4])
    steps = indices(2)
    others = [torch.cat([idx[:1], other[1:]]) for idx, other in zip(steps, indices(3), strict=True)]
    train_stacked(ours, steps)
    train_stacked(
        theirs,
        others,
        lrs=torch.tensor([0.1, 1.0, 0.01, 0.7], dtype=torch.float64),
        weights=torch.tensor([1.0, 3.0, 0.25, 0.0]),
    )
    assert_same(ours.member_state(0), theirs.member_state(0))
    assert not torch.equal(ours.params["0.weight"][1], theirs.params["0.weight"][1])


def test_an_exploited_member_continues_as_its_donor():
    stack, steps = stack_of(batchnorm), indices(4, steps=5)
    train_stacked(stack, steps[:2])
    stack.copy_member(dst=2, src=0)
    stack.set_dropout(2, RATES[0])
    twin = torch.Generator()
    twin.set_state(stack.generator(0).get_state())
    stack.set_generator(2, twin)
    same = [idx.clone() for idx in steps[2:]]
    for idx in same:
        idx[2] = idx[0]
    lrs, weights = LRS.clone(), WEIGHTS.clone()
    lrs[2], weights[2] = lrs[0], weights[0]
    train_stacked(stack, same, lrs=lrs, weights=weights)
    assert_same(stack.member_state(2), stack.member_state(0))


def test_a_member_exported_mid_run_replays_alone():
    stack, steps = stack_of(batchnorm), indices(5, steps=5)
    train_stacked(stack, steps[:2])
    module = stack.module_for(1)
    assert_same(module.state_dict(), stack.member_state(1), atol=0)
    train_stacked(stack, steps[2:])
    train_alone(module, steps[2:], 1)
    assert_same(module.state_dict(), stack.member_state(1))


def tied() -> nn.Module:
    shared = nn.Linear(3, 3)
    return nn.Sequential(shared, nn.ReLU(), shared)


@pytest.mark.parametrize("factory", [batchnorm, tied])
def test_a_members_state_round_trips(factory):
    stack = StackedMembers(factory, seeds=SEEDS)
    state = stack.member_state(2)
    assert state.keys() == factory().state_dict().keys()
    assert all(t.device.type == "cpu" for t in state.values())
    before = stack.member_state(2)
    next(iter(state.values())).add_(1)  # a copy: the stack is untouched
    assert_same(stack.member_state(2), before, atol=0)
    stack.load_member_state(3, before)
    assert_same(stack.member_state(3), before, atol=0)
    plain = factory()
    plain.load_state_dict(stack.member_state(3))
    assert_same(plain.state_dict(), before, atol=0)


def test_evaluation_batched_equals_one_by_one():
    stack = stack_of(batchnorm)
    train_stacked(stack, indices(6, steps=2))
    idx = indices(7, steps=1)[0]
    batched = stack.evaluate(loss_fn, (X[idx], Y[idx]))
    looped = stack.evaluate(loss_fn, (X[idx], Y[idx]), loop=True)
    torch.testing.assert_close(batched, looped, atol=1e-12, rtol=0)
    assert stack.fallbacks == []


class Nonzero(nn.Module):
    """A module with no batching rule: its output's shape depends on its input's values."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(36, 2).double()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.lin(x).sum() * torch.nonzero(x > 0).shape[0]
        return out


def test_evaluation_falls_back_to_a_loop_and_says_which_operation(caplog):
    stack, x = StackedMembers(Nonzero, seeds=SEEDS), X[:8].expand(N, 8, 36)
    with caplog.at_level(logging.WARNING, logger="genepool.vectorised"):
        out = stack.evaluate(lambda model, x: model(x), x)
    assert stack.fallbacks == ["aten::nonzero"]
    assert "aten::nonzero" in caplog.text
    expected = [stack.module_for(i)(X[:8]) for i in range(N)]
    torch.testing.assert_close(out, torch.stack(expected))
    with pytest.raises(RuntimeError, match="nonzero"):
        stack.evaluate(lambda model, x: model(x), x, loop=False)


@given(st.integers(0, 2**32), st.integers(0, 1000), st.integers(0, 1000))
def test_a_members_stream_depends_on_its_keys_alone(seed, member, generation):
    def draws(*keys: int) -> Tensor:
        return torch.rand(4, generator=member_generator(*keys))

    assert torch.equal(draws(seed, member, generation), draws(seed, member, generation))
    assert not torch.equal(draws(seed, member, generation), draws(seed, member + 1, generation))
    assert not torch.equal(draws(seed, member, generation), draws(seed, member, generation + 1))


# -- hostile inputs ----------------------------------------------------------------------------
def twice() -> nn.Module:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.drop = nn.Linear(36, 3), Dropout(0.5)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.drop(self.drop(self.lin(x)))
            return out

    return Twice().double()


_widths = iter(range(3, 10**6))
_one = nn.Linear(2, 2)

CONSTRUCTORS: list[tuple[Callable[[], Any], str]] = [
    (lambda: StackedMembers(42, seeds=SEEDS), "'factory'"),  # type: ignore[arg-type]
    (lambda: StackedMembers(mlp, seeds=[]), "'seeds'"),
    (lambda: StackedMembers(mlp, seeds=[1, "2"]), "'seeds'"),  # type: ignore[list-item]
    (lambda: StackedMembers(mlp, seeds=[True]), "'seeds'"),
    (lambda: StackedMembers(mlp, seeds=SEEDS, device="nowhere"), "'device'"),
    (lambda: StackedMembers(lambda: 3, seeds=SEEDS), "nn.Module"),  # type: ignore[arg-type,return-value]
    (lambda: StackedMembers(lambda: _one, seeds=SEEDS), "fresh module"),
    (lambda: StackedMembers(lambda: nn.Linear(2, next(_widths)), seeds=SEEDS), "architecture"),
    (lambda: StackedMembers(lambda: nn.Sequential(nn.Dropout(0.1)), seeds=SEEDS), "Dropout\\(p\\)"),
    (lambda: StackedMembers(lambda: nn.BatchNorm1d(3, momentum=None), seeds=SEEDS), "momentum"),
    (lambda: StackedMembers(nn.ReLU, seeds=SEEDS), "parameters or buffers"),
]


@pytest.mark.parametrize(("make", "match"), CONSTRUCTORS)
def test_a_bad_construction_is_refused_with_the_fix(make, match):
    with pytest.raises(InvalidArgumentError, match=match):
        make()


def _state(**change: Any) -> dict[str, Any]:
    state: dict[str, Any] = batchnorm().state_dict()
    state.update(change)
    return {k: v for k, v in state.items() if v is not None}


CALLS: list[tuple[Callable[[StackedMembers], Any], str]] = [
    (lambda s: s.member_state(N), "'member'"),
    (lambda s: s.member_state(-1), "'member'"),
    (lambda s: s.member_state(True), "'member'"),
    (lambda s: s.module_for("0"), "'member'"),  # type: ignore[arg-type]
    (lambda s: s.copy_member(dst=9, src=0), "'dst'"),
    (lambda s: s.copy_member(dst=0, src=1.0), "'src'"),  # type: ignore[arg-type]
    (lambda s: s.load_member_state(0, [1, 2]), "'state'"),  # type: ignore[arg-type]
    (lambda s: s.load_member_state(0, _state(**{"0.weight": None})), "missing \\['0.weight'\\]"),
    (lambda s: s.load_member_state(0, _state(extra=torch.ones(1))), "unexpected \\['extra'\\]"),
    (lambda s: s.load_member_state(0, _state(**{"0.bias": torch.ones(9)})), "0.bias=\\(9,\\)"),
    (lambda s: s.load_member_state(0, _state(**{"0.bias": [0.0] * 8})), "0.bias=list"),
    (
        lambda s: s.load_member_state(0, _state(**{"1.num_batches_tracked": torch.tensor(1.0)})),
        "num_batches_tracked",
    ),
    (lambda s: s.set_dropout(0, 1.5), "'p'"),
    (lambda s: s.set_dropout(0, float("nan")), "'p'"),
    (lambda s: s.set_dropout(0, 0.1, module="9"), "'module'"),
    (lambda s: s.set_generator(0, 7), "'generator'"),  # type: ignore[arg-type]
    (lambda s: s.gradients(loss_fn, (X[:3], Y[:3])), "'batch'"),
    (lambda s: s.gradients(loss_fn, [1, 2]), "'batch'"),
    (lambda s: s.gradients(loss_fn, (X[:8].view(N, 2, 36), Y[:3])), "'batch'"),
    (lambda s: s.evaluate(loss_fn, ()), "'batch'"),
    (lambda s: s.gradients(loss_fn, SMALL, weights=LRS[:2]), "'weights'"),
]


@pytest.mark.parametrize(("call", "match"), CALLS)
def test_a_bad_call_is_refused_and_changes_nothing(call, match):
    stack = StackedMembers(batchnorm, seeds=SEEDS)
    before = [stack.member_state(i) for i in range(N)]
    with pytest.raises(InvalidArgumentError, match=match):
        call(stack)
    for i in range(N):
        assert_same(stack.member_state(i), before[i], atol=0)


def test_a_loss_that_is_not_a_scalar_is_refused():
    stack = StackedMembers(mlp, seeds=SEEDS)
    with pytest.raises(InvalidArgumentError, match="'loss_fn'"):
        stack.gradients(lambda model, batch: model(batch[0]), SMALL)


def test_a_dropout_called_twice_in_one_forward_is_refused():
    stack = StackedMembers(twice, seeds=SEEDS)
    with pytest.raises(InvalidArgumentError, match="each Dropout once"):
        stack.gradients(loss_fn, SMALL)
