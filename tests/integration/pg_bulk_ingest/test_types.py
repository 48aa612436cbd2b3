"""Every supported type round-trips exactly through COPY, under both drivers."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import ingest

UTC = datetime.timezone.utc
AWKWARD_TEXT = "tab\there\nnew line\r\\back\\slash 'single' \"double\" ünïcødé 🦆 {a,b} NULL \\N"

CASES: list[tuple[str, Any, list[Any]]] = [
    ("smallint", sa.SMALLINT, [-32768, 32767]),
    ("bigint", sa.BIGINT, [-(2**63), 2**63 - 1]),
    ("numeric", sa.NUMERIC(20, 6), [decimal.Decimal("-12345678901234.123456")]),
    ("numeric_free", sa.NUMERIC, [decimal.Decimal("1E+30"), decimal.Decimal("0.000001")]),
    ("real", sa.REAL, [1.5, float("inf")]),
    ("double", pg.DOUBLE_PRECISION, [0.1, -1e300, float("-inf")]),
    ("boolean", sa.BOOLEAN, [True, False]),
    ("text", sa.TEXT, [AWKWARD_TEXT, "", " "]),
    ("varchar", sa.VARCHAR(100), [AWKWARD_TEXT]),
    ("date", sa.DATE, [datetime.date(1, 1, 1), datetime.date(9999, 12, 31)]),
    ("time", sa.TIME, [datetime.time(23, 59, 59, 999999)]),
    ("timestamp", sa.TIMESTAMP, [datetime.datetime(2024, 2, 29, 12, 0, 0, 1)]),
    (
        "timestamptz",
        sa.TIMESTAMP(timezone=True),
        [
            datetime.datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
            datetime.datetime(
                2024, 1, 1, 5, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
            ),
        ],
    ),
    ("interval", pg.INTERVAL, [datetime.timedelta(days=-3, seconds=5, microseconds=7)]),
    ("json", pg.JSON, [{"a": [1, "x\ty\\z", None]}, [1, 2], "text", 3]),
    ("jsonb", pg.JSONB, [{"nested": {"é": '"quoted"\n'}}, []]),
    ("uuid", pg.UUID(as_uuid=True), [uuid.UUID("12345678-1234-5678-1234-567812345678")]),
    ("bytea", pg.BYTEA, [b"\x00\x01\\\t\xff", b""]),
    (
        "text_array",
        pg.ARRAY(sa.TEXT),
        [["a,b", None, '"q"', "{br}", "back\\slash", "NULL", "", "tab\tnl\n"], []],
    ),
    ("int_array", pg.ARRAY(sa.INTEGER), [[1, None, 3]]),
    ("int_matrix", pg.ARRAY(sa.INTEGER, dimensions=2), [[[1, 2], [3, None]]]),
    ("jsonb_array", pg.ARRAY(pg.JSONB), [[{"a": "b,c"}, None]]),
]


@pytest.mark.parametrize(("name", "type_", "values"), CASES, ids=[c[0] for c in CASES])
def test_values_round_trip_exactly(
    conn: sa.engine.Connection, schema: str, name: str, type_: Any, values: list[Any]
) -> None:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("position", sa.INTEGER, primary_key=True),
        sa.Column("value", type_),
        schema=schema,
    )
    rows = [(i, v) for i, v in enumerate([*values, None])]

    def batches(_: Any) -> Any:
        yield 1, ((table, row) for row in rows)

    ingest(conn, metadata, batches)
    with conn.begin():
        stored = conn.execute(sa.select(table).order_by(table.c.position)).fetchall()
    assert [tuple(row) for row in stored] == rows
