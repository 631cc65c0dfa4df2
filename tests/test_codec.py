"""The checkpoint payload format (genepool.checkpoints._codec): exact round trips, and no
code run when read, whatever the bytes."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import genepool as gp
from genepool.checkpoints._codec import FORMAT_VERSION, MAGIC, decode, encode

torch = pytest.importorskip("torch")


class Gadget:
    """Makes the directory ``flag`` when unpickled: the proof that reading ran code."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.flag),))


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (NaN equals NaN; -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, np.ndarray | np.generic):
        a, b = np.asarray(a), np.asarray(b)
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.device == b.device
            and bytes(a.reshape(-1).view(torch.uint8).numpy())
            == bytes(b.reshape(-1).view(torch.uint8).numpy())
        )
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(same(a[k], b[k]) for k in a)
            and same(getattr(a, "_metadata", None), getattr(b, "_metadata", None))
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- what round-trips ------------------------------------------------------------------
TENSOR_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.complex64,
    torch.complex128,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]


@pytest.mark.parametrize("dtype", TENSOR_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3), (2, 0, 4)], ids=str)
def test_dense_tensors_of_every_dtype_round_trip(dtype: Any, shape: tuple[int, ...]) -> None:
    values = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) * 1.5 - 2
    tensor = (values != 0) if dtype == torch.bool else values.to(dtype)
    back = decode(encode({"t": tensor}))["t"]
    assert same(back, tensor)


def test_tensor_views_gradients_and_conjugates_are_stored_as_their_values() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    leaf = torch.ones(2, requires_grad=True)
    cx = torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64)
    state = {"t": base.t(), "slice": base[:, 1], "grad": leaf * 2, "conj": cx.conj(), "neg": -cx}
    back = decode(encode(state))
    assert torch.equal(back["t"], base.t())
    assert torch.equal(back["slice"], base[:, 1])
    assert torch.equal(back["grad"], torch.full((2,), 2.0))
    assert not back["grad"].requires_grad
    assert torch.equal(back["conj"], cx.conj().resolve_conj())
    assert torch.equal(back["neg"], (-cx).resolve_neg())


def test_tensors_load_onto_the_readers_device() -> None:
    blob = encode({"w": torch.ones(3)})
    assert decode(blob)["w"].device.type == "cpu"
    assert decode(blob, device="meta")["w"].device.type == "meta"


def test_a_module_and_optimizer_state_dict_round_trip_with_their_types() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict()}
    back = decode(encode(state))
    assert same(back, state)
    assert type(back["model"]) is collections.OrderedDict
    assert back["model"]._metadata == state["model"]._metadata  # type: ignore[attr-defined]
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    fresh.load_state_dict(back["model"])
    torch.optim.Adam(fresh.parameters()).load_state_dict(back["opt"])


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**63,
        -(2**5000),
        2**100_000 + 7,
        0.1,
        -0.0,
        math.inf,
        -math.inf,
        "",
        "héllo \x00 \ud800 ☃",
        b"",
        b"\x00\xff" * 10,
        [],
        (),
        (1,),
        {},
        {1: "a", -2: "b", "c": 3},
        collections.OrderedDict([("b", 1), ("a", 2)]),
        np.float32(1.5),
        np.int64(-3),
        np.bool_(True),
        np.str_("ü"),
        np.bytes_(b"ab"),
        np.datetime64("2026-12-04T10:00", "ns"),
        np.complex128(1 - 2j),
        np.zeros((0, 3)),
        np.arange(6, dtype=">i2").reshape(2, 3),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array(["a", "bc"]),
        np.array([b"x", b"yz"]),
        np.array([np.datetime64("NaT"), np.datetime64("2020-01-01")]),
        np.array(3.5),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8", (2,)), ("c", [("d", "u1")])]),
        np.arange(12.0).reshape(3, 4)[::2, ::-1],
    ],
    ids=lambda value: type(value).__name__,
)
def test_plain_values_round_trip_exactly_with_their_types(value: Any) -> None:
    assert same(decode(encode(value)), value)
    assert same(decode(encode({"state": value, "rng": None})), {"state": value, "rng": None})


def test_nan_round_trips() -> None:
    back = decode(encode([math.nan, np.float64(math.nan), np.array([math.nan])]))
    assert math.isnan(back[0])
    assert np.isnan(back[1])
    assert type(back[1]) is np.float64
    assert np.isnan(back[2][0])


def test_a_generators_state_round_trips() -> None:
    rng = np.random.default_rng(7)
    rng.random(3)
    state = rng.bit_generator.state  # 128-bit ints
    other = np.random.default_rng(0)
    other.bit_generator.state = decode(encode({"rng": state}))["rng"]
    assert other.random() == rng.random()


def test_decoded_arrays_are_writable_copies() -> None:
    blob = encode({"w": np.zeros(3), "t": torch.zeros(3)})
    back = decode(blob)
    back["w"][0] = 9.0
    back["t"][0] = 9.0
    again = decode(blob)
    assert again["w"][0] == 0.0
    assert float(again["t"][0]) == 0.0


def _leaves() -> st.SearchStrategy[Any]:
    arrays = hnp.arrays(
        dtype=hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes(),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    )
    scalars = hnp.scalar_dtypes().flatmap(hnp.from_dtype)
    tensors = st.builds(
        lambda a, dtype: torch.from_numpy(a).to(dtype),
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)),
        st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.bool]),
    )
    return (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(2**300), max_value=2**300)
        | st.floats()
        | st.text()
        | st.binary()
        | arrays
        | scalars
        | tensors
    )


STATES = st.recursive(
    _leaves(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4).map(collections.OrderedDict)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(state=STATES)
def test_random_nested_states_round_trip_exactly(state: Any) -> None:
    assert same(decode(encode({"state": state, "rng": None}))["state"], state)


# -- what is refused when written ----------------------------------------------------------
class Model:
    pass


@pytest.mark.parametrize(
    ("state", "path"),
    [
        ({"opt": [1, 2, 3, Model()]}, r"state\['opt'\]\[3\]"),
        ({"f": lambda: 1}, r"state\['f'\]"),
        ({"s": {1, 2}}, r"state\['s'\]"),
        ({"o": np.array([1, None], dtype=object)}, r"state\['o'\]"),
        ({"k": {(1, 2): 3}}, r"state\['k'\]"),
        ({"p": torch.nn.Parameter(torch.ones(2))}, r"state\['p'\]"),
        ({"sp": torch.ones(2).to_sparse()}, r"state\['sp'\]"),
        ({"sub": np.ma.masked_array([1, 2])}, r"state\['sub'\]"),
        ({"flag": type("Flag", (int,), {})(3)}, r"state\['flag'\]"),
    ],
    ids=[
        "object",
        "lambda",
        "set",
        "object-array",
        "tuple-key",
        "parameter",
        "sparse",
        "masked",
        "int-subclass",
    ],
)
def test_other_types_are_refused_when_written_with_their_path(state: Any, path: str) -> None:
    with pytest.raises(gp.CheckpointError, match=path) as info:
        encode({"state": state, "rng": None})
    assert "trust_checkpoints=True" in str(info.value)
    assert "Fix:" in str(info.value)


def test_trust_stores_any_object_and_only_trust_reads_it(tmp_path: Path) -> None:
    blob = encode({"state": {"m": Model(), "x": 1}}, trust=True)
    with pytest.raises(gp.CheckpointError, match="trust_checkpoints=True"):
        decode(blob, checkpoint_id="r/m0/s1-x")
    assert isinstance(decode(blob, trust=True)["state"]["m"], Model)


# -- what runs nothing when read -------------------------------------------------------
def test_a_pickle_gadget_in_the_first_format_runs_nothing(tmp_path: Path) -> None:
    flag = tmp_path / "pwned"
    blob = pickle.dumps((1, {"state": Gadget(flag), "rng": None}))
    with pytest.raises(gp.CheckpointError, match="first format") as info:
        decode(blob, checkpoint_id="r/m0/s4-0")
    assert "genepool migrate" in str(info.value)
    assert not flag.exists()
    decode(blob, trust=True)  # the gadget is real: trusting code runs it
    assert flag.exists()


def test_a_pickled_gadget_in_the_format_runs_nothing(tmp_path: Path) -> None:
    flag = tmp_path / "pwned"
    blob = encode({"state": Gadget(flag)}, trust=True)
    with pytest.raises(gp.CheckpointError, match="pickled"):
        decode(blob)
    assert not flag.exists()


def test_numpy_and_torch_gadgets_stay_bytes(tmp_path: Path) -> None:
    flag = tmp_path / "pwned"
    npy = io.BytesIO()
    np.save(npy, np.array([Gadget(flag)], dtype=object), allow_pickle=True)
    pt = io.BytesIO()
    torch.save({"x": Gadget(flag)}, pt)
    assert not flag.exists()
    back = decode(encode({"npy": npy.getvalue(), "pt": pt.getvalue()}))
    assert back == {"npy": npy.getvalue(), "pt": pt.getvalue()}
    assert not flag.exists()


def craft(tree: Any, buffers: bytes = b"") -> bytes:
    """A blob with a header of our choosing."""
    header = json.dumps(tree).encode()
    return MAGIC + struct.pack("<IQ", FORMAT_VERSION, len(header)) + header + buffers


@pytest.mark.parametrize(
    "tree",
    [
        {"$a": ["|O", [1], 0, 8]},
        {"$a": [[["f", "|O"]], [1], 0, 8]},
        {"$s": ["O", [], 0, 8]},
        {"$T": ["load", [1], 0, 8]},
        {"$T": ["save", [1], 0, 8]},
        {"$T": ["qint8", [1], 0, 1]},
        {"$a": ["<f8", [2**62, 4], 0, 0]},
        {"$a": ["<f8", [1], 0, 10**9]},
        {"$a": ["<f8", [-1], 0, 8]},
        {"$b": [0, 2**70]},
        {"$x": 1},
        {"$d": {"a": 1}, "$t": []},
        {"a": 1},
        {"$i": "os.system"},
        {"$D": [[[1], 2]]},
        {"$o": [{"$d": {}}, {"$p": [0, 8]}]},
        {"$p": [0, 8]},
    ],
    ids=repr,
)
def test_crafted_headers_are_refused(tree: Any) -> None:
    with pytest.raises(gp.CheckpointError, match="r/m0/s1-0"):
        decode(craft(tree, b"\0" * 64), checkpoint_id="r/m0/s1-0")


def test_a_newer_format_is_refused() -> None:
    blob = bytearray(encode({"x": 1}))
    blob[len(MAGIC) : len(MAGIC) + 4] = struct.pack("<I", FORMAT_VERSION + 1)
    with pytest.raises(gp.CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        decode(bytes(blob))


def test_torn_and_foreign_blobs_raise_checkpoint_error() -> None:
    blob = encode({"state": list(range(100)), "w": np.arange(10.0)})
    for cut in (0, 1, 5, len(MAGIC) + 3, len(blob) // 2, len(blob) - 1):
        with pytest.raises(gp.CheckpointError, match=r"Checkpoint c7 is torn"):
            decode(blob[:cut], checkpoint_id="c7")
    for foreign in (b"", b"hello", b"\x00\x01" * 8, b'{"a": 1}'):
        with pytest.raises(gp.CheckpointError, match="not a genepool checkpoint"):
            decode(foreign, checkpoint_id="c8")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hostile_bytes_give_a_checkpoint_error_or_a_value(data: st.DataObject) -> None:
    blob = bytearray(encode({"state": {"w": np.arange(4.0), "t": torch.ones(2), "s": "x"}}))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        if data.draw(st.booleans()):
            blob[at] = data.draw(st.integers(0, 255))
        else:
            del blob[at : at + data.draw(st.integers(1, 8))]
            if not blob:
                break
    with contextlib.suppress(gp.CheckpointError):
        decode(bytes(blob))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["$t", "$d", "$D", "$o", "$i", "$b", "$a", "$s", "$T", "$p", "x"]),
            inner,
            max_size=2,
        )
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(tree=JSON, buffers=st.binary(max_size=64))
@example(tree={"$a": [{"$a": None}, None, None, None]}, buffers=b"")  # dtype "a": deprecated
def test_hostile_headers_give_a_checkpoint_error_or_a_value(tree: Any, buffers: bytes) -> None:
    with contextlib.suppress(gp.CheckpointError):
        decode(craft(tree, buffers))
