"""The mapping's COPY lines store exactly what its typed rows store: the same messages go
through `Mapper.line` into one table and `tests.oracle.mapped_row` into another, and
PostgreSQL finds no difference, whatever the session time zone."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import orjson
import pytest
import sqlalchemy as sa

from pg_bulk_ingest import CopyRow, CopyTuple, Upsert, ingest
from sink import _copyline
from sink.config import ColumnSettings, Format, TableSettings, TombstonePolicy
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.decode import decode
from sink.errors import MappingError
from sink.mapping import Mapper
from sink.records import Message
from sink.tables import tables_from_config
from tests.events import events
from tests.oracle import mapped_row

pytestmark = pytest.mark.integration
FORMATS = (Format.STRING, Format.JSON)

COLUMNS = {
    "big": "BIGINT",
    "small": "SMALLINT",
    "label": "VARCHAR(12)",
    "body": "TEXT",
    "flag": "BOOLEAN",
    "price": "NUMERIC(8,3)",
    "free": "NUMERIC",
    "ratio": "REAL",
    "wide": "DOUBLE PRECISION",
    "day": "DATE",
    "at": "TIMESTAMPTZ",
    "wall": "TIMESTAMP",
    "doc": "JSONB",
    "raw": "JSON",
    "id": "UUID",
    "tags": "TEXT[]",
    "codes": "VARCHAR(3)[]",
    "counts": "BIGINT[]",
}
# Values per field: the simple forms the fast path takes, and their near misses, which take the
# general path (longer fractions, offsets PostgreSQL refuses, days that do not exist, ...).
VALUES: dict[str, list[object]] = {
    "big": [0, -(2**63), 2**63 - 1, "42", 7.0],
    "small": [-32768, 32767, " 12 "],
    "label": ["plain", "tab\there", "back\\slash", "ünïcødé 🦆", 5, True, "\u2028sep"],
    "body": ["x" * 300, "", "NULL", "\\N", {"a": 1}, [1, 2]],
    "flag": [True, False, "true", 0],
    "price": ["12345.678", "-0.5", "1.2345", "00001.5", 99999, 1.25, "1e2", "\u0661\u0662.\u0665"],
    "free": ["123456789012345678901234567890.5", "-0", 10**18, 0.1],
    "ratio": [1.5, 3.4e38, -2.5e-40, 7],
    "wide": [0.1, -1e300, 5, "2.5"],
    "day": [
        "2024-02-29",
        "2023-02-29",
        "0001-12-31",
        "2024-13-01",
        "2024-05-01T23:30:00Z",
        86_400_000,
    ],
    "at": [
        "2024-05-01T12:00:00Z",
        "2024-05-01 12:00:00.123456+05:30",
        "2024-05-01T12:00:00.1-0800",
        "2024-05-01T12:00:00+14",
        "2024-05-01T12:00:00.1234567Z",
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00+15:30",
        "2024-02-30T12:00:00Z",
        "2024-02-29T23:59:59.999999-03:00",
        "2023-02-29T12:00:00Z",
        "2024-04-31T12:00:00Z",
        "2024-05-31 23:59:59Z",
        "0001-01-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        1_714_564_800_123,
    ],
    "wall": [
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00.5Z",
        "2024-05-01T12:00:00+00:00",
        "2024-05-01T12:00:00+02:00",
        1_714_564_800_123,
    ],
    "doc": [{"a": [1, "x\ty\\z", None]}, [], "text", 3, 2.5, False, {"é": '"q"\n'}],
    "raw": [{"k": "v"}, [1, [2, [3]]], "back\\slash"],
    "id": ["12345678-1234-5678-1234-567812345678", "ABCDEF00-1234-5678-1234-567812345678"],
    "tags": [["a", "b c"], [], ['q"uote', "x"], ["back\\slash"], ["", "NULL"], ["x", None]],
    "codes": [["abc"], ["ab", "c"]],
    "counts": [[1, 2, 3], [], ["4"]],
}


def _mapper(primary_key: tuple[str, ...] = (), columns: list[str] | None = None) -> Mapper:
    settings = tuple(
        ColumnSettings(name, ctype(type_text), source(f"value.{name}"), name not in primary_key)
        for name, type_text in COLUMNS.items()
        if columns is None or name in columns
    )
    table = TableSettings(
        schema="s",
        name="t",
        columns=settings,
        topics=("t",),
        primary_key=primary_key,
        tombstones=TombstonePolicy.DELETE,
        key_format=Format.STRING,
        value_format=Format.JSON,
    )
    return Mapper(tables_from_config([table]).targets[0])


def _messages(names: list[str] | None = None) -> list[Message]:
    """Every value of every field at least once, the fields' value lists zipped cyclically."""
    values = {n: v for n, v in VALUES.items() if names is None or n in names}
    longest = max(len(v) for v in values.values())
    cycles = {name: itertools.cycle(v) for name, v in values.items()}
    return [
        Message("t", 0, offset, None, None, orjson.dumps({n: next(c) for n, c in cycles.items()}))
        for offset in range(longest * 3)
    ] + [
        # Each field alone, so one refused value does not hide the others of its message.
        Message("t", 1, offset, None, None, orjson.dumps({name: value}))
        for offset, (name, value) in enumerate(
            (name, value) for name, vs in values.items() for value in vs
        )
    ]


def _table(mapper: Mapper, schema: str, name: str) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    return metadata, mapper.table.to_metadata(metadata, schema=schema, name=name)


@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York"])
def test_lines_store_what_typed_rows_store(
    engine: sa.engine.Engine, schema: str, time_zone: str
) -> None:
    mapper = _mapper()
    lines: list[CopyRow] = []
    rows: list[tuple[object, ...]] = []
    refused = 0
    for message in _messages():
        record = decode(message, Format.STRING, Format.JSON)
        try:
            row = mapped_row(mapper, record)
        except MappingError as error:
            with pytest.raises(MappingError) as raised:
                mapper.line(record)
            assert (raised.value.column, raised.value.code) == (error.column, error.code)
            refused += 1
            continue
        rows.append(row)
        lines.append(mapper.line(record))
    assert refused > 10 and len(lines) > 100  # both paths and both outcomes were exercised

    _assert_same_rows(engine, schema, time_zone, mapper, lines, rows)


def _assert_same_rows(
    engine: sa.engine.Engine,
    schema: str,
    time_zone: str,
    mapper: Mapper,
    lines: Sequence[object],
    rows: Sequence[object],
) -> None:
    """Stores `lines` and `rows` in two tables like `mapper.table` and finds no difference."""
    by_line_metadata, by_line = _table(mapper, schema, "by_line")
    by_row_metadata, by_row = _table(mapper, schema, "by_row")
    with engine.connect() as conn:
        # For the whole session (ingest commits its own transactions); reset before the pool
        # hands the connection to another test.
        conn.execute(sa.text(f"SET TimeZone = '{time_zone}'"))
        conn.commit()
        try:
            for metadata, table, batch in (
                (by_line_metadata, by_line, lines),
                (by_row_metadata, by_row, rows),
            ):
                ingest(
                    conn, metadata, lambda _, t=table, b=batch: [(None, None, ((t, r) for r in b))]
                )
            # As text, so that 1.5 and 1.50 (or two spellings of one JSON value) differ too.
            names = ", ".join(f'"{c.name}"::text' for c in mapper.table.columns)
            for left, right in (("by_line", "by_row"), ("by_row", "by_line")):
                extra = conn.execute(
                    sa.text(
                        f'SELECT {names} FROM "{schema}".{left} '
                        f'EXCEPT ALL SELECT {names} FROM "{schema}".{right}'
                    )
                ).all()
                assert extra == [], f"{left} holds rows {right} does not"
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".by_line')).scalar()
        finally:
            conn.rollback()
            conn.execute(sa.text("RESET TimeZone"))
            conn.commit()
    assert count == len(rows)


# The columns the native line (sink/_copyline.c) writes: all but json and non-text arrays.
NATIVE = [name for name in COLUMNS if name not in ("raw", "codes", "counts")]
# Spellings the Python form never sees: jsonb numbers with trailing zeros, exponents, -0,
# whitespace, escapes and repeated keys, text with escapes.
NATIVE_DOCUMENTS = [
    b'{"doc": {"p": 1.10, "q": [1e2, -0, -0.0, 2.5E-3, 1E+300], "p": 7}}',
    rb'{"doc": [ "\u00e9\t\"x\"\/" , {"\u0061": true} ] , "label": "\u00e9t\u00e9"}',
    rb'{"body": "line\nbreak\ttab\\back \ud83e\udd86", "tags": ["a b", ""]}',
    b'{"big": -9223372036854775808, "small": 32767, "doc": 9999999999999999999}',
    b'{"wide": 0.1, "ratio": -2.5e-40, "free": 12345678901234567, "price": "-0.5"}',
]


@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York"])
def test_native_lines_store_what_typed_rows_store(
    engine: sa.engine.Engine, schema: str, time_zone: str
) -> None:
    mapper = _mapper(columns=NATIVE)
    assert mapper.native_columns is not None
    handed_over: list[bytes] = []

    def fallback(key: bytes | None, value: bytes | None) -> None:
        assert value is not None
        handed_over.append(value)

    native = _copyline.Line(mapper.native_columns, CopyRow, fallback, 0)
    documents = [
        spelled
        for message in _messages(NATIVE)
        for spelled in (
            message.value,
            json.dumps(orjson.loads(message.value or b"")).encode(),  # ASCII, with spaces
            json.dumps(orjson.loads(message.value or b""), indent=2).encode(),
        )
    ] + NATIVE_DOCUMENTS
    lines: list[CopyRow] = []
    rows: list[tuple[object, ...]] = []
    for offset, document in enumerate(documents):
        line = native.row(None, document)
        if line is None:
            continue
        lines.append(line)
        rows.append(
            mapped_row(mapper, decode(Message("t", 0, offset, None, None, document), *FORMATS))
        )
    assert len(lines) > 100 and len(handed_over) > 10  # both outcomes were exercised
    assert not set(NATIVE_DOCUMENTS) & set(handed_over)
    _assert_same_rows(engine, schema, time_zone, mapper, lines, rows)


# The native kinds the ingest core writes in binary COPY: all but REAL.
BINARY = [name for name in NATIVE if name != "ratio"]


@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York"])
def test_native_binary_tuples_store_what_native_text_lines_store(
    engine: sa.engine.Engine, schema: str, time_zone: str
) -> None:
    mapper = _mapper(columns=BINARY)
    assert mapper.native_columns is not None and mapper.binary_columns is not None
    text = _copyline.Line(mapper.native_columns, CopyRow, lambda k, v: None, 0)
    binary = _copyline.Line(
        mapper.native_columns, CopyTuple, lambda k, v: None, 0, binary=mapper.binary_columns
    )
    documents = [
        spelled
        for message in _messages(BINARY)
        for spelled in (message.value, json.dumps(orjson.loads(message.value or b"")).encode())
    ] + NATIVE_DOCUMENTS
    tuples: list[CopyTuple] = []
    lines: list[CopyRow] = []
    for document in documents:
        found = binary.row(None, document)
        if found is not None:
            tuples.append(found)
            line = text.row(None, document)
            assert line is not None  # the binary line is sure of no more than the text line
            lines.append(line)
    assert len(tuples) > 100
    # The tuples load in binary COPY, the lines (CopyRow) in text COPY.
    _assert_same_rows(engine, schema, time_zone, mapper, tuples, lines)


def test_lines_upsert_on_the_key_like_typed_rows(engine: sa.engine.Engine, schema: str) -> None:
    settings = tables_from_config(
        [
            TableSettings(
                schema=schema,
                name="events",
                columns=_event_columns(),
                topics=("t",),
                primary_key=("id",),
                tombstones=TombstonePolicy.DELETE,
                key_format=Format.STRING,
                value_format=Format.JSON,
            )
        ]
    )
    mapper = Mapper(settings.targets[0])
    first = [Message("t", 0, i, None, k, v) for i, (k, v) in enumerate(events(500))]
    # The same ids again with other values, plus new ones: a re-delivery after a rebalance.
    again = [Message("t", 0, 500 + i, None, k, v) for i, (k, v) in enumerate(events(600, seed=9))]
    with engine.connect() as conn:
        for batch in (first, again):
            lines = [mapper.line(decode(m, Format.STRING, Format.JSON)) for m in batch]
            ingest(
                conn,
                settings.metadata,
                lambda _, b=lines: [(None, None, ((mapper.table, line) for line in b))],
                upsert=Upsert.IF_PRIMARY_KEY,
            )
        stored = conn.execute(
            sa.text(f'SELECT id, amount::text, status FROM "{schema}".events ORDER BY id')
        ).all()
    expected = [
        mapped_row(mapper, decode(m, Format.STRING, Format.JSON))
        for m in again  # the later values win
    ]
    assert [(r.id, r.amount, r.status) for r in stored] == [
        (row[0], str(row[3]), row[4]) for row in expected
    ]


def _event_columns() -> tuple[ColumnSettings, ...]:
    """The benchmark event's columns (as tests.events.EVENT_COLUMNS_TOML declares them)."""
    return tuple(
        ColumnSettings(name, ctype(type_text), source(f"value.{name}"), name != "id")
        for name, type_text in (
            ("id", "BIGINT"),
            ("key", "VARCHAR(64)"),
            ("ts", "TIMESTAMPTZ"),
            ("amount", "NUMERIC(12,2)"),
            ("status", "VARCHAR(16)"),
            ("payload", "JSONB"),
            ("tags", "TEXT[]"),
        )
    )
