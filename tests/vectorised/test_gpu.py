"""genepool.vectorised on a CUDA device (marked ``gpu``; skipped without one): a member's
trajectory is its own, it replays alone on the device, and a population too large for the
device's memory is refused. Run them with ``pytest -m gpu`` where a GPU is lent."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import genepool as gp
from genepool import vectorised as gpv
from genepool._errors import InvalidArgumentError

from .test_population import EVAL, X, Y, evaluate, final_models, loss, mlp, settings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def on_cuda(**more: Any) -> dict[str, Any]:
    data = gpv.Sample(X[:64], Y[:64], batch_size=8)
    return settings(data=data, device="cuda", **more)


def test_a_run_on_cuda_is_an_ordinary_run() -> None:
    result = gpv.run(**on_cuda())
    assert result.stop_reason == "budget"
    assert {m.step for m in result.members} == {12}
    assert any(e.kind == "exploit" for e in result.events)
    state = result.load()["model"]
    assert all(t.device.type == "cpu" for t in state.values())  # checkpoints on the CPU


def test_a_members_trajectory_on_cuda_is_its_own() -> None:
    first = {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3, "max_norm": 2.0}
    first |= {"dropout": 0.2, "loss_weight": 1.0}
    others = [dict(first, lr=0.02 * (i + 1), dropout=0.05 * i) for i in range(1, 4)]
    changed = [dict(c, lr=0.3, momentum=0.8) for c in others]
    runs = [gpv.run(**on_cuda(exploit=None, initial=[first, *c])) for c in (others, changed)]
    a, b = (final_models(r)[0] for r in runs)
    for k in a:  # cuBLAS may pick other kernels for other batches: close, not equal
        torch.testing.assert_close(a[k], b[k], atol=1e-9, rtol=0)


def test_a_member_on_cuda_replays_alone_on_cuda() -> None:
    result = gpv.run(**on_cuda())
    spec: dict[str, Any] = {"model": mlp, "loss": loss, "evaluate": evaluate, "eval_data": EVAL}
    data = gpv.Sample(X[:64], Y[:64], batch_size=8)
    member = gpv.trainable(**spec, data=data, ready=gp.Every(3), device="cuda")
    replayed = gp.replay(member, result.schedule())
    assert replayed.score == pytest.approx(result.best.score, abs=1e-8)


def wide() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(5, 4096), torch.nn.Linear(4096, 1)).double()


def test_a_population_too_large_for_the_device_is_refused() -> None:
    free, _ = torch.cuda.mem_get_info()
    members = int(free // (4096 * 6 * 8 * 3)) + 1  # its weights alone, three times, exceed it
    with pytest.raises(InvalidArgumentError, match="free on cuda"):
        gpv.run(**on_cuda(model=wide, population=members, space=gp.Space(lr=gp.Float(0.01, 0.1))))
