"""The checkpoint payload format: plain data, arrays and tensors, and nothing that runs.

A checkpoint payload is the trainable's state and the member's random stream. Reading it
must never run code, whatever its bytes (a checkpoint folder or bucket is easier to write
to than the code that reads it). So :func:`encode` writes, and :func:`decode` reads, a
format of our own (version :data:`FORMAT_VERSION`)::

    MAGIC (8 bytes) | version (uint32 LE) | header length (uint64 LE) | header | buffers

The header is JSON: a tree of the payload's values. ``None``, booleans, strings, floats
(``NaN`` and ``Infinity`` included), lists and ints that fit in 64 bits are JSON values;
every other value is an object with one key naming its type:

- ``{"$t": [...]}`` a tuple; ``{"$d": {...}}`` a dict with str keys;
  ``{"$D": [[key, value], ...]}`` a dict with other keys (int, or mixed);
  ``{"$o": [items, metadata]}`` an ``OrderedDict`` (a torch ``state_dict``), with its
  ``_metadata`` attribute if it has one;
- ``{"$i": "<hex>"}`` an int of any size;
- ``{"$b": [offset, length]}`` bytes, a slice of the buffers;
- ``{"$a": [dtype, shape, offset, length]}`` a NumPy array, ``{"$s": ...}`` a NumPy
  scalar (its 0-d array), ``{"$T": [dtype, shape, offset, length]}`` a dense torch tensor;
- ``{"$p": [offset, length]}`` a pickled object: written only for a run that trusts its
  checkpoints (``trust=True``), and read only by a caller that does.

Reading parses JSON and copies bytes into arrays: no type is looked up by a name the file
gives, so nothing in the file can choose code to run. Arrays of object dtype are refused
both ways. Any other type is refused when the checkpoint is written, with its path in the
state (``state['opt'][3]``), unless the run trusts its checkpoints.

The first format (version 1) was a pickle. It is read only with ``trust=True``, and
``genepool migrate`` rewrites such checkpoints in this format.

Example:
    >>> import numpy as np
    >>> blob = encode({"state": {"w": np.arange(3.0), "step": 7, "lr": 0.1}})
    >>> decode(blob)["state"]["w"]
    array([0., 1., 2.])
"""

from __future__ import annotations

import collections
import functools
import json
import math
import pickle
import struct
import warnings
from typing import Any

import numpy as np

from genepool._errors import CheckpointError, missing_dependency

__all__ = ["FORMAT_VERSION", "MAGIC", "decode", "encode", "is_legacy"]

#: Version of the payload format written by :func:`encode`; version 1 was a pickle.
FORMAT_VERSION = 2
#: The first bytes of every payload in this format (a pickle never starts with them).
MAGIC = b"\x89GPCK\r\n\x1a"
_PREFIX = struct.Struct("<IQ")  # format version, header length
_START = len(MAGIC) + _PREFIX.size
_ALIGN = 64  # buffers start at multiples of this (cheap, and friendly to any reader)
_SMALL_INT = 1 << 63

TRUST_FIX = (
    "Fix: return plain data from save() / state (dicts, lists, tuples, numbers, strings, "
    "bytes, NumPy arrays, torch tensors), or pass trust_checkpoints=True to gp.run to store "
    "any object with pickle, which makes the checkpoint storage as trusted as your code."
)


# -- writing ---------------------------------------------------------------------------
class _Writer:
    """Walks a payload into a JSON tree and a list of buffers."""

    def __init__(self, *, trust: bool) -> None:
        self.trust = trust
        self.buffers: list[bytes | memoryview] = []
        self.size = 0

    def buffer(self, data: bytes | memoryview) -> list[int]:
        """Append ``data`` to the buffers; its ``[offset, length]``."""
        pad = -self.size % _ALIGN
        if pad:
            self.buffers.append(b"\0" * pad)
            self.size += pad
        at = [self.size, len(data)]
        self.buffers.append(data)
        self.size += len(data)
        return at

    def tree(self, value: Any, path: str) -> Any:
        kind = type(value)
        if value is None or kind is bool or kind is str or kind is float:
            return value
        if kind is int:
            return value if -_SMALL_INT <= value < _SMALL_INT else {"$i": hex(value)}
        if kind is dict:
            if all(type(k) is str for k in value):
                return {"$d": {k: self.tree(v, f"{path}[{k!r}]") for k, v in value.items()}}
            return {"$D": self.pairs(value, path)}
        if kind is list:
            return [self.tree(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if kind is tuple:
            return {"$t": [self.tree(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if kind is bytes:
            return {"$b": self.buffer(value)}
        if kind is collections.OrderedDict:
            meta = getattr(value, "_metadata", None)
            items = {"$D": self.pairs(value, path)}
            return {"$o": [items, None if meta is None else self.tree(meta, f"{path}._metadata")]}
        if kind is np.ndarray:
            return {"$a": self.array(value, path)}
        if isinstance(value, np.generic) and kind.__module__ == "numpy":
            return {"$s": self.array(np.asarray(value), path)}
        if kind.__module__ == "torch" and kind.__name__ == "Tensor":
            return {"$T": self.tensor(value, path)}
        if self.trust:
            return {"$p": self.buffer(_pickle(value, path))}
        raise CheckpointError(
            f"The trainable's state holds a value of type {_type_name(value)} at {path}, which a "
            f"genepool checkpoint does not store: reading it back could run code. {TRUST_FIX}"
        )

    def pairs(self, mapping: dict[Any, Any], path: str) -> list[list[Any]]:
        pairs = []
        for k, v in mapping.items():
            if type(k) not in (str, int):
                raise CheckpointError(
                    f"The trainable's state holds a dict key {k!r} ({_type_name(k)}) at "
                    f"{path}: a genepool checkpoint keeps dict keys that are str or int. "
                    f"{TRUST_FIX}"
                )
            pairs.append([self.tree(k, path), self.tree(v, f"{path}[{k!r}]")])
        return pairs

    def array(self, array: np.ndarray[Any, Any], path: str) -> list[Any]:
        if array.dtype.hasobject:
            raise CheckpointError(
                f"The trainable's state holds a NumPy array of object dtype at {path}: its "
                f"items are Python objects, which a genepool checkpoint does not store. "
                f"{TRUST_FIX}"
            )
        data = np.ascontiguousarray(array)
        return [_dtype_json(array.dtype), list(array.shape), *self.buffer(data.tobytes())]

    def tensor(self, tensor: Any, path: str) -> list[Any]:
        import torch

        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
            raise CheckpointError(
                f"The trainable's state holds a {tensor.layout} tensor at {path}: a genepool "
                f"checkpoint stores dense tensors. Fix: convert it (.to_dense()). {TRUST_FIX}"
            )
        plain = tensor.detach().resolve_conj().resolve_neg()
        flat = plain.cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy() if flat.numel() else np.empty(0, np.uint8)
        dtype = str(tensor.dtype).removeprefix("torch.")
        return [dtype, list(tensor.shape), *self.buffer(raw.tobytes())]


def encode(payload: Any, *, trust: bool = False) -> bytes:
    """Serialise a checkpoint payload in the safe format (see the module's docstring).

    Args:
        payload: Plain data: None, bool, int, float, str, bytes, lists, tuples, dicts with
            str or int keys, NumPy arrays (not of object dtype) and scalars, dense torch
            tensors.
        trust: Store any other object with pickle (for a run whose checkpoint storage is
            as trusted as its code); such a payload is read only with ``trust=True``.

    Raises:
        CheckpointError: The payload holds another type (the message gives its path), and
            ``trust`` is False; or it is nested too deeply, or holds itself.
    """
    writer = _Writer(trust=trust)
    try:
        if type(payload) is dict and all(type(k) is str for k in payload):
            # the worker's payload ({"state": ..., "rng": ...}): paths read state['opt'][3]
            tree: Any = {"$d": {k: writer.tree(v, k) for k, v in payload.items()}}
        else:
            tree = writer.tree(payload, "state")
        header = json.dumps(tree, separators=(",", ":")).encode()
    except RecursionError:
        raise CheckpointError(
            "The trainable's state is nested too deeply, or holds itself (a list in "
            "itself): a genepool checkpoint stores a tree of values. Fix: return plain "
            "data from save() / state, no deeper than a few hundred levels."
        ) from None
    start = _START + len(header)
    pad = -start % _ALIGN
    head = MAGIC + _PREFIX.pack(FORMAT_VERSION, len(header) + pad) + header + b" " * pad
    return b"".join([head, *writer.buffers])


def _pickle(value: Any, path: str) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise CheckpointError(
            f"The trainable's state holds a {_type_name(value)} at {path} that could not be "
            f"serialised ({type(err).__name__}: {err}). Fix: return plain data from save()."
        ) from err


def _type_name(value: Any) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _dtype_json(dtype: np.dtype[Any]) -> Any:
    """A NumPy dtype as JSON: its ``str`` for a plain one, its ``descr`` for a record."""
    if dtype.fields is None and dtype.subdtype is None:
        return dtype.str
    return np.lib.format.dtype_to_descr(dtype)


# -- reading ---------------------------------------------------------------------------
def is_legacy(blob: bytes) -> bool:
    """Whether ``blob`` is in the first format (a pickle), which only trusted code reads."""
    return not blob.startswith(MAGIC) and blob[:1] == b"\x80"


class _Reader:
    """Rebuilds a payload from its JSON tree, copying arrays out of the buffers."""

    def __init__(self, blob: bytes, start: int, *, trust: bool, device: Any, name: str) -> None:
        self.blob = memoryview(blob)
        self.start = start
        self.trust = trust
        self.device = device
        self.name = name

    def bad(self, why: str) -> CheckpointError:
        return CheckpointError(
            f"Checkpoint {self.name} is torn or not a genepool checkpoint ({why})."
        )

    def data(self, at: Any) -> memoryview:
        if (
            type(at) is not list
            or len(at) != 2
            or not all(type(x) is int and x >= 0 for x in at)
            or self.start + at[0] + at[1] > len(self.blob)
        ):
            raise self.bad(f"a buffer reference {at!r} is outside the payload")
        return self.blob[self.start + at[0] : self.start + at[0] + at[1]]

    def tree(self, node: Any) -> Any:
        kind = type(node)
        if node is None or kind in (bool, str, float, int):
            return node
        if kind is list:
            return [self.tree(v) for v in node]
        if kind is not dict or len(node) != 1:
            raise self.bad(f"unexpected {kind.__name__} in the header")
        ((tag, value),) = node.items()
        if tag == "$d" and type(value) is dict:
            return {k: self.tree(v) for k, v in value.items()}
        if tag == "$t" and type(value) is list:
            return tuple(self.tree(v) for v in value)
        if tag == "$D" and type(value) is list:
            return dict(self.pairs(value))
        if tag == "$o" and type(value) is list and len(value) == 2:
            items = self.tree(value[0])
            if type(items) is not dict:
                raise self.bad("an OrderedDict without items")
            ordered = collections.OrderedDict(items)
            if value[1] is not None:
                ordered._metadata = self.tree(value[1])  # type: ignore[attr-defined]
            return ordered
        if tag == "$i" and type(value) is str:
            try:
                return int(value, 16)
            except ValueError:
                raise self.bad(f"an int {value[:40]!r}") from None
        if tag == "$b":
            return bytes(self.data(value))
        if tag in ("$a", "$s") and type(value) is list and len(value) == 4:
            array = self.array(value)
            return array if tag == "$a" else array[()]
        if tag == "$T" and type(value) is list and len(value) == 4:
            return self.tensor(value)
        if tag == "$p":
            return self.unpickle(value)
        raise self.bad(f"unknown entry {tag[:40]!r} in the header")

    def pairs(self, pairs: list[Any]) -> list[tuple[Any, Any]]:
        out = []
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2:
                raise self.bad("a malformed dict entry")
            key = self.tree(pair[0])
            if type(key) not in (str, int):
                raise self.bad(f"a dict key of type {type(key).__name__}")
            out.append((key, self.tree(pair[1])))
        return out

    def shape(self, shape: Any) -> tuple[int, ...]:
        if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
            raise self.bad(f"an array shape {shape!r}")
        return tuple(shape)

    def array(self, value: list[Any]) -> np.ndarray[Any, Any]:
        descr, shape, *at = value
        try:
            dtype = _named_dtype(descr) if type(descr) is str else _record_dtype(descr)
        except (TypeError, ValueError, Warning) as err:
            raise self.bad(f"an array dtype {str(descr)[:60]!r}: {err}") from None
        if dtype.hasobject:
            raise self.bad("an array of object dtype")
        data = self.data(at)
        shape_ = self.shape(shape)
        count = math.prod(shape_)
        if count * dtype.itemsize != len(data):
            raise self.bad(f"an array of shape {shape_} and dtype {dtype} in {len(data)} bytes")
        flat = np.frombuffer(data, dtype=dtype, count=count) if count else np.empty(0, dtype)
        return flat.reshape(shape_).copy()

    def tensor(self, value: list[Any]) -> Any:
        try:
            import torch
        except ImportError as err:
            raise missing_dependency("torch", "torch", "Reading a checkpoint of tensors") from err
        name, shape, *at = value
        dtype = getattr(torch, name, None) if type(name) is str else None
        if not isinstance(dtype, torch.dtype) or name.startswith(("q", "bits")):
            raise self.bad(f"a tensor dtype {str(name)[:40]!r}")  # (quantized ones too)
        data = self.data(at)
        shape_ = self.shape(shape)
        count = math.prod(shape_)
        itemsize = dtype.itemsize
        if count * itemsize != len(data):
            raise self.bad(f"a tensor of shape {shape_} and dtype {dtype} in {len(data)} bytes")
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if count else None
        tensor = (
            raw.view(dtype).reshape(shape_) if raw is not None else torch.empty(shape_, dtype=dtype)
        )
        return tensor if self.device is None else tensor.to(self.device)

    def unpickle(self, at: Any) -> Any:
        if not self.trust:
            raise CheckpointError(
                f"Checkpoint {self.name} holds a pickled Python object (written by a run with "
                "trust_checkpoints=True); reading it could run code, so it is read only by code "
                "that trusts the checkpoint storage. Fix: pass trust_checkpoints=True to gp.run "
                "(trust=True to Result.open / load_best, --trust-checkpoints on the command "
                "line) if you trust whoever can write there."
            )
        return pickle.loads(self.data(at))


@functools.lru_cache(maxsize=256)
def _named_dtype(descr: str) -> np.dtype[Any]:
    """The dtype a string names (``"<f8"``), made once per name: a checkpoint's arrays
    name few dtypes, and making one under a warnings filter costs more than the read."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated alias ("a") is refused too
        return np.dtype(descr)


def _record_dtype(descr: Any) -> np.dtype[Any]:
    """A record dtype from its ``descr`` as JSON gave it back."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return np.lib.format.descr_to_dtype(_tuples(descr))


def _tuples(descr: Any) -> Any:
    """A record dtype's ``descr`` read back from JSON, which made its tuples lists."""
    if type(descr) is not list:
        return descr
    fields = []
    for field in descr:
        if type(field) is not list or len(field) not in (2, 3):
            raise ValueError(f"a record field {field!r}")
        name = tuple(field[0]) if type(field[0]) is list else field[0]  # (title, name)
        shape = [tuple(field[2])] if len(field) == 3 else []
        fields.append((name, _tuples(field[1]), *shape))
    return fields


def decode(
    blob: bytes, *, checkpoint_id: str = "?", trust: bool = False, device: Any = None
) -> Any:
    """Read back what :func:`encode` wrote; nothing in ``blob`` can make it run code.

    Args:
        blob: The payload.
        checkpoint_id: Named in the messages.
        trust: Also read pickled objects, and the first format (a pickle): only for
            checkpoint storage as trusted as the code that reads it.
        device: Where torch tensors go (default: the CPU).

    Raises:
        CheckpointError: The blob is torn, not a genepool checkpoint, of a newer format, or
            needs ``trust=True``.
    """
    name = checkpoint_id
    if not blob.startswith(MAGIC):
        return _decode_legacy(blob, name, trust=trust)
    try:
        version, length = _PREFIX.unpack_from(blob, len(MAGIC))
    except struct.error:
        raise CheckpointError(
            f"Checkpoint {name} is torn or not a genepool checkpoint (it ends in its header)."
        ) from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {name} has format version {version}; this genepool reads version "
            f"{FORMAT_VERSION} (and 1). Fix: upgrade genepool to the version that wrote it."
        )
    reader = _Reader(blob, _START + length, trust=trust, device=device, name=name)
    if _START + length > len(blob):
        raise reader.bad("it ends in its header")
    try:
        tree = json.loads(bytes(blob[_START : _START + length]))
    except (ValueError, RecursionError) as err:
        raise reader.bad(f"its header is not valid JSON: {str(err)[:80]}") from None
    try:
        return reader.tree(tree)
    except RecursionError:
        raise reader.bad("its header is nested too deeply") from None


def _decode_legacy(blob: bytes, name: str, *, trust: bool) -> Any:
    """The first format: ``pickle((1, payload))``, read only by trusting code."""
    if not is_legacy(blob):
        raise CheckpointError(f"Checkpoint {name} is torn or not a genepool checkpoint.")
    if not trust:
        raise CheckpointError(
            f"Checkpoint {name} is in genepool's first format (a pickle), which can run code "
            "when read, so it is read only by code that trusts the checkpoint storage. Fix: "
            "if you trust whoever could write there, pass trust=True (Result.open, load_best), "
            "trust_checkpoints=True (gp.run) or --trust-checkpoints, or rewrite the run's "
            "checkpoints once in the safe format with 'genepool migrate --trust-checkpoints'."
        )
    try:
        version, payload = pickle.loads(blob)
    except Exception as err:
        raise CheckpointError(
            f"Checkpoint {name} is torn or not a genepool checkpoint ({err})."
        ) from err
    if version != 1:
        raise CheckpointError(
            f"Checkpoint {name} has format version {version}; this genepool reads version "
            f"{FORMAT_VERSION} (and 1). Fix: upgrade genepool to the version that wrote it."
        )
    return payload
