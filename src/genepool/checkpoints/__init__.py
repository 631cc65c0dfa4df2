"""Checkpoints: immutable blobs with ids, written once and read by any member (see
:class:`CheckpointStore` for the contract).

The package holds, one thing to a module:

* ``_base``: the contract, :class:`CheckpointStore`, with the rules every backend keeps
  in its docstring, and the ownership of run folders written once for all backends;
* ``_codec``: the payload's format, which never runs code when read (:func:`encode`,
  :func:`decode`);
* ``_layout``: the folders' layout, run names and ids, the manifest's text and the owner
  marker's (:class:`Owner`);
* ``memory``: :class:`MemoryCheckpoints`, in this process's memory;
* ``local``: :class:`LocalCheckpoints`, in a local (or mounted) folder, with its file
  procedures (``_files``) and spare folders (``_spares``);
* ``fsspec``: :class:`FsspecCheckpoints`, under a remote fsspec URL (``s3://``,
  ``memory://``, ...) through a bucket (``_bucket``); imported on first use, so that
  importing genepool does not import fsspec;
* ``_open``: :func:`open_checkpoints`, the store a path or URL names: a plain path or a
  ``file://`` URL is a local folder, so the rename-based procedures exist once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genepool._lazy import lazy_attributes

# the names after "as" are importable from here as they were before the package: the
# formats' names and versions, the sweep's grace, the spares' bounds, the check of a run name
from genepool.checkpoints._base import SWEEP_GRACE_SECONDS as SWEEP_GRACE_SECONDS
from genepool.checkpoints._base import CheckpointStore
from genepool.checkpoints._codec import FORMAT_VERSION, decode, encode
from genepool.checkpoints._layout import MANIFEST_FILE as MANIFEST_FILE
from genepool.checkpoints._layout import MANIFEST_FORMAT as MANIFEST_FORMAT
from genepool.checkpoints._layout import OWNER_FILE as OWNER_FILE
from genepool.checkpoints._layout import OWNER_FORMAT as OWNER_FORMAT
from genepool.checkpoints._layout import PAYLOAD_FILE as PAYLOAD_FILE
from genepool.checkpoints._layout import TMP_PREFIX as TMP_PREFIX
from genepool.checkpoints._layout import Owner
from genepool.checkpoints._layout import check_run_name as check_run_name
from genepool.checkpoints._open import open_checkpoints as open_checkpoints
from genepool.checkpoints._spares import SPARE_MAX_AGE_SECONDS as SPARE_MAX_AGE_SECONDS
from genepool.checkpoints._spares import SPARE_MAX_BYTES as SPARE_MAX_BYTES
from genepool.checkpoints._spares import SPARES_PER_RUN as SPARES_PER_RUN
from genepool.checkpoints.local import LocalCheckpoints
from genepool.checkpoints.memory import MemoryCheckpoints

if TYPE_CHECKING:
    from genepool.checkpoints.fsspec import FsspecCheckpoints as FsspecCheckpoints

__all__ = [
    "FORMAT_VERSION",
    "CheckpointStore",
    "LocalCheckpoints",
    "MemoryCheckpoints",
    "Owner",
    "decode",
    "encode",
]

__getattr__ = lazy_attributes(
    __name__, globals(), {"FsspecCheckpoints": "genepool.checkpoints.fsspec"}, keep=False
)
