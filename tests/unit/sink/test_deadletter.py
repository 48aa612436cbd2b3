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


def _row(message: Message, error: DecodeError = NOT_JSON) -> dict[str, object]:
    table = dead_letter_table("s.dead", sa.MetaData())
    [row] = dead_letter_rows(
        table, [DeadLetter(message, error)], failed_at=datetime.now(timezone.utc)
    )
    return dict(zip((c.name for c in table.columns), row))


def test_header_values_jsonb_cannot_hold_are_kept_as_base64_and_marked() -> None:
    headers = (("nul", b"a\x00b"), ("binary", b"\xff"), ("text", b"caf\xc3\xa9"), ("none", None))
    values = _row(MESSAGE._replace(headers=headers))
    assert values["headers"] == {
        "nul": {"base64": "YQBi"},
        "binary": {"base64": "/w=="},
        "text": "café",
        "none": None,
    }


def test_a_repeated_header_keeps_every_value_in_order() -> None:
    headers = (("hop", b"one"), ("other", b"x"), ("hop", None), ("hop", b"\x00"))
    values = _row(MESSAGE._replace(headers=headers))
    assert values["headers"] == {"hop": ["one", None, {"base64": "AA=="}], "other": "x"}


def test_a_header_name_jsonb_cannot_hold_is_kept_as_base64_beside_a_stand_in_key() -> None:
    headers = (("a\x00b", b"v"), ("lone\udcff", b"\xff"), ("none\x00", None))
    values = _row(MESSAGE._replace(headers=headers))
    assert values["headers"] == {
        "a\ufffdb": {"name_base64": "YQBi", "text": "v"},
        "lone\ufffd": {"name_base64": "bG9uZe2zvw==", "base64": "/w=="},
        "none\ufffd": {"name_base64": "bm9uZQA="},
    }


def test_a_reason_quoting_nul_or_a_lone_surrogate_is_stored_escaped() -> None:
    error = DecodeError("orders[2]@41", "map_record raised ValueError: bad 'a\x00b' '\udcff'")
    values = _row(MESSAGE, error)
    assert values["error"] == (
        "orders[2]@41: map_record raised ValueError: bad 'a\\x00b' '\\udcff'"
    )


def test_a_timestamp_past_the_year_9999_is_null_and_the_reason_says_why() -> None:
    microseconds = 1_700_000_000_000_000
    values = _row(MESSAGE._replace(timestamp_ms=microseconds))
    assert values["timestamp"] is None
    assert str(values["error"]).startswith("orders[2]@41: value is not JSON; the timestamp is NULL")
    assert (
        f"the Kafka timestamp {microseconds} (milliseconds since 1970) is after the year 9999"
        in (str(values["error"]))
    )
    before_year_one = _row(MESSAGE._replace(timestamp_ms=-(10**15)))
    assert before_year_one["timestamp"] is None
    assert "before the year 1" in str(before_year_one["error"])
