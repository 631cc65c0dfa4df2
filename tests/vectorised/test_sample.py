"""Sample: a data source gathered for every member at once, the same batches as the
function it stands for, and refused inputs named."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from genepool import vectorised as gpv
from genepool._errors import InvalidArgumentError
from genepool.vectorised._inputs import Steps
from genepool.vectorised._stack import StackedMembers

from .test_population import X, Y, final_models, mlp, settings


def by_hand(generator: torch.Generator, member: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The function ``Sample(X[:64], Y[:64], batch_size=8)`` stands for."""
    idx = torch.randint(0, 64, (8,), generator=generator)
    return X[idx], Y[idx]


@given(seed=st.integers(0, 2**62), batch=st.integers(1, 70))
def test_a_members_batch_is_the_functions(seed: int, batch: int) -> None:
    sample = gpv.Sample(X[:64], Y[:64], batch_size=batch)
    g1, g2 = (torch.Generator().manual_seed(seed) for _ in range(2))
    for _ in range(3):  # the stream goes on the same way
        xb, yb = sample(g1, 0)
        idx = torch.randint(0, 64, (batch,), generator=g2)
        assert torch.equal(xb, X[idx])
        assert torch.equal(yb, Y[idx])


def test_one_tensor_gives_a_tensor_and_several_a_tuple() -> None:
    g = torch.Generator().manual_seed(0)
    assert isinstance(gpv.Sample(X, batch_size=2)(g, 0), torch.Tensor)
    assert len(gpv.Sample(X, Y, X, batch_size=2)(g, 0)) == 3


def test_the_stacked_batch_is_each_members_own() -> None:
    """Steps.batch gathers all members at once: member i's rows are those its own
    generator draws; a member that does not step gets a stand-in."""
    stack = StackedMembers(mlp, seeds=[1, 2, 3, 4])
    for i in range(4):
        stack.set_generator(i, torch.Generator().manual_seed(100 + i))
    steps = Steps(
        loss=print,
        data=gpv.Sample(X[:64], Y[:64], batch_size=8),
        evaluate=None,
        eval_data=None,
        metric="loss",
    )
    xb, yb = steps.batch(stack, [1, 3])
    assert xb.shape == (4, 8, 5)
    for i in (1, 3):
        expected = by_hand(torch.Generator().manual_seed(100 + i), i)
        assert torch.equal(xb[i], expected[0])
        assert torch.equal(yb[i], expected[1])
    assert torch.equal(xb[0], xb[1])


def test_a_run_with_a_sample_is_the_run_with_its_function() -> None:
    """Bit for bit: the same reports, the same decisions, the same final weights."""
    runs = [
        gpv.run(**settings(data=d)) for d in (by_hand, gpv.Sample(X[:64], Y[:64], batch_size=8))
    ]
    assert [(r.member, r.step, r.metrics) for r in runs[0].reports] == [
        (r.member, r.step, r.metrics) for r in runs[1].reports
    ]
    assert [(e.kind, e.member, e.step) for e in runs[0].events] == [
        (e.kind, e.member, e.step) for e in runs[1].events
    ]
    assert any(e.kind == "exploit" for e in runs[0].events)
    a, b = (final_models(r) for r in runs)
    assert all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m])


@pytest.mark.parametrize(
    ("tensors", "options", "match"),
    [
        ((), {"batch_size": 2}, r"'tensors'.*nothing"),
        ((X, "y"), {"batch_size": 2}, r"'tensors'.*one or more tensors"),
        ((torch.tensor(1.0),), {"batch_size": 2}, r"'tensors'"),
        ((X, Y[:3]), {"batch_size": 2}, r"same number of rows.*\[96, 3\]"),
        ((X[:0],), {"batch_size": 2}, r"at least 1"),
        ((X,), {"batch_size": 0}, r"'batch_size'.*int >= 1"),
        ((X,), {"batch_size": True}, r"'batch_size'"),
        ((X,), {"batch_size": 2.0}, r"'batch_size'"),
    ],
)
def test_bad_inputs_are_refused_by_name(tensors: Any, options: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        gpv.Sample(*tensors, **options)


def test_its_repr_shows_shapes_not_data() -> None:
    assert repr(gpv.Sample(X, Y, batch_size=4)) == "Sample((96, 5), (96, 1), batch_size=4)"
