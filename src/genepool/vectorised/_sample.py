"""A data source for a vectorised run: batches drawn at random from tensors in memory.

``data=Sample(x, y, batch_size=32)`` is the same, batch for batch, as the function

.. code-block:: python

    def data(generator, member):
        i = torch.randint(0, len(x), (32,), generator=generator)
        return x[i], y[i]

but the driver draws each member's indices with the member's own generator and then
gathers every member's batch in one indexing operation, where a function is called once
per member and its batches stacked. A member's batches depend on its own stream alone, so
a member trains the same whatever shares the batch, and replays alone exactly.
"""

from __future__ import annotations

import numbers
from typing import Any

from genepool._errors import invalid, missing_dependency
from genepool._redact import shown

try:
    import torch
    from torch import Tensor
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.vectorised") from _err

__all__ = ["Sample"]


class Sample:
    """Batches of ``batch_size`` rows drawn uniformly, with replacement, from ``tensors``.

    Args:
        *tensors: One or more tensors with the same number of rows (inputs, targets).
        batch_size: Rows per batch.

    A batch is one tensor for one tensor given, else a tuple in the order given.

    Example:
        >>> import torch
        >>> from genepool import vectorised as gpv
        >>> x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
        >>> data = gpv.Sample(x, y, batch_size=3)
        >>> xb, yb = data(torch.Generator().manual_seed(0), 0)  # member 0's batch
        >>> xb.shape, bool((xb[:, 0] == 2 * yb).all())
        (torch.Size([3, 2]), True)
    """

    def __init__(self, *tensors: Tensor, batch_size: int) -> None:
        if not tensors or not all(isinstance(t, Tensor) and t.dim() >= 1 for t in tensors):
            got = ", ".join(shown(t) for t in tensors) or "nothing"
            raise invalid("Sample", "tensors", "one or more tensors with rows", got)
        rows = {len(t) for t in tensors}
        if len(rows) != 1 or 0 in rows:
            got = f"rows {[len(t) for t in tensors]}"
            raise invalid("Sample", "tensors", "the same number of rows (at least 1)", got)
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise invalid("Sample", "batch_size", "an int >= 1", shown(batch_size))
        self.tensors: tuple[Tensor, ...] = tensors
        self.batch_size: int = int(batch_size)
        self.rows: int = rows.pop()
        self._on: dict[torch.device, tuple[Tensor, ...]] = {}

    def __call__(self, generator: torch.Generator, member: int) -> Any:
        """One member's batch, drawn with its generator (the ``data`` function form)."""
        return self.gather(self.indices(generator))

    def indices(self, generator: torch.Generator) -> Tensor:
        """The rows of one batch, drawn with ``generator``, on its device."""
        size = (self.batch_size,)
        return torch.randint(0, self.rows, size, generator=generator, device=generator.device)

    def gather(self, indices: Tensor) -> Any:
        """The rows ``indices`` of every tensor (``(B,)`` for one batch, ``(N, B)`` for
        one per member), on the indices' device."""
        device = indices.device
        if device not in self._on:  # moved once per device, not at every step
            self._on[device] = tuple(t.to(device) for t in self.tensors)
        batch = tuple(t[indices] for t in self._on[device])
        return batch[0] if len(batch) == 1 else batch

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return f"Sample({shapes}, batch_size={self.batch_size})"
