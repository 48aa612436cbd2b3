"""Kafka Connect's JSON envelope (JsonConverter with schemas.enable=true, as a Connect source or
Debezium with the JSON converter writes it): the payload lands by its schema's logical types,
keys delete by tombstone, and a payload its schema does not describe is a dead letter."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import sqlalchemy as sa

from .harness import SinkProcess, log_end_offsets, produce, stored_offsets, wait_until

UTC = timezone.utc
KEY_SCHEMA = {
    "type": "struct",
    "name": "shop.orders.Key",
    "optional": False,
    "fields": [{"type": "int64", "optional": False, "field": "id"}],
}
VALUE_SCHEMA = {
    "type": "struct",
    "name": "shop.orders.Value",
    "optional": False,
    "fields": [
        {"type": "int64", "optional": False, "field": "id"},
        {
            "type": "bytes",
            "optional": False,
            "name": "org.apache.kafka.connect.data.Decimal",
            "version": 1,
            "parameters": {"scale": "2", "connect.decimal.precision": "12"},
            "field": "amount",
        },
        {
            "type": "int64",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Timestamp",
            "version": 1,
            "field": "placed_at",
        },
        {
            "type": "int32",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Date",
            "version": 1,
            "field": "day",
        },
        {"type": "string", "optional": True, "field": "note"},
    ],
}
COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "amount"
type = "NUMERIC(12,2)"
[[tables.columns]]
name = "placed_at"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "day"
type = "DATE"
[[tables.columns]]
name = "note"
type = "TEXT"
"""


def unscaled(amount: Decimal) -> str:
    """A Connect Decimal as JsonConverter writes it: base64 of the unscaled two's complement."""
    number = int(amount.scaleb(2))
    two_complement = number.to_bytes((number.bit_length() + 8) // 8, "big", signed=True)
    return base64.b64encode(two_complement).decode()


def test_connect_envelopes_land_by_their_schema_and_bad_payloads_are_dead_letters(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)
    expected = {}
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i in range(1, 201):
        row = (
            i,
            Decimal(i * 101) / 100 * (-1 if i % 4 == 0 else 1),
            base + timedelta(milliseconds=i * 1001),
            date(2024, 1, 1) + timedelta(days=i),
            None if i % 3 == 0 else f"note {i}",
        )
        expected[i] = row
        payload = {
            "id": i,
            "amount": unscaled(row[1]),
            "placed_at": (row[2] - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1),
            "day": (row[3] - date(1970, 1, 1)).days,
            "note": row[4],
        }
        key = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}})
        messages.append((key, orjson.dumps({"schema": VALUE_SCHEMA, "payload": payload})))
    not_base64 = {"schema": VALUE_SCHEMA, "payload": {"id": 5, "amount": "%%"}}
    bad = [(b'{"id": 1}', "not-connect-json"), (orjson.dumps(not_base64), "schema-mismatch")]
    for value, _ in bad:
        messages.append((orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": 0}}), value))
    for i in (7, 8):  # a delete: the key, and no value
        messages.append((orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}}), None))
        del expected[i]
    produce(kafka_bootstrap, topic, messages)
    config = sink_config(
        [topic],
        schema,
        primary_key=["id"],
        columns=COLUMNS,
        table_extra='key_format = "connect-json"\nvalue_format = "connect-json"\n',
        extra=f'[errors]\npolicy = "dead-letter-table"\ndead_letter_table = "{schema}.dead"\n',
    )
    worker = start_sink(config)
    end = log_end_offsets(kafka_bootstrap, topic, 1)[0]

    def caught_up() -> bool:
        assert worker.running(), worker.output()[-3000:]
        return stored_offsets(engine, schema).get(topic, {}).get("0") == end

    wait_until(caught_up, 120, "every message committed")
    assert worker.terminate() == 0
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f'SELECT id, amount, placed_at, day, note FROM "{schema}".events ORDER BY id')
        ).all()
        letters = (
            conn.execute(sa.text(f'SELECT error_code FROM "{schema}".dead ORDER BY "offset"'))
            .scalars()
            .all()
        )
    assert [tuple(row) for row in rows] == [expected[i] for i in sorted(expected)]
    assert letters == [code for _, code in bad]
