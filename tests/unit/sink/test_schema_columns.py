"""Columns from a topic's registry schemas: Avro, Protobuf and JSON Schema value schemas give
columns of the right PostgreSQL types, a key schema gives the primary key, Debezium's `after`
gives a change event's columns, and what cannot be derived is refused naming table and subject."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import fastavro
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2, wrappers_pb2
from google.protobuf.descriptor import FileDescriptor

from sink import schema_columns
from sink.config import Format, Settings, TombstonePolicy, load_settings, parse_column_type
from sink.errors import ConfigError, SchemaEvolutionError
from sink.schema_columns import with_schema_columns

AVRO_VALUE = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "qty", "type": "int"},
        {"name": "small", "type": {"type": "int", "connect.type": "int16"}},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {
            "name": "big",
            "type": {
                "type": "fixed",
                "name": "Big",
                "size": 16,
                "logicalType": "decimal",
                "precision": 30,
                "scale": 10,
            },
        },
        {"name": "again", "type": "shop.Big"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "score", "type": ["null", "double"], "default": None},
        {"name": "ratio", "type": "float"},
        {"name": "paid", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {
            "name": "days",
            "type": {"type": "array", "items": {"type": "int", "logicalType": "date"}},
        },
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {
            "name": "line",
            "type": {
                "type": "record",
                "name": "Line",
                "fields": [{"name": "sku", "type": "string"}],
            },
        },
        {"name": "either", "type": ["null", "string", "long"], "default": None},
    ],
}
AVRO_EXPECTED = [
    ("id", "BIGINT", False),
    ("qty", "INTEGER", False),
    ("small", "SMALLINT", False),
    ("amount", "NUMERIC(12,2)", False),
    ("big", "NUMERIC(30,10)", False),
    ("again", "NUMERIC(30,10)", False),
    ("placed_at", "TIMESTAMPTZ", False),
    ("seen_at", "TIMESTAMPTZ", False),
    ("local", "TIMESTAMP", False),
    ("day", "DATE", False),
    ("at", "TIME", False),
    ("ref", "UUID", False),
    ("note", "TEXT", True),
    ("score", "DOUBLE PRECISION", True),
    ("ratio", "REAL", False),
    ("paid", "BOOLEAN", False),
    ("blob", "BYTEA", False),
    ("status", "TEXT", False),
    ("tags", "TEXT[]", False),
    ("days", "DATE[]", False),
    ("attrs", "JSONB", False),
    ("line", "JSONB", False),
    ("either", "JSONB", True),
]
AVRO_KEY = {"type": "record", "name": "OrderKey", "fields": [{"name": "id", "type": "long"}]}


def _table(
    tmp_path: Path, table: str, registry: bool = True, topics: str = 'topics = ["orders"]\n'
) -> Settings:
    path = tmp_path / "sink.toml"
    registry_section = '[schema_registry]\nurl = "http://127.0.0.1:1/apis/ccompat/v7"\n'
    path.write_text(
        textwrap.dedent(
            """
            [kafka]
            bootstrap_servers = "broker:9092"
            [postgres]
            url = "postgresql://sink@db:5432/sink"
            """
        )
        + (registry_section if registry else "")
        + f'[[tables]]\nname = "orders"\n{topics}'
        + textwrap.dedent(table)
    )
    return load_settings(path, {})


def _latest(schemas: dict[str, Any]) -> Any:
    """The registry's versions of each subject: a tuple of schemas is versions 1, 2, ...; any
    other value the one version."""

    def versions(subject: str, fmt: Format) -> list[tuple[int, Any]]:
        found = schemas.get(subject)
        history = found if isinstance(found, tuple) else (found,) if found is not None else ()
        parse = fastavro.parse_schema if fmt is Format.AVRO else (lambda schema: schema)
        return [(number, parse(schema)) for number, schema in enumerate(history, 1)]

    return versions


def _columns(settings: Settings, schemas: dict[str, Any]) -> list[tuple[str, str, bool]]:
    (table,) = with_schema_columns(settings.tables, _latest(schemas))
    return [(c.name, str(c.type), c.nullable) for c in table.columns]


def test_avro_fields_become_columns_of_their_logical_types(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'value_format = "avro"\nprimary_key = ["id"]\n')
    assert _columns(settings, {"orders-value": AVRO_VALUE}) == AVRO_EXPECTED
    (table,) = with_schema_columns(settings.tables, _latest({"orders-value": AVRO_VALUE}))
    assert table.primary_key == ("id",)
    assert [str(c.source) for c in table.columns][:2] == ["value.id", "value.qty"]


def test_the_key_schema_gives_the_primary_key_and_tombstones_delete_by_it(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'key_format = "avro"\nvalue_format = "avro"\n')
    assert settings.tables[0].tombstones is TombstonePolicy.DELETE
    schemas = {"orders-value": AVRO_VALUE, "orders-key": AVRO_KEY}
    (table,) = with_schema_columns(settings.tables, _latest(schemas))
    assert table.primary_key == ("id",)
    assert table.tombstones is TombstonePolicy.DELETE


def test_a_key_field_missing_from_the_value_is_a_column_read_from_the_key(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'key_format = "avro"\nvalue_format = "avro"\n')
    key = {"type": "record", "name": "K", "fields": [{"name": "tenant", "type": "string"}]}
    schemas = {"orders-value": AVRO_VALUE, "orders-key": key}
    (table,) = with_schema_columns(settings.tables, _latest(schemas))
    assert table.primary_key == ("tenant",)
    tenant = table.columns[-1]
    assert (tenant.name, str(tenant.type), str(tenant.source), tenant.nullable) == (
        "tenant",
        "TEXT",
        "key.tenant",
        False,
    )


def test_explicit_columns_win_and_are_not_fetched(tmp_path: Path) -> None:
    settings = _table(
        tmp_path,
        'value_format = "avro"\n[[tables.columns]]\nname = "id"\ntype = "INTEGER"\n',
    )

    def latest(subject: str, fmt: Format) -> list[tuple[int, Any]]:
        raise AssertionError(f"fetched {subject}")

    (table,) = with_schema_columns(settings.tables, latest)
    assert [(c.name, str(c.type)) for c in table.columns] == [("id", "INTEGER")]


def test_debezium_change_events_take_the_columns_of_after_with_semantic_and_source_types(
    tmp_path: Path,
) -> None:
    """The Avro converter's schema of a Debezium change event: `after` a nullable Value record
    whose fields carry connect.name and, with column.propagate.source.type, the source type."""
    value = {
        "type": "record",
        "name": "Value",
        "namespace": "shop.public.orders",
        "fields": [
            {"name": "id", "type": {"type": "int", "connect.type": "int16"}},
            {
                "name": "name",
                "type": [
                    "null",
                    {
                        "type": "string",
                        "connect.parameters": {
                            "__debezium.source.column.type": "VARCHAR",
                            "__debezium.source.column.length": "40",
                        },
                    },
                ],
                "default": None,
            },
            {
                "name": "at",
                "type": [
                    "null",
                    {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"},
                ],
                "default": None,
            },
            {
                "name": "local",
                "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"},
            },
            {"name": "day", "type": {"type": "int", "connect.name": "io.debezium.time.Date"}},
            {"name": "ref", "type": {"type": "string", "connect.name": "io.debezium.data.Uuid"}},
            {"name": "doc", "type": {"type": "string", "connect.name": "io.debezium.data.Json"}},
            {
                "name": "exact",
                "type": {
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "connect.name": "io.debezium.data.VariableScaleDecimal",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"},
                    ],
                },
            },
            {
                "name": "amount",
                "type": {
                    "type": "bytes",
                    "scale": 2,
                    "precision": 12,
                    "connect.name": "org.apache.kafka.connect.data.Decimal",
                    "logicalType": "decimal",
                },
            },
        ],
    }
    envelope = {
        "type": "record",
        "name": "Envelope",
        "namespace": "shop.public.orders",
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "op", "type": "string"},
        ],
    }
    key = {"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]}
    settings = _table(
        tmp_path, 'envelope = "debezium"\nkey_format = "avro"\nvalue_format = "avro"\n'
    )
    schemas = {"orders-value": envelope, "orders-key": key}
    assert _columns(settings, schemas) == [
        ("id", "SMALLINT", False),
        ("name", "VARCHAR(40)", True),
        ("at", "TIMESTAMPTZ", True),
        ("local", "TIMESTAMP", False),
        ("day", "DATE", False),
        ("ref", "UUID", False),
        ("doc", "JSONB", False),
        ("exact", "NUMERIC", False),
        ("amount", "NUMERIC(12,2)", False),
    ]


def _protobuf_file(*, helper: bool = False, two: bool = False) -> FileDescriptor:
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop", syntax="proto3")
    proto.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
    if helper or two:
        line = proto.message_type.add(name="Line")
        line.field.add(name="sku", number=1, type=field.TYPE_STRING)
    order = proto.message_type.add(name="Order")
    status = order.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    add = order.field.add
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    add(name="id", number=1, type=field.TYPE_INT64, label=optional)
    add(name="qty", number=2, type=field.TYPE_INT32, label=optional)
    add(name="big", number=3, type=field.TYPE_UINT64, label=optional)
    add(name="name", number=4, type=field.TYPE_STRING, label=optional)
    add(name="tags", number=5, type=field.TYPE_STRING, label=repeated)
    timestamp = ".google.protobuf.Timestamp"
    add(name="at", number=6, type=field.TYPE_MESSAGE, type_name=timestamp, label=optional)
    wrapper = ".google.protobuf.Int32Value"
    add(name="maybe", number=7, type=field.TYPE_MESSAGE, type_name=wrapper, label=optional)
    add(name="status", number=8, type=field.TYPE_ENUM, type_name=".shop.Order.Status")
    add(name="ok", number=9, type=field.TYPE_BOOL, label=optional)
    add(name="ratio", number=10, type=field.TYPE_DOUBLE, label=optional)
    if helper:
        add(
            name="lines", number=11, type=field.TYPE_MESSAGE, type_name=".shop.Line", label=repeated
        )
        add(name="first", number=12, type=field.TYPE_MESSAGE, type_name=".shop.Line")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    return pool.Add(proto)


PROTOBUF_EXPECTED = [
    ("id", "BIGINT", True),
    ("qty", "INTEGER", True),
    ("big", "NUMERIC(20,0)", True),
    ("name", "TEXT", True),
    ("tags", "TEXT[]", True),
    ("at", "TIMESTAMPTZ", True),
    ("maybe", "INTEGER", True),
    ("status", "TEXT", True),
    ("ok", "BOOLEAN", True),
    ("ratio", "DOUBLE PRECISION", True),
]


def test_protobuf_fields_become_columns_and_helper_messages_are_jsonb(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'value_format = "protobuf"\nprimary_key = ["id"]\n')
    assert _columns(settings, {"orders-value": _protobuf_file()}) == [
        (name, type_, name != "id") for name, type_, _ in PROTOBUF_EXPECTED
    ]
    assert _columns(settings, {"orders-value": _protobuf_file(helper=True)})[-2:] == [
        ("lines", "JSONB", True),
        ("first", "JSONB", True),
    ]


def test_a_protobuf_file_of_several_unrelated_messages_is_refused(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'value_format = "protobuf"\nprimary_key = ["id"]\n')
    with pytest.raises(ConfigError, match=r"orders-value: .*\['shop.Line', 'shop.Order'\]"):
        _columns(settings, {"orders-value": _protobuf_file(two=True)})


def test_json_schema_properties_become_columns_with_formats_and_required(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "small": {"type": "integer", "connect.type": "int16"},
            "value": {"type": "number"},
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "ref": {"type": "string", "format": "uuid"},
            "name": {"type": ["string", "null"]},
            "maybe": {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
            "ids": {"type": "array", "items": {"type": "integer"}},
            "attrs": {"type": "object"},
            "anything": {},
        },
        "required": ["id", "small", "value", "at", "name", "maybe"],
    }
    settings = _table(tmp_path, 'value_format = "json-schema"\nprimary_key = ["id"]\n')
    assert _columns(settings, {"orders-value": schema}) == [
        ("id", "BIGINT", False),
        ("small", "SMALLINT", False),
        ("value", "DOUBLE PRECISION", False),
        ("at", "TIMESTAMPTZ", False),
        ("day", "DATE", True),
        ("ref", "UUID", True),
        ("name", "TEXT", True),
        ("maybe", "BOOLEAN", True),
        ("ids", "BIGINT[]", True),
        ("attrs", "JSONB", True),
        ("anything", "JSONB", True),
    ]


@pytest.mark.parametrize(
    ("table", "schemas", "says"),
    [
        ('value_format = "avro"\nprimary_key = ["id"]\n', {}, r"holds no subject orders-value"),
        (
            'key_format = "avro"\nvalue_format = "avro"\n',
            {"orders-value": AVRO_VALUE, "orders-key": "string"},
            r"key schema \(orders-key\) is not a record.*set primary_key",
        ),
        (
            'value_format = "avro"\nprimary_key = ["nope"]\n',
            {"orders-value": AVRO_VALUE},
            r"primary_key or an index names \['nope'\], which orders-value does not hold",
        ),
        (
            'envelope = "debezium"\nkey_format = "avro"\nvalue_format = "avro"\n'
            'primary_key = ["id"]\n',
            {"orders-value": AVRO_VALUE},
            r'envelope = "debezium", but orders-value has no `after` record',
        ),
    ],
)
def test_what_cannot_be_derived_is_refused_naming_table_and_subject(
    tmp_path: Path, table: str, schemas: dict[str, Any], says: str
) -> None:
    settings = _table(tmp_path, table)
    with pytest.raises(ConfigError, match=r"table public\.orders: .*" + says):
        _columns(settings, schemas)


def test_the_config_needs_columns_unless_a_registry_schema_gives_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'tables\[0\]\.columns: needs at least one.*"avro"'):
        _table(tmp_path, 'value_format = "json"\nprimary_key = ["id"]\n')
    with pytest.raises(ConfigError, match=r"tables\[0\]\.topics: must be listed"):
        _table(tmp_path, 'value_format = "avro"\n', topics='topic_pattern = "^orders"\n')
    assert _table(tmp_path, 'value_format = "avro"\n').tables[0].columns == ()
    # Kafka Connect's JSON carries its schemas: the worker takes the columns from them.
    assert _table(tmp_path, 'value_format = "connect-json"\n').tables[0].columns == ()
    with pytest.raises(ConfigError, match=r"tables\[0\]\.topics: must be listed"):
        _table(tmp_path, 'value_format = "connect-json"\n', topics='topic_pattern = "^o"\n')
    # Debezium's change events keyed by a Connect key schema: the key names the primary key.
    change_events = 'value_format = "connect-json"\nenvelope = "debezium"\n'
    assert _table(tmp_path, change_events + 'key_format = "connect-json"\n').tables[0].envelope
    with pytest.raises(ConfigError, match=r"tables\[0\]\.envelope: .*set primary_key"):
        _table(tmp_path, change_events + 'key_format = "json"\n')


def _record(*fields: tuple[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": name, "type": kind, **({"default": None} if isinstance(kind, list) else {})}
            for name, kind in fields
        ],
    }


V1 = _record(("id", "long"), ("qty", "int"), ("gone", "string"))
V2 = _record(("id", "long"), ("qty", "long"), ("note", ["null", "string"]))


def test_the_columns_hold_every_version_registered_added_widened_and_left_out_fields(
    tmp_path: Path,
) -> None:
    settings = _table(tmp_path, 'value_format = "avro"\nprimary_key = ["id"]\n')
    assert _columns(settings, {"orders-value": (V1, V2)}) == [
        ("id", "BIGINT", False),
        ("qty", "BIGINT", False),  # int widened to long
        ("gone", "TEXT", True),  # left out by version 2: kept, and nullable
        ("note", "TEXT", True),  # added by version 2
    ]
    (table,) = with_schema_columns(settings.tables, _latest({"orders-value": (V1, V2)}))
    assert table.schema_versions == (1, 2)
    # A narrowing back keeps the wider type: the column holds both versions' values.
    assert _columns(settings, {"orders-value": (V2, V1)})[1] == ("qty", "BIGINT", False)


def test_a_change_no_column_holds_is_refused_naming_subject_versions_and_field(
    tmp_path: Path,
) -> None:
    settings = _table(tmp_path, 'value_format = "avro"\nprimary_key = ["id"]\n')
    v3 = _record(("id", "long"), ("qty", "string"))
    with pytest.raises(SchemaEvolutionError) as caught:
        _columns(settings, {"orders-value": (V1, V2, v3)})
    assert str(caught.value).startswith(
        "table public.orders: orders-value versions 2 to 3: field 'qty' changes type from "
        "BIGINT to TEXT"
    )


@pytest.mark.parametrize(
    ("wide", "narrow", "holds"),
    [
        ("BIGINT", "INTEGER", True),
        ("INTEGER", "BIGINT", False),
        ("DOUBLE PRECISION", "REAL", True),
        ("DOUBLE PRECISION", "BIGINT", False),  # past 2**53 a double is not exact
        ("NUMERIC", "BIGINT", True),
        ("NUMERIC(20,0)", "BIGINT", True),
        ("NUMERIC(18,0)", "BIGINT", False),
        ("NUMERIC(12,4)", "NUMERIC(10,2)", True),
        ("NUMERIC(12,4)", "NUMERIC(12,2)", False),  # 10 integer digits against 8
        ("NUMERIC", "NUMERIC(12,2)", True),
        ("NUMERIC(12,2)", "NUMERIC", False),
        ("TEXT", "VARCHAR(5)", True),
        ("VARCHAR(9)", "VARCHAR(5)", True),
        ("VARCHAR(5)", "VARCHAR", False),
        ("BIGINT[]", "INTEGER[]", True),
        ("BIGINT[]", "INTEGER", False),
        ("TIMESTAMPTZ", "TIMESTAMP", False),
        ("TEXT", "BIGINT", False),
    ],
)
def test_which_types_hold_every_value_of_another(wide: str, narrow: str, holds: bool) -> None:
    assert schema_columns._holds(parse_column_type(wide), parse_column_type(narrow)) is holds


def test_changes_says_what_a_schema_holds_that_the_table_does_not(tmp_path: Path) -> None:
    settings = _table(tmp_path, 'value_format = "avro"\nprimary_key = ["id"]\n')
    (table,) = with_schema_columns(settings.tables, _latest({"orders-value": V1}))
    change = schema_columns.changes(table)
    assert change(fastavro.parse_schema(V1)) is None
    # A subset of the columns, nullable: rows of it fit.
    assert change(fastavro.parse_schema(_record(("id", "long"), ("gone", "string")))) == (
        "changes field 'qty'"  # left out: must become nullable
    )
    assert change(fastavro.parse_schema(V2)) == (
        "changes field 'qty', changes field 'gone', adds field 'note'"
    )
    assert "field 'qty' changes type from INTEGER to TEXT" in str(
        change(fastavro.parse_schema(_record(("id", "long"), ("qty", "string"))))
    )
