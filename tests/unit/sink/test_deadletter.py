"""What a dead letter carries: the original message, where it came from and why."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from sink.batcher import DeadLetter
from sink.deadletter import dead_letter_headers, dead_letter_rows, without_consumer_settings
from sink.errors import DecodeError, MappingError
from sink.records import Message
from sink.tables import DEAD_LETTER_COLUMNS, dead_letter_table

MESSAGE = Message("orders", 2, 41, 1_700_000_000_123, b"k1", b"{bad", (("trace", b"abc"),))
NOT_JSON = DecodeError("orders[2]@41", "value is not JSON", code="not-json")


def test_headers_keep_the_originals_and_add_coordinates_and_reason() -> None:
    headers = dead_letter_headers(DeadLetter(MESSAGE, NOT_JSON))
    assert headers[0] == ("trace", b"abc")
    assert dict(headers[1:]) == {
        "dlq.error.code": b"not-json",
        "dlq.error.reason": b"value is not JSON",
        "dlq.source.topic": b"orders",
        "dlq.source.partition": b"2",
        "dlq.source.offset": b"41",
        "dlq.source.timestamp": b"1700000000123",
    }


def test_mapping_errors_name_the_table_and_column() -> None:
    error = MappingError("orders[2]@41", "not a number", table="s.t", column="amount", code="type")
    headers = dict(dead_letter_headers(DeadLetter(MESSAGE, error)))
    assert headers["dlq.error.table"] == b"s.t"
    assert headers["dlq.error.column"] == b"amount"
    assert headers["dlq.error.reason"] == b"s.t.amount: not a number"


def test_a_message_without_timestamp_has_no_timestamp_header() -> None:
    message = Message("orders", 0, 1, None, None, b"x")
    headers = dict(dead_letter_headers(DeadLetter(message, NOT_JSON)))
    assert "dlq.source.timestamp" not in headers


def test_rows_follow_the_dead_letter_table_column_order() -> None:
    table = dead_letter_table("s.dead", sa.MetaData())
    failed_at = datetime(2026, 1, 2, tzinfo=timezone.utc)
    [row] = dead_letter_rows(table, [DeadLetter(MESSAGE, NOT_JSON)], failed_at=failed_at)
    values = dict(zip((c.name for c in table.columns), row))
    assert [c.name for c in table.columns] == list(DEAD_LETTER_COLUMNS)
    assert values["topic"] == "orders"
    assert values["partition"] == 2
    assert values["offset"] == 41
    assert values["key"] == b"k1"
    assert values["value"] == b"{bad"
    assert values["error_code"] == "not-json"
    assert "value is not JSON" in str(values["error"])
    assert values["failed_at"] == failed_at


def test_producer_config_leaves_consumer_only_settings_out() -> None:
    config = {"bootstrap.servers": "b:9092", "group.id": "g", "session.timeout.ms": "6000"}
    assert without_consumer_settings(config) == {"bootstrap.servers": "b:9092"}
