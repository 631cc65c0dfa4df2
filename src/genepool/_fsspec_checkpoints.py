"""Where :class:`FsspecCheckpoints` was imported from before the checkpoints became a
package: it lives in :mod:`genepool.checkpoints.fsspec` now."""

from __future__ import annotations

from genepool.checkpoints.fsspec import FsspecCheckpoints

__all__ = ["FsspecCheckpoints"]
