"""Decoding: the bytes of a message become a Record, or a DecodeError saying where and why."""

from __future__ import annotations

import confluent_kafka
import pytest

from sink.config import Format
from sink.decode import decode
from sink.errors import DecodeError
from sink.records import Message, Record, TopicPartition, message_from_kafka


def message(value: bytes | None, key: bytes | None = None) -> Message:
    return Message("orders", 3, 1041, 1_700_000_000_000, key, value, (("h", b"1"),))


def test_json_value_and_string_key_are_decoded() -> None:
    record = decode(message(b'{"id": 7, "tags": ["a"]}', b"k-7"), Format.STRING, Format.JSON)
    assert record.value == {"id": 7, "tags": ["a"]}
    assert record.key == "k-7"
    assert record.message.headers == (("h", b"1"),)
    assert record.coordinates == "orders[3]@1041"
    assert not record.is_tombstone


def test_json_key_and_bytes_value() -> None:
    record = decode(message(b"\x00\xff", b'{"id": 7}'), Format.JSON, Format.BYTES)
    assert record.key == {"id": 7}
    assert record.value == b"\x00\xff"


def test_string_value_is_text() -> None:
    assert decode(message("héllo".encode()), Format.STRING, Format.STRING).value == "héllo"


def test_a_message_without_value_is_a_tombstone() -> None:
    record = decode(message(None, b"k"), Format.STRING, Format.JSON)
    assert record.value is None
    assert record.is_tombstone
    assert record.key == "k"


def test_a_message_without_key_has_key_none() -> None:
    assert decode(message(b"1"), Format.JSON, Format.JSON).key is None


def test_a_json_null_value_is_refused_so_it_is_not_mistaken_for_a_tombstone() -> None:
    with pytest.raises(DecodeError, match=r"orders\[3\]@1041: value is JSON null") as caught:
        decode(message(b"null"), Format.STRING, Format.JSON)
    assert caught.value.code == "null-value"


def test_invalid_json_names_coordinates_byte_position_and_remedy() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(message(b'{"id": 7,, "x": 1}'), Format.STRING, Format.JSON, target="public.orders")
    error = caught.value
    assert str(error).startswith("orders[3]@1041: public.orders: value is not JSON: ")
    assert "at byte 9 (line 1, column 10)" in str(error)
    assert 'value_format = "string" or "bytes"' in str(error)
    assert error.code == "not-json"
    assert error.coordinates == "orders[3]@1041"


def test_invalid_utf8_in_json_names_the_offending_byte() -> None:
    with pytest.raises(DecodeError, match=r"value is not UTF-8 text: byte 0xff at position 6"):
        decode(message(b'{"a": \xff}'), Format.STRING, Format.JSON)


def test_invalid_utf8_in_a_string_key() -> None:
    with pytest.raises(DecodeError, match=r'key is not UTF-8.*key_format = "bytes"') as caught:
        decode(message(b"1", b"ab\xc3"), Format.STRING, Format.JSON)
    assert caught.value.code == "not-utf8"


def test_an_empty_value_is_not_json() -> None:
    with pytest.raises(DecodeError, match=r"value is empty, not JSON"):
        decode(message(b""), Format.STRING, Format.JSON)


def test_nesting_beyond_the_parser_limit_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"depth limit"):
        decode(message(b"[" * 5000 + b"]" * 5000), Format.STRING, Format.JSON)


def test_message_from_kafka_copies_every_field() -> None:
    msg = confluent_kafka.Message(
        topic="orders",
        partition=2,
        offset=41,
        key=b"k",
        value=b"v",
        headers=[("trace", b"abc"), ("empty", None)],
        timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, 1_700_000_000_123),
    )
    assert message_from_kafka(msg) == Message(
        "orders", 2, 41, 1_700_000_000_123, b"k", b"v", (("trace", b"abc"), ("empty", None))
    )


def test_message_from_kafka_without_timestamp_or_headers() -> None:
    msg = confluent_kafka.Message(
        topic="t",
        partition=0,
        offset=0,
        value=None,
        timestamp=(confluent_kafka.TIMESTAMP_NOT_AVAILABLE, 0),
    )
    copied = message_from_kafka(msg)
    assert copied.timestamp_ms is None
    assert copied.headers == ()
    assert copied.value is None


def test_a_message_names_its_partition_and_coordinates() -> None:
    assert Message("t", 1, 0, None, None, None).topic_partition == TopicPartition("t", 1)
    assert Record(Message("t", 1, 9, None, None, None), None, None).coordinates == "t[1]@9"
