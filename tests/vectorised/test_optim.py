"""The vectorised optimizers: each member follows torch.optim's rule for it alone.

Three members of a small MLP train on their own random batches for 30 steps, with an
explore (every hyperparameter kind of one member) and an exploit (a member takes another's
parameters and optimizer state, then new hyperparameters) on the way; each member's
parameters end where ``torch.optim`` (with ``clip_grad_norm_`` for clipping) takes the same
member alone. Then: a member's trajectory is bit-identical whatever its neighbours do, a
masked member is untouched, a member's state goes to a checkpoint and back, and hostile
input is a genepool error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch.func import functional_call, grad, stack_module_state, vmap  # noqa: E402

from genepool._errors import CheckpointError, InvalidArgumentError  # noqa: E402
from genepool.checkpoints import decode, encode  # noqa: E402
from genepool.vectorised._optim import SGD, Adam, AdamW, clip_grad_norm_  # noqa: E402

N, STEPS, EXPLORE_AT, EXPLOIT_AT = 3, 30, 10, 20


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(seed: int, dtype: Any) -> Any:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    return model.to(dtype)


def to_torch(hparams: dict[str, float]) -> dict[str, Any]:
    """Our hyperparameters as torch.optim's param group keys (max_norm is the test's)."""
    out: dict[str, Any] = {
        k: v for k, v in hparams.items() if k not in ("beta1", "beta2", "max_norm")
    }
    if "beta1" in hparams:
        out["betas"] = (hparams["beta1"], hparams["beta2"])
    return out


@dataclass
class Case:
    """An optimizer, torch's, each member's first hyperparameters, and the explores:
    ``(step, member, changes)``, both sides changed after that step's update."""

    ours: Any
    theirs: Any
    first: list[dict[str, float]]
    explores: list[tuple[int, int, dict[str, float]]]
    options: dict[str, Any] = field(default_factory=dict)


SGD_FIRST = [
    {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    {"lr": 0.02, "momentum": 0.5, "dampening": 0.0, "weight_decay": 0.0},
]
ADAM_FIRST = [
    {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.01},
    {"lr": 0.002, "beta1": 0.0, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.1},
]
ADAM_EXPLORE = {"lr": 0.02, "beta1": 0.7, "beta2": 0.95, "eps": 1e-4, "weight_decay": 0.02}
CLIP = [{"max_norm": 0.3}, {"max_norm": math.inf}, {"max_norm": 1.0}]
CASES = {
    # member 0 turns momentum on (its buffer starts lazily, as torch's does); member 1
    # turns it off (its buffer waits untouched) and on again (the old buffer goes on)
    "sgd": Case(
        SGD,
        torch.optim.SGD,
        SGD_FIRST,
        [
            (EXPLORE_AT, 0, {"lr": 0.03, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.05}),
            (EXPLORE_AT, 1, {"lr": 0.07, "momentum": 0.0}),
            (25, 1, {"momentum": 0.6, "dampening": 0.0}),
        ],
    ),
    "sgd-nesterov-clipped": Case(
        SGD,
        torch.optim.SGD,
        [
            {**h, "momentum": 0.3 + h["lr"], "dampening": 0.0, **c}
            for h, c in zip(SGD_FIRST, CLIP, strict=True)
        ],
        [(EXPLORE_AT, i, {"lr": 0.03, "momentum": 0.6, "weight_decay": 0.05}) for i in (0, 1)]
        + [(EXPLORE_AT, 2, {"max_norm": 0.1})],
        {"nesterov": True},
    ),
    "adam": Case(Adam, torch.optim.Adam, ADAM_FIRST, [(EXPLORE_AT, 0, ADAM_EXPLORE)]),
    "adam-amsgrad-clipped": Case(
        Adam,
        torch.optim.Adam,
        [{**h, **c} for h, c in zip(ADAM_FIRST, CLIP, strict=True)],
        [(EXPLORE_AT, 0, {**ADAM_EXPLORE, "max_norm": 0.05}), (EXPLORE_AT, 1, ADAM_EXPLORE)],
        {"amsgrad": True},
    ),
    "adamw": Case(
        AdamW,
        torch.optim.AdamW,
        [{**h, "weight_decay": 0.5 - h["weight_decay"]} for h in ADAM_FIRST],
        [(EXPLORE_AT, 1, ADAM_EXPLORE)],
    ),
}
#: After the exploit, member 2 (a copy of member 0) is explored to these.
AFTER_EXPLOIT = {"lr": 0.015, "momentum": 0.3, "beta1": 0.85, "weight_decay": 0.03}


def column(hparams: list[dict[str, float]], name: str) -> list[float]:
    return [h[name] for h in hparams]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_member_follows_torch_optim_through_an_explore_and_an_exploit(
    case: str, dtype: Any
) -> None:
    ours, theirs, options = CASES[case].ours, CASES[case].theirs, CASES[case].options
    hparams = copy.deepcopy(CASES[case].first)
    models = [make_model(seed, dtype) for seed in range(N)]
    params, _ = stack_module_state(models)
    names = list(hparams[0])
    opt = ours(params, **options, **{name: column(hparams, name) for name in names})
    torch_opts = [
        theirs(m.parameters(), **to_torch(h), **options)
        for m, h in zip(models, hparams, strict=True)
    ]
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p: dict[str, Any], x: Any, y: Any) -> Any:
        return ((functional_call(base, p, (x,)) - y) ** 2).mean()

    data = torch.Generator().manual_seed(7)
    for step in range(STEPS):
        x = torch.randn(N, 8, 4, generator=data, dtype=dtype)
        y = torch.randn(N, 8, 2, generator=data, dtype=dtype)
        opt.step(vmap(grad(loss))(params, x, y))
        for i, (model, torch_opt) in enumerate(zip(models, torch_opts, strict=True)):
            torch_opt.zero_grad()
            loss_i = ((model(x[i]) - y[i]) ** 2).mean()
            loss_i.backward()
            if "max_norm" in hparams[i]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hparams[i]["max_norm"])
            torch_opt.step()
        for _, i, changes in [e for e in CASES[case].explores if e[0] == step]:
            hparams[i].update(changes)
            opt.set(i, **changes)
            apply(torch_opts[i], hparams[i])
        if step == EXPLOIT_AT:  # member 2 takes member 0's weights and state, then explores
            opt.copy_member(dst=2, src=0)
            with torch.no_grad():
                for p in params.values():
                    p[2] = p[0]
            models[2] = copy.deepcopy(models[0])
            torch_opts[2] = theirs(models[2].parameters(), **to_torch(hparams[0]), **options)
            torch_opts[2].load_state_dict(copy.deepcopy(torch_opts[0].state_dict()))
            hparams[2] = {**hparams[0], **{k: v for k, v in AFTER_EXPLOIT.items() if k in names}}
            opt.set(2, **hparams[2])
            apply(torch_opts[2], hparams[2])
    tol = {"atol": 1e-10, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-6, "rtol": 0}
    for i, model in enumerate(models):
        assert opt.hparams(i) == pytest.approx(hparams[i])
        for name, p in model.named_parameters():
            torch.testing.assert_close(params[name][i], p, **tol)


def apply(torch_opt: Any, hparams: dict[str, float]) -> None:
    torch_opt.param_groups[0].update(to_torch(hparams))


def random_grads(shapes: dict[str, tuple[int, ...]], seeds: list[int]) -> dict[str, Any]:
    """Each member's gradients from its own generator (a NaN member for a negative seed)."""
    out: dict[str, Any] = {}
    for name, shape in shapes.items():
        rows = []
        for seed in seeds:
            g = torch.Generator().manual_seed(abs(seed) * 1000 + len(out))
            row = torch.randn(shape, generator=g, dtype=torch.float64)
            rows.append(row * math.nan if seed < 0 else row)
        out[name] = torch.stack(rows)
    return out


SHAPES = {"w": (3, 2), "b": (2,)}
MAKERS: dict[str, Callable[[dict[str, Any], list[dict[str, float]]], Any]] = {
    "sgd-nesterov": lambda p, h: SGD(
        p, nesterov=True, max_norm=column(h, "max_norm"), **sgd_columns(h)
    ),
    "sgd": lambda p, h: SGD(p, **sgd_columns(h)),
    "adam-amsgrad": lambda p, h: Adam(p, amsgrad=True, lr=column(h, "lr"), eps=column(h, "eps")),
    "adamw": lambda p, h: AdamW(p, max_norm=column(h, "max_norm"), lr=column(h, "lr")),
}


def sgd_columns(h: list[dict[str, float]]) -> dict[str, Any]:
    return {"lr": column(h, "lr"), "momentum": column(h, "momentum")}


def member_hparams(i: int) -> dict[str, float]:
    return {"lr": 0.01 * (i + 1), "momentum": 0.5 + 0.1 * i, "eps": 10.0**-i, "max_norm": i + 0.5}


def trajectory(maker: str, others: list[int], hparams: list[dict[str, float]]) -> dict[str, Any]:
    """Train three members on random gradients; member 0's are the same whatever ``others``."""
    params = {name: torch.ones((N, *shape), dtype=torch.float64) for name, shape in SHAPES.items()}
    opt = MAKERS[maker](params, hparams)
    for step in range(12):
        seeds = [step + 1] + [seed * (step + 3) for seed in others]
        active = torch.tensor([True, step % 3 != 0, True])
        opt.step(random_grads(SHAPES, seeds), active=active)
        if step == 6:
            opt.copy_member(dst=2, src=1)
    return {"params": {k: v[0].clone() for k, v in params.items()}, **opt.member_state(0)}


@pytest.mark.parametrize("maker", list(MAKERS))
def test_a_members_trajectory_is_bit_identical_whatever_its_neighbours_do(maker: str) -> None:
    alone = trajectory(maker, [1, 2], [member_hparams(i) for i in range(N)])
    crowded = trajectory(maker, [-5, 9], [member_hparams(0), member_hparams(2), {
        **member_hparams(1), "lr": 3.0, "eps": 0.5, "max_norm": 1e-9}])  # fmt: skip
    assert_identical(alone, crowded)


def assert_identical(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_identical(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype
        assert torch.equal(a, b), (a, b)
    else:
        assert a == b


@pytest.mark.parametrize("maker", list(MAKERS))
def test_a_masked_member_stays_bit_identical_even_with_nan_gradients(maker: str) -> None:
    params = {name: torch.randn((N, *shape), dtype=torch.float64) for name, shape in SHAPES.items()}
    opt = MAKERS[maker](params, [member_hparams(i) for i in range(N)])
    opt.step(random_grads(SHAPES, [1, 2, 3]))
    before = {"params": {k: v[1].clone() for k, v in params.items()}, **opt.member_state(1)}
    others = {k: v[[0, 2]].clone() for k, v in params.items()}
    for _ in range(3):
        opt.step(random_grads(SHAPES, [4, -1, 5]), active=torch.tensor([True, False, True]))
    assert_identical(
        before, {"params": {k: v[1] for k, v in params.items()}, **opt.member_state(1)}
    )
    assert all(not torch.equal(others[k], params[k][[0, 2]]) for k in params)
    assert all(torch.isfinite(p).all() for p in params.values())


def test_a_fresh_member_has_torchs_lazy_state_and_a_copy_carries_the_step_count() -> None:
    params = {"w": torch.zeros(N, 2, dtype=torch.float64)}
    opt = Adam(params, lr=0.1)
    state = opt.member_state(1)
    assert state["step"] == 0
    assert not state["exp_avg"]["w"].any()
    opt.step({"w": torch.ones(N, 2, dtype=torch.float64)}, active=torch.tensor([True, False, True]))
    opt.step({"w": torch.ones(N, 2, dtype=torch.float64)})
    assert [opt.member_state(i)["step"] for i in range(N)] == [2, 1, 2]
    opt.copy_member(dst=1, src=0, hparams=False)
    assert opt.member_state(1)["step"] == 2
    sgd = SGD(params, momentum=[0.0, 0.9, 0.9], dampening=0.5)
    sgd.step({"w": torch.ones(N, 2, dtype=torch.float64)}, active=torch.tensor([True, False, True]))
    assert [sgd.member_state(i)["has_momentum_buffer"] for i in range(N)] == [False, False, True]
    sgd.step({"w": torch.full((N, 2), 2.0, dtype=torch.float64)})
    assert [sgd.member_state(i)["has_momentum_buffer"] for i in range(N)] == [False, True, True]
    assert sgd.member_state(1)["momentum_buffer"]["w"].tolist() == [2.0, 2.0]  # torch's first
    assert sgd.member_state(2)["momentum_buffer"]["w"].tolist() == [1.9, 1.9]  # 0.9 * 1 + 0.5 * 2


def test_copy_member_copies_hyperparameters_unless_told_not_to() -> None:
    opt = SGD({"w": torch.zeros(N, 2)}, lr=[0.1, 0.2, 0.3])
    opt.copy_member(dst=0, src=1, hparams=False)
    assert opt.hparams(0)["lr"] == 0.1
    opt.copy_member(dst=0, src=2)
    assert opt.hparams(0)["lr"] == 0.3
    assert opt.hyperparameters["lr"].tolist() == [0.3, 0.2, 0.3]


@pytest.mark.parametrize("maker", list(MAKERS))
def test_a_members_state_goes_through_a_checkpoint_and_back(maker: str) -> None:
    params = {name: torch.randn((N, *shape), dtype=torch.float64) for name, shape in SHAPES.items()}
    opt = MAKERS[maker](params, [member_hparams(i) for i in range(N)])
    for step in range(3):
        opt.step(random_grads(SHAPES, [step + 1, step + 7, step + 9]))
    saved = decode(encode({"opt": opt.member_state(0)}))["opt"]
    opt.load_member_state(2, saved)
    with torch.no_grad():
        for p in params.values():
            p[2] = p[0]
    assert_identical(opt.member_state(2), opt.member_state(0))
    opt.step(random_grads(SHAPES, [3, 4, 3]))
    assert all(torch.equal(p[0], p[2]) for p in params.values())


def test_clip_grad_norm_clips_each_member_as_torch_does_alone() -> None:
    grads = random_grads(SHAPES, [1, 2, 3])
    max_norm = torch.tensor([0.5, math.inf, 1.0])
    expected = []
    for i in range(N):
        alone = [torch.nn.Parameter(torch.zeros_like(g[i])) for g in grads.values()]
        for p, g in zip(alone, grads.values(), strict=True):
            p.grad = g[i].clone()
        norm = torch.nn.utils.clip_grad_norm_(alone, float(max_norm[i]))
        expected.append((norm, [p.grad for p in alone]))
    untouched = {k: g[1].clone() for k, g in grads.items()}
    norms = clip_grad_norm_(grads, max_norm)
    for i, (norm, clipped) in enumerate(expected):
        torch.testing.assert_close(norms[i], norm, atol=1e-12, rtol=0)
        for g, want in zip(grads.values(), clipped, strict=True):
            torch.testing.assert_close(g[i], want, atol=1e-12, rtol=0)
    assert_identical(untouched, {k: g[1] for k, g in grads.items()})


# -- hostile input ---------------------------------------------------------------------

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
VALID: dict[str, Callable[[float], bool]] = {
    "lr": lambda v: 0 <= v < math.inf,
    "momentum": lambda v: 0 <= v < math.inf,
    "dampening": math.isfinite,
    "weight_decay": lambda v: 0 <= v < math.inf,
    "beta1": lambda v: 0 <= v < 1,
    "beta2": lambda v: 0 <= v < 1,
    "eps": lambda v: 0 <= v < math.inf,
    "max_norm": lambda v: v >= 0,
}


@given(name=st.sampled_from(sorted(VALID)), value=finite_or_not, member=st.integers(0, N - 1))
def test_a_hyperparameter_out_of_range_is_refused_and_changes_nothing(
    name: str, value: float, member: int
) -> None:
    ours: Any = SGD if name in ("momentum", "dampening") else Adam
    opt = ours({"w": torch.zeros(N, 2)}, max_norm=1.0)
    before = opt.hyperparameters
    if VALID[name](value):
        opt.set(member, **{name: value})
        assert opt.hparams(member)[name] == value
        ours({"w": torch.zeros(N, 2)}, **{name: [value] * N})
    else:
        with pytest.raises(InvalidArgumentError, match=f"'{name}' parameter of {ours.__name__}"):
            opt.set(member, **{name: value})
        assert_identical(before, opt.hyperparameters)
        with pytest.raises(InvalidArgumentError, match=name):
            ours({"w": torch.zeros(N, 2)}, **{name: torch.full((N,), value, dtype=torch.float64)})


hostile = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.lists(st.floats(0, 1), max_size=4),
    st.just(torch.zeros(2)),
    st.just(torch.zeros(N, dtype=torch.complex64)),
    st.just({"lr": 0.1}),
)


@given(value=hostile)
def test_hostile_arguments_are_invalid_argument_errors(value: Any) -> None:
    params = {"w": torch.zeros(N, 2)}
    opt = Adam(params)
    calls: list[Callable[[], Any]] = [
        lambda: Adam(params, lr=value),
        lambda: opt.set(value, lr=0.1),
        lambda: opt.set(0, lr=value),
        lambda: opt.copy_member(dst=value, src=0),
        lambda: opt.step({"w": value}),
        lambda: opt.step({"w": torch.zeros(N, 2)}, active=value),
        lambda: Adam(value),
        lambda: SGD(params, nesterov=value),
    ]
    for call in calls:  # None where the value happened to be valid (lr=1, member 2, ...)
        err = error_of(call)
        assert err is None or " Got " in str(err)


def error_of(call: Callable[[], Any]) -> InvalidArgumentError | None:
    try:
        call()
    except InvalidArgumentError as err:
        return err
    return None


def test_wrong_gradients_name_the_parameter_and_the_fix() -> None:
    opt = SGD({"w": torch.zeros(N, 2), "b": torch.zeros(N)})
    with pytest.raises(InvalidArgumentError, match=r"'grads' parameter of SGD must be a dict"):
        opt.step({"w": torch.zeros(N, 2)})
    with pytest.raises(InvalidArgumentError, match=r"grads\['b'\].*torch.float32 tensor of shape"):
        opt.step({"w": torch.zeros(N, 2), "b": torch.zeros(N + 1)})
    with pytest.raises(InvalidArgumentError, match=r"grads\['b'\]"):
        opt.step({"w": torch.zeros(N, 2), "b": torch.zeros(N, dtype=torch.float64)})
    with pytest.raises(InvalidArgumentError, match="'active'"):
        opt.step({"w": torch.zeros(N, 2), "b": torch.zeros(N)}, active=torch.ones(N))
    with pytest.raises(InvalidArgumentError, match="'params'"):
        SGD({"w": torch.zeros(N, 2), "b": torch.zeros(N + 1)})
    with pytest.raises(InvalidArgumentError, match="'params'"):
        SGD({"w": torch.zeros(N, 2, dtype=torch.int64)})
    with pytest.raises(InvalidArgumentError, match=r"among \['lr'"):
        opt.set(0, beta1=0.9)


def test_nesterov_follows_torchs_rule_at_construction_and_at_every_set() -> None:
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, nesterov=True)
    with pytest.raises(InvalidArgumentError, match=r"nesterov=True with member 0's momentum=0\.0"):
        SGD({"w": torch.zeros(N, 2)}, nesterov=True)
    opt = SGD({"w": torch.zeros(N, 2)}, momentum=0.9, nesterov=True)
    for bad in ({"momentum": 0.0}, {"dampening": 0.1}):
        with pytest.raises(InvalidArgumentError, match="nesterov=False"):
            opt.set(1, **bad)
    assert opt.hparams(1) == {"lr": 1e-3, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0}


def corruptions(state: dict[str, Any]) -> Iterator[Any]:
    yield None
    yield {k: v for k, v in state.items() if k != "step"}
    yield {**state, "extra": 1}
    yield {**state, "step": -1}
    yield {**state, "step": 2.5}
    yield {**state, "step": True}
    yield {**state, "hparams": {**state["hparams"], "lr": math.nan}}
    yield {**state, "hparams": {"lr": 0.1}}
    yield {**state, "hparams": {**state["hparams"], "lr": "0.1"}}
    yield {**state, "exp_avg": {"w": torch.zeros(3)}}
    yield {**state, "exp_avg": {"w": torch.zeros(2, dtype=torch.int64)}}
    yield {**state, "exp_avg": {"v": torch.zeros(2)}}
    yield {**state, "exp_avg_sq": [1, 2]}


def test_a_corrupt_member_state_is_a_checkpoint_error_and_changes_nothing() -> None:
    opt = Adam({"w": torch.zeros(N, 2)}, lr=[0.1, 0.2, 0.3])
    opt.step({"w": torch.ones(N, 2)})
    good, before = opt.member_state(0), opt.member_state(1)
    for bad in corruptions(good):
        with pytest.raises(CheckpointError, match="member 1"):
            opt.load_member_state(1, bad)
        assert_identical(before, opt.member_state(1))
    with pytest.raises(InvalidArgumentError, match="'member' parameter of Adam"):
        opt.load_member_state(N, good)
