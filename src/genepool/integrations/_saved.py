"""The layout of a framework member's saved state: its format name and version, checked
on every load by each integration (Lightning, Hugging Face, Keras, JAX, scikit-learn)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genepool._errors import CheckpointError
from genepool._redact import shown

__all__ = ["checked_layout"]


def checked_layout(
    state: Any, *, fmt: str, version: int, what: str, where: str = "the checkpoint"
) -> Mapping[str, Any]:
    """``state`` if it is a saved state of the layout ``fmt`` at a version this genepool
    reads (at most ``version``).

    Args:
        state: What the checkpoint holds.
        fmt: The layout's name (``"genepool.keras"``); ``version`` the newest one read.
        what: The framework, for the message (``"Keras"``).
        where: Which checkpoint, for the message.

    Raises:
        CheckpointError: Another trainable wrote it (another layout, or none), or a newer
            genepool did (a newer version, or one that is not a whole number).
    """
    if not isinstance(state, Mapping) or state.get("format") != fmt:
        got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"{where} is not a {what} member's state ({fmt!r}; it holds {shown(got)}): "
            "another trainable wrote it. Fix: resume the run with the trainable that wrote it."
        )
    found = state.get("version")
    if type(found) is not int or found > version:
        raise CheckpointError(
            f"{where} holds a {what} state of layout version {shown(found)}, newer than "
            f"this genepool reads ({version}). Fix: upgrade genepool."
        )
    return state
