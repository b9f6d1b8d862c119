"""The wire format: round trips of arbitrary values, and hostile bytes that must only ever raise CodecError."""

from __future__ import annotations

import math
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tmrl_core import codec
from tmrl_core.buffer import Buffer
from tmrl_core.errors import CodecError, TmrlError

# ---------------------------------------------------------------------------------------------------------------
# exact equality: same types all the way down, arrays and floats compared bit for bit (NaN == NaN, -0.0 != 0.0)


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), f"{path}: contents differ"
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{index}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_buffer(a: Buffer, b: Buffer) -> None:
    assert_same(a.memory, b.memory, "memory")
    assert (a.maxlen, a.dropped) == (b.maxlen, b.dropped)
    assert a.stats() == b.stats()


# ---------------------------------------------------------------------------------------------------------------
# strategies

DTYPES = [
    np.dtype(d)
    for d in (
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
    )
]

arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
)
# views that are not C-contiguous (reversed, strided, transposed)
strided_arrays = arrays.filter(lambda a: a.ndim >= 1).map(lambda a: a[::-1].T)
numpy_scalars = st.sampled_from(DTYPES).flatmap(lambda dtype: hnp.from_dtype(dtype).map(lambda x: dtype.type(x)))
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | arrays
    | strided_arrays
    | numpy_scalars
)
keys = st.text(max_size=8) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


def make_sample(rng: np.random.Generator, index: int, image: bool = False) -> tuple:
    obs = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8) if image else rng.standard_normal(5).astype(np.float32)
    return (
        rng.standard_normal(2).astype(np.float32),
        (obs, np.float32(index)),
        float(index),
        index % 7 == 6,
        False,
        {"step": index},
    )


def make_buffer(n: int = 20, image: bool = False) -> Buffer:
    rng = np.random.default_rng(n)
    buffer = Buffer(maxlen=max(n, 1) * 2)
    for index in range(n):
        buffer.append_sample(make_sample(rng, index, image))
    buffer.stat_train_return = -12.5
    buffer.stat_train_steps = 7
    buffer.dropped = 3
    return buffer


# ---------------------------------------------------------------------------------------------------------------
# round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_round_trip_of_arbitrary_values(value: Any) -> None:
    assert_same(codec.decode(codec.encode(value)), value)


@given(arrays | strided_arrays)
@settings(deadline=None)
def test_decoded_arrays_are_writable_contiguous_and_own_their_memory(array: np.ndarray) -> None:
    decoded = codec.decode(codec.encode(array))
    assert decoded.flags.writeable and decoded.flags.c_contiguous and decoded.base is None or decoded.size == 0
    assert_same(decoded, np.ascontiguousarray(array) if array.ndim else array)


def test_explicit_edge_values() -> None:
    point = namedtuple("point", "x y")
    cases = [
        (),
        [],
        {},
        [()],
        ((),),
        [[], ()],
        np.array(3.5),  # 0-d array stays a 0-d array
        np.float32(3.5),  # numpy scalar stays a numpy scalar (not a Python float)
        np.zeros((0, 3, 0), np.int16),
        {1: "int key", "1": "str key", -(2**63): None, 2**64 - 1: b""},
        [float("nan"), -0.0, float("inf")],
        "snow \N{SNOWFLAKE} and \x00",
    ]
    for value in cases:
        assert_same(codec.decode(codec.encode(value)), value)
    # subclasses come back as their base types
    assert_same(codec.decode(codec.encode(point(1, 2))), (1, 2))
    assert_same(codec.decode(codec.encode(OrderedDict(a=1))), {"a": 1})
    assert_same(codec.decode(codec.encode(bytearray(b"ab"))), b"ab")
    assert_same(codec.decode(codec.encode(memoryview(b"ab"))), b"ab")
    # big-endian input arrives as little-endian with the same values
    big = np.arange(6, dtype=">f8").reshape(2, 3)
    decoded = codec.decode(codec.encode(big))
    assert decoded.dtype == np.dtype("<f8") and np.array_equal(decoded, big)


def test_buffer_round_trip_keeps_samples_and_statistics() -> None:
    buffer = make_buffer(50)
    buffer.stat_test_return = 3.0
    buffer.stat_test_steps = 11
    assert_same_buffer(codec.decode_buffer(codec.encode_buffer(buffer)), buffer)
    empty = Buffer(maxlen=5)
    assert_same_buffer(codec.decode_buffer(codec.encode_buffer(empty)), empty)


def test_buffer_statistics_of_numpy_types_travel_as_python_numbers() -> None:
    buffer = make_buffer(3)
    buffer.stat_train_return = np.float32(1.5)
    buffer.stat_train_steps = np.int64(4)
    decoded = codec.decode_buffer(codec.encode_buffer(buffer))
    assert decoded.stat_train_return == 1.5 and type(decoded.stat_train_return) is float
    assert decoded.stat_train_steps == 4 and type(decoded.stat_train_steps) is int


def test_episode_metrics_travel_bounded_and_checked() -> None:
    buffer = make_buffer(3)
    buffer.stat_train_metrics = {"progress": np.float32(0.25), "laps": 1}
    buffer.stat_test_metrics = {"progress": 1.0}
    decoded = codec.decode_buffer(codec.encode_buffer(buffer))
    assert decoded.stat_train_metrics == {"progress": 0.25, "laps": 1.0}
    assert type(decoded.stat_train_metrics["laps"]) is float and decoded.stat_test_metrics == {"progress": 1.0}
    # a buffer without metrics travels without the keys (older senders' messages still decode)
    plain = codec.decode_buffer(codec.encode_buffer(make_buffer(3)))
    assert plain.stat_train_metrics == {} and plain.stat_test_metrics == {}
    for bad in (
        {"progress": float("nan")},
        {"progress": "far"},
        {"": 1.0},
        {"x" * (codec.MAX_METRIC_NAME + 1): 1.0},
        {f"m{i}": 1.0 for i in range(codec.MAX_EPISODE_METRICS + 1)},
    ):
        buffer.stat_train_metrics = bad
        with pytest.raises(codec.CodecError):
            codec.encode_buffer(buffer)
    # a forged message is refused by the decoder too
    record = {
        "samples": [], "maxlen": 5, "dropped": 0, "train_return": None, "test_return": None, "train_steps": None,
        "test_steps": None, "train_metrics": {"progress": [1.0]},
    }
    with pytest.raises(codec.CodecError, match="train_metrics"):
        codec.decode_buffer(codec._encode_structured(codec.Kind.BUFFER, record))


def test_weights_round_trip() -> None:
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    state = dict(module.state_dict())
    state["tied"] = state["0.weight"]  # shares memory with another entry
    state["strided"] = torch.arange(12.0).reshape(3, 4).t()
    state["half"] = torch.ones(2, dtype=torch.bfloat16)
    state["numpy"] = np.arange(5, dtype=np.int32)
    state["grad"] = torch.ones(3, requires_grad=True)
    decoded = codec.decode_weights(codec.encode_weights(state))
    assert list(decoded) == sorted(state) or set(decoded) == set(state)
    for name, value in state.items():
        expected = torch.from_numpy(value) if isinstance(value, np.ndarray) else value.detach()
        assert decoded[name].dtype == expected.dtype and torch.equal(decoded[name], expected), name
    module.load_state_dict({k: v for k, v in decoded.items() if k in module.state_dict()})
    assert codec.decode_weights(codec.encode_weights({})) == {}


# ---------------------------------------------------------------------------------------------------------------
# what cannot be encoded is refused with a clear CodecError


class _Thing:
    pass


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.array([1, "a"], dtype=object), "object"),
        (np.array(["text"]), "dtype"),
        (np.zeros(2, dtype=[("x", "f4")]), "dtype"),
        (2**64, "64"),
        (-(2**63) - 1, "64"),
        ({1.5: 0}, "key"),
        ({(1, 2): 0}, "key"),
        ({None: 0}, "key"),
        ({1, 2}, "set"),
        (_Thing(), "_Thing"),
        ("\ud800", "encode"),
    ],
)
def test_unencodable_values_are_refused_at_encode_time(value: Any, words: str) -> None:
    with pytest.raises(CodecError) as info:
        codec.encode(value)
    assert words in str(info.value)
    assert isinstance(info.value, TmrlError)


def test_torch_tensor_in_a_sample_gets_a_hint() -> None:
    import torch

    with pytest.raises(CodecError, match="numpy"):
        codec.encode((torch.zeros(2),))


def test_too_deep_nesting_is_refused() -> None:
    value: Any = []
    for _ in range(2000):
        value = [value]
    with pytest.raises(CodecError):
        codec.encode(value)


def test_weights_with_bad_entries_are_refused() -> None:
    with pytest.raises(CodecError):
        codec.encode_weights({"a": [1.0, 2.0]})
    with pytest.raises(CodecError):
        codec.encode_weights({3: np.zeros(2)})  # type: ignore[dict-item]
    with pytest.raises(CodecError):
        codec.encode_weights({"a": np.array([object()])})


# ---------------------------------------------------------------------------------------------------------------
# hostile bytes: anything that is not a well-formed message raises CodecError and nothing else


def decoders() -> list:
    return [codec.decode, codec.decode_buffer, codec.decode_weights]


def decode_or_codec_error(decode: Any, data: bytes) -> Any:
    """Decode hostile bytes: a CodecError is fine; a value must be made of supported types only."""
    try:
        result = decode(data)
    except CodecError:
        return None
    if decode is codec.decode:
        # whatever came back re-encodes, and decodes to itself
        assert_same(codec.decode(codec.encode(result)), result)
    elif decode is codec.decode_buffer:
        assert isinstance(result, Buffer)
        assert_same_buffer(codec.decode_buffer(codec.encode_buffer(result)), result)
    else:
        import torch

        assert isinstance(result, dict) and all(isinstance(t, torch.Tensor) for t in result.values())
    return result


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    for decode in decoders():
        decode_or_codec_error(decode, data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(codec.Kind)), st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header(kind: codec.Kind, body: bytes) -> None:
    data = codec._pack_header(kind, len(body)) + body
    for decode in decoders():
        decode_or_codec_error(decode, data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(codec.Kind)), st.binary(max_size=200))
def test_random_msgpack_structures_behind_a_valid_header(kind: codec.Kind, tail: bytes) -> None:
    # a plausible structure section (msgpack of random data) followed by random "array data"
    structure = msgpack.packb([tail[:10], {"a": tail[10:20]}, msgpack.ExtType(1, tail[20:60])])
    body = struct.pack("<Q", len(structure)) + structure + tail[60:]
    data = codec._pack_header(kind, len(body)) + body
    for decode in decoders():
        decode_or_codec_error(decode, data)


def _valid_messages() -> list[tuple[Any, bytes]]:
    import torch

    value = {"a": (np.arange(6, dtype=np.float32).reshape(2, 3), [1, 2.5, None]), 7: np.int8(3), "b": b"xy"}
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.int64)}
    return [
        (codec.decode, codec.encode(value)),
        (codec.decode_buffer, codec.encode_buffer(make_buffer(4))),
        (codec.decode_weights, codec.encode_weights(weights)),
    ]


VALID = _valid_messages()


def test_every_truncation_is_refused() -> None:
    for decode, data in VALID:
        for length in range(len(data)):
            with pytest.raises(CodecError):
                decode(data[:length])
        with pytest.raises(CodecError):
            decode(data + b"\x00")


@settings(max_examples=250, deadline=None)
@given(st.data())
def test_bit_flips_give_codec_error_or_a_valid_value(data: st.DataObject) -> None:
    decode, message = data.draw(st.sampled_from(VALID))
    flips = data.draw(st.lists(st.integers(0, len(message) * 8 - 1), min_size=1, max_size=3))
    corrupted = bytearray(message)
    for bit in flips:
        corrupted[bit // 8] ^= 1 << (bit % 8)
    decode_or_codec_error(decode, bytes(corrupted))


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(CodecError, match="expected a buffer message"):
        codec.decode_buffer(codec.encode([1]))
    with pytest.raises(CodecError, match="expected a value message"):
        codec.decode(codec.encode_buffer(make_buffer(1)))
    with pytest.raises(CodecError):
        codec.decode_weights(codec.encode([1]))


def test_bad_header_fields_are_refused() -> None:
    data = bytearray(codec.encode([1, 2]))
    for index, value, words in [(0, ord("X"), "magic"), (4, 99, "version"), (5, 42, "kind"), (6, 1, "flags")]:
        corrupted = bytearray(data)
        corrupted[index] = value
        with pytest.raises(CodecError, match=words):
            codec.decode(bytes(corrupted))
    with pytest.raises(CodecError):
        codec.decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        codec.read_header(12345)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        codec.decode(memoryview(bytes(data) * 2)[::2])  # not contiguous
    # any contiguous bytes-like input works
    assert codec.decode(memoryview(bytearray(data))) == [1, 2]
    assert codec.decode(memoryview(np.frombuffer(bytes(data), np.uint8))) == [1, 2]


def test_non_canonical_buffers_are_refused() -> None:
    good = codec._Encoder().packer
    base = {"samples": [], "maxlen": 1, "dropped": 0}
    base.update(train_return=None, test_return=None, train_steps=None, test_steps=None)
    cases = [
        {"samples": []},  # missing keys
        {**base, "extra": 1},
        {**base, "samples": ()},
        {**base, "samples": [1, 2]},  # more than maxlen
        {**base, "maxlen": 0},
        {**base, "dropped": -1},
        {**base, "train_return": "x"},
        {**base, "train_steps": 1.5},
        # the drop report: a worker name that would not make a metric name, places that are not short names or
        # counts, or more counted by place than dropped
        {**base, "worker": ""},
        {**base, "worker": "a/b"},
        {**base, "worker": "w" * 65},
        {**base, "worker": 3},
        {**base, "dropped_at": {"unsent": 1}},  # dropped is 0
        {**base, "dropped": 5, "dropped_at": {"Unsent": 1}},
        {**base, "dropped": 5, "dropped_at": {"unsent": -1}},
        {**base, "dropped": 5, "dropped_at": {"unsent": 1.0}},
        {**base, "dropped": 5, "dropped_at": [1]},
        {**base, "dropped": 50, "dropped_at": {f"p{'x' * i}": 1 for i in range(9)}},
    ]
    for record in cases:
        structure = good.pack(record)
        body = struct.pack("<Q", len(structure)) + structure
        with pytest.raises(CodecError):
            codec.decode_buffer(codec._pack_header(codec.Kind.BUFFER, len(body)) + body)


def _structure_message(structure: bytes, data: bytes = b"", kind: codec.Kind = codec.Kind.VALUE) -> bytes:
    body = struct.pack("<Q", len(structure)) + structure + data
    return codec._pack_header(kind, len(body)) + body


def test_crafted_structures_are_refused() -> None:
    mark = msgpack.ExtType(codec.EXT_TUPLE, b"")
    record = codec._array_record(1)
    cases = {
        "misplaced tuple marker": msgpack.packb([1, mark]),
        "bare tuple marker": msgpack.packb(mark),
        "marker as dict value": msgpack.packb({"a": mark}),
        "unknown extension": msgpack.packb(msgpack.ExtType(9, b"")),
        "float key": msgpack.packb({1.5: 1}),
        "tuple key": b"\x81\x92\xc7\x00\x03\x01\x01",  # {(1,): 1}
        "duplicate keys": b"\x82\xa1a\x01\xa1a\x02",
        "unknown dtype": msgpack.packb(msgpack.ExtType(1, record.pack(200, 1, 0, 1))),
        "ndim mismatch": msgpack.packb(msgpack.ExtType(1, record.pack(1, 3, 0, 1))),
        "array past the data": msgpack.packb(msgpack.ExtType(1, record.pack(11, 1, 0, 1000))),
        "scalar with dims": msgpack.packb(msgpack.ExtType(2, record.pack(1, 1, 0, 1))),
        "invalid utf-8": b"\xa2\xff\xfe",
        "deep nesting": b"\x91" * 100_000 + b"\xc0",
    }
    for name, structure in cases.items():
        with pytest.raises(CodecError):
            codec.decode(_structure_message(structure, b"\x00" * 8))
            pytest.fail(name)
    # arrays out of order or overlapping
    two = msgpack.packb([msgpack.ExtType(1, record.pack(5, 1, 0, 4)), msgpack.ExtType(1, record.pack(5, 1, 0, 4))])
    with pytest.raises(CodecError, match="order"):
        codec.decode(_structure_message(two, b"\x01" * 8))
    # unused bytes after the last array
    one = msgpack.packb([msgpack.ExtType(1, record.pack(5, 1, 0, 4))])
    with pytest.raises(CodecError, match="unused"):
        codec.decode(_structure_message(one, b"\x01" * 8))
    # bool arrays hold only 0 and 1
    flags = msgpack.packb(msgpack.ExtType(1, record.pack(0, 1, 0, 3)))
    with pytest.raises(CodecError, match="bool"):
        codec.decode(_structure_message(flags, b"\x00\x01\x02"))
    assert codec.decode(_structure_message(flags, b"\x00\x01\x01")).tolist() == [False, True, True]


def test_msgpack_timestamps_decode_as_plain_integers() -> None:
    structure = msgpack.packb(msgpack.Timestamp(1, 5))
    assert codec.decode(_structure_message(structure)) == 1_000_000_005


# ---------------------------------------------------------------------------------------------------------------
# nothing is ever unpickled or executed


class _CreatesFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (str(self.path), "w"))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(target))
    attempts = [
        payload,
        codec._pack_header(codec.Kind.VALUE, len(payload)) + payload,
        codec._pack_header(codec.Kind.BUFFER, len(payload)) + payload,
        codec._pack_header(codec.Kind.WEIGHTS, len(payload)) + payload,
        _structure_message(payload),
    ]
    for data in attempts:
        for decode in decoders():
            with pytest.raises(CodecError):
                decode(data)
    # inside a well-formed message, a pickle is just bytes
    assert codec.decode(codec.encode({"x": payload})) == {"x": payload}
    assert not target.exists()
    # sanity: the payload does create the file when unpickled
    pickle.loads(payload).close()
    assert target.exists()


def test_decoding_never_imports_anything_new() -> None:
    script = (
        "import sys, pickle, numpy as np\n"
        "from tmrl_core import codec\n"
        "before = set(sys.modules)\n"
        "data = codec.encode({'a': (np.zeros(3), [1, 'x', None])})\n"
        "codec.decode(data)\n"
        "codec.decode_buffer(codec.encode_buffer(__import__('tmrl_core.buffer').buffer.Buffer()))\n"
        "assert set(sys.modules) == before, set(sys.modules) - before\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------------
# declared sizes are checked before memory is allocated


def test_a_header_claiming_100_gb_is_refused_at_once() -> None:
    header = codec._pack_header(codec.Kind.VALUE, 100 * 1024**3)
    for decode in decoders():
        started = time.perf_counter()
        with pytest.raises(CodecError):
            decode(header + b"\x00" * 64)
        with pytest.raises(CodecError, match="limit"):
            decode(header + b"\x00" * 64, max_bytes=1024)
        assert time.perf_counter() - started < 1.0
    with pytest.raises(CodecError, match="limit"):
        codec.read_header(header, max_bytes=1 << 20)
    assert codec.read_header(header).body_length == 100 * 1024**3


def test_max_bytes_refuses_larger_messages() -> None:
    data = codec.encode(np.zeros(1000))
    assert codec.read_header(data).total_length == len(data)
    assert_same(codec.decode(data, max_bytes=len(data)), np.zeros(1000))
    with pytest.raises(CodecError, match="limit"):
        codec.decode(data, max_bytes=len(data) - 1)
    weights = codec.encode_weights({"w": np.zeros(1000, np.float32)})
    with pytest.raises(CodecError, match="limit"):
        codec.decode_weights(weights, max_bytes=1000)


def test_huge_declared_arrays_and_sections_allocate_nothing() -> None:
    record = codec._array_record(3)
    structures = [
        msgpack.packb(msgpack.ExtType(1, record.pack(11, 3, 0, 1 << 20, 1 << 20, 1 << 20))),  # 8 PB of float64
        msgpack.packb(msgpack.ExtType(1, record.pack(11, 3, 0, 0, 1 << 62, 1 << 62))),  # empty but absurd
        b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items
        b"\xdf\xff\xff\xff\xff",  # a map of 4 billion pairs
        b"\xc6\xff\xff\xff\xff",  # 4 GB of bin
    ]
    tracemalloc.start()
    try:
        for structure in structures:
            with pytest.raises(CodecError):
                codec.decode(_structure_message(structure, b"\x00" * 16))
        # a structure section claiming more bytes than the body holds
        body = struct.pack("<Q", 1 << 40) + b"\x00" * 16
        with pytest.raises(CodecError):
            codec.decode(codec._pack_header(codec.Kind.VALUE, len(body)) + body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_decoded_size_is_bounded_by_a_multiple_of_the_message_size() -> None:
    # the most expanding structure there is: one-byte empty lists (56 bytes each once built)
    structure = b"\xdd" + struct.pack(">I", 100_000) + b"\x90" * 100_000
    message = _structure_message(structure)
    tracemalloc.start()
    try:
        assert codec.decode(message) == [[]] * 100_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < codec._EXPANSION * len(message)


def _columnar_buffer_message(samples: Any, maxlen: int = 1 << 40) -> bytes:
    record = {"samples": samples, "maxlen": maxlen, "dropped": 0}
    record.update(train_return=None, test_return=None, train_steps=None, test_steps=None)
    encoder = codec._Encoder()
    return encoder.encode(codec.Kind.BUFFER, record)


def test_columnar_buffers_declaring_absurd_row_counts_are_refused_at_once() -> None:
    cases = [
        {"n": 10**12, "columns": ["n"]},  # a trillion Nones from a few bytes
        {"n": 10**7, "columns": ["t", [["n"]] * 50]},
        {"n": 10**6, "columns": ["f", np.zeros(4)]},  # rows do not match the array
    ]
    tracemalloc.start()
    try:
        for samples in cases:
            started = time.perf_counter()
            with pytest.raises(CodecError):
                codec.decode_buffer(_columnar_buffer_message(samples))
            assert time.perf_counter() - started < 1.0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_malformed_columns_are_refused() -> None:
    n = 3
    cases = [
        {"n": n, "columns": ["x", 1]},
        {"n": n, "columns": "t"},
        {"n": n, "columns": ["t", "not a list"]},
        {"n": n, "columns": ["b", np.zeros(n, np.int64)]},  # bools must be a bool array
        {"n": n, "columns": ["a", np.zeros(n)]},  # stacked arrays have at least two dimensions
        {"n": n, "columns": ["f", np.zeros((n, 2))]},
        {"n": n, "columns": ["o", [1, 2]]},
        {"n": n, "columns": ["n", 1]},
        {"n": 1, "columns": ["n"]},  # one sample never travels as columns
        {"n": n, "columns": ["n"], "extra": 1},
    ]
    for samples in cases:
        with pytest.raises(CodecError):
            codec.decode_buffer(_columnar_buffer_message(samples, maxlen=10))
    with pytest.raises(CodecError, match="maxlen"):
        codec.decode_buffer(_columnar_buffer_message({"n": 20, "columns": ["f", np.zeros(20)]}, maxlen=10))


regular_samples = st.tuples(
    hnp.arrays(np.float32, (2, 3)),
    st.floats(),
    st.booleans(),
    st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(width=32).map(np.float32),
    st.tuples(hnp.arrays(np.uint8, 4), st.integers(-5, 5)),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(regular_samples, max_size=6) | st.lists(values, max_size=4), st.integers(0, 5))
def test_buffer_round_trip_of_regular_and_irregular_samples(samples: list[Any], extra: int) -> None:
    buffer = Buffer(maxlen=len(samples) + extra + 1)
    buffer.memory = samples
    buffer.dropped = extra
    decoded = codec.decode_buffer(codec.encode_buffer(buffer))
    assert_same_buffer(decoded, buffer)


def test_a_buffer_carries_its_sender_and_its_drops_by_place() -> None:
    buffer = make_buffer(5)
    buffer.worker = "worker-3"
    buffer.count_dropped("unsent", 40)
    decoded = codec.decode_buffer(codec.encode_buffer(buffer))
    assert (decoded.worker, decoded.dropped, decoded.dropped_at) == ("worker-3", 43, {"unsent": 40})
    # a buffer that does not say (older senders, the tutorial's own buffers) reads as before
    plain = codec.decode_buffer(codec.encode_buffer(make_buffer(5)))
    assert (plain.worker, plain.dropped, plain.dropped_at) == (None, 3, {})
    # a worker's own buffer counts what its maxlen cut, and a buffer added to it brings its counts
    small = Buffer(maxlen=2)
    for sample in make_buffer(5).memory:
        small.append_sample(sample)
    small += buffer
    assert (small.dropped, small.dropped_at) == (3 + 5 + 43, {"buffer": 8, "unsent": 40})
    with pytest.raises(CodecError, match="worker"):
        bad = make_buffer(2)
        bad.worker = "no spaces"
        codec.encode_buffer(bad)


def test_regular_samples_travel_as_columns_with_writable_arrays() -> None:
    buffer = make_buffer(100, image=True)
    assert codec._columns(buffer.memory) is not None
    decoded = codec.decode_buffer(codec.encode_buffer(buffer))
    assert_same_buffer(decoded, buffer)
    act = decoded.memory[5][0]
    assert act.flags.writeable and act.flags.c_contiguous
    act[:] = 0  # a row of the stacked column: writing it changes only this sample
    assert decoded.memory[6][0].any()
    # irregular samples (a shape changes) travel as rows, still exactly
    buffer.memory[3] = (np.zeros(7, np.float32), *buffer.memory[3][1:])
    assert_same_buffer(codec.decode_buffer(codec.encode_buffer(buffer)), buffer)


def test_codec_does_not_import_torch() -> None:
    script = "import sys; import tmrl_core.codec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_large_buffer_round_trip() -> None:
    buffer = make_buffer(300, image=True)
    data = codec.encode_buffer(buffer)
    assert len(data) > 300 * 4 * 8 * 8
    assert_same_buffer(codec.decode_buffer(data, max_bytes=len(data)), buffer)
    assert math.isclose(codec.decode_buffer(data).stat_train_return, -12.5)
