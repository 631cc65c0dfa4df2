"""The layout of checkpoints in a folder or under a URL, and the text of their files.

One checkpoint is ``<root>/<run>/m<member>/s<step>-<unique>/`` holding two files:

* ``payload.bin``: the bytes (:mod:`genepool.checkpoints._codec`'s format);
* ``manifest.json``: what the caller said about them (``fields``), their size and
  SHA-256, the versions that wrote them and the datastore they belong to, in format
  :data:`MANIFEST_FORMAT`. A checkpoint whose payload does not match its manifest is torn
  and never loaded.

Its id is the path below the root, ``"<run>/m<member>/s<step>-<unique>"``. Each run's
folder holds an owner marker, ``<root>/<run>/genepool-owner.json``, naming the datastore
it belongs to (:class:`Owner`). Names starting with ``.tmp-`` are a backend's temporary
ones, never a checkpoint.

This module holds what every backend writes and reads alike: the names, the check of a
run name and of an id, the manifest's text (written and parsed) and the owner marker's.
It touches no file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from genepool._errors import CheckpointError, StorageError, invalid
from genepool.version import __version__

#: Version of the ``manifest.json`` layout; a newer one is refused when read. Format 2
#: added ``store`` (the identity of the datastore the checkpoint belongs to); format 1 is
#: still read (its ``store`` reads as ``None``).
MANIFEST_FORMAT = 2

PAYLOAD_FILE = "payload.bin"
MANIFEST_FILE = "manifest.json"
#: The prefix of a backend's temporary names (a write in progress, a delete, a spare).
TMP_PREFIX = ".tmp-"
#: The marker in a run's folder that names the datastore it belongs to. Neither
#: :meth:`~genepool.checkpoints.CheckpointStore.ids` nor
#: :meth:`~genepool.checkpoints.CheckpointStore.sweep` ever takes it for a checkpoint or a
#: leftover (they look only in the members' ``m<id>`` folders).
OWNER_FILE = "genepool-owner.json"
OWNER_FORMAT = 1

# Windows refuses these in a file name; "/" and "\\" would add path levels.
_BAD_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
#: A member's folder: ``m<member>``.
MEMBER_DIR = re.compile(r"m(0|[1-9][0-9]*)")
#: A checkpoint's folder: ``s<step>-<32 hex digits>``.
CHECKPOINT_DIR = re.compile(r"s(0|[1-9][0-9]*)-[0-9a-f]{32}")
#: The payload file a manifest may name: ``payload.bin``, or the one a rewrite wrote.
_PAYLOAD_NAME = re.compile(r"payload(-[0-9a-f]{32})?\.bin")


# -- run names and ids ---------------------------------------------------------------


def bad_run_name(run: object) -> str | None:
    """Why ``run`` cannot be a directory name on any platform, or None if it can."""
    if not isinstance(run, str) or not run:
        return "a non-empty string"
    if run.startswith("."):
        return "a name that does not start with '.'"
    if _BAD_NAME_CHARS.search(run) or run.endswith((" ", ".")):
        return 'a name without / \\ : * ? " < > |, control characters, or a trailing space or dot'
    try:
        size = len(run.encode())
    except UnicodeEncodeError:  # a lone surrogate: no file name on every platform
        return "a name of valid Unicode text"
    if size > 200:
        return "a name of at most 200 bytes"
    return None


def check_run_name(run: object, *, owner: str, name: str = "run") -> str:
    """``run``, if it can name a run (one directory of checkpoints, on any platform);
    else an InvalidArgumentError naming ``owner``'s argument ``name``, the value and a fix.

    Every run name given to genepool passes here before it reaches a store or a file
    path, so that no name (``..``, ``../x``, ``/abs``, ``a/b``) leads outside the
    checkpoints' root.
    """
    must = bad_run_name(run)
    if must is not None:
        raise invalid(
            owner,
            name,
            must,
            repr(run),
            "Fix: a plain name such as 'run' or 'lr-sweep_2' (it names a directory).",
        )
    assert isinstance(run, str)  # bad_run_name checked it
    return run


def id_parts(checkpoint_id: str, owner: str) -> list[str]:
    """The run, member and checkpoint parts of an id; CheckpointError if it is not one."""
    parts = checkpoint_id.split("/") if isinstance(checkpoint_id, str) else []
    if (
        len(parts) != 3
        or bad_run_name(parts[0]) is not None
        or not MEMBER_DIR.fullmatch(parts[1])
        or not CHECKPOINT_DIR.fullmatch(parts[2])
    ):
        raise CheckpointError(
            f"{checkpoint_id!r} is not a checkpoint id of {owner} (expected "
            "'<run>/m<member>/s<step>-<32 hex digits>'). Fix: pass an id that put() returned."
        )
    return parts


_GOOD_RUN_NAMES: set[str] = set()  # names checked already (a run writes thousands)


def check_key(run: str, member: int, step: int) -> None:
    """Check the arguments that make a checkpoint's id."""
    plain = type(member) is int and type(step) is int and member >= 0 and step >= 0
    if plain and type(run) is str and run in _GOOD_RUN_NAMES:
        return
    check_run_name(run, owner="CheckpointStore.put")
    if len(_GOOD_RUN_NAMES) < 1024:
        _GOOD_RUN_NAMES.add(run)
    for name, value in (("member", member), ("step", step)):
        if type(value) is bool or not isinstance(value, (int, np.integer)) or value < 0:
            raise invalid("CheckpointStore.put", name, "an int >= 0", repr(value))


# -- the manifest --------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def normalise_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's manifest fields as they read back from JSON (a deep copy)."""
    normalised: dict[str, Any] = json.loads(fields_json(fields))
    return normalised


_FIELDS_ENCODER = json.JSONEncoder(default=_json_default, sort_keys=True, separators=(",", ":"))


def fields_json(fields: Mapping[str, Any] | None) -> str:
    """The caller's manifest fields as JSON text (InvalidArgumentError if they are not)."""
    if fields is None:
        return "{}"
    if not isinstance(fields, Mapping) or not all(isinstance(k, str) for k in fields):
        raise invalid("CheckpointStore.put", "manifest", "a mapping with str keys", repr(fields))
    try:
        return _FIELDS_ENCODER.encode(dict(fields))
    except (TypeError, ValueError) as err:
        raise invalid(
            "CheckpointStore.put",
            "manifest",
            "JSON-serialisable",
            f"{fields!r} ({err})",
            "Fix: pass numbers, strings, lists and dicts (numpy values are converted).",
        ) from err


@functools.cache
def versions() -> dict[str, str]:
    return {
        "genepool": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


@functools.cache
def _versions_json() -> str:
    return json.dumps(versions(), sort_keys=True, separators=(",", ":"))


def _created() -> str:
    """Now, in UTC, as ISO 8601 with microseconds (``2026-12-03T08:00:00.000000Z``).

    From ``time``, not ``datetime``: this runs once a round, on code gone cold since the
    last, where ``datetime`` costs several times more."""
    now = time.time()
    seconds = int(now)
    micro = int((now - seconds) * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}Z"


def payload_record(data: bytes) -> dict[str, Any]:
    """The manifest's ``size`` and ``sha256`` of a payload."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def record_json(record: Mapping[str, Any]) -> bytes:
    """A manifest (a dict) as the text of ``manifest.json``."""
    return (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()


def build_manifest(
    checkpoint_id: str,
    run: str,
    member: int,
    step: int,
    data: bytes,
    fields: dict[str, Any],
    store: str | None = None,
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "id": checkpoint_id,
        "run": run,
        "member": int(member),
        "step": int(step),
        "payload": {"file": PAYLOAD_FILE, **payload_record(data)},
        "created": _created(),
        "versions": dict(versions()),
        "store": store,
        "fields": fields,
    }


def manifest_json(
    checkpoint_id: str,
    run: str,
    member: int,
    step: int,
    data: bytes,
    fields: str,
    store: str | None = None,
) -> bytes:
    """The text of ``manifest.json`` (the dict :func:`build_manifest` makes, as JSON), given
    the caller's fields as JSON text already.

    A run name (and so an id) holds no character that JSON escapes but non-ASCII ones,
    which JSON takes as they are: both are written between quotes as they are.
    """
    digest = hashlib.sha256(data).hexdigest()
    return (
        f'{{"created":"{_created()}","fields":{fields},"format":{MANIFEST_FORMAT},'
        f'"id":"{checkpoint_id}","member":{int(member)},'
        f'"payload":{{"file":"{PAYLOAD_FILE}","sha256":"{digest}","size":{len(data)}}},'
        f'"run":"{run}","step":{int(step)},"store":{json.dumps(store)},'
        f'"versions":{_versions_json()}}}\n'
    ).encode()


def parse_manifest(raw: bytes, checkpoint_id: str, where: str) -> dict[str, Any]:
    """Check the text of a ``manifest.json`` read for ``checkpoint_id`` from ``where`` (a
    directory or URL, for the messages) and return it as a dict.

    Raises:
        CheckpointError: The manifest is torn, foreign, for another checkpoint, or of a
            newer format than this genepool reads.
    """
    try:
        record = json.loads(raw)
    except ValueError as err:
        raise torn(checkpoint_id, where, f"{MANIFEST_FILE} is not valid JSON: {err}") from err
    if not isinstance(record, dict) or "format" not in record:
        raise foreign(checkpoint_id, where, f"its {MANIFEST_FILE} is not a genepool manifest")
    fmt = record["format"]
    if type(fmt) is not int or fmt < 1:
        raise foreign(checkpoint_id, where, f"its {MANIFEST_FILE} has format {fmt!r}")
    store = record.setdefault("store", None)  # format 1 names no datastore
    if store is not None and type(store) is not str:
        raise torn(checkpoint_id, where, f"{MANIFEST_FILE} names the datastore {store!r}")
    if fmt > MANIFEST_FORMAT:
        raise CheckpointError(
            f"Checkpoint {checkpoint_id!r} in {where} has manifest format {fmt}; "
            f"this genepool reads format {MANIFEST_FORMAT} and older. Fix: upgrade genepool "
            "to the version that wrote it (see 'versions' in its manifest.json)."
        )
    if record.get("id") != checkpoint_id:
        raise foreign(
            checkpoint_id, where, f"its {MANIFEST_FILE} is for checkpoint {record.get('id')!r}"
        )
    payload = record.get("payload")
    if (
        not isinstance(payload, dict)
        or type(payload.get("size")) is not int
        or not isinstance(payload.get("sha256"), str)
        or not isinstance(record.get("fields"), dict)
    ):
        raise torn(checkpoint_id, where, f"{MANIFEST_FILE} lacks the payload's size or hash")
    name = payload.setdefault("file", PAYLOAD_FILE)
    if type(name) is not str or not _PAYLOAD_NAME.fullmatch(name):
        raise torn(checkpoint_id, where, f"{MANIFEST_FILE} names the payload file {name!r}")
    return record


def check_payload(data: bytes, record: Mapping[str, Any], checkpoint_id: str, where: str) -> bytes:
    """``data`` if its size and SHA-256 are the ones the manifest ``record`` gives, else
    CheckpointError (torn)."""
    expected = record["payload"]
    if len(data) != expected["size"]:
        raise torn(
            checkpoint_id,
            where,
            f"{PAYLOAD_FILE} has {len(data)} bytes, the manifest says {expected['size']}",
        )
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise torn(
            checkpoint_id, where, f"the SHA-256 of {PAYLOAD_FILE} differs from the manifest's"
        )
    return data


def torn(checkpoint_id: str, where: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint {checkpoint_id!r} in {where} is torn: {reason}. It was changed or "
        "damaged after it was written, or its write never completed; it cannot be read."
    )


def foreign(checkpoint_id: str, where: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"{checkpoint_id!r} in {where} is not a genepool checkpoint: {reason}. "
        "Fix: keep other files out of the checkpoints' directory or prefix."
    )


# -- the owner marker ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """The datastore a run's checkpoint folder belongs to.

    Attributes:
        store: The datastore's :attr:`~genepool.store.Store.identity`.
        shown: How it is shown in messages: its ``repr``, passwords hidden.
        durable: Whether it outlives the process (``False`` for a
            :class:`~genepool.store.MemoryStore`, gone when its process ends).
    """

    store: str
    shown: str
    durable: bool = True


def owner_json(run: str, owner: Owner) -> bytes:
    """The text of a run folder's owner marker."""
    record = {
        "format": OWNER_FORMAT,
        "run": run,
        "store": owner.store,
        "shown": owner.shown,
        "durable": owner.durable,
        "created": _created(),
        "genepool": versions()["genepool"],
    }
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()


def parse_owner(raw: bytes, folder: str) -> Owner:
    """The owner an owner marker names; StorageError if it is damaged."""
    try:
        record = json.loads(raw)
        owner = Owner(str(record["store"]), str(record["shown"]), bool(record["durable"]))
        fmt = record["format"]
    except (ValueError, TypeError, KeyError) as err:
        raise StorageError(
            f"The owner marker {OWNER_FILE} of {folder} is damaged ({type(err).__name__}: "
            f"{err}), so which datastore the folder belongs to is unknown. Fix: if the "
            "folder belongs to the datastore of the run you start, delete the marker "
            "(genepool writes it again); otherwise give the run another checkpoints folder."
        ) from err
    if type(fmt) is not int or fmt > OWNER_FORMAT:
        raise StorageError(
            f"The owner marker {OWNER_FILE} of {folder} has format {fmt!r}; this genepool "
            f"reads format {OWNER_FORMAT}. Fix: upgrade genepool."
        )
    return owner
