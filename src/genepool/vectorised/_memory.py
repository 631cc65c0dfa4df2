"""Whether a vectorised population fits in its device's memory, checked before it trains.

A population of N members holds N times one member's tensors at once, and the batched
step holds N times one member's activations: a population that does not fit fails at its
first step (a CUDA out-of-memory error) or makes the machine swap, after the run was
created. :func:`member_bytes` estimates one member's share from the probe that checks the
arguments (one member built and stepped once): its parameters, their gradients and the
step's temporaries, the optimizer's state, the buffers, the tensors autograd saved for
the backward pass (measured, with ``saved_tensors_hooks``), and its batch.
:func:`check_fits` refuses, with the estimate, a population whose share exceeds what the
device has free (CUDA: ``torch.cuda.mem_get_info``; the CPU: the memory available).

It is an estimate: the evaluation's activations and the allocator's fragmentation are not
counted, hence the margin (:data:`MARGIN`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from genepool._capacity import available_memory, size_text
from genepool._errors import invalid, missing_dependency

try:
    import torch
    from torch import Tensor
    from torch.utils._pytree import tree_flatten
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["MARGIN", "SavedTensors", "available_bytes", "check_fits", "member_bytes"]

#: The share of the free memory a population may plan to use.
MARGIN = 0.8
T = TypeVar("T")


class SavedTensors:
    """``with SavedTensors() as saved: ...``: the bytes of the distinct tensors autograd
    saved for the backward pass during the block (``saved.bytes``), those sharing the
    storage of a tensor in ``exclude`` (the parameters, counted apart) left out."""

    def __init__(self, exclude: Any = ()) -> None:
        self._excluded = {_where(t) for t in tree_flatten(exclude)[0] if isinstance(t, Tensor)}
        self._seen: set[tuple[Any, int]] = set()
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: Tensor) -> Tensor:
        where = _where(t)
        if where not in self._excluded and where not in self._seen:
            self._seen.add(where)
            self.bytes += t.untyped_storage().nbytes()
        return t

    def __enter__(self) -> SavedTensors:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    def measure(self, fn: Callable[[], T]) -> T:
        """``fn()``, its saved tensors counted."""
        with self:
            return fn()


def _where(t: Tensor) -> tuple[Any, int]:
    return (t.device, t.untyped_storage().data_ptr())


def _unpack(t: Tensor) -> Tensor:
    return t


def _nbytes(tree: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(tree)[0] if isinstance(t, Tensor))


def member_bytes(
    *, params: Any, buffers: Any, optimizer_state: Any, activations: int, batch: Any
) -> int:
    """One member's share of a population's memory: its parameters three times (the
    values, their gradients, the optimizer step's temporaries), its optimizer state, its
    buffers, the activations saved for its backward pass twice (saved, and the backward
    pass's own), and its batch. Each argument is one member's."""
    return (
        3 * _nbytes(params)
        + _nbytes(optimizer_state)
        + _nbytes(buffers)
        + 2 * activations
        + _nbytes(batch)
    )


def available_bytes(device: torch.device) -> int | None:
    """The bytes free on ``device`` now (``None``: unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return available_memory()
    return None


def check_fits(population: int, per_member: int, device: torch.device) -> None:
    """Refuse a population whose share of memory exceeds :data:`MARGIN` of what
    ``device`` has free.

    Raises:
        InvalidArgumentError: Naming ``population``, the estimate (per member and in all),
            the memory free and the fix.
    """
    free = available_bytes(device)
    if free is None or population * per_member <= MARGIN * free:
        return
    fits = int(MARGIN * free) // max(per_member, 1)
    raise invalid(
        "genepool.vectorised.run",
        "population",
        f"small enough to fit in the memory free on {device}",
        f"population={population:,}, which needs about {size_text(population * per_member)} "
        f"({size_text(per_member)} per member: weights, gradients, optimizer state, "
        f"activations, batch) while {size_text(free)} is free",
        f"Fix: a population of at most {fits:,}, a smaller batch or model, or a device "
        "with more memory.",
    )
