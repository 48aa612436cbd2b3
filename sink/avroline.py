"""The native path of Avro values: each schema id's record schema compiled into a program for
the C extension's `AvroLine`, which reads a wire-format value into the JSON object orjson would
write for what fastavro reads, and gives its row through the table's native `Line`.

A schema id takes this path only after one of its messages took the general way, which fetches
and checks the schema (SchemaDecoders.read); a field goes natively only where its column's row
is the general way's exactly, else every message reaching it takes the general way."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Protocol, Union

import orjson
import sqlalchemy as sa

from pg_bulk_ingest import CopyRow, CopyTuple

from .config import Format
from .kinds import Native
from .path import _NATIVE_KEY_FORMATS, Handler, Mapped
from .records import Message

try:
    from . import _copyline
except ImportError:  # not built: Avro values take the general way
    _copyline = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

# Whether the C extension, with its Avro line, was built.
NATIVE = _copyline is not None and hasattr(_copyline, "AvroLine")

# The wire format's header: magic byte 0, a 4-byte big-endian schema id.
_HEADER_BYTES = 5


class Op(enum.IntEnum):
    """The ops of a program: sink/_avroline.h's `enum avro_op`, exported as AVRO_OPS."""

    FAIL = 0  # reaching it: not sure, the general way
    NULL = 1
    BOOLEAN = 2
    INT = 3
    LONG = 4
    FLOAT = 5
    DOUBLE = 6
    STRING = 7
    BYTES = 8
    FIXED = 9
    ENUM = 10
    ARRAY = 11
    MAP = 12
    RECORD = 13
    UNION = 14
    DECIMAL = 15
    TIMESTAMP = 16
    DATE = 17
    UUID = 18


if NATIVE and {op.name: op.value for op in Op} != _copyline.AVRO_OPS:
    raise ImportError("sink._copyline was built from another sink/_avroline.h: reinstall")

# (op, a, b, c, labels, children): see sink/_avroline.h's ANode.
Node = tuple[int, int, int, int, tuple[bytes, ...], tuple[Any, ...]]
# What a node's value feeds: a top-level column of this native kind (with its parameters), a
# value nested in a jsonb column or text array (JSON), or nothing (read and checked only).
_JSON = "json"
Want = Optional[Union[tuple[int, int, int], str]]

_FAIL: Node = (Op.FAIL, 0, 0, 0, (), ())
_PRIMITIVE_OPS = {
    "null": Op.NULL,
    "boolean": Op.BOOLEAN,
    "int": Op.INT,
    "long": Op.LONG,
    "float": Op.FLOAT,
    "double": Op.DOUBLE,
    "string": Op.STRING,
    "bytes": Op.BYTES,
}
# Per op, the column kinds whose row the JSON value gives exactly as the general way gives it
# from fastavro's value (the native line reads these kinds from JSON as the JSON general way
# does, and fastavro's value is the one orjson reads from the JSON written). Floats only
# top-level: orjson and repr() spell some differently; ints not into NUMERIC (the general way
# writes the column's scale).
_COLUMN_KINDS: Mapping[Op, frozenset[Native]] = {
    Op.BOOLEAN: frozenset({Native.BOOL, Native.JSONB}),
    Op.INT: frozenset({Native.INT, Native.JSONB}),
    Op.LONG: frozenset({Native.INT, Native.JSONB}),
    Op.FLOAT: frozenset({Native.FLOAT}),
    Op.DOUBLE: frozenset({Native.FLOAT}),
    Op.STRING: frozenset(
        {Native.TEXT, Native.TIMESTAMPTZ, Native.TIMESTAMP, Native.DATE, Native.UUID, Native.JSONB}
    ),
    Op.ENUM: frozenset({Native.TEXT, Native.JSONB}),
    Op.UUID: frozenset({Native.UUID, Native.TEXT}),
    Op.TIMESTAMP: frozenset({Native.TIMESTAMPTZ}),  # aware UTC: orjson's text, as the encoder's
    Op.DATE: frozenset({Native.DATE}),
    Op.ARRAY: frozenset({Native.JSONB, Native.TEXT_ARRAY}),
    Op.MAP: frozenset({Native.JSONB}),
    Op.RECORD: frozenset({Native.JSONB}),
}
# What orjson writes as fastavro reads it, nested in a JSON value.
_JSON_OPS = frozenset(
    {Op.NULL, Op.BOOLEAN, Op.INT, Op.LONG, Op.STRING, Op.ENUM, Op.ARRAY, Op.MAP, Op.RECORD}
)
# NUMERIC without precision: its native parameters (sink.kinds._numeric_parameters).
_ANY_NUMERIC = (1000, 1000)


def program(schema: Any, columns: Sequence[tuple[str, int, int, int, bool]]) -> Node | None:
    """The program of a record schema (as fastavro parses it) for a table's native columns
    (field, kind, a, b, required); None where no value of it would take the native path: not
    a record, or a type carrying a Debezium semantic type, which the general way converts."""
    from .registry import has_semantics  # noqa: PLC0415 (fastavro loads with it)

    if not isinstance(schema, dict) or schema.get("type") != "record" or has_semantics(schema):
        return None
    named: Mapping[str, Any] = schema.get("__named_schemas") or {}
    kinds = {name: (kind, a, b) for name, kind, a, b, _ in columns}
    labels, children = [], []
    for field in schema.get("fields") or ():
        want = kinds.get(field["name"])
        labels.append(b"" if want is None else orjson.dumps(field["name"]) + b":")
        children.append(_node(field["type"], named, frozenset({schema["name"]}), want))
    if not any(labels):
        return None
    return (Op.RECORD, 0, 0, 0, tuple(labels), tuple(children))


def _node(schema: Any, named: Mapping[str, Any], seen: frozenset[str], want: Want) -> Node:
    """One type's node; FAIL where its value does not go natively where `want` says."""
    if isinstance(schema, list):
        return (Op.UNION, 0, 0, 0, (), tuple(_node(b, named, seen, want) for b in schema))
    if isinstance(schema, str):
        if schema in _PRIMITIVE_OPS:
            return _fits((_PRIMITIVE_OPS[schema], 0, 0, 0, (), ()), want)
        schema = None if schema in seen else named.get(schema)  # recursive: a tree cannot
    if not isinstance(schema, dict):
        return _FAIL
    kind = schema.get("type")
    logical = schema.get("logicalType")
    inner = isinstance(kind, (list, dict)) or (isinstance(kind, str) and kind in named)
    if inner or (logical is None and kind in _PRIMITIVE_OPS):
        return _node(kind, named, seen, want)
    if logical is not None:
        return _logical(schema, f"{kind}-{logical}", want)
    return _complex(schema, named, seen, want)


def _complex(
    schema: dict[str, Any], named: Mapping[str, Any], seen: frozenset[str], want: Want
) -> Node:
    kind = schema.get("type")
    inner: Want = None if want is None else _JSON
    node = _FAIL
    if kind == "record":
        inside = seen | {schema.get("name", "")}
        fields = schema.get("fields") or ()
        labels = tuple(orjson.dumps(f["name"]) + b":" for f in fields)
        nodes = tuple(_node(f["type"], named, inside, inner) for f in fields)
        node = (Op.RECORD, 0, 0, 0, labels, nodes)
    elif kind in ("array", "map"):
        key = "items" if kind == "array" else "values"
        child = _node(schema.get(key), named, seen, inner)
        node = (Op.ARRAY if kind == "array" else Op.MAP, 0, 0, 0, (), (child,))
    elif kind == "enum":
        symbols = tuple(orjson.dumps(symbol) for symbol in schema.get("symbols") or ())
        node = (Op.ENUM, 0, 0, 0, symbols, ())
    elif kind == "fixed" and isinstance(schema.get("size"), int) and schema["size"] >= 0:
        node = (Op.FIXED, schema["size"], 0, 0, (), ())
    return _fits(node, want)


# fastavro's logical types other than decimal (fastavro.read.LOGICAL_READERS): their nodes;
# the time ones take the general way; a local timestamp (naive) is read and checked only.
_LOGICAL: Mapping[str, Node] = {
    "long-timestamp-millis": (Op.TIMESTAMP, 1000, 0, 0, (), ()),
    "long-timestamp-micros": (Op.TIMESTAMP, 1, 0, 0, (), ()),
    "long-local-timestamp-millis": (Op.TIMESTAMP, 1000, 0, 0, (), ()),
    "long-local-timestamp-micros": (Op.TIMESTAMP, 1, 0, 0, (), ()),
    "int-date": (Op.DATE, 0, 0, 0, (), ()),
    "string-uuid": (Op.UUID, 0, 0, 0, (), ()),
    "int-time-millis": _FAIL,
    "long-time-micros": _FAIL,
}


def _logical(schema: dict[str, Any], logical: str, want: Want) -> Node:
    """A type with a logicalType; one fastavro does not know leaves the value as its type reads."""
    if logical in ("bytes-decimal", "fixed-decimal"):
        return _decimal(schema, logical == "fixed-decimal", want)
    node = _LOGICAL.get(logical)
    if node is None:
        kind = schema.get("type")
        node = (_PRIMITIVE_OPS[kind], 0, 0, 0, (), ()) if kind in _PRIMITIVE_OPS else _FAIL
    elif "local" in logical and want is not None:
        return _FAIL
    return _fits(node, want)


def _decimal(schema: dict[str, Any], fixed: bool, want: Want) -> Node:
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    size = schema.get("size", -1) if fixed else -1
    if not (isinstance(precision, int) and isinstance(scale, int) and isinstance(size, int)):
        return _FAIL
    if precision < 1 or not 0 <= scale <= precision or (fixed and size < 0):
        return _FAIL
    node: Node = (Op.DECIMAL, scale, precision, size, (), ())
    # The general way quantizes to the column's scale, then writes str(Decimal): the same
    # text where the scales agree, or where the column takes any scale.
    if want is None:
        return node
    exact = isinstance(want, tuple) and want[0] == Native.NUMERIC
    return node if exact and (want[1:] == _ANY_NUMERIC or want[2] == scale) else _FAIL


def _fits(node: Node, want: Want) -> Node:
    """The node where its value may go where `want` says, else FAIL."""
    op = Op(node[0])
    if want is None or op is Op.NULL or op is Op.FAIL:
        return node
    if want == _JSON:
        fits = op in _JSON_OPS
    else:
        assert isinstance(want, tuple)
        fits = Native(want[0]) in _COLUMN_KINDS.get(op, frozenset())
    return node if fits else _FAIL


class SchemaSource(Protocol):
    """Where an Avro schema id's parsed schema is found (sink.registry.SchemaDecoders)."""

    def avro_schema(self, schema_id: int) -> Any: ...


def _not_sure(key: bytes | None, value: bytes | None) -> None:
    return None  # the line's fallback: the message takes the general way


class AvroFastPath:
    """A topic of Avro values that feeds one table whose columns all read top-level fields:
    `row(key, value)` gives the same CopyRow as the general way, or None where the message
    takes the general way (see the module's docstring). `learning(lines)` wraps the topic's
    general way so that each schema id it reads is then compiled for this path."""

    __slots__ = ("_columns", "_line", "_schemas", "native", "row", "table")

    def __init__(
        self,
        table: sa.Table,
        native_columns: Sequence[tuple[str, int, int, int, bool]],
        key_format: Format,
        schemas: SchemaSource,
        binary_columns: Sequence[int] | None = None,
    ) -> None:
        self.table = table
        self._columns = native_columns
        self._schemas = schemas
        key = _NATIVE_KEY_FORMATS.get(key_format, 0)
        if binary_columns is None:
            line = _copyline.Line(native_columns, CopyRow, _not_sure, key)
        else:  # a CopyTuple, for a table written in binary COPY (see sink.path.FastPath)
            line = _copyline.Line(native_columns, CopyTuple, _not_sure, key, binary=binary_columns)
        self._line = _copyline.AvroLine(line, key_format not in _NATIVE_KEY_FORMATS)
        self.row: Callable[[bytes | None, bytes | None], CopyRow | CopyTuple | None] = (
            self._line.row
        )
        self.native = True

    @property
    def native_rows(self) -> int:
        """How many rows this path gave."""
        return self._line.native_rows

    def learning(self, lines: Handler) -> Handler:
        learned: set[int] = set()

        def handle(message: Message) -> Mapped:
            mapped = lines(message)  # raises for a message it cannot map: nothing learned
            value = message.value
            if value is not None and len(value) >= _HEADER_BYTES and value[0] == 0:
                schema_id = int.from_bytes(value[1:_HEADER_BYTES], "big")
                if schema_id not in learned:
                    learned.add(schema_id)
                    self.learn(schema_id)
            return mapped

        return handle

    def learn(self, schema_id: int) -> None:
        """Compiles a schema id the general way has read (fetched and checked)."""
        schema = self._schemas.avro_schema(schema_id)
        try:
            compiled = None if schema is None else program(schema, self._columns)
            self._line.learn(schema_id, compiled)
        except (ValueError, RecursionError):  # nested deeper, or bigger, than the C code takes
            compiled = None
            self._line.learn(schema_id, None)
        logger.info(
            "%s: Avro values of schema id %d %s",
            self.table.name,
            schema_id,
            "go straight to COPY text (native)" if compiled else "take the general path",
        )
