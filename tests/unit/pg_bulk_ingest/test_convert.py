"""How a rebuild converts a column's old values, from what the catalog says (pure)."""

from __future__ import annotations

from typing import Optional

import pytest

from pg_bulk_ingest._convert import CastPair, ColumnTypes, Path, conversion, path
from pg_bulk_ingest._errors import SchemaError

CATEGORIES = {
    "text": "S",
    "character varying": "S",
    "integer": "N",
    "double precision": "N",
    "uuid": "U",
    "interval": "T",
    "time without time zone": "D",
    "integer[]": "A",
    "text[]": "A",
    "character varying[]": "A",
    "interval[]": "A",
    "time without time zone[]": "A",
}


def pair(source: str, target: str, context: Optional[str] = None) -> CastPair:
    return CastPair(source, CATEGORIES[source], target, CATEGORIES[target], context)


def types(old: str, new: str, found: CastPair, elements: Optional[CastPair] = None) -> ColumnTypes:
    return ColumnTypes("v", old, new, "pg_catalog.cast_as", found, elements)


@pytest.mark.parametrize(
    ("found", "elements", "expected"),
    [
        (pair("integer", "integer"), None, Path.ASSIGNMENT),
        (pair("double precision", "integer", "a"), None, Path.ASSIGNMENT),
        (pair("integer", "double precision", "e"), None, Path.EXPLICIT),
        (pair("integer", "text"), None, Path.ASSIGNMENT),
        (pair("text", "integer"), None, Path.EXPLICIT),
        (pair("uuid", "integer"), None, Path.NONE),
        (pair("text[]", "integer[]"), pair("text", "integer"), Path.EXPLICIT),
        (pair("integer[]", "text"), None, Path.ASSIGNMENT),
    ],
)
def test_the_path_is_postgresqls_pg_cast_then_arrays_then_text(
    found: CastPair, elements: Optional[CastPair], expected: Path
) -> None:
    assert path(found, elements) is expected


def test_an_assignment_path_writes_no_cast_so_postgresql_checks_lengths() -> None:
    result = conversion(
        "s.t", types("text", "character varying(5)", pair("text", "character varying", "i"))
    )
    assert result.sql('"v"') == '"v"'
    assert result.refused_when is None


def test_an_explicit_path_casts_to_the_type_without_its_length() -> None:
    result = conversion(
        "s.t",
        types(
            "text[]",
            "character varying(3)[]",
            pair("text[]", "character varying[]"),
            pair("text", "character varying", "e"),
        ),
    )
    assert result.sql('"v"') == 'CAST("v" AS pg_catalog.cast_as)'


def test_a_fraction_for_an_integer_is_refused_element_by_element() -> None:
    result = conversion(
        "s.t",
        types(
            "double precision[]",
            "integer[]",
            CastPair("double precision[]", "A", "integer[]", "A", None),
            pair("double precision", "integer", "a"),
        ),
    )
    assert result.refused_when is not None
    assert result.refused_when.format('"v"') == (
        'EXISTS (SELECT FROM unnest("v") AS element(value) '
        "WHERE element.value <> trunc(element.value))"
    )


def test_an_interval_becomes_a_time_through_its_text() -> None:
    result = conversion(
        "s.t",
        types(
            "interval[]",
            "time without time zone[]",
            pair("interval[]", "time without time zone[]"),
            pair("interval", "time without time zone", "a"),
        ),
    )
    assert result.sql('"v"') == 'CAST(CAST("v" AS text[]) AS pg_catalog.cast_as)'


def test_no_path_is_a_schema_error_naming_table_column_and_types() -> None:
    with pytest.raises(SchemaError, match=r"^s\.t\.v: .* from uuid to integer"):
        conversion("s.t", types("uuid", "integer", pair("uuid", "integer")))
