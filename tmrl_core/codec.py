"""The wire format: how values, sample buffers and weights travel between processes (never pickle).

Every transport that crosses a process boundary encodes with this module, and every byte it decodes may come from
an attacker. Decoding either returns a value made only of the supported types below or raises
:class:`~tmrl_core.errors.CodecError`; it never imports, calls or executes anything named by the input, and every
size the input declares is checked against the bytes actually present (and against ``max_bytes``) before memory is
allocated for it. The byte layout is documented in ``docs/wire-format.md``.

Supported values: ``None``, ``bool``, ``int`` (64-bit signed or unsigned range), ``float``, ``str``, ``bytes``,
numpy arrays of a numeric or bool dtype (any shape, 0-d included), numpy scalars of those dtypes, and ``tuple``,
``list`` and ``dict`` (``str`` or ``int`` keys) nesting them. Tuples come back as tuples and lists as lists;
``bytearray``/``memoryview`` come back as ``bytes``; subclasses come back as their base type (a named tuple as a
tuple). Decoded arrays are writable, C-contiguous and own their memory.

Three kinds of message exist: a plain value (:func:`encode` / :func:`decode`), a
:class:`~tmrl_core.buffer.Buffer` with its episode statistics (:func:`encode_buffer` / :func:`decode_buffer`) and
an actor's weights as safetensors (:func:`encode_weights` / :func:`decode_weights`). Only the weights functions import
torch.
"""

from __future__ import annotations

import enum
import math
import operator
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import numpy as np

from tmrl_core.buffer import Buffer
from tmrl_core.errors import CodecError

if TYPE_CHECKING:
    import torch

MAGIC = b"TMRL"
#: The format version written by this module; decoders refuse any other.
FORMAT_VERSION = 1
#: Bytes before the body: magic (4), version (1), kind (1), flags (2), body length (8).
HEADER_SIZE = 16

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "Header",
    "Kind",
    "read_header",
    "encode",
    "decode",
    "encode_buffer",
    "decode_buffer",
    "encode_weights",
    "decode_weights",
]
_HEADER = struct.Struct("<4sBBHQ")
_U64 = struct.Struct("<Q")


class Kind(enum.IntEnum):
    """What a message holds (byte 5 of the header)."""

    VALUE = 1
    BUFFER = 2
    WEIGHTS = 3


class Header(NamedTuple):
    """The fixed-size start of every message."""

    version: int
    kind: Kind
    body_length: int

    @property
    def total_length(self) -> int:
        """Header plus body, in bytes."""
        return HEADER_SIZE + self.body_length


# msgpack extension type codes used in the structure section.
EXT_ARRAY = 1
EXT_SCALAR = 2
EXT_TUPLE = 3

#: dtype code (one byte on the wire) -> dtype. Codes are part of the format: append, never renumber.
DTYPES: tuple[np.dtype, ...] = tuple(
    np.dtype(name)
    for name in (
        "|b1",
        "|i1",
        "<i2",
        "<i4",
        "<i8",
        "|u1",
        "<u2",
        "<u4",
        "<u8",
        "<f2",
        "<f4",
        "<f8",
        "<c8",
        "<c16",
    )
)
_CODE_OF: dict[np.dtype, int] = {dtype: code for code, dtype in enumerate(DTYPES)}
_BOOL_CODE = 0
#: numpy's own limit on dimensions is 64 (32 before numpy 2); one byte on the wire, capped here.
MAX_NDIM = 32
_ARRAY_META = struct.Struct("<BBQ")  # dtype code, ndim, offset in the data section

_RECORDS: dict[int, struct.Struct] = {}


def _array_record(ndim: int) -> struct.Struct:
    """The struct of an array record with ``ndim`` dimensions (cached: built once per ndim)."""
    record = _RECORDS.get(ndim)
    if record is None:
        if ndim > MAX_NDIM:
            raise CodecError(f"array record with {ndim} dimensions (at most {MAX_NDIM})")
        record = _RECORDS[ndim] = struct.Struct(f"<BBQ{ndim}Q")
    return record


_TUPLE_MARK = msgpack.ExtType(EXT_TUPLE, b"")
#: A decoded value takes at most about this many times its message size in memory. Without columns it holds by
#: construction (the worst case is empty containers: one byte on the wire, about 72 bytes in memory);
#: columnar buffers declare a row count, so their estimated cost is checked against it before they are built.
_EXPANSION = 80

_BUFFER_KEYS = frozenset({"samples", "maxlen", "dropped", "train_return", "test_return", "train_steps", "test_steps"})
#: Keys a buffer may carry besides those; written only when set, so that buffers without them read as before.
_OPTIONAL_BUFFER_KEYS = frozenset({"train_timeouts", "worker", "dropped_at"})
#: a worker's name (it becomes part of metric names: ``samples_dropped/<worker>``): short, no separators but ``-``
#: ``_`` ``.`` ``:`` ``#`` ``@``
WORKER_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:#@-]{1,64}")
#: where-keys of ``dropped_at``: a few short lowercase names
_WHERE_PATTERN = re.compile(r"[a-z_]{1,32}")
MAX_DROPPED_AT = 8
#: optional keys of a buffer: the environment's episode metrics (absent when empty, so older senders still decode)
_BUFFER_METRIC_KEYS = frozenset({"train_metrics", "test_metrics"})
#: bounds of one episode-metrics map: entries, and characters per name
MAX_EPISODE_METRICS = 32
MAX_METRIC_NAME = 64


# ----------------------------------------------------------------------------------------------------------------
# header


def _pack_header(kind: Kind, body_length: int) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT_VERSION, int(kind), 0, body_length)


def read_header(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Header:
    """Parse and check the 16-byte header at the start of ``data`` (more bytes may follow).

    Transports that read a stream call this on the first :data:`HEADER_SIZE` bytes to learn how long the message is
    and refuse it before reading the body.

    Raises:
        CodecError: not a tmrl message, an unknown version, kind or flags, or a declared length over ``max_bytes``.
    """
    try:
        view = memoryview(data)
    except TypeError:
        raise CodecError(f"can only decode bytes, not {type(data).__name__}") from None
    if view.nbytes < HEADER_SIZE:
        raise CodecError(f"message too short for a header ({view.nbytes} bytes, need {HEADER_SIZE})")
    magic, version, kind, flags, body_length = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise CodecError("not a tmrl message (bad magic bytes)", hint="the sender does not speak the tmrl wire format")
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unsupported wire format version {version} (this side reads version {FORMAT_VERSION})",
            hint="run the same tmrl-core version on every machine",
        )
    try:
        kind = Kind(kind)
    except ValueError:
        raise CodecError(f"unknown message kind {kind}") from None
    if flags != 0:
        raise CodecError(f"unknown header flags {flags:#06x}")
    if max_bytes is not None and HEADER_SIZE + body_length > max_bytes:
        raise CodecError(
            f"message declares {HEADER_SIZE + body_length} bytes, more than the limit of {max_bytes}",
            hint="raise server.max_message_bytes on every machine, or send smaller buffers",
        )
    return Header(version, kind, body_length)


def _body(data: bytes | bytearray | memoryview, kind: Kind, max_bytes: int | None) -> memoryview:
    """The body of a complete message of ``kind``, after every header check."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"can only decode bytes, not {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise CodecError("can only decode contiguous bytes")
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    header = read_header(view, max_bytes=max_bytes)
    if header.kind is not kind:
        raise CodecError(f"expected a {kind.name.lower()} message, got a {header.kind.name.lower()} message")
    if view.nbytes != header.total_length:
        raise CodecError(
            f"message length {view.nbytes} does not match its header ({header.total_length} bytes): truncated or padded"
        )
    return view[HEADER_SIZE:]


# ----------------------------------------------------------------------------------------------------------------
# structure + data sections (values and buffers)


class _Encoder:
    """Packs a value: the structure goes to msgpack, array bytes are collected for the data section."""

    __slots__ = ("chunks", "offset", "packer")

    def __init__(self) -> None:
        self.chunks: list[Any] = []
        self.offset = 0
        # strict_types: tuples and subclasses reach `default`, so tuples stay tuples and numpy scalars stay numpy
        self.packer = msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True, datetime=False)

    def array_ext(self, array: np.ndarray, ext_code: int) -> msgpack.ExtType:
        dtype = array.dtype
        code = _CODE_OF.get(dtype)
        if code is None and dtype.byteorder == ">" and dtype.newbyteorder("<") in _CODE_OF:
            array = array.astype(dtype.newbyteorder("<"))
            code = _CODE_OF[array.dtype]
        if code is None:
            if dtype.hasobject:
                raise CodecError(
                    f"cannot encode an array of dtype {dtype}: object arrays may hold arbitrary Python objects",
                    hint="convert it to a numeric dtype (e.g. np.asarray(x, dtype=np.float32)) before sending",
                )
            raise CodecError(
                f"cannot encode an array of dtype {dtype}",
                hint="the wire format carries bool, (u)int8-64, float16/32/64 and complex64/128 arrays",
            )
        if array.ndim > MAX_NDIM:
            raise CodecError(f"cannot encode an array with {array.ndim} dimensions (at most {MAX_NDIM})")
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
        meta = _array_record(array.ndim).pack(code, array.ndim, self.offset, *array.shape)
        if array.nbytes:
            self.chunks.append(array)
            self.offset += array.nbytes
        return msgpack.ExtType(ext_code, meta)

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return self.array_ext(obj, EXT_ARRAY)
        if isinstance(obj, np.generic):
            return self.array_ext(np.asarray(obj), EXT_SCALAR)
        if isinstance(obj, tuple):
            return [_TUPLE_MARK, *obj]
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, dict):
            return dict(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        hint = "send numpy arrays, Python scalars, str, bytes, None, and tuples/lists/dicts of them"
        if type(obj).__module__.split(".")[0] == "torch":
            hint = "convert tensors to numpy first (tensor.detach().cpu().numpy())"
        raise CodecError(f"cannot encode a value of type {type(obj).__module__}.{type(obj).__qualname__}", hint=hint)

    def encode(self, kind: Kind, value: Any) -> bytes:
        try:
            structure = self.packer.pack(value)
        except CodecError:
            raise
        except OverflowError as error:
            raise CodecError(f"cannot encode: {error}", hint="integers must fit in 64 bits") from error
        except (TypeError, ValueError, UnicodeEncodeError) as error:
            raise CodecError(f"cannot encode: {error}") from error
        if isinstance(value, _CONTAINERS):
            _check_keys_encodable(value)
        body_length = _U64.size + len(structure) + self.offset
        # one copy of every array: join reads each array's buffer directly
        return b"".join((_pack_header(kind, body_length), _U64.pack(len(structure)), structure, *self.chunks))


_CONTAINERS = (list, tuple, dict)


def _check_keys_encodable(value: Any) -> None:
    """Refuse at encode time any dict key the decoder would refuse (only str and int keys decode).

    msgpack packs plain dicts natively (``default`` never sees them), so their keys are checked by walking the
    containers of ``value``; leaves are not visited. Called after packing succeeded, so the value is known to be
    acyclic and at most msgpack's nesting limit deep.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise CodecError(f"cannot encode a dict key of type {type(key).__name__}", hint=_KEYS_HINT)
            stack.extend([child for child in item.values() if isinstance(child, _CONTAINERS)])
        else:
            stack.extend([child for child in item if isinstance(child, _CONTAINERS)])


_KEYS_HINT = "dict keys must be str or int"


class _Decoder:
    """Unpacks the structure section, building arrays from the data section; every declared size is checked."""

    __slots__ = ("data", "data_length", "offset", "open_tuples")

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.data_length = data.nbytes
        self.offset = 0
        # tuple markers seen minus tuples built: every marker must open exactly one array
        self.open_tuples = 0

    def ext(self, code: int, payload: bytes) -> Any:
        # the hot path of decoding (once per array): kept to a few C calls
        if code == EXT_TUPLE:
            if payload:
                raise CodecError("malformed tuple marker")
            self.open_tuples += 1
            return _TUPLE_MARK
        if code != EXT_ARRAY and code != EXT_SCALAR:
            raise CodecError(f"unknown extension type {code}")
        size = len(payload)
        if size < _ARRAY_META.size or (size - _ARRAY_META.size) % 8:
            raise CodecError("malformed array record")
        ndim = (size - _ARRAY_META.size) // 8
        record = _array_record(ndim).unpack(payload)
        dtype_code, declared_ndim, offset = record[:3]
        if declared_ndim != ndim:
            raise CodecError("malformed array record (bad number of dimensions)")
        if dtype_code >= len(DTYPES):
            raise CodecError(f"unknown dtype code {dtype_code}")
        if code == EXT_SCALAR and ndim != 0:
            raise CodecError("a numpy scalar record must have 0 dimensions")
        if offset != self.offset:
            raise CodecError(f"array data out of order (offset {offset}, expected {self.offset})")
        shape = record[3:]
        dtype = DTYPES[dtype_code]
        # checked with Python integers before numpy sees the shape: no allocation can exceed what was received
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.data_length - offset:
            raise CodecError(f"array declares {nbytes} bytes but only {self.data_length - offset} remain")
        self.offset = offset + nbytes
        array = np.ndarray(shape, dtype, self.data, offset).copy()
        if dtype_code == _BOOL_CODE and nbytes and array.view(np.uint8).max() > 1:
            raise CodecError("bool array holds bytes other than 0 and 1")
        if code == EXT_SCALAR:
            return array[()]
        return array

    def list_(self, items: list[Any]) -> Any:
        if items and items[0] is _TUPLE_MARK:
            self.open_tuples -= 1
            return tuple(items[1:])
        return items

    def pairs(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        for key, _ in pairs:
            # only keys whose hash cannot be steered by the sender (str is randomised; an int in 64 bits collides
            # with at most a handful of others), so a map cannot be built to make dict insertion quadratic
            if type(key) is not str and type(key) is not int:
                raise CodecError(f"dict key of type {type(key).__name__} (only str and int keys are allowed)")
        result = dict(pairs)
        if len(result) != len(pairs):
            raise CodecError("dict with duplicate keys")
        return result

    def decode(self, structure: memoryview) -> Any:
        length = structure.nbytes
        value = msgpack.unpackb(
            structure,
            raw=False,
            use_list=True,
            strict_map_key=False,
            timestamp=2,  # msgpack's built-in timestamp extension, if present, becomes a plain int (nanoseconds)
            ext_hook=self.ext,
            list_hook=self.list_,
            object_pairs_hook=self.pairs,
            max_str_len=length,
            max_bin_len=length,
            max_array_len=length,
            max_map_len=length // 2,
            max_ext_len=length,
        )
        if self.open_tuples != 0:
            raise CodecError("tuple marker outside the first position of an array")
        if self.offset != self.data_length:
            raise CodecError(f"{self.data_length - self.offset} unused bytes in the data section")
        return value


def _encode_structured(kind: Kind, value: Any) -> bytes:
    return _Encoder().encode(kind, value)


def _decode_structured(data: bytes | bytearray | memoryview, kind: Kind, max_bytes: int | None) -> Any:
    body = _body(data, kind, max_bytes)
    try:
        if body.nbytes < _U64.size:
            raise CodecError("body too short")
        (structure_length,) = _U64.unpack_from(body, 0)
        if structure_length > body.nbytes - _U64.size:
            raise CodecError(f"structure section declares {structure_length} bytes, more than the body holds")
        structure_end = _U64.size + structure_length
        decoder = _Decoder(body[structure_end:])
        return decoder.decode(body[_U64.size : structure_end])
    except CodecError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure on untrusted bytes is a CodecError, never a crash
        raise CodecError(f"malformed message: {type(error).__name__}: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# public API: values


def encode(obj: Any) -> bytes:
    """Encode a value (see the module docstring for what is supported) as one message.

    Raises:
        CodecError: the value holds something the format cannot carry (an object array, a torch tensor, an int
            beyond 64 bits, a dict key that is neither str nor int, ...); the message says what.
    """
    return _encode_structured(Kind.VALUE, obj)


def decode(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Any:
    """Decode a message made by :func:`encode`.

    Args:
        data: the complete message.
        max_bytes: refuse a message whose header declares more bytes than this, before looking at its body.

    Raises:
        CodecError: for any input that is not a well-formed value message (never another exception type).
    """
    return _decode_structured(data, Kind.VALUE, max_bytes)


# ----------------------------------------------------------------------------------------------------------------
# public API: buffers


def _optional_number(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


# Columnar buffers. A worker's samples nearly always share one structure (a tuple of arrays of fixed shape and dtype,
# Python floats and bools, an info dict): such a list travels as one column per position of that structure, each
# column of arrays stacked into a single array, so encoding and decoding cost a few numpy calls per column instead
# of Python work per sample. Anything irregular falls back to one msgpack value per sample ("rows").
#
# A column node is a msgpack array whose first element is a tag:
#   ["t", [child, ...]]   tuples of the children's values      ["a", array]  arrays: the rows of the stacked array
#   ["f", float64 array]  Python floats                        ["b", bool array]  Python bools
#   ["i", int64 array]    Python ints                          ["s", array]  numpy scalars of the array's dtype
#   ["n"]                 None                                 ["o", [value, ...]]  anything else, one per sample

#: Estimated bytes of Python objects per sample created by decoding each kind of column node (tuple: plus 8 per
#: child). Decoding refuses a columnar buffer whose estimate exceeds _EXPANSION times its message size, and the
#: encoder applies the same rule (falling back to rows), so a small message cannot make the receiver build millions
#: of objects.
_NODE_COST = {"t": 56, "a": 128, "f": 32, "b": 8, "i": 40, "s": 40, "n": 8, "o": 8}
_DTYPE_OF = operator.attrgetter("dtype")
_SHAPE_OF = operator.attrgetter("shape")
_SCALAR_TAGS = {bool: ("b", np.bool_), int: ("i", np.int64), float: ("f", np.float64)}


def _column(values: tuple[Any, ...] | list[Any]) -> tuple[list[Any], int] | None:
    """The column node for ``values`` (one per sample) and its estimated decode cost per sample; None: use rows."""
    kinds = set(map(type, values))
    if len(kinds) != 1:
        return ["o", list(values)], _NODE_COST["o"]
    kind = kinds.pop()
    if kind is tuple:
        if len(set(map(len, values))) != 1:
            return ["o", list(values)], _NODE_COST["o"]
        children = []
        cost = _NODE_COST["t"]
        for child_values in zip(*values, strict=True):
            node = _column(child_values)
            if node is None:
                return None
            children.append(node[0])
            cost += node[1] + 8
        return ["t", children], cost
    if kind is np.ndarray:
        dtypes = set(map(_DTYPE_OF, values))
        shapes = set(map(_SHAPE_OF, values))
        if len(dtypes) == 1 and len(shapes) == 1 and dtypes.pop() in _CODE_OF:
            shape = shapes.pop()
            if shape:
                # concatenate + reshape: the same result as np.stack, without its per-array Python checks
                return ["a", np.concatenate(values).reshape(len(values), *shape)], _NODE_COST["a"]
        return ["o", list(values)], _NODE_COST["o"]
    if kind in _SCALAR_TAGS:
        tag, dtype = _SCALAR_TAGS[kind]
        try:
            return [tag, np.array(values, dtype=dtype)], _NODE_COST[tag]
        except OverflowError:  # ints beyond 64 bits: refused by the row encoder with a clear message
            return None
    if kind is type(None):
        return ["n"], _NODE_COST["n"]
    if issubclass(kind, np.generic) and np.dtype(kind) in _CODE_OF:
        return ["s", np.array(values, dtype=kind)], _NODE_COST["s"]
    return ["o", list(values)], _NODE_COST["o"]


def _columns(samples: list[Any]) -> dict[str, Any] | None:
    """The columnar form of ``samples``, or None when rows are the better (or only) choice."""
    if len(samples) < 2:
        return None
    node = _column(samples)
    if node is None or node[0][0] == "o":
        return None
    column, cost = node
    data_bytes = sum(_column_nbytes(column))
    if len(samples) * cost > _EXPANSION * data_bytes:
        return None
    return {"n": len(samples), "columns": column}


def _column_nbytes(node: list[Any]) -> Any:
    if node[0] == "t":
        for child in node[1]:
            yield from _column_nbytes(child)
    elif node[0] in ("a", "f", "b", "i", "s"):
        yield node[1].nbytes


def _rebuild(node: Any, n: int, budget: list[int]) -> list[Any]:
    """The ``n`` values of a decoded column node; every shape, dtype and length is checked."""
    if type(node) is not list or not node or type(node[0]) is not str:
        raise CodecError("malformed buffer column")
    tag = node[0]
    cost = _NODE_COST.get(tag)
    if cost is None or len(node) != (1 if tag == "n" else 2):
        raise CodecError(f"malformed buffer column {tag!r}")
    budget[0] -= n * cost
    if budget[0] < 0:
        raise CodecError("buffer columns would take implausibly much memory for the message size")
    if tag == "t":
        if type(node[1]) is not list:
            raise CodecError("malformed tuple column")
        budget[0] -= 8 * n * len(node[1])
        children = [_rebuild(child, n, budget) for child in node[1]]
        return list(zip(*children, strict=True)) if children else [()] * n
    if tag == "n":
        return [None] * n
    values = node[1]
    if tag == "o":
        if type(values) is not list or len(values) != n:
            raise CodecError("malformed buffer column 'o'")
        return values
    if type(values) is not np.ndarray or values.shape[:1] != (n,):
        raise CodecError(f"buffer column {tag!r} must be an array of {n} rows")
    if tag == "a":
        if values.ndim < 2:
            raise CodecError("buffer column 'a' must stack arrays of at least one dimension")
        return list(values)
    if values.ndim != 1:
        raise CodecError(f"buffer column {tag!r} must be one-dimensional")
    if tag == "s":
        return list(values)
    if values.dtype != _SCALAR_TAGS[{"b": bool, "i": int, "f": float}[tag]][1]:
        raise CodecError(f"buffer column {tag!r} has dtype {values.dtype}")
    return values.tolist()


def encode_buffer(buffer: Buffer) -> bytes:
    """Encode a :class:`~tmrl_core.buffer.Buffer`: its samples, ``maxlen``, ``dropped`` and episode statistics."""
    try:
        record = {
            "samples": buffer.memory,
            "maxlen": int(buffer.maxlen),
            "dropped": int(buffer.dropped),
            "train_return": _optional_number(buffer.stat_train_return, float),
            "test_return": _optional_number(buffer.stat_test_return, float),
            "train_steps": _optional_number(buffer.stat_train_steps, int),
            "test_steps": _optional_number(buffer.stat_test_steps, int),
        }
        if buffer.stat_train_timeouts is not None:
            record["train_timeouts"] = _optional_number(buffer.stat_train_timeouts, int)
        if buffer.worker is not None:
            record["worker"] = buffer.worker
        if buffer.dropped_at:
            record["dropped_at"] = {str(key): int(value) for key, value in buffer.dropped_at.items()}
    except (TypeError, ValueError) as error:
        raise CodecError(f"cannot encode the buffer's statistics: {error}") from error
    for key, metrics in (("train_metrics", buffer.stat_train_metrics), ("test_metrics", buffer.stat_test_metrics)):
        if metrics:
            record[key] = _check_episode_metrics(dict(metrics), key, convert=True)
    _check_drop_report(record.get("worker"), record.get("dropped_at", {}), record["dropped"])
    if not isinstance(record["samples"], list):
        raise CodecError(f"buffer.memory must be a list, not {type(buffer.memory).__name__}")
    columns = _columns(buffer.memory)
    if columns is not None:
        record["samples"] = columns
    return _encode_structured(Kind.BUFFER, record)


def decode_buffer(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Buffer:
    """Decode a message made by :func:`encode_buffer` into a new :class:`~tmrl_core.buffer.Buffer`.

    Samples that travelled as columns share memory: the arrays at one position of every sample are rows of one
    array (each writable and C-contiguous).

    Raises:
        CodecError: for any input that is not a well-formed buffer message.
    """
    record = _decode_structured(data, Kind.BUFFER, max_bytes)
    allowed = _BUFFER_KEYS | _OPTIONAL_BUFFER_KEYS | _BUFFER_METRIC_KEYS
    if not isinstance(record, dict) or not _BUFFER_KEYS <= set(record) <= allowed:
        raise CodecError(
            "a buffer message must be a map with exactly the keys " + ", ".join(sorted(_BUFFER_KEYS))
            + " (and optionally " + ", ".join(sorted(_OPTIONAL_BUFFER_KEYS | _BUFFER_METRIC_KEYS)) + ")"
        )
    samples = record["samples"]
    if type(samples) is dict:
        n = samples.get("n")
        if set(samples) != {"n", "columns"} or type(n) is not int or n < 2:
            raise CodecError("malformed columnar samples")
        try:
            samples = _rebuild(samples["columns"], n, [_EXPANSION * len(data)])
        except RecursionError:
            raise CodecError("buffer columns nested too deep") from None
    if type(samples) is not list:
        raise CodecError("buffer samples must be a list")
    maxlen, dropped = record["maxlen"], record["dropped"]
    if type(maxlen) is not int or maxlen < 1 or type(dropped) is not int or dropped < 0:
        raise CodecError("buffer maxlen must be a positive int and dropped a non-negative int")
    if len(samples) > maxlen:
        raise CodecError(f"buffer holds {len(samples)} samples, more than its maxlen {maxlen}")
    for key in ("train_return", "test_return"):
        if record[key] is not None and type(record[key]) is not float:
            raise CodecError(f"buffer {key} must be a float or None")
    timeouts = record.get("train_timeouts")
    if timeouts is not None and (type(timeouts) is not int or timeouts < 0):
        raise CodecError("buffer train_timeouts must be a non-negative int or None")
    for key in ("train_steps", "test_steps"):
        if record[key] is not None and type(record[key]) is not int:
            raise CodecError(f"buffer {key} must be an int or None")
    _check_drop_report(record.get("worker"), record.get("dropped_at", {}), dropped)
    buffer = Buffer(maxlen=maxlen)
    buffer.memory = samples
    buffer.dropped = dropped
    buffer.dropped_at = dict(record.get("dropped_at", {}))
    buffer.worker = record.get("worker")
    buffer.stat_train_return = record["train_return"]
    buffer.stat_test_return = record["test_return"]
    buffer.stat_train_steps = record["train_steps"]
    buffer.stat_test_steps = record["test_steps"]
    buffer.stat_train_timeouts = timeouts
    buffer.stat_train_metrics = _check_episode_metrics(record.get("train_metrics", {}), "train_metrics")
    buffer.stat_test_metrics = _check_episode_metrics(record.get("test_metrics", {}), "test_metrics")
    return buffer


def _check_drop_report(worker: Any, dropped_at: Any, dropped: int) -> None:
    """The sender's name and the drop counts by place are metric names and values at the trainer: bounded, and
    counting no more than ``dropped``."""
    if worker is not None and (type(worker) is not str or not WORKER_NAME_PATTERN.fullmatch(worker)):
        raise CodecError(f"buffer worker must be a name matching {WORKER_NAME_PATTERN.pattern}, not {worker!r:.80}")
    if type(dropped_at) is not dict or len(dropped_at) > MAX_DROPPED_AT:
        raise CodecError(f"buffer dropped_at must be a map of at most {MAX_DROPPED_AT} entries")
    for key, value in dropped_at.items():
        if type(key) is not str or not _WHERE_PATTERN.fullmatch(key) or type(value) is not int or value < 0:
            raise CodecError(f"buffer dropped_at: {key!r:.40} -> {value!r:.40} is not a place name -> count >= 0")
    if sum(dropped_at.values()) > dropped:
        raise CodecError(f"buffer dropped_at counts {sum(dropped_at.values())} samples, more than dropped={dropped}")


def _check_episode_metrics(metrics: Any, key: str, convert: bool = False) -> dict[str, float]:
    """A bounded map of short str names to finite floats (``convert``: numpy and int numbers become float)."""
    if type(metrics) is not dict or len(metrics) > MAX_EPISODE_METRICS:
        raise CodecError(f"buffer {key} must be a map of at most {MAX_EPISODE_METRICS} entries")
    out = {}
    for name, value in metrics.items():
        if type(name) is not str or not 0 < len(name) <= MAX_METRIC_NAME:
            raise CodecError(f"buffer {key} names must be strings of 1 to {MAX_METRIC_NAME} characters")
        if convert and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not float or not np.isfinite(value):
            raise CodecError(f"buffer {key}[{name!r}] must be a finite float")
        out[name] = value
    return out


# ----------------------------------------------------------------------------------------------------------------
# public API: weights (safetensors; torch imported only here)


def encode_weights(state_dict: Mapping[str, Any]) -> bytes:
    """Encode an actor's weights (parameter name -> torch tensor or numpy array) as a safetensors message.

    Tensors are moved to the CPU and detached; views sharing memory are stored as separate copies.

    Raises:
        CodecError: a key that is not a str, or a value that is neither a tensor nor a numeric numpy array.
    """
    import safetensors.torch
    import torch

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise CodecError(f"weights keys must be str, got {type(name).__name__}")
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype not in _CODE_OF and value.dtype.newbyteorder("<") not in _CODE_OF:
                raise CodecError(f"weights {name!r}: cannot encode an array of dtype {value.dtype}")
            value = torch.from_numpy(np.ascontiguousarray(value.astype(value.dtype.newbyteorder("="), copy=False)))
        if not isinstance(value, torch.Tensor):
            raise CodecError(
                f"weights {name!r}: expected a torch tensor or numpy array, got {type(value).__name__}",
                hint="send model.state_dict()",
            )
        tensor = value.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (tied weights): give each its own copy
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in storages:
            tensor = tensor.clone()
        storages.add(storage)
        tensors[name] = tensor
    try:
        body = safetensors.torch.save(tensors)
    except Exception as error:  # report what safetensors refused, with the type
        raise CodecError(f"cannot encode weights: {error}") from error
    return _pack_header(Kind.WEIGHTS, len(body)) + body


def decode_weights(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Decode a message made by :func:`encode_weights` into CPU tensors.

    Raises:
        CodecError: for any input that is not a well-formed weights message.
    """
    body = _body(data, Kind.WEIGHTS, max_bytes)
    import safetensors.torch

    try:
        weights = safetensors.torch.load(bytes(body))
    except BaseException as error:  # safetensors' Rust panics derive from BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise CodecError(f"malformed weights: {type(error).__name__}: {error}") from None
    return dict(weights)
