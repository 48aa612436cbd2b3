"""The native line (sink/_copyline.c): for any bytes, it gives the row the worker would write
by the Python form of the fast path (or, where that gives up, by `Pipeline.copy_lines`), or
hands the message to that Python form; jsonb values may be spelled as the message spelled
them, numbers with the digits it wrote. Which documents it writes itself and which it hands
over; and its `numbers_round_trip`, which tells where the Python paths must read a message's
numbers again."""

from __future__ import annotations

import contextlib
import gc
import json
import re
import weakref
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_bulk_ingest import CopyRow
from sink import _copyline
from sink.config import ColumnSettings, Format, TableSettings
from sink.config import parse_column_type as ctype
from sink.config import parse_source as source
from sink.errors import DecodeError
from sink.exactjson import python_numbers_round_trip
from sink.path import FastPath
from sink.pipeline import Pipeline
from sink.records import Message
from sink.tables import tables_from_config

COLUMNS = {
    "id": "BIGINT",
    "small": "SMALLINT",
    "int": "INTEGER",
    "short": "VARCHAR(5)",
    "body": "TEXT",
    "price": "NUMERIC(6,2)",
    "free": "NUMERIC",
    "wide": "DOUBLE PRECISION",
    "ratio": "REAL",
    "flag": "BOOLEAN",
    "doc": "JSONB",
    "at": "TIMESTAMPTZ",
    "wall": "TIMESTAMP",
    "day": "DATE",
    "uid": "UUID",
    "tags": "TEXT[]",
}
JSONB_COLUMN = list(COLUMNS).index("doc")
# NUMERIC columns and their scale (None: as written).
NUMERIC_COLUMNS = {list(COLUMNS).index("price"): 2, list(COLUMNS).index("free"): None}


def pipeline(key_format: Format) -> Pipeline:
    columns = [
        ColumnSettings(name, ctype(type_text), source(f"value.{name}"), nullable=name != "id")
        for name, type_text in COLUMNS.items()
    ]
    table = TableSettings(
        schema="public",
        name="events",
        columns=tuple(columns),
        topics=("t",),
        primary_key=("id",),
        key_format=key_format,
    )
    return Pipeline(tables_from_config([table]))


# The key formats the fast path reads (the registry's formats take the general path).
KEY_CODES = {Format.BYTES: 0, Format.STRING: 1, Format.JSON: 2}
PIPELINES = {key_format: pipeline(key_format) for key_format in KEY_CODES}
PATHS: dict[Format, FastPath] = {}
for _format, _pipeline in PIPELINES.items():
    _path = _pipeline.path("t").fast
    assert _path is not None
    PATHS[_format] = _path


class Native:
    """The native line of `PATHS[key_format]`, counting the messages it hands over."""

    def __init__(self, key_format: Format) -> None:
        path = PATHS[key_format]
        assert path.native_columns is not None
        self.python = path.python_row
        self.pipeline = PIPELINES[key_format]
        self.handed_over = 0
        line = _copyline.Line(path.native_columns, CopyRow, self._fallback, KEY_CODES[key_format])
        self.row = line.row

    def _fallback(self, key: bytes | None, value: bytes | None) -> CopyRow | None:
        self.handed_over += 1
        return self.python(key, value)

    def general(self, key: bytes | None, value: bytes | None) -> CopyRow | None:
        """The row of `Pipeline.copy_lines`, where the fast path gives up; None for a dead
        letter."""
        try:
            mapped = self.pipeline.copy_lines(Message("t", 0, 0, None, key, value))
        except DecodeError:
            return None
        return mapped.rows[0][1] if mapped.rows else None  # type: ignore[return-value]

    def python_or_general(self, key: bytes | None, value: bytes | None) -> CopyRow | None:
        """What the worker writes without the native line."""
        return self.python(key, value) or self.general(key, value)


def same_row(native: CopyRow | None, python: CopyRow | None) -> bool:
    """Rows PostgreSQL stores the same: equal texts, but the jsonb column's as the same jsonb
    value and the numeric columns' as the same numeric (12.5 and 12.50 in NUMERIC(6,2))."""
    if native is None or python is None:
        return native is python
    left, right = native.split("\t"), python.split("\t")
    if len(left) != len(right):
        return False
    for index, (mine, theirs) in enumerate(zip(left, right)):
        if mine == "\\N" or theirs == "\\N":
            same = mine == theirs
        elif index == JSONB_COLUMN:
            same = _canonical_json(mine) == _canonical_json(theirs)
        elif index in NUMERIC_COLUMNS:
            scale = NUMERIC_COLUMNS[index]
            same = _numeric(mine.rstrip("\n"), scale) == _numeric(theirs.rstrip("\n"), scale)
        else:
            same = mine == theirs
        if not same:
            return False
    return True


def _numeric(text: str, scale: int | None) -> str:
    """A NUMERIC's text as PostgreSQL stores it: rounded to the column's scale, if it has one;
    positional; no negative zero."""
    value = Decimal(text)
    if scale is not None:
        value = value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    shown = format(value, "f")
    return shown[1:] if value.is_zero() and shown[:1] == "-" else shown


def _canonical_json(text: str) -> object:
    """A JSON text as jsonb stores it: numbers with their digits as written."""
    value = json.loads(_copy_unescape(text), parse_float=Decimal, parse_int=Decimal)
    return _jsonb_numbers(value)


def _jsonb_numbers(value: object) -> object:
    if isinstance(value, Decimal):
        # As PostgreSQL's numeric writes it: positional, the scale written, no negative zero.
        text = format(value, "f")
        return ("number", text[1:] if value.is_zero() and text[:1] == "-" else text)
    if isinstance(value, dict):
        return {key: _jsonb_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonb_numbers(item) for item in value]
    return value


def _copy_unescape(text: str) -> str:
    escapes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    out, chars = [], iter(text.rstrip("\n"))
    for char in chars:
        out.append(escapes[next(chars)] if char == "\\" else char)
    return "".join(out)


def test_a_table_whose_every_column_has_a_native_kind_takes_the_native_line() -> None:
    assert all(path.native for path in PATHS.values())


texts = st.text(max_size=8) | st.sampled_from(
    ["a\tb", 'q"uote', "back\\slash", "nul\u0000", "ünï", "🦆 duck", "\u2028", "x" * 6, "/"]
)


class Exact(str):
    """A number written into a document as it is, digits and all (see `spellings`)."""


EXACT_NUMBERS = [
    "0.123456789012345678",
    "1.10",
    "1.0",
    "100.0",
    "-0.0",
    "1e2",
    "1.5E-3",
    "2.50e+1",
    "1e-400",
    "0.00001",
    "0.0001",
    "1234567890123456.0",
    "12345678901234567.0",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678901234567890.123456789",
]
decimals = st.decimals(min_value=-(10**20), max_value=10**20, allow_nan=False)
exact_numbers = (
    st.sampled_from(EXACT_NUMBERS) | decimals.map(str) | decimals.map(lambda d: format(d, "f"))
).map(Exact)
numbers = st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([-0, 0.0]) | exact_numbers
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda items: st.lists(items, max_size=3) | st.dictionaries(texts, items, max_size=3),
    max_leaves=10,
)
stamps = st.sampled_from(
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01 12:00:00.123456+05:30",
        "2024-05-01T12:00:00.1234567Z",
        "2024-02-29T12:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:00+15",
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00+00:00",
        "2024-05-01T12:00:00-0800",
        "0000-05-01T12:00:00Z",
        "2024-05-01",
        "2024-13-01",
        "2024-05-28",
        "١٢٣٤-05-01",
    ]
)
FIELD_VALUES: dict[str, Any] = {
    "id": st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from(["7", 1.0, -0, Exact("1e2"), Exact("7.0"), Exact("9223372036854775807.0")]),
    "small": st.integers(min_value=-40_000, max_value=40_000),
    "int": st.integers(min_value=-(2**32), max_value=2**32),
    "short": texts,
    "body": texts | numbers,
    "price": st.sampled_from(["12.50", "-0.5", "1e3", "9999.99", "1.234", "\u0661.\u0665", 12.5])
    | st.integers(-20_000, 20_000)
    | st.sampled_from(["12.50", "-0.5", "1e3", "9999.99", "1.234", "0.125", "-0"]).map(Exact)
    | exact_numbers,
    "free": st.sampled_from(["123456789012345678901234567890.5", "-0", "+1", "1."]) | numbers,
    "wide": numbers,
    "ratio": numbers | st.just(3.5e38),
    "flag": st.booleans() | st.sampled_from(["true", 0]),
    "doc": json_values,
    "at": stamps,
    "wall": stamps,
    "day": stamps,
    "uid": st.uuids().map(str) | st.sampled_from(["not-a-uuid", "ABCDEF00-1234-5678-1234-5678"]),
    "tags": st.lists(texts | st.none(), max_size=4),
}
objects = st.fixed_dictionaries(
    {},
    optional={
        **{name: values | st.none() for name, values in FIELD_VALUES.items()},
        "extra": json_values,
    },
)


def spellings(value: object) -> list[bytes]:
    """One JSON value as producers write it: compact, ASCII-escaped with spaces, indented; an
    `Exact` number as it is."""
    exact: list[str] = []

    def hide(item: object) -> object:
        if isinstance(item, Exact):
            exact.append(str(item))
            return f"@@exact{len(exact) - 1}@@"
        if isinstance(item, dict):
            return {key: hide(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [hide(inner) for inner in item]
        return item

    hidden = hide(value)
    spelled = [json.dumps(hidden, ensure_ascii=True), json.dumps(hidden, indent=1)]
    with contextlib.suppress(TypeError):  # orjson refuses integers past 64 bits
        spelled.append(orjson.dumps(hidden).decode())
    return [_EXACT.sub(lambda m: exact[int(m[1])], text).encode() for text in spelled]


_EXACT = re.compile(r'"@@exact(\d+)@@"')


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=objects,
    key=st.none() | st.binary(max_size=4) | st.sampled_from([b'"k"', b"1", b"\xff", b" [1] "]),
    key_format=st.sampled_from(list(PIPELINES)),
    cut=st.none() | st.integers(min_value=0, max_value=400),
    flip=st.none() | st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)),
)
def test_the_native_line_gives_the_row_the_python_form_gives(
    value: dict[str, object],
    key: bytes | None,
    key_format: Format,
    cut: int | None,
    flip: tuple[int, int] | None,
) -> None:
    native = Native(key_format)
    for spelled in spellings(value):
        raw = spelled if cut is None else spelled[:cut]
        if flip is not None and raw:
            at = flip[0] % len(raw)
            raw = raw[:at] + bytes([flip[1]]) + raw[at + 1 :]
        mine = native.row(key, raw) or native.general(key, raw)
        assert same_row(mine, native.python_or_general(key, raw)), raw


# Documents of numbers for the columns that keep a number's digits, where mistakes would be.
number_objects = st.fixed_dictionaries(
    {"id": st.integers(0, 9)},
    optional={
        "price": FIELD_VALUES["price"],
        "free": numbers,
        "doc": json_values,
        "body": numbers,
        "extra": numbers,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=number_objects)
def test_the_native_line_keeps_the_numbers_the_python_paths_keep(value: dict[str, object]) -> None:
    native = Native(Format.BYTES)
    for spelled in spellings(value):
        mine = native.row(None, spelled) or native.general(None, spelled)
        assert same_row(mine, native.python_or_general(None, spelled)), spelled


def test_no_python_object_is_needed_for_the_common_forms() -> None:
    native = Native(Format.STRING)
    documents = [
        b'{"id": 1}',
        b'{"id":-9223372036854775808,"small":-32768,"int":2147483647,"short":"h\\u00e9llo"}',
        b'{"id":2,"body":"tab\\there \\"quoted\\" back\\\\slash \\ud83e\\udd86 \\/ \\b"}',
        b'{"id":3,"price":"-1234.5","free":"123456789012345678901234567890.5","wide":0.1}',
        b'{"id":4,"ratio":-2.5e-3,"flag":false,"uid":"ABCDEF00-1234-5678-1234-567812345678"}',
        b'{"id":5,"doc":{"a": [1.10, -0, 1e2, "x\\ty", {"b": null}], "a": true},"tags":[]}',
        b'{"id":6,"at":"2024-05-28T23:59:59.999999-14:00","wall":"2024-05-01 12:00:00+0000"}',
        b'{"id":7,"day":"0001-01-28","tags":["a","b c",""],"extra":{"deep":[[[]]]}}',
        b'{"id":9223372036854775807,"doc":[9999999999999999999,-9223372036854775808]}',
        b'\t{ "id" : 8 , "id" : 9 }\n',
        b'{"id":10,"price":12.5,"free":0.123456789012345678,"doc":[-9223372036854775809]}',
        b'{"id":11,"price":-0.50,"free":123456789012345678901234567890.5,"doc":1.5e-7}',
    ]
    for document in documents:
        row = native.row(b"k", document)
        assert row is not None and same_row(row, native.python_or_general(b"k", document)), document
    assert native.handed_over == 0
    assert native.row(None, b'{"id": 1, "id": 2}') == "2" + "\t\\N" * (len(COLUMNS) - 1) + "\n"


def test_numbers_keep_the_digits_the_message_wrote() -> None:
    native = Native(Format.STRING)
    document = b'{"id":1,"price":1.50,"free":0.123456789012345678,"doc":{"p":[1.10,1e2]}}'
    row = native.row(None, document)
    assert row is not None and native.handed_over == 0
    fields = row.split("\t")
    assert fields[list(COLUMNS).index("price")] == "1.50"
    assert fields[list(COLUMNS).index("free")] == "0.123456789012345678"
    assert fields[JSONB_COLUMN] == '{"p":[1.10,1e2]}'
    assert same_row(row, native.python_or_general(None, document))
    assert native.python(None, document) is None  # its floats may not be the numbers written
    # Numbers a float keeps as written: the same values by every path.
    for document in (b'{"id":1,"price":12.5,"free":-0.0}', b'{"id":1,"doc":{"a":[1.5,2]}}'):
        row = native.row(None, document)
        assert row is not None and same_row(row, native.python_or_general(None, document))
    assert native.handed_over == 0


@pytest.mark.parametrize(
    "document",
    [
        b'{"id":1,"body":"nul \\u0000"}',  # refused by the Python form, with its reason
        b'{"id":1,"doc":["\\u0000"]}',
        b'{"id":1,"extra":"\\ud800"}',  # a lone surrogate, even where no column reads it
        b'{"id":1,"extra":"\\udc00\\ud800"}',
        b'{"id":1,"extra":"\xff"}',  # not UTF-8
        b'{"id":1,"extra":"\xed\xa0\x80"}',  # an encoded surrogate
        b'{"id":1,"extra":"\xc0\xaf"}',  # overlong
        b'{"id":1,"extra":1e400}',  # infinity
        b'{"id":1,"extra":12345678901234567890}',  # 20 digits
        b'{"id":1,"doc":[123456789012345678901]}',  # over 19 digits
        b'{"id":9223372036854775808}',
        b'{"id":1,"small":-32769}',
        b'{"id":1,"extra":01}',
        b'{"id":1,"extra":"a\tb"}',  # a raw control character
        b'{"id":1} x',
        b'{"id":1,}',
        b'{"\\u0069d":1}',  # a key with an escape could spell a field
        b"{}",
        b"[1]",
        b'{"id":null}',  # required
        b'{"id":-0}',  # "0" in Python
        b'{"id":1.0}',
        b'{"id":"1"}',
        b'{"id":1,"small":32768}',
        b'{"id":1,"short":"sixsix"}',
        b'{"id":1,"short":"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"}',
        b'{"id":1,"price":"12.345"}',
        b'{"id":1,"price":12.345}',  # rounded
        b'{"id":1,"price":1e1}',
        b'{"id":1,"price":-0}',  # "0" in Python
        b'{"id":1,"price":12345}',
        b'{"id":1,"wide":1}',
        b'{"id":1,"ratio":3.5e38}',
        b'{"id":1,"at":"2023-02-29T12:00:00Z"}',  # no such day
        b'{"id":1,"at":"2024-05-01T12:00:00"}',  # no offset
        b'{"id":1,"wall":"2024-05-01T12:00:00+02:00"}',
        b'{"id":1,"day":"2024-05-01T12:00:00Z"}',
        b'{"id":1,"uid":"abcdef00-1234-5678-1234-56781234567g"}',
        b'{"id":1,"tags":["a\\"b"]}',
        b'{"id":1,"tags":["a",null]}',
        b'{"id":1,"doc":' + b"[" * 600 + b"]" * 600 + b"}",
    ],
)
def test_what_the_native_line_is_not_sure_of_goes_to_the_python_form(document: bytes) -> None:
    native = Native(Format.STRING)
    assert same_row(native.row(None, document), native.python(None, document))
    assert native.handed_over == 1
    assert same_row(
        native.row(None, document) or native.general(None, document),
        native.python_or_general(None, document),
    )


@pytest.mark.parametrize(
    "special",
    [
        b"\x01",
        b"\x1f",
        b"\t",
        b'\\"',
        b"\\\\",
        b"\\n",
        b"\\u00e9",
        b"\xc3\xa9",
        b"\xff",
        b"\xed\xa0\x80",
        b"\x7f",
    ],
)
def test_a_string_reads_alike_wherever_its_first_special_byte_sits(special: bytes) -> None:
    # Strings are scanned eight plain ASCII bytes at a time: a byte that ends such a run
    # (a control character, a quote or backslash, a byte from 0x80 on) counts at every offset.
    native = Native(Format.STRING)
    for at in range(20):
        text = b"a" * at + special + b"b" * (19 - at)
        for field in (b"body", b"extra", b"tags"):
            value = b"[" + b'"' + text + b'"]' if field == b"tags" else b'"' + text + b'"'
            document = b'{"id":1,"' + field + b'":' + value + b"}"
            assert same_row(native.row(None, document), native.python(None, document)), document
            assert same_row(
                native.row(None, document) or native.general(None, document),
                native.python_or_general(None, document),
            ), document


def test_keys_are_checked_as_their_format_reads_them() -> None:
    value = b'{"id": 1}'
    assert Native(Format.BYTES).row(b"\xff", value) is not None
    assert Native(Format.STRING).row(b"\xff", value) is None
    assert Native(Format.STRING).row("é".encode(), value) is not None
    assert Native(Format.JSON).row(b'{"k": [1]}', value) is not None
    assert Native(Format.JSON).row(b"k", value) is None


def test_a_tombstone_or_a_value_that_is_not_bytes() -> None:
    native = Native(Format.STRING)
    assert native.row(b"k", None) is None
    assert native.handed_over == 0
    value = bytearray(b'{"id": 1}')
    assert native.row(b"k", value) == native.python(b"k", value)
    assert native.handed_over == 1


def test_columns_are_checked_when_the_line_is_made() -> None:
    with pytest.raises(ValueError, match="unknown kind 99"):
        _copyline.Line([("a", 99, 0, 0, False)], CopyRow, lambda k, v: None, 0)
    with pytest.raises(ValueError, match="1 to 64 columns"):
        _copyline.Line([], CopyRow, lambda k, v: None, 0)


def test_a_line_and_its_holder_are_collected_together() -> None:
    # The holder keeps the line's `row`, and the line keeps the holder's method as its fallback.
    native = Native(Format.STRING)
    gone = weakref.ref(native)
    del native
    gc.collect()
    assert gone() is None


def _round_trips(document: bytes) -> bool:
    """Whether every number of a JSON document reads through orjson as a value whose Python
    text (repr of a float, str of an int) is the number as written."""
    numbers: list[tuple[type, str]] = []
    json.loads(
        document,
        parse_float=lambda text: numbers.append((float, text)),
        parse_int=lambda text: numbers.append((int, text)),
    )
    return all(
        repr(float(text)) == text if kind is float else -(2**63) <= int(text) < 2**64
        for kind, text in numbers
    )


@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_numbers_round_trip_tells_whether_orjson_keeps_every_number_as_written(
    value: object,
) -> None:
    for document in spellings(value):
        try:
            orjson.loads(document)
        except orjson.JSONDecodeError:
            continue  # not JSON: never read again
        truth = _round_trips(document)
        assert _copyline.numbers_round_trip(document) == truth, document
        # The Python form may also doubt a number-like text in a string: never the reverse.
        assert python_numbers_round_trip(document) <= truth, document


@pytest.mark.parametrize(
    ("document", "round_trips"),
    [
        (b'{"a": 1.5, "b": [-0.0, 100.0, 0.0001, 123456789012345.6, 18446744073709551615]}', True),
        (b'{"a": "1.50 1e2 0.123456789012345678", "b": "12:00:00.120Z"}', True),
        (b'{"a": 1.50}', False),
        (b"[1e2]", False),
        (b'{"a": 0.123456789012345678}', False),
        (b"[0.00001]", False),
        (b"[18446744073709551616]", False),
        (b"[-9223372036854775809]", False),
        (b" 2.50 ", False),
        (b'{"a": {"b": [1, 2, 3.25000]}}', False),
    ],
)
def test_numbers_that_do_not_round_trip(document: bytes, round_trips: bool) -> None:
    assert _copyline.numbers_round_trip(document) is round_trips
    assert _round_trips(document) is round_trips
    if not round_trips:
        assert python_numbers_round_trip(document) is False


@pytest.mark.parametrize("number", ["9007199254740992.0", "9007199254740994.0", "1e+300"])
def test_a_large_float_written_exactly_lands_in_numeric_as_written_on_every_path(
    number: str,
) -> None:
    native = Native(Format.BYTES)
    document = b'{"id": 0, "free": ' + number.encode() + b"}"
    mine = native.row(None, document) or native.general(None, document)
    assert mine is not None
    assert same_row(mine, native.python_or_general(None, document)), document
    stored = mine.split("\t")[list(COLUMNS).index("free")]
    assert Decimal(stored) == Decimal(number)
