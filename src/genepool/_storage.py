"""A run's storage: the store and the checkpoint store its arguments name, opened (by
:func:`genepool.run`, ask/tell, :meth:`genepool.Result.open` and migration alike), and
the stores a run opened from a URL closed when it ends."""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import tempfile
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from genepool._errors import invalid
from genepool.checkpoints import CheckpointStore, MemoryCheckpoints, open_checkpoints
from genepool.clock import Clock
from genepool.store import MemoryStore, Store, open_store

__all__ = ["close_store", "closes_the_stores_it_opens", "open_storage"]

log = logging.getLogger("genepool")

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: The stores :func:`open_storage` opened from a URL within the current :func:`run`
#: call (``None`` outside one): the run closes them when it returns or raises.
_opened_by_run: contextvars.ContextVar[list[Store] | None] = contextvars.ContextVar(
    "genepool_opened_by_run", default=None
)


def closes_the_stores_it_opens(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Close, when ``fn`` returns or raises, every store it opened from a URL (a store
    passed in is the caller's, and stays open). The :class:`Result` a run returns
    reopens its store if asked for more (its history), and closes it again with
    :meth:`Result.close`."""

    @functools.wraps(fn)
    def closing(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        opened: list[Store] = []
        token = _opened_by_run.set(opened)
        try:
            return fn(*args, **kwargs)
        finally:
            _opened_by_run.reset(token)
            for store in opened:
                try:
                    close_store(store)
                except Exception:  # never hide the run's own outcome
                    log.warning("could not close %r", store, exc_info=True)

    return closing


def close_store(store: Store) -> None:
    """Close a store's connections, for a store that has them to close (a
    :class:`~genepool.store.SQLStore`; an in-memory store has none)."""
    close = getattr(store, "close", None)
    if callable(close):
        close()


def open_storage(
    storage: str | Store | None,
    checkpoints: str | os.PathLike[str] | CheckpointStore | None,
    workers: int,
    clock: Clock,
    *,
    read_only: bool = False,
    fsync: bool = False,
) -> tuple[Store, CheckpointStore]:
    """The store and the checkpoint store a run's arguments name. ``read_only``: to read
    a run back, opened so that nothing is written: a missing database is an error (not
    created), and the checkpoints' folder is neither created nor swept."""
    if storage is None and workers > 1:
        folder = tempfile.mkdtemp(prefix="genepool-")
        log.warning("several workers need a durable store: using %s", folder)
        storage = f"sqlite:///{folder}/pbt.db"
    owner = "Result.open" if read_only else "run"
    if storage is None:
        storage = "memory"
    if not isinstance(storage, (str, Store)):
        raise invalid(owner, "storage", "a URL ('sqlite:///pbt.db') or a Store", repr(storage))
    the_store = open_store(storage, clock=clock, read_only=read_only, owner=owner, name="storage")
    opened = _opened_by_run.get()
    if opened is not None and isinstance(storage, str) and storage != "memory":  # run() closes it
        opened.append(the_store)
    if isinstance(checkpoints, CheckpointStore):
        return the_store, checkpoints
    if checkpoints is None:
        if isinstance(the_store, MemoryStore):
            return the_store, MemoryCheckpoints()
        url = getattr(the_store, "url", "")
        if isinstance(url, str) and url.startswith("sqlite:///"):
            # beside the file: the path without the URL's query (which may hold a password)
            checkpoints = url[len("sqlite:///") :].split("?", 1)[0] + ".checkpoints"
        else:
            raise invalid(
                "run",
                "checkpoints",
                "a directory every worker can reach",
                "None",
                "Fix: checkpoints='/shared/genepool-checkpoints'.",
            )
    # a folder (a path or file://) is LocalCheckpoints'; s3://, memory://, ... FsspecCheckpoints'
    return the_store, open_checkpoints(checkpoints, read_only=read_only, fsync=fsync)
