"""A bucket: the fsspec filesystem of a URL and the few object operations that
:class:`~genepool.checkpoints.FsspecCheckpoints` builds on (read, list afresh, write,
remove), each turning a filesystem's error into a genepool one whose text never shows a
password or token of the URL.

The filesystem is opened from the URL and its ``storage_options``, and opened again in a
process that unpickles the bucket (an executor sends the checkpoints to its workers, never
an open connection).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

from genepool._errors import CheckpointError, MissingDependencyError, invalid, missing_dependency
from genepool._redact import MASK, redact_url, url_secrets

__all__ = ["Bucket", "mtime"]

log = logging.getLogger("genepool.checkpoints")

#: The keys under which fsspec backends give an object's modification time.
_TIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


class Bucket:
    """The objects under a URL.

    Args:
        url: The URL (its root must name a bucket or a directory).
        options: The keyword arguments of its fsspec filesystem.

    Raises:
        InvalidArgumentError: A URL whose protocol fsspec does not know, options its
            filesystem refuses, or a URL that names no bucket or directory.
        MissingDependencyError: fsspec, or the package of the URL's protocol, is missing.
    """

    def __init__(self, url: str, options: Mapping[str, Any]) -> None:
        self.url = url
        self.shown = redact_url(url)  # for messages and repr: no password or token
        self.options = dict(options)
        self._lock = threading.Lock()
        self._fs: Any = None
        self._fs, self.root = self._connect()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: the URL and options, not the open filesystem."""
        state = self.__dict__.copy()
        state["_fs"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (opened again after unpickling)."""
        fs = self._fs
        if fs is None:
            with self._lock:
                if self._fs is None:
                    self._fs, _ = self._connect()
                fs = self._fs
        return fs

    # -- messages ------------------------------------------------------------------------
    def text(self, err: BaseException) -> str:
        """An error's text for a message: no password or token of the URL in it."""
        text = redact_url(str(err))
        for secret in url_secrets(self.url):
            text = text.replace(secret, MASK)
        return text

    def cause(self, err: BaseException) -> BaseException | None:
        """``err`` as the cause of a genepool error, unless its text shows a password or
        token of the URL (then none: the message already has its text, hidden)."""
        return None if self.text(err) != str(err) else err

    # -- paths ---------------------------------------------------------------------------
    def join(self, relative: str) -> str:
        """The path of ``relative`` below the root."""
        return f"{self.root}/{relative}"

    def relative(self, name: str) -> list[str] | None:
        """The parts of a listed path below the root, or None if it is not below it."""
        name = name.rstrip("/")
        if not name.startswith(self.root + "/"):
            return None
        return name[len(self.root) + 1 :].split("/")

    # -- objects -------------------------------------------------------------------------
    def cat(self, path: str) -> bytes | None:
        """The bytes of an object, or None if there is none."""
        try:
            return bytes(self.fs.cat_file(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as err:
            raise CheckpointError(
                f"{path} could not be read from {self.shown} "
                f"({type(err).__name__}: {self.text(err)}). Fix: check the connection, and "
                "the credentials and endpoint in storage_options or the environment."
            ) from self.cause(err)

    def find(self, path: str, *, strict: bool = False, withdirs: bool = False) -> dict[str, Any]:
        """Every object under ``path``, by name, with its details (listed afresh). A
        missing ``path`` lists nothing, or (``strict``) is a CheckpointError."""
        fs = self.fs
        try:
            fs.invalidate_cache(path)  # a cached listing may be another process's past
            found = fs.find(path, withdirs=withdirs, detail=True)
        except FileNotFoundError as err:
            if not strict:
                return {}
            raise CheckpointError(
                f"The checkpoint location {self.shown} does not exist ({self.text(err)}). "
                "Fix: create the bucket, or check the URL."
            ) from self.cause(err)
        except Exception as err:
            raise CheckpointError(
                f"The checkpoints in {self.shown} could not be listed "
                f"({type(err).__name__}: {self.text(err)}). Fix: check the connection, and the "
                "credentials and endpoint in storage_options or the environment."
            ) from self.cause(err)
        return dict(found) if isinstance(found, Mapping) else {n: {} for n in found}

    def write(self, path: str, data: bytes) -> None:
        """Make ``data`` the object ``path`` (making its parent first where a filesystem
        has directories and lacks it). The filesystem's error is raised as it is."""
        fs = self.fs
        try:
            fs.pipe_file(path, data)
        except FileNotFoundError:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, data)

    def remove(self, path: str) -> None:
        """Remove a prefix and everything under it (nothing if it is gone already)."""
        fs = self.fs
        try:
            fs.invalidate_cache(path)
            fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def remove_quietly(self, path: str) -> None:
        """Remove a prefix, logging (not raising) a failure: sweep() retries."""
        try:
            self.remove(path)
        except Exception as err:
            log.warning("could not remove %s (%s); sweep() will retry", path, err)

    def _connect(self) -> tuple[Any, str]:
        """Open the URL's filesystem; return it and the URL's path in it."""
        try:
            import fsspec
        except ImportError as err:
            raise missing_dependency(
                "fsspec", "s3", "Checkpoints on a URL (FsspecCheckpoints)"
            ) from self.cause(err)
        protocol = self.url.split("://", 1)[0] if "://" in self.url else "file"
        try:
            fs, root = fsspec.core.url_to_fs(self.url, **self.options)
        except ImportError as err:
            if protocol in ("s3", "s3a"):
                raise missing_dependency(
                    "s3fs", "s3", f"Checkpoints on {self.shown!r}"
                ) from self.cause(err)
            raise MissingDependencyError(
                f"Checkpoints on {self.shown!r} need fsspec's implementation of "
                f"{protocol!r}, which is not installed ({self.text(err)}). Fix: install the "
                "package that message names."
            ) from self.cause(err)
        except (ValueError, TypeError) as err:
            raise invalid(
                "FsspecCheckpoints",
                "url",
                "a URL whose protocol fsspec knows, with storage_options its filesystem takes",
                f"{self.shown!r} ({type(err).__name__}: {self.text(err)})",
                "Fix: e.g. 's3://bucket/prefix', and check the names in storage_options.",
            ) from self.cause(err)
        root = str(root).rstrip("/")
        if not root.strip("/"):
            raise invalid(
                "FsspecCheckpoints",
                "url",
                "a URL that names a bucket or directory",
                repr(self.shown),
                "Fix: e.g. 's3://bucket/prefix' or 'memory://checkpoints'.",
            )
        return fs, root


def mtime(info: Mapping[str, Any]) -> float | None:
    """An object's modification time (seconds since the epoch) from a listing's details."""
    for key in _TIME_KEYS:
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.timezone.utc)
            return parsed.timestamp()
    return None
