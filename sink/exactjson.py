"""JSON read with every number as written: a number with a fraction or an exponent becomes a
Decimal, never a float that would lose digits; integers stay whole at any size. Documents are
read by orjson first, and again exactly only where `numbers_round_trip` says a number did not
survive orjson's reading as written.

What a Decimal cannot hold (an exponent past its range, such as `1E+9999999999999999999`)
raises ValueError, as any JSON that does not read does, so that callers make the message a dead
letter instead of failing the batch.
"""

from __future__ import annotations

import decimal
import json
import re
from typing import Callable

try:
    from sink import _copyline
except ImportError:  # not built: the Python form of its numbers_round_trip does the same, slower
    _copyline = None  # type: ignore[assignment]

_DECODE = json.JSONDecoder(parse_float=decimal.Decimal).decode


def exact_loads(text: str) -> object:
    """The JSON value of `text`, numbers exact; raises ValueError (or RecursionError, for
    nesting deeper than Python's recursion allows) where it does not read."""
    try:
        return _DECODE(text)
    except decimal.DecimalException as error:
        raise ValueError(
            f"a number is out of the range an exact decimal holds ({type(error).__name__})"
        ) from None


# A number outside a JSON string comes first in the document or after "[", ":" or ",". Inside
# strings these find some too, which only costs a closer look or an exact reading.
_NUMBER_TOKENS = re.compile(rb"[\[:,]\s*(-?\d[\d.eE+-]*)").findall
# The numbers that may not round trip: 16 digits or more (17 characters), an exponent, a
# fraction of two digits or more ending in 0, below 1e-4.
_DOUBTFUL_NUMBER = re.compile(
    rb"[\[:,]\s*-?(?:\d[\d.]{16}|\d+(?:\.\d+)?[eE]|\d+\.\d+0(?=\s*(?:[,\]}]|$))|0\.0000)"
).search
_ORJSON_INT_MIN, _ORJSON_INT_MAX = -(2**63), 2**64 - 1


def python_numbers_round_trip(document: bytes) -> bool:
    """Whether every number in a JSON document reads through orjson as a value whose Python
    text is the number as written: an int orjson reads as an int, or a float whose repr() is
    the number. The Python form of `sink._copyline.numbers_round_trip`."""
    start = document.lstrip()[:1]
    if start == b"-" or start.isdigit():  # the document is one number
        return _token_round_trips(document.strip())
    if _DOUBTFUL_NUMBER(document) is None:
        return True
    return all(_token_round_trips(token) for token in _NUMBER_TOKENS(document))


def _token_round_trips(token: bytes) -> bool:
    digits = token[1:] if token[:1] == b"-" else token
    if digits.isdigit():
        return len(digits) <= 18 or _ORJSON_INT_MIN <= int(token) <= _ORJSON_INT_MAX
    try:
        return repr(float(token)).encode() == token
    except ValueError:
        return False


numbers_round_trip: Callable[[bytes], bool] = (
    python_numbers_round_trip if _copyline is None else _copyline.numbers_round_trip
)
