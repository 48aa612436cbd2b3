"""Kafka Connect's JSON envelope ({"schema", "payload"}, as JsonConverter writes it with
schemas.enable=true) read by its schema's types, and what does not read."""

from __future__ import annotations

import base64
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from sink import connect
from sink.config import Format
from sink.decode import decode
from sink.errors import DecodeError
from sink.records import Message

UTC = timezone.utc


def _decimal_schema(field: str, scale: int) -> dict[str, object]:
    return {
        "type": "bytes",
        "optional": False,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": str(scale), "connect.decimal.precision": "12"},
        "field": field,
    }


ORDER_SCHEMA = {
    "type": "struct",
    "name": "shop.orders.Value",
    "optional": False,
    "fields": [
        {"type": "int64", "optional": False, "field": "id"},
        _decimal_schema("amount", 2),
        {
            "type": "int64",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Timestamp",
            "field": "placed_at",
        },
        {
            "type": "int32",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Date",
            "field": "day",
        },
        {
            "type": "int32",
            "optional": True,
            "name": "org.apache.kafka.connect.data.Time",
            "field": "at",
        },
        {"type": "bytes", "optional": True, "field": "blob"},
        {"type": "string", "optional": True, "field": "note"},
        {"type": "array", "items": _decimal_schema("", 1), "optional": True, "field": "parts"},
        {
            "type": "map",
            "keys": {"type": "string"},
            "values": {"type": "int32"},
            "optional": True,
            "field": "counts",
        },
        {
            "type": "struct",
            "fields": [{"type": "string", "optional": True, "field": "city"}],
            "optional": True,
            "field": "address",
        },
    ],
}


def envelope(payload: object, schema: object = ORDER_SCHEMA) -> bytes:
    return orjson.dumps({"schema": schema, "payload": payload})


def read(data: bytes) -> object:
    return decode(Message("t", 0, 3, None, None, data), Format.STRING, Format.CONNECT_JSON).value


def test_the_payload_reads_by_its_schema_logical_types() -> None:
    payload = {
        "id": 2**62,
        "amount": "MDk=",  # 12345 unscaled, scale 2
        "placed_at": 1714564800123,
        "day": 19844,
        "at": 45_296_789,
        "blob": base64.b64encode(b"\x00\xff").decode(),
        "note": None,
        "parts": ["/w==", "Cg=="],  # -1 and 10, scale 1
        "counts": {"a": 1},
        "address": {"city": "Oslo"},
    }
    assert read(envelope(payload)) == {
        "id": 2**62,
        "amount": Decimal("123.45"),
        "placed_at": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
        "day": date(2024, 5, 1),
        "at": time(12, 34, 56, 789000),
        "blob": b"\x00\xff",
        "note": None,
        "parts": [Decimal("-0.1"), Decimal("1.0")],
        "counts": {"a": 1},
        "address": {"city": "Oslo"},
    }


def test_a_numeric_format_decimal_keeps_every_digit() -> None:
    data = b'{"schema": %s, "payload": 12345678901234567.123456789}' % orjson.dumps(
        _decimal_schema("", 9)
    )
    assert read(data) == Decimal("12345678901234567.123456789")


def test_a_schemaless_envelope_gives_its_payload() -> None:
    assert read(b'{"schema": null, "payload": {"id": 1}}') == {"id": 1}


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"{nope", "not-json", "value is not JSON"),
        (b'{"id": 1}', "not-connect-json", 'set value_format = "json"'),
        (envelope({"id": 1, "amount": "%%%"}), "schema-mismatch", "value.amount"),
        (envelope({"id": 1, "amount": "AQ==", "day": "monday"}), "schema-mismatch", "value.day"),
        (envelope([1, 2]), "schema-mismatch", "a struct, but the payload holds an array"),
        # orjson reads it as 0.0; an exact decimal cannot hold the exponent
        (
            b'{"schema": null, "payload": {"p": 0E0000000000001876899999999989902}}',
            "not-exact",
            "value's numbers cannot be read exactly: a number is out of the range",
        ),
    ],
)
def test_what_does_not_read_is_a_decode_error_with_its_code(
    data: bytes, code: str, says: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        read(data)
    assert caught.value.code == code
    assert says in str(caught.value) and str(caught.value).startswith("t[0]@3: ")


def test_a_key_envelope_gives_the_primary_key_fields() -> None:
    key_schema = {"type": "struct", "fields": [{"type": "int64", "field": "id"}]}
    message = Message("t", 0, 0, None, envelope({"id": 9}, key_schema), None)
    assert decode(message, Format.CONNECT_JSON, Format.CONNECT_JSON).key == {"id": 9}


DECIMAL_FIELD = {
    "type": "bytes",
    "name": "org.apache.kafka.connect.data.Decimal",
    "parameters": {"scale": "2"},
    "field": "amount",
}
NESTED = {
    "type": "struct",
    "fields": [
        {"type": "int64", "field": "id"},
        DECIMAL_FIELD,
        {"type": "struct", "field": "inner", "fields": [{"type": "string", "field": "s"}]},
        {"type": "array", "field": "list", "items": {"type": "int32"}},
        {"type": "map", "field": "map", "keys": {"type": "string"}, "values": {"type": "int32"}},
        {"type": "string", "name": "io.debezium.data.Json", "field": "doc"},
    ],
}


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        (NESTED, {"id": 1, "amount": "AMs=", "inner": {"s": "x"}, "list": [1], "map": {"a": 2}}),
        (NESTED, {"id": 1, "doc": '{"a": 1}', "inner": None}),
        (NESTED, {"id": 1, "inner": "not a struct"}),
        (NESTED, {"amount": "not base64!"}),
        (NESTED, ["not", "a", "struct"]),
        (NESTED, None),
        ({"type": "struct", "fields": [{"type": "int64"}]}, {"id": 1}),  # a field without a name
        ({"type": "struct", "fields": "nonsense"}, {"id": 1}),
        ("int64", 5),
        (
            NESTED,
            {"id": 1, "amount": None, "inner": {"s": "x"}, "list": [], "map": {}, "doc": None},
        ),
        (NESTED, {"amount": None, "id": 1, "inner": {"s": "x"}, "list": [], "map": {}, "doc": "1"}),
        (NESTED, {"id": 1, "amount": "AMs=", "inner": {"s": "x"}, "list": [2], "map": {}}),
        (NESTED, {"id": 1, "amount": "AMs=", "inner": {"s": "x", "t": 1}, "map": {}, "x": 2}),
        (NESTED["fields"][2], {"s": "as is"}),
        (NESTED["fields"][2], {"t": "missing s"}),
        (NESTED["fields"][2], {"s": "extra", "t": 1}),
        ({"type": "bytes"}, "AAE="),
        ({"type": "bytes"}, 7),
        ({"type": "int64", "name": connect.TIMESTAMP}, "noon"),
        ({"type": "string", "name": "io.debezium.data.Json"}, "{not json"),
        ({"type": "array", "name": ["unhashable"], "items": {"type": "int32"}}, [1]),
    ],
)
def test_a_schema_worked_out_once_converts_as_the_schema_read_per_value(
    schema: Any, value: Any
) -> None:
    def outcome(convert: Any) -> object:
        try:
            return convert()
        except Exception as error:  # compared: the same error, or the same value
            return (type(error), str(error))

    expected = outcome(lambda: connect._convert(schema, value, "value"))
    assert outcome(lambda: connect._converter(schema, "value")(value)) == expected
    assert connect._converter(schema, "value") is connect._converter(schema, "value")


# JsonConverter's spelling: no spaces, the schema first.
def compact(payload: object, schema: object = ORDER_SCHEMA) -> bytes:
    return b'{"schema":' + orjson.dumps(schema) + b',"payload":' + orjson.dumps(payload) + b"}"


@pytest.fixture()
def no_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "_PREFIXES", {})
    monkeypatch.setattr(connect, "_LATEST", {})


def known_prefixes() -> list[bytes]:
    return [prefix for (part, _), (prefix, _) in connect._PREFIXES.items() if part == "value"]


@pytest.mark.usefixtures("no_prefixes")
def test_later_envelopes_of_a_schema_read_only_their_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = {"id": 1, "amount": "MDk=", "placed_at": None, "counts": {"a": 1}}
    assert read(compact(first)) == read(envelope(first))
    (prefix,) = known_prefixes()
    assert prefix == compact(first)[: -len(orjson.dumps(first)) - 1]
    later = {"id": 2**62, "amount": "/w==", "day": 19844, "note": "a\tb"}
    expected = connect._read_whole("value", compact(later))
    decimal_schema = _decimal_schema("", 9)
    read(compact(1, decimal_schema))
    whole_reads: list[bytes] = []
    read_whole = connect._read_whole

    def counted(part: str, data: bytes) -> object:
        whole_reads.append(data)
        return read_whole(part, data)

    monkeypatch.setattr(connect, "_read_whole", counted)
    assert read(compact(later)) == expected
    # Exact numbers in the payload alone: a NUMERIC-format decimal, a long past 2**53.
    exact = compact(1, decimal_schema)[:-2] + b"12345678901234567.123456789}"
    assert read(exact) == Decimal("12345678901234567.123456789")
    assert whole_reads == []
    spaced = b'{"schema": %s, "payload": {"id": 3}}' % orjson.dumps(ORDER_SCHEMA)
    assert read(spaced) == read_whole("value", spaced)
    assert whole_reads == [spaced]  # not JsonConverter's spelling: read whole


@pytest.mark.usefixtures("no_prefixes")
def test_a_topic_of_many_schemas_reads_each_later_envelope_from_its_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schemas = [{**ORDER_SCHEMA, "version": version} for version in range(1, 101)]
    for schema in schemas:
        read(compact({"id": 1}, schema))
    whole_reads: list[bytes] = []
    read_whole = connect._read_whole

    def counted(part: str, data: bytes) -> object:
        whole_reads.append(data)
        return read_whole(part, data)

    monkeypatch.setattr(connect, "_read_whole", counted)
    expected = read_whole("value", compact({"id": 7, "note": "x"}))
    for schema in reversed(schemas):
        assert read(compact({"id": 7, "note": "x"}, schema)) == expected
    assert whole_reads == []


@pytest.mark.usefixtures("no_prefixes")
def test_a_schema_that_spells_the_payload_key_inside_it_is_not_cut_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = {**ORDER_SCHEMA, "doc": 'as in {"a":1,"payload":2}', "version": 2}
    read(compact({"id": 1}, schema))
    (prefix,) = known_prefixes()
    assert orjson.loads(prefix[len(b'{"schema":') : -len(b',"payload":')]) == schema
    expected = connect._read_whole("value", envelope({"id": 5, "note": "x"}, schema))
    monkeypatch.setattr(connect, "_read_whole", None)  # later envelopes: payload only
    assert read(compact({"id": 5, "note": "x"}, schema)) == expected


@pytest.mark.usefixtures("no_prefixes")
@pytest.mark.parametrize(
    ("after_prefix", "code"),
    [
        (b'{"id":1}', "not-json"),  # no closing brace
        (b'{"id":1},"extra":2}', "not-connect-json"),
        (b'{"id":1}}}', "not-json"),
        (b'{"id":1,"amount":"%%%"}}', "schema-mismatch"),
        (b'{"p":0E0000000000001876899999999989902}}', "not-exact"),
    ],
)
def test_an_envelope_with_a_known_prefix_that_does_not_read_says_why(
    after_prefix: bytes, code: str
) -> None:
    read(compact({"id": 1}))
    (prefix,) = known_prefixes()
    with pytest.raises(DecodeError) as caught:
        read(prefix + after_prefix)
    assert caught.value.code == code
    assert len(known_prefixes()) == 1


@pytest.mark.usefixtures("no_prefixes")
def test_a_schemaless_envelope_is_known_by_its_prefix_too() -> None:
    assert read(b'{"schema":null,"payload":{"id":1}}') == {"id": 1}
    assert read(b'{"schema":null,"payload":[1, 2.5, "x"]}\n') == [1, 2.5, "x"]
    assert known_prefixes() == [b'{"schema":null,"payload":']
