"""The row a record maps to as Python values, column by column: the oracle the sink's COPY
lines are checked against (the sink itself goes from a record, or from the message's bytes,
straight to COPY text)."""

from __future__ import annotations

from sink.errors import Refused
from sink.mapping import MISSING, Mapper
from sink.records import Record


def mapped_row(mapper: Mapper, record: Record) -> tuple[object, ...]:
    """The row for a (non-tombstone) record, in column order, each value converted as its
    column's type reads it; raises MappingError as `Mapper.line` does."""
    if mapper._screens:
        record = mapper._exact(record)
    data = record.value
    if type(data) is not dict:
        data = {}  # every column then reads through its extractor
    row: list[object] = []
    try:
        for field, extract, convert, required in mapper._fast_plan:
            value = data.get(field, MISSING) if field is not None and data else extract(record)
            if value is None or value is MISSING:
                if required:
                    raise mapper._absent(len(row), value)
                row.append(None)
            else:
                row.append(convert(value))
    except Refused as error:
        raise mapper._error(record, len(row), error) from None
    if mapper._json_columns and mapper._may_hold_nul(record.message):
        mapper._check_json_nul(record, row)
    return tuple(row)
