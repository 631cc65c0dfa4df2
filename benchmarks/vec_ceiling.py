"""What the hardware allows, for benchmarks/vectorised.py: the arithmetic alone.

A training step with nothing around it: no sampling, no evaluation, no store, no
checkpoint. For one member, a plain PyTorch step (forward, cross entropy, backward,
``torch.optim.SGD`` with momentum) on one fixed batch; for ``n`` members, the same models
stacked (``torch.func.stack_module_state``), the forward under ``vmap(functional_call)``,
one backward of the summed losses and an in-place SGD update of every stacked tensor. The
time per step of each, best of a few repeats, gives the most member-steps per second any
driver could reach on this machine, and so the largest ratio a throughput target can ask
for here (and the smallest wall ratio of 16 members to one).

Run alone: python benchmarks/vec_ceiling.py [--quick]; benchmarks/vectorised.py prints it
beside its columns.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
import vec_workloads as w
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["ceiling"]


def _ms_per_call(fn: Callable[[], None], calls: int, repeats: int = 3) -> float:
    """Milliseconds per call of ``fn``, best of ``repeats`` timings of ``calls`` calls."""
    for _ in range(max(5, calls // 10)):  # warm-up
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    d = w.digits()
    return d["x_train"][: w.BATCH], d["y_train"][: w.BATCH]


def _plain_step(kind: str) -> Callable[[], None]:
    torch.manual_seed(0)
    model = w.make_model(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch()

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def _stacked_step(kind: str, n: int) -> Callable[[], None]:
    torch.manual_seed(0)
    models = [w.make_model(kind) for _ in range(n)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    momenta = {k: torch.zeros_like(v) for k, v in params.items()}
    x, y = _batch()
    xs, ys = x.expand(n, *x.shape).contiguous(), y.expand(n, *y.shape).contiguous()

    def loss(p: Any, b: Any, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (xx,)), yy)

    def step() -> None:
        losses = vmap(loss)(params, buffers, xs, ys)
        grads = torch.autograd.grad(losses.sum(), list(params.values()))
        with torch.no_grad():
            for (name, p), g in zip(params.items(), grads, strict=True):
                momenta[name].mul_(0.9).add_(g)
                p.sub_(0.01 * momenta[name])

    return step


def ceiling(kind: str, sizes: Iterable[int], *, calls: int = 200) -> dict[str, Any]:
    """The arithmetic of one step of ``kind``, one member plain and ``n`` stacked."""
    plain_ms = _ms_per_call(_plain_step(kind), calls)
    out: dict[str, Any] = {
        "plain_1_ms_per_step": round(plain_ms, 3),
        "plain_1_member_steps_per_s": round(1e3 / plain_ms),
    }
    for n in sizes:
        ms = _ms_per_call(_stacked_step(kind, n), max(10, calls // max(1, n // 16)))
        out[f"stacked_{n}_ms_per_step"] = round(ms, 3)
        out[f"stacked_{n}_member_steps_per_s"] = round(n * 1e3 / ms)
        out[f"stacked_{n}_wall_over_plain_1"] = round(ms / plain_ms, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 16 members only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    sizes, calls = ([16], 20) if args.quick else ([16, 64, 256], 200)
    print(json.dumps({kind: ceiling(kind, sizes, calls=calls) for kind in w.MODELS}))


if __name__ == "__main__":
    main()
