"""A Keras member's state as genepool checkpoints it, and its random states.

- :func:`saved` / :func:`load`: the model's weights, the optimizer's variables (its step
  count ``iterations``, moments, learning-rate variable, EMA copies) and the model's
  seed generators, as torch tensors (Keras on PyTorch holds each variable as one),
  loaded in place by ``assign``: the same model and optimizer go on.
- :func:`rng_state` / :func:`set_rng_state` / :func:`reseed`: the random states a member
  draws from that other members share: the global torch, NumPy and Python ones
  (:mod:`genepool.integrations._torch_rng`: Keras shuffles with torch's) and Keras' own
  global seed generator (``keras.random`` calls without a seed), if made.

Used by :mod:`genepool.integrations.keras`, which imports Keras on its torch backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from genepool._errors import CheckpointError
from genepool.integrations._saved import checked_layout
from genepool.integrations._torch_rng import (
    global_rng_state,
    reseed_global_rng,
    set_global_rng_state,
)

__all__ = ["STATE_FORMAT", "STATE_VERSION", "load", "reseed", "rng_state", "saved", "set_rng_state"]

#: Name and version of a member's saved layout; a newer version is refused.
STATE_FORMAT = "genepool.keras"
STATE_VERSION = 1


def saved(model: Any, *, epoch: int) -> dict[str, Any]:
    """The member's state now (copies): weights, optimizer variables, seed generators."""
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "epoch": epoch,
        "weights": [_copy(v) for v in model.weights],
        "optimizer": [_copy(v) for v in model.optimizer.variables],
        "seeds": [_copy(v) for v in _seed_states(model)],
    }


def load(model: Any, payload: Mapping[str, Any], *, seeds: bool) -> None:
    """Load a saved state (the member's own, or a donor's) into ``model`` in place; its
    seed generators too if ``seeds`` (a donor's are reseeded instead)."""
    checked_layout(payload, fmt=STATE_FORMAT, version=STATE_VERSION, what="Keras")
    _assign("weights", model.weights, payload["weights"])
    _assign("optimizer", model.optimizer.variables, payload["optimizer"])
    if seeds:
        _assign("seeds", _seed_states(model), payload["seeds"])


def rng_state() -> dict[str, Any]:
    """The shared random states now: global torch, NumPy, Python, and Keras' generator."""
    keras_seed = _keras_global_seed()
    return {
        "global": global_rng_state(),
        "keras": None if keras_seed is None else _copy(keras_seed.state),
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    """Set the shared random states from :func:`rng_state`'s value."""
    set_global_rng_state(rng["global"])
    keras_seed = _keras_global_seed()
    if keras_seed is not None and rng.get("keras") is not None:
        keras_seed.state.assign(rng["keras"])


def reseed(rng: np.random.Generator, *, model: Any = None) -> None:
    """A new stream of each random state the member draws from, from ``rng`` (its own
    stream): the shared ones, and ``model``'s seed generators (dropout masks)."""
    reseed_global_rng(rng)
    own = [] if model is None else _seed_states(model)
    for state in [*own, *_global_seed_states()]:
        state.assign(np.array([rng.integers(1, 2**30), 0]).astype(_dtype(state)))


def _seed_states(model: Any) -> list[Any]:
    """The state variables of the model's seed generators (in ``variables``, not in
    ``weights``), in the model's order."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _keras_global_seed() -> Any:
    """Keras' global seed generator, if made (``keras.random`` calls without a seed)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a Keras that moved it: none to keep
        return None
    return global_state.get_global_attribute("global_seed_generator")


def _global_seed_states() -> list[Any]:
    keras_seed = _keras_global_seed()
    return [] if keras_seed is None else [keras_seed.state]


def _copy(variable: Any) -> Any:
    """A copy of a variable's value, as a torch tensor on the CPU."""
    return variable.value.detach().cpu().clone()


def _dtype(variable: Any) -> str:
    return str(variable.dtype)


def _assign(part: str, variables: Sequence[Any], values: Sequence[Any]) -> None:
    """Assign ``values`` to ``variables`` in order, refusing a checkpoint of another model."""
    shapes = [tuple(v.shape) for v in variables]
    saved_shapes = [tuple(x.shape) for x in values]
    if shapes != saved_shapes:
        raise CheckpointError(
            f"the checkpoint's {part} ({len(values)} variables) do not fit the model's "
            f"({len(variables)}): shapes {saved_shapes[:4]}... against {shapes[:4]}.... Fix: "
            "resume a run with the model (and optimizer) that wrote it."
        )
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value.to(variable.value.device))
