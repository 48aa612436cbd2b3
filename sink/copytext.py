"""Common JSON values straight to COPY text, without the Python objects in between.

Per column type, a function that returns the COPY text of a value in one of its simple, common
forms (an ISO timestamp with an offset, a decimal string that fits, a list of plain strings),
or None for anything else. The text is read by PostgreSQL as the same value the general path
stores (the mapping's converter, then the ingest core's encoder), so None only means "take the
general path", which also makes every error message. Primary-key columns take this path only
for integers and plain text, whose text is the general path's exactly: the batcher compares
keys by their COPY text.

`native_kind` names the same fast path per column for the C extension `sink._copyline`, which
goes from a message's bytes to its line without making the Python objects (see FastPath in
sink/pipeline.py). It takes a subset of these forms and hands the rest to this module's.

A float read from a message may not be the number it wrote (0.123456789012345678 reads as
0.12345678901234568): a NUMERIC column's fast path leaves floats to the general path, and the
compiled line asks whether the floats a column keeping digits gets are as written (see
`compile_line` and sink.mapping).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Callable, Dict, Optional, Protocol

import orjson
import sqlalchemy as sa

from pg_bulk_ingest import CopyRow
from sink import kinds
from sink.kinds import Native

try:
    from sink import _copyline
except ImportError:  # not built: the Python form of its holds_float does the same, slower
    _copyline = None  # type: ignore[assignment]
else:
    kinds.check_native_codes(getattr(_copyline, "KINDS", {}))

# Whether the C extension was built at install time (it is optional).
NATIVE = _copyline is not None

FastText = Callable[[Any], Optional[str]]

_REAL_MAX = 3.4028234663852886e38
_DUMPS = orjson.dumps
_DECIMAL = decimal.Decimal
_FROM_ISO = datetime.fromisoformat
_DATE_FROM_ISO = date.fromisoformat
# Date, time to the second, at most microseconds: longer fractions are rounded differently by
# PostgreSQL (half up) and the mapping (truncated), so they take the general path. ASCII digits
# only: PostgreSQL reads no others.
_DAY = r"\d{4}-\d\d-\d\d"
_CLOCK = _DAY + r"[T ]\d\d:\d\d:\d\d(?:\.\d{1,6})?"
# The same, where the shape alone makes a real date and time: month 01-12, day 01-28 (so no 31
# February), hour 00-23, minute and second 00-59, year from 0001. Most values fit, and skip the
# check by `fromisoformat`.
_SURE_DAY = r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])"
_SURE_CLOCK = _SURE_DAY + r"[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
# An explicit offset PostgreSQL accepts (it refuses displacements beyond 15:59).
_OFFSET = r"(?:Z|[+-](?:0\d|1[0-4])(?::?[0-5]\d)?)"
# TIMESTAMP holds UTC wall time and PostgreSQL ignores an offset in its input: so only UTC.
_UTC = r"(?:Z|\+00(?::?00)?)?"


def _shape(pattern: str) -> Callable[[str], Optional[re.Match[str]]]:
    return re.compile(pattern, re.ASCII).fullmatch


_TIMESTAMPTZ, _SURE_TIMESTAMPTZ = _shape(_CLOCK + _OFFSET), _shape(_SURE_CLOCK + _OFFSET)
_TIMESTAMP, _SURE_TIMESTAMP = _shape(_CLOCK + _UTC), _shape(_SURE_CLOCK + _UTC)
_DATE, _SURE_DATE = _shape(_DAY), _shape(_SURE_DAY)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Characters that make an array element need quoting or escaping (and NUL, which is refused).
_ARRAY_SPECIAL = re.compile(r'[\\"\t\n\r\x00]').search


def _integer(bits: int) -> FastText:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def fast(value: Any) -> str | None:
        if type(value) is int and low <= value <= high:
            return str(value)
        return None

    return fast


def _text(length: int | None) -> FastText:
    def fast(value: Any) -> str | None:
        # isprintable() is False for tab, newline, carriage return and NUL.
        if (
            type(value) is str
            and (length is None or len(value) <= length)
            and value.isprintable()
            and "\\" not in value
        ):
            return value
        return None

    return fast


def _numeric(precision: int | None, scale: int | None) -> FastText | None:
    if precision is None:
        whole, fraction = 1000, 1000
    else:
        whole, fraction = precision - (scale or 0), scale or 0
        if whole < 1:
            return None
    pattern = rf"-?\d{{1,{whole}}}" + (rf"(?:\.\d{{1,{fraction}}})?" if fraction else "")
    decimal_text = re.compile(pattern, re.ASCII).fullmatch
    limit = 10**whole

    def fast(value: Any) -> str | None:
        kind = type(value)
        if kind is str and decimal_text(value):
            return value  # type: ignore[no-any-return]
        if kind is int and -limit < value < limit:
            return str(value)
        if kind is _DECIMAL:  # a number read exactly (see sink.mapping)
            text = str(value)
            return text if decimal_text(text) else None
        return None  # a float, among others: its digits may not be the message's

    return fast


def _float(single: bool) -> FastText:
    def fast(value: Any) -> str | None:
        if type(value) is float and (not single or abs(value) <= _REAL_MAX):
            return repr(value)
        return None

    return fast


def _boolean(value: Any) -> str | None:
    if value is True:
        return "t"
    if value is False:
        return "f"
    return None


_JSON_KINDS = (dict, list, str, int, float, bool)


def _python_holds_float(value: Any) -> bool:
    """Whether a JSON value is or holds a float: the Python form of `sink._copyline`'s."""
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _python_holds_float(item)):
            return True
    return False


holds_float: Callable[[Any], bool] = (
    _python_holds_float if _copyline is None else _copyline.holds_float
)


def _json(value: Any) -> str | None:
    if type(value) not in _JSON_KINDS:
        return None
    try:
        text = _DUMPS(value).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return None
    # orjson escapes control characters, so a backslash is the only character COPY cares about;
    # an escaped NUL is refused by the general path with the path to it.
    if "\\" not in text:
        return text
    if "\\u0000" in text:
        return None
    return text.replace("\\", "\\\\")


def _timestamp(with_time_zone: bool) -> FastText:
    if with_time_zone:
        sure, shape = _SURE_TIMESTAMPTZ, _TIMESTAMPTZ
    else:
        sure, shape = _SURE_TIMESTAMP, _TIMESTAMP

    def fast(value: Any) -> str | None:
        if type(value) is not str:
            return None
        if sure(value):
            return value
        if shape(value):
            try:
                _FROM_ISO(value)  # a real date and time (no 31 February)
            except ValueError:
                return None
            return value
        return None

    return fast


def _date(value: Any) -> str | None:
    if type(value) is not str:
        return None
    if _SURE_DATE(value):
        return value
    if _DATE(value):
        try:
            _DATE_FROM_ISO(value)
        except ValueError:
            return None
        return value
    return None


def _uuid(value: Any) -> str | None:
    if type(value) is str and _UUID.fullmatch(value):
        return value
    return None


def _text_array(values: Any) -> str | None:
    if type(values) is not list:
        return None
    try:
        joined = '","'.join(values)
    except TypeError:  # a null, a number or a nested list
        return None
    if not values:
        return "{}"
    if _ARRAY_SPECIAL("".join(values)) is not None:
        return None
    return '{"' + joined + '"}'


def _text_array_of(type_: Any) -> FastText | None:
    """The fast path of an array: of plain text only (no element length to check)."""
    item = sa.types.to_instance(type_.item_type)
    element = kinds.kind_of(item)
    if element is not None and element.native is Native.TEXT and item.length is None:
        return _text_array
    return None


def fast_text(type_: sa.types.TypeEngine[Any], *, key: bool) -> FastText | None:
    """The fast path of a column type, or None when it has none (every value then takes the
    general path). `key`: the column is part of the primary key."""
    kind = kinds.kind_of(type_)
    if kind is None or kind.fast is None or (key and not kind.fast_keys):
        return None
    return kind.fast(type_)


# A column's kind in the native line (sink/_copyline.c's `enum kind`) and its two parameters.
NativeKind = tuple[int, int, int]
# The native kinds by the names they had here before sink.kinds declared them.
NATIVE_INT, NATIVE_TEXT, NATIVE_NUMERIC = Native.INT, Native.TEXT, Native.NUMERIC
NATIVE_FLOAT, NATIVE_BOOL, NATIVE_JSONB = Native.FLOAT, Native.BOOL, Native.JSONB
NATIVE_TIMESTAMPTZ, NATIVE_TIMESTAMP = Native.TIMESTAMPTZ, Native.TIMESTAMP
NATIVE_DATE, NATIVE_UUID, NATIVE_TEXT_ARRAY = Native.DATE, Native.UUID, Native.TEXT_ARRAY


def native_kind(type_: sa.types.TypeEngine[Any], *, key: bool) -> NativeKind | None:
    """The column's kind in the native line, with its parameters, where its type has a fast
    path (`fast_text`); None where the native line cannot write it."""
    kind = kinds.kind_of(type_)
    if kind is None or kind.native is None or fast_text(type_, key=key) is None:
        return None
    return (int(kind.native), *kind.native_parameters(type_))


@dataclass(frozen=True)
class LineColumn:
    """How `compile_line` reads and writes one column."""

    # The top-level field of a JSON object value it reads, or None to call `extract(record)`.
    field: str | None
    extract: Callable[[Any], object]
    fast: FastText | None
    # The converter, then the core's encoder: may raise (the caller's rejection).
    general: Callable[[Any], str]
    required: bool
    # Whether a value may not be what the message wrote (a float, for a column that keeps a
    # number's digits); then the line asks `round_trip` (see `compile_line`). None: any value
    # will do. Asked of the values the fast path leaves, or of every value with `doubt_first`
    # (where the fast path takes floats too).
    doubt: Optional[Callable[[Any], bool]] = None
    doubt_first: bool = False


class LineFunction(Protocol):
    """A table's line, `line(record, value, raw=None)`: see `compile_line`. `raw`, the bytes
    `value` was read from, lets a line check that its floats are the numbers written (see
    `Mapper.value_line`)."""

    def __call__(
        self, record: Any, value: Dict[str, Any], raw: Optional[bytes] = None
    ) -> Optional[CopyRow]: ...


def compile_line(
    columns: Sequence[LineColumn],
    missing: object,
    round_trip: Callable[[Any, Optional[bytes]], bool] | None = None,
) -> LineFunction:
    """One function per table, `line(record, value, raw=None)`, from a record whose value is a
    non-empty JSON object to its COPY line as a `CopyRow`, written out column by column (no
    loop, no per-column tuple). `record` is only read by the columns without a `field`.

    It returns None for a row it cannot finish without an error (a required value missing or
    null, a value the general path refuses): the caller then maps that record the slow way,
    which raises the error naming the column. Also where a column doubts its value: once per
    row, `round_trip(record, raw)` tells whether the message's floats are the numbers it
    wrote (`raw`: the bytes `value` was read from, or None); if not, the line returns None.
    """
    namespace: dict[str, Any] = {"MISSING": missing, "CopyRow": CopyRow, "round_trip": round_trip}
    body = []
    for i, column in enumerate(columns):
        namespace[f"extract{i}"] = column.extract
        namespace[f"fast{i}"] = column.fast
        namespace[f"general{i}"] = column.general
        namespace[f"doubt{i}"] = column.doubt
        read = (
            f"value.get({column.field!r}, MISSING)"
            if column.field is not None
            else f"extract{i}(record)"
        )
        absent = "return None" if column.required else f"text{i} = {_NULL!r}"
        convert = f"text{i} = general{i}(v)"
        check = ""
        if column.doubt is not None:
            assert round_trip is not None, "a column that doubts needs round_trip"
            check = (
                f"if doubt{i}(v):\n"
                "    if exact is None:\n"
                "        exact = round_trip(record, raw)\n"
                "    if not exact:\n"
                "        return None\n"
            )
        first, check = (check, "") if column.doubt_first else ("", check)
        if column.fast is not None:
            convert = f"text{i} = fast{i}(v)\nif text{i} is None:\n" + _indent(check + convert, 1)
        else:
            convert = check + convert
        convert = first + convert
        body.append(
            f"        v = {read}\n"
            f"        if v is None or v is MISSING:\n            {absent}\n"
            f"        else:\n{_indent(convert, 3)}\n"
        )
    joined = "\\t".join(f"{{text{i}}}" for i in range(len(columns)))
    doubts = any(column.doubt is not None for column in columns)
    source = (
        "def line(record, value, raw=None):\n"
        + ("    exact = None\n" if doubts else "")
        + "    try:\n"
        + "".join(body)
        + "    except Exception:\n        return None\n"
        f'    return CopyRow(f"{joined}\\n")\n'
    )
    # The source holds only repr()s of field names and generated names: nothing is injected.
    exec(compile(source, "<sink.copytext line>", "exec"), namespace)
    return namespace["line"]  # type: ignore[no-any-return]


def _indent(code: str, levels: int) -> str:
    return "\n".join("    " * levels + line for line in code.split("\n"))


_NULL = "\\N"
