"""The one check of a framework member's saved layout (every integration's load)."""

from __future__ import annotations

from typing import Any

import pytest

import genepool as gp
from genepool.integrations._saved import checked_layout

FMT = "genepool.example"


def test_a_state_of_the_layout_at_a_version_read_is_returned() -> None:
    state = {"format": FMT, "version": 2, "x": 1}
    assert checked_layout(state, fmt=FMT, version=2, what="Example") is state


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"format": "genepool.other", "version": 1}, "not a Example member's state"),
        ([1, 2], "it holds 'list'"),
        ({"format": FMT, "version": 3}, "layout version 3, newer .* upgrade genepool"),
        ({"format": FMT}, "layout version None"),
        ({"format": FMT, "version": True}, "layout version True"),
        ({"format": FMT, "version": "2"}, "layout version '2'"),
    ],
)
def test_another_layout_or_a_version_not_read_is_refused(state: Any, message: str) -> None:
    with pytest.raises(gp.CheckpointError, match=message):
        checked_layout(state, fmt=FMT, version=2, what="Example", where="checkpoint 'c'")
