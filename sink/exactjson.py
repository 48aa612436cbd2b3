"""JSON read with every number as written: a number with a fraction or an exponent becomes a
Decimal, never a float that would lose digits; integers stay whole at any size.

What a Decimal cannot hold (an exponent past its range, such as `1E+9999999999999999999`)
raises ValueError, as any JSON that does not read does, so that callers make the message a dead
letter instead of failing the batch.
"""

from __future__ import annotations

import decimal
import json

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
