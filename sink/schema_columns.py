"""Columns from a topic's schema: a `[[tables]]` entry without `columns` whose value_format is a
registry format (avro, protobuf, json-schema) takes its columns from the value schemas of its first
topic (subject `<topic>-value`, the serializers' default naming), and, without primary_key and with
a registry key_format, its primary key from the newest key schema (`<topic>-key`).

The columns hold the records of every version registered under the subject: each field takes its
place from the first version that has it, a later version may widen its type (`_wider`), and a
field added after the first version, or left out by a later one, is nullable. A change no column
can hold (a type narrowed to one that loses values, TEXT to INTEGER) is refused, naming the
subject, the versions and the field. The fold depends on the registry alone, so every worker of a
group derives the same definition from it; while running, a schema on the topic that the table
does not hold yet (`changes`) makes the worker derive the columns again (sink.worker).

With `envelope = "debezium"` the columns are the fields of the change event's `after`. Types
follow the schema's logical types (Avro `decimal` is NUMERIC(p,s), `timestamp-*` TIMESTAMPTZ,
`local-timestamp-*` TIMESTAMP, `date`, `time-*`, `uuid`), Kafka Connect's and Debezium's semantic
types (`io.debezium.time.*`, `io.debezium.data.*`), and, where Debezium propagates them, the
source column's own type (`__debezium.source.column.type`, length and scale). Records, maps and
unions of several types are JSONB. The resolved columns are logged; explicit columns win.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from .config import (
    REGISTRY_FORMATS,
    ColumnSettings,
    ColumnType,
    Format,
    Source,
    SourceKind,
    TableSettings,
    parse_column_type,
)
from .errors import ConfigError, OutdatedDefinitionError, SchemaEvolutionError
from .offsets import StoredState

logger = logging.getLogger(__name__)

# The versions registered under a subject, oldest first, each with its schema parsed as the
# readers parse it ([]: no such subject). sink.registry.SchemaDecoders.versions is the one the
# worker uses.
Versions = Callable[[str, Format], Sequence[tuple[int, Any]]]

JSONB = "JSONB"
_AVRO_TYPES = {
    "long": "BIGINT",
    "int": "INTEGER",
    "string": "TEXT",
    "boolean": "BOOLEAN",
    "float": "REAL",
    "double": "DOUBLE PRECISION",
    "bytes": "BYTEA",
    "fixed": "BYTEA",
    "enum": "TEXT",
    "record": JSONB,
    "map": JSONB,
}
_AVRO_LOGICAL = {
    "timestamp-millis": "TIMESTAMPTZ",
    "timestamp-micros": "TIMESTAMPTZ",
    "local-timestamp-millis": "TIMESTAMP",
    "local-timestamp-micros": "TIMESTAMP",
    "date": "DATE",
    "time-millis": "TIME",
    "time-micros": "TIME",
    "uuid": "UUID",
}
# Semantic types by name (Connect's `name`, Avro's `connect.name`), as the readers give them.
_SEMANTIC = {
    "io.debezium.time.ZonedTimestamp": "TIMESTAMPTZ",
    "io.debezium.time.Timestamp": "TIMESTAMP",
    "io.debezium.time.MicroTimestamp": "TIMESTAMP",
    "io.debezium.time.NanoTimestamp": "TIMESTAMP",
    "io.debezium.time.Date": "DATE",
    "io.debezium.time.Time": "TIME",
    "io.debezium.time.MicroTime": "TIME",
    "io.debezium.time.NanoTime": "TIME",
    "io.debezium.time.ZonedTime": "TEXT",  # TIME WITH TIME ZONE is not a column type here
    "io.debezium.time.MicroDuration": "INTERVAL",
    "io.debezium.data.VariableScaleDecimal": "NUMERIC",
    "io.debezium.data.Uuid": "UUID",
    "io.debezium.data.Json": JSONB,
    "org.apache.kafka.connect.data.Timestamp": "TIMESTAMPTZ",
    "org.apache.kafka.connect.data.Date": "DATE",
    "org.apache.kafka.connect.data.Time": "TIME",
}
_CONNECT_INTEGERS = {"int8": "SMALLINT", "int16": "SMALLINT"}
_SOURCE_TYPE = "__debezium.source.column.type"
_SOURCE_LENGTH = "__debezium.source.column.length"
_SOURCE_SCALE = "__debezium.source.column.scale"
_PROTOBUF_TYPES = {
    FieldDescriptor.TYPE_INT64: "BIGINT",
    FieldDescriptor.TYPE_SINT64: "BIGINT",
    FieldDescriptor.TYPE_SFIXED64: "BIGINT",
    FieldDescriptor.TYPE_INT32: "INTEGER",
    FieldDescriptor.TYPE_SINT32: "INTEGER",
    FieldDescriptor.TYPE_SFIXED32: "INTEGER",
    FieldDescriptor.TYPE_UINT32: "BIGINT",
    FieldDescriptor.TYPE_FIXED32: "BIGINT",
    FieldDescriptor.TYPE_UINT64: "NUMERIC(20,0)",
    FieldDescriptor.TYPE_FIXED64: "NUMERIC(20,0)",
    FieldDescriptor.TYPE_BOOL: "BOOLEAN",
    FieldDescriptor.TYPE_STRING: "TEXT",
    FieldDescriptor.TYPE_BYTES: "BYTEA",
    FieldDescriptor.TYPE_FLOAT: "REAL",
    FieldDescriptor.TYPE_DOUBLE: "DOUBLE PRECISION",
    FieldDescriptor.TYPE_ENUM: "TEXT",
}
_PROTOBUF_MESSAGES = {
    "google.protobuf.Timestamp": "TIMESTAMPTZ",
    "google.protobuf.Duration": "INTERVAL",
    "google.protobuf.Struct": JSONB,
    "google.protobuf.Value": JSONB,
    "google.protobuf.ListValue": JSONB,
}
_JSON_TYPES = {
    "integer": "BIGINT",
    "number": "DOUBLE PRECISION",
    "string": "TEXT",
    "boolean": "BOOLEAN",
    "object": JSONB,
}
_JSON_FORMATS = {
    "date-time": "TIMESTAMPTZ",
    "date": "DATE",
    "time": "TIME",
    "uuid": "UUID",
}
# Kafka Connect's numeric types; Confluent's JSON Schema serializer marks them (`connect.type`).
_CONNECT_NUMBERS = {
    "int8": "SMALLINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "REAL",
    "float64": "DOUBLE PRECISION",
}
_CONNECT_TYPES = {
    **_CONNECT_NUMBERS,
    "boolean": "BOOLEAN",
    "string": "TEXT",
    "bytes": "BYTEA",
    "map": JSONB,
    "struct": JSONB,
}
_CONNECT_DECIMAL = "org.apache.kafka.connect.data.Decimal"
# Where Debezium says a decimal's precision.
_CONNECT_PRECISION = "connect.decimal.precision"


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a schema as a column: its name, type and whether it may be NULL."""

    name: str
    type: str
    nullable: bool = True


def key_from_schema(table: TableSettings) -> bool:
    """Whether the table's primary key is to come from its key schema."""
    return not table.columns and not table.primary_key and table.key_format in REGISTRY_FORMATS


def with_schema_columns(tables: Sequence[TableSettings], versions: Versions) -> list[TableSettings]:
    """The tables, each one without columns given those of its topic's schemas; raises
    ConfigError naming the table, subject and field where that cannot be done."""
    return [table if table.columns else _resolved(table, versions) for table in tables]


def _resolved(table: TableSettings, versions: Versions) -> TableSettings:
    where = f"table {table.qualified_name}"
    if not table.topics:
        raise ConfigError(f"{where}: columns come from the schema of its topics; list `topics`")
    subject = f"{table.topics[0]}-value"
    history = _registered(versions, subject, table.value_format, where)
    fields = _evolved(
        [(version, _row_fields(table, schema, subject, where)) for version, schema in history],
        f"{where}: {subject}",
    )
    key_fields: list[Field] = []
    if key_from_schema(table):
        key_subject = f"{table.topics[0]}-key"
        _, key_schema = _registered(versions, key_subject, table.key_format, where)[-1]
        key_fields = _key_fields(table, key_schema, key_subject, where)
    numbers = tuple(version for version, _ in history)
    return _defined(
        dataclasses.replace(table, schema_versions=numbers), fields, key_fields, subject
    )


def _key_fields(table: TableSettings, key_schema: Any, key_subject: str, where: str) -> list[Field]:
    key_fields = _fields_of(table.key_format, key_schema, key_subject, where)
    if not key_fields:
        raise ConfigError(
            f"{where}: the key schema ({key_subject}) is not a record, message or object, "
            f"so it names no key columns; set primary_key"
        )
    return key_fields


def _defined(
    table: TableSettings, fields: list[Field], key_fields: list[Field], label: str
) -> TableSettings:
    """The table with the columns of `fields` (then those of `key_fields` the value lacks) and,
    without primary_key, the key fields as its primary key; `label` says where they came from."""
    where = f"table {table.qualified_name}"
    primary_key = table.primary_key or tuple(field.name for field in key_fields)
    columns = _columns(table, fields, key_fields, set(primary_key), where)
    named = {column.name for column in columns}
    missing = [name for name in primary_key if name not in named]
    missing += [name for index in table.indexes for name in index.columns if name not in named]
    if missing:
        raise ConfigError(
            f"{where}: primary_key or an index names {missing}, which {label} does not hold"
        )
    resolved = dataclasses.replace(table, columns=columns, primary_key=primary_key)
    held = ", ".join(map(str, table.schema_versions))
    logger.info(
        "%s: columns from %s: %s; primary key %s%s",
        table.qualified_name,
        label,
        ", ".join(f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in columns),
        list(primary_key) or "none",
        f" (holding versions {held})" if held else "",
    )
    return resolved


def from_messages(table: TableSettings) -> bool:
    """Whether the table's columns are to come from the Connect schemas its values carry."""
    return not table.columns and table.value_format is Format.CONNECT_JSON


def message_columns(
    table: TableSettings, held: Mapping[str, Any] | None, seen: Sequence[tuple[Any, Any]]
) -> TableSettings:
    """The table with the columns of the Connect schemas its values carry: those the group's
    stored state holds (`held`, as `held_columns` gives them), widened to hold the values of
    each (key schema, value schema) seen since, in order. The key schema, where no primary_key
    is given, names the primary key; once held, the key stays."""
    where = f"table {table.qualified_name}"
    if not table.topics:
        raise ConfigError(f"{where}: columns come from the schema of its topics; list `topics`")
    subject = f"the Connect schemas of {table.topics[0]}'s values"
    fields = [Field(name, kind, nullable) for name, kind, nullable in (held or {}).get("value", ())]
    key_fields = [Field(name, kind, False) for name, kind in (held or {}).get("key", ())]
    keyed_by_schema = not table.primary_key and table.key_format is Format.CONNECT_JSON
    key_schemas = [key for key, _ in seen if key is not None]
    if keyed_by_schema and not key_fields and (seen or held):  # the first key with a schema
        keys = f"the Connect schema of {table.topics[0]}'s keys"
        key_fields = _key_fields(table, (key_schemas or [None])[0], keys, where)
    for _, value_schema in seen:
        row = _row_fields(table, value_schema, subject, where)
        if fields:
            row = list(_merged({f.name: f for f in fields}, row, f"{where}: {subject}").values())
        fields = row
    if not fields:
        raise ConfigError(f"{where}: no schema has been seen to take columns from")
    table = dataclasses.replace(table, columns_from_messages=True)
    return _defined(table, fields, key_fields, subject)


def held_columns(table: TableSettings) -> dict[str, Any]:
    """What the group's stored state keeps of a table whose columns come from its messages: its
    value columns as fields (name, type, nullable), and its primary key's (name, type)."""
    keys = set(table.primary_key)
    types = {column.name: str(column.type) for column in table.columns}
    return {
        "value": [
            [column.name, str(column.type), column.nullable or column.name in keys]
            for column in table.columns
            if column.source.kind is SourceKind.VALUE
        ],
        "key": [[name, types[name]] for name in table.primary_key],
    }


def changes(table: TableSettings) -> Callable[[Any], str | None]:
    """For a table whose columns came from its topic's schemas: what a value schema seen on the
    topic holds that the columns do not (a field, a wider type, a null where a column is NOT
    NULL), said in a few words; None when the table holds its records as it is."""
    subject = f"{table.topics[0]}-value"
    where = f"table {table.qualified_name}"
    keys = set(table.primary_key)
    held = {
        column.name: Field(column.name, str(column.type), column.nullable or column.name in keys)
        for column in table.columns
        if column.source.kind is SourceKind.VALUE
    }

    def change(schema: Any) -> str | None:
        try:
            fields = _row_fields(table, schema, subject, where)
            merged = _merged(held, fields, f"{where}: {subject}")
        except ConfigError as error:
            return str(error)
        said = [
            f"adds field {name!r}" if name not in held else f"changes field {name!r}"
            for name, field in merged.items()
            if name not in held
            or parse_column_type(field.type) != parse_column_type(held[name].type)
            or field.nullable != held[name].nullable
        ]
        return ", ".join(said) or None

    return change


def no_newer_versions(
    tables: Sequence[TableSettings], numbers: Callable[[str], Sequence[int]]
) -> None:
    """OutdatedDefinitionError if the registry (`numbers`: the versions of a subject) holds a
    version that a table's columns were not derived from: called before a worker applies a
    definition derived from schemas, under the group's migration lock, so that no worker applies
    columns older than another one's."""
    for table in tables:
        if table.schema_versions:
            subject = f"{table.topics[0]}-value"
            newer = sorted(set(numbers(subject)) - set(table.schema_versions))
            if newer:
                raise OutdatedDefinitionError(
                    f"table {table.qualified_name}: {subject} holds version(s) {newer}, newer "
                    f"than those its definition was derived from"
                )


def no_newer(
    tables: Sequence[TableSettings],
    numbers: Callable[[str], Sequence[int]] | None,
    state: StoredState,
) -> None:
    """`no_newer_versions` (with the registry's `numbers`, where tables take columns from it)
    and `no_newer_columns` of the group's stored `state`."""
    if numbers is not None:
        no_newer_versions(tables, numbers)
    no_newer_columns(tables, state.columns)


def no_newer_columns(tables: Sequence[TableSettings], held: Mapping[str, Any]) -> None:
    """OutdatedDefinitionError if the group's stored state holds columns (`held`, by table)
    that a table whose columns come from its messages lacks, or holds narrower: another worker
    applied them, for messages this one has not read."""
    for table in tables:
        stored = held.get(table.qualified_name)
        if not table.columns_from_messages or stored is None:
            continue
        mine = held_columns(table)
        types = {name: (kind, nullable) for name, kind, nullable in mine["value"]}
        lacking = [
            name
            for name, kind, nullable in stored["value"]
            if name not in types
            or not _holds(parse_column_type(types[name][0]), parse_column_type(kind))
            or (nullable and not types[name][1])
        ]
        if lacking or [name for name, _ in stored["key"]] != list(table.primary_key):
            raise OutdatedDefinitionError(
                f"table {table.qualified_name}: another worker of the group applied columns "
                f"from its messages' schemas that this worker's lack ({lacking or 'the key'})"
            )


def _registered(versions: Versions, subject: str, fmt: Format, where: str) -> list[tuple[int, Any]]:
    history = list(versions(subject, fmt))
    if not history:
        raise ConfigError(
            f"{where}: no columns are given and the schema registry holds no subject {subject} "
            f"to take them from; produce with a serializer that registers it, or list columns"
        )
    return history


def _row_fields(table: TableSettings, schema: Any, subject: str, where: str) -> list[Field]:
    """The fields of one value schema that are the table's row: those of Debezium's `after`
    with envelope = "debezium", else the top-level ones."""
    fields = _fields_of(table.value_format, schema, subject, where)
    return _after(fields, subject, where) if table.envelope is not None else fields


def _fields_of(fmt: Format, schema: Any, subject: str, where: str) -> list[Field]:
    try:
        return _fields(fmt, schema)
    except ValueError as error:
        raise ConfigError(f"{where}: {subject}: {error}") from None


def _evolved(history: Sequence[tuple[int, list[Field]]], where: str) -> list[Field]:
    """The fields that hold the records of every version of a subject, in the order they came."""
    merged: dict[str, Field] = {}
    previous = None
    for version, fields in history:
        if previous is None:
            merged = {field.name: field for field in fields}
        else:
            merged = _merged(merged, fields, f"{where} versions {previous} to {version}")
        previous = version
    return list(merged.values())


def _merged(held: Mapping[str, Field], fields: Sequence[Field], where: str) -> dict[str, Field]:
    """`held` widened to hold records of a schema with `fields` as well: a field it lacks comes
    last and nullable; one that `fields` lacks becomes nullable; types widen (`_wider`)."""
    named = {field.name: field for field in fields}
    merged = {}
    for name, field in held.items():
        new = named.get(name)
        if new is None:
            merged[name] = dataclasses.replace(field, nullable=True)
        else:
            wider = _wider(field.type, new.type, f"{where}: field {name!r}")
            merged[name] = dataclasses.replace(
                field, type=wider, nullable=field.nullable or new.nullable
            )
    for name, new in named.items():
        if name not in merged:
            merged[name] = dataclasses.replace(new, nullable=True)
    return merged


# Integer types by the decimal digits their values may need.
_INTEGER_DIGITS = {"SMALLINT": 5, "INTEGER": 10, "BIGINT": 19}
# Types that hold every value of others exactly, but for NUMERIC and VARCHAR (see `_holds`).
_HOLDS = {
    "BIGINT": ("INTEGER", "SMALLINT"),
    "INTEGER": ("SMALLINT",),
    "DOUBLE PRECISION": ("REAL", "INTEGER", "SMALLINT"),
    "TEXT": ("VARCHAR",),
}


def _wider(old: str, new: str, where: str) -> str:
    """The type of the two that holds every value of the other; SchemaEvolutionError when
    neither does."""
    a, b = parse_column_type(old), parse_column_type(new)
    if _holds(a, b):
        return old
    if _holds(b, a):
        return new
    raise SchemaEvolutionError(
        f"{where} changes type from {old} to {new}, and neither column type holds every value "
        f"of the other, so the table cannot take both versions' records; make the schema "
        f"compatible with the earlier versions, or list the table's columns"
    )


def _holds(wide: ColumnType, narrow: ColumnType) -> bool:
    """Whether every value of `narrow` is a value of `wide`, exactly."""
    if wide == narrow:
        return True
    if wide.array != narrow.array:
        return False
    if wide.name == "NUMERIC":
        return _numeric_holds(wide, narrow)
    if wide.name == narrow.name == "VARCHAR":
        return wide.length is None or (narrow.length or wide.length + 1) <= wide.length
    return narrow.name in _HOLDS.get(wide.name, ())


def _numeric_holds(wide: ColumnType, narrow: ColumnType) -> bool:
    scale = wide.scale or 0
    digits = None if wide.precision is None else wide.precision - scale
    if narrow.name in _INTEGER_DIGITS:
        return digits is None or digits >= _INTEGER_DIGITS[narrow.name]
    if narrow.name != "NUMERIC" or digits is None:
        return narrow.name == "NUMERIC"
    narrow_scale = narrow.scale or 0
    return (
        narrow.precision is not None
        and narrow_scale <= scale
        and narrow.precision - narrow_scale <= digits
    )


def _columns(
    table: TableSettings,
    fields: list[Field],
    key_fields: list[Field],
    keys: set[str],
    where: str,
) -> tuple[ColumnSettings, ...]:
    """The value's fields, then the key's fields the value lacks (read from the key)."""
    subject = f"{table.topics[0]}-value"
    columns = [_column(field, SourceKind.VALUE, keys, where, subject) for field in fields]
    named = {field.name for field in fields}
    columns += [
        _column(field, SourceKind.KEY, keys, where, f"{table.topics[0]}-key")
        for field in key_fields
        if field.name not in named
    ]
    if not columns:
        raise ConfigError(f"{where}: {subject} has no fields to make columns of; list columns")
    return tuple(columns)


def _column(
    field: Field, kind: SourceKind, keys: set[str], where: str, subject: str
) -> ColumnSettings:
    try:
        column_type: ColumnType = parse_column_type(field.type)
    except ValueError as error:  # a source column type the config does not know
        raise ConfigError(f"{where}: {subject} field {field.name!r}: {error}") from None
    if not field.name or "\x00" in field.name or len(field.name.encode()) > 63:
        raise ConfigError(f"{where}: {subject} field {field.name!r} cannot name a column")
    return ColumnSettings(
        name=field.name,
        type=column_type,
        source=Source(kind, (field.name,)),
        nullable=field.nullable and field.name not in keys,
    )


def _after(fields: list[Field], subject: str, where: str) -> list[Field]:
    """The row fields of a change event: those of its `after`, which the readers hand over as
    the schema's nested field list (see `_fields`)."""
    for field in fields:
        if field.name == "after" and isinstance(field, _Nested):
            return list(field.fields)
    raise ConfigError(
        f'{where}: envelope = "debezium", but {subject} has no `after` record; it is not '
        f"the schema of Debezium change events"
    )


@dataclasses.dataclass(frozen=True)
class _Nested(Field):
    """A record, message or object field, with its own fields (JSONB as a column)."""

    fields: tuple[Field, ...] = ()


def _fields(fmt: Format, schema: Any) -> list[Field]:
    """The top-level fields of a record, message or object schema; [] for any other schema."""
    if fmt is Format.AVRO:
        return list(_avro_fields(schema, {}))
    if fmt is Format.PROTOBUF:
        return list(_protobuf_fields(_protobuf_message(schema)))
    if fmt is Format.JSON_SCHEMA:
        return list(_json_fields(schema))
    if fmt is Format.CONNECT_JSON:
        return list(_connect_fields(schema))
    raise ValueError(f'columns come from schemas only, not from "{fmt.value}"')


# --- Avro ---------------------------------------------------------------------------------------


def _avro_fields(schema: Any, named: dict[str, Any]) -> Iterator[Field]:
    schema = _avro_named(schema, named)
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return
    for field in schema.get("fields") or ():
        yield _avro_field(field["name"], field["type"], named)


def _avro_named(schema: Any, named: dict[str, Any]) -> Any:
    """The schema itself for a name defined earlier; records every named type it defines."""
    if isinstance(schema, str):
        return named.get(schema, schema)
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        named.setdefault(schema.get("name", ""), schema)
    return schema


def _avro_field(name: str, schema: Any, named: dict[str, Any]) -> Field:
    nullable = False
    if isinstance(schema, list):  # a union
        branches = [branch for branch in schema if branch != "null"]
        nullable = len(branches) < len(schema)
        if len(branches) != 1:
            return Field(name, JSONB, nullable=True)
        schema = branches[0]
    schema = _avro_named(schema, named)
    if isinstance(schema, dict) and schema.get("type") == "record" and not _avro_annotated(schema):
        inner = tuple(_avro_fields(schema, named))
        return _Nested(name, JSONB, nullable, fields=inner)
    return Field(name, _avro_type(schema, named), nullable)


def _avro_type(schema: Any, named: dict[str, Any]) -> str:
    if isinstance(schema, str):
        return _AVRO_TYPES.get(schema, JSONB)
    annotated = _avro_annotated(schema)
    if annotated is not None:
        return annotated
    kind = schema.get("type")
    if kind == "array":
        items = _avro_named(schema.get("items"), named)
        element = _avro_type(items, named) if not isinstance(items, list) else JSONB
        return JSONB if element == JSONB or element.endswith("[]") else f"{element}[]"
    if isinstance(kind, dict) or (isinstance(kind, str) and kind in named):
        return _avro_type(_avro_named(kind, named), named)  # {"type": {...}} or a named type
    return _AVRO_TYPES.get(kind, JSONB) if isinstance(kind, str) else JSONB


def _avro_annotated(schema: dict[str, Any]) -> str | None:
    """The type that the source column, a logical type or a semantic type names, if any."""
    found = _source_type(schema.get("connect.parameters") or {})
    logical = schema.get("logicalType")
    if found is None and logical == "decimal":
        found = _numeric(schema.get("precision"), schema.get("scale", 0))
    found = (
        found or _AVRO_LOGICAL.get(logical or "") or _SEMANTIC.get(schema.get("connect.name", ""))
    )
    if found is None and schema.get("type") == "int":
        found = _CONNECT_INTEGERS.get(schema.get("connect.type", ""))
    return found


def _numeric(precision: object, scale: object) -> str:
    if isinstance(precision, int) and isinstance(scale, int) and 0 <= scale <= precision:
        return f"NUMERIC({precision},{scale})"
    return "NUMERIC"


def _source_type(parameters: Mapping[str, Any]) -> str | None:
    """The source column's own type, where Debezium propagates it and the config knows it."""
    name = parameters.get(_SOURCE_TYPE)
    if not isinstance(name, str):
        return None
    length, scale = parameters.get(_SOURCE_LENGTH), parameters.get(_SOURCE_SCALE)
    upper = name.upper()
    if upper in ("VARCHAR", "CHARACTER VARYING") and str(length).isdigit():
        text = f"VARCHAR({length})"
    elif upper in ("NUMERIC", "DECIMAL") and str(length).isdigit() and str(scale).isdigit():
        text = _numeric(int(str(length)), int(str(scale)))
    else:
        text = upper
    try:
        parse_column_type(text)
    except ValueError:
        return None
    return text


# --- Protobuf -----------------------------------------------------------------------------------


def _protobuf_message(file: FileDescriptor) -> Descriptor:
    """The message a file's payloads hold: its one top-level message that no other top-level
    message has as a field (helpers declared beside it); refused when that is not one."""
    messages = list(file.message_types_by_name.values())
    used = {
        field.message_type.full_name
        for message in messages
        for field in message.fields
        if field.message_type is not None
    }
    candidates = [message for message in messages if message.full_name not in used]
    if len(candidates) != 1:
        names = [message.full_name for message in candidates or messages]
        raise ValueError(
            f"its Protobuf file declares messages {names}, and which one the topic holds is "
            f"not told by the schema alone; list the table's columns"
        )
    return candidates[0]


def _protobuf_fields(message: Descriptor) -> Iterator[Field]:
    for field in message.fields:
        yield _protobuf_field(field)


def _protobuf_field(field: FieldDescriptor) -> Field:
    message = field.message_type
    if message is None:
        element = _PROTOBUF_TYPES.get(field.type, JSONB)
    elif message.GetOptions().map_entry:
        return Field(field.name, JSONB)
    elif message.full_name in _PROTOBUF_MESSAGES:
        element = _PROTOBUF_MESSAGES[message.full_name]
    elif message.full_name.startswith("google.protobuf.") and message.full_name.endswith("Value"):
        # Int64Value and the other wrappers: their value, or NULL when unset
        element = _PROTOBUF_TYPES[message.fields_by_name["value"].type]
    elif field.is_repeated:
        return Field(field.name, JSONB)
    else:
        return _Nested(field.name, JSONB, fields=tuple(_protobuf_fields(message)))
    if field.is_repeated:
        element = JSONB if element == JSONB else f"{element}[]"
    return Field(field.name, element)


# --- JSON Schema --------------------------------------------------------------------------------


def _json_fields(schema: Any) -> Iterator[Field]:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return
    required = set(schema.get("required") or ())
    for name, property_schema in schema["properties"].items():
        yield _json_field(name, property_schema, name in required)


def _json_field(name: str, schema: Any, required: bool) -> Field:
    schema, nullable = _json_nullable(schema)
    types = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(types, list):
        kinds = [kind for kind in types if kind != "null"]
        nullable = nullable or len(kinds) < len(types)
        types = kinds[0] if len(kinds) == 1 else None
    nullable = nullable or not required
    if types == "object":
        return _Nested(name, JSONB, nullable, fields=tuple(_json_fields(schema)))
    return Field(name, _json_type(schema, types), nullable)


def _json_nullable(schema: Any) -> tuple[Any, bool]:
    """A `oneOf`/`anyOf` of null and one schema, as that schema and nullable."""
    for combinator in ("oneOf", "anyOf"):
        options = schema.get(combinator) if isinstance(schema, dict) else None
        if isinstance(options, list):
            kept = [option for option in options if option != {"type": "null"}]
            if len(kept) == 1:
                return kept[0], len(kept) < len(options)
    return schema, False


def _json_type(schema: Any, kind: Any) -> str:
    if not isinstance(schema, dict) or not isinstance(kind, str):
        return JSONB
    connect = _CONNECT_NUMBERS.get(schema.get("connect.type", ""))
    if connect is not None:
        return connect
    if kind == "string" and schema.get("format") in _JSON_FORMATS:
        return _JSON_FORMATS[schema["format"]]
    if kind == "array":
        items = schema.get("items")
        inner = items.get("type") if isinstance(items, dict) else None
        element = _json_type(items, inner)
        return JSONB if element == JSONB or element.endswith("[]") else f"{element}[]"
    return _JSON_TYPES.get(kind, JSONB)


# --- Kafka Connect's schemas, as JsonConverter writes them in each message ----------------------


def _connect_fields(schema: Any) -> Iterator[Field]:
    if not isinstance(schema, dict) or schema.get("type") != "struct":
        return
    for field in schema.get("fields") or ():
        yield _connect_field(field)


def _connect_field(schema: Mapping[str, Any]) -> Field:
    name, nullable = schema.get("field"), bool(schema.get("optional", False))
    if not isinstance(name, str):
        raise ValueError(f"a struct field has no name: {schema!r:.200}")
    if schema.get("type") == "struct" and _connect_annotated(schema) is None:
        return _Nested(name, JSONB, nullable, fields=tuple(_connect_fields(schema)))
    return Field(name, _connect_type(schema), nullable)


def _connect_type(schema: Any) -> str:
    if not isinstance(schema, dict):
        return JSONB
    annotated = _connect_annotated(schema)
    if annotated is not None:
        return annotated
    kind = schema.get("type")
    if kind == "array":
        element = _connect_type(schema.get("items"))
        return JSONB if element == JSONB or element.endswith("[]") else f"{element}[]"
    return _CONNECT_TYPES.get(kind, JSONB) if isinstance(kind, str) else JSONB


def _connect_annotated(schema: Mapping[str, Any]) -> str | None:
    """The type that the source column or a logical or semantic type names, if any."""
    parameters = schema.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    found = _source_type(parameters)
    name = schema.get("name")
    if found is None and name == _CONNECT_DECIMAL:
        precision, scale = str(parameters.get(_CONNECT_PRECISION)), str(parameters.get("scale"))
        found = _numeric(
            int(precision) if precision.isdigit() else None, int(scale) if scale.isdigit() else 0
        )
    return found or (_SEMANTIC.get(name) if isinstance(name, str) else None)
