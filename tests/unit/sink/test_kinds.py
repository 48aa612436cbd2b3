"""The declared column kinds (sink/kinds.py): the config, the SQLAlchemy types and the native
line all agree with them, and a table or extension that contradicts them is refused."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest._encode import encoder
from pg_bulk_ingest._types import pg_type
from sink import kinds
from sink.config import parse_column_type
from sink.copytext import fast_text, native_kind
from sink.kinds import ColumnKind, Native, Takes, kind_of
from sink.tables import sa_type

CONFIGURABLE = [kind for kind in kinds.declared().kinds if kind.configurable]
SAMPLE_PARAMETERS = {
    Takes.NOTHING: "",
    Takes.LENGTH: "(7)",
    Takes.PRECISION_SCALE: "(9,3)",
    Takes.FRACTION_DIGITS: "(3)",
}


@pytest.mark.parametrize("kind", CONFIGURABLE, ids=lambda kind: kind.name)
def test_every_spelling_of_a_configured_type_makes_a_column_of_its_kind(kind: ColumnKind) -> None:
    for spelling in (kind.name, *kind.aliases):
        for parameters in ("", SAMPLE_PARAMETERS[kind.takes]):
            for array in ("", "[]"):
                column_type = parse_column_type(f"{spelling.lower()}{parameters}{array}")
                assert column_type.name == kind.name
                made = sa_type(column_type)
                if array:
                    assert isinstance(made, sa.ARRAY)
                    made = made.item_type
                assert kind_of(made) is kind


@pytest.mark.parametrize("kind", CONFIGURABLE, ids=lambda kind: kind.name)
def test_the_ingest_core_encodes_every_configured_type(kind: ColumnKind) -> None:
    for array in ("", "[]"):
        column_type = parse_column_type(f"{kind.name}{SAMPLE_PARAMETERS[kind.takes]}{array}")
        found = pg_type(sa_type(column_type))
        assert found is not None
        assert encoder(found)(None) == "\\N"


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (sa.REAL(), "REAL"),
        (sa.Float(), "DOUBLE PRECISION"),
        (pg.DOUBLE_PRECISION(), "DOUBLE PRECISION"),
        (sa.NUMERIC(5, 2), "NUMERIC"),
        (sa.Text(), "TEXT"),
        (sa.Unicode(5), "VARCHAR"),
        (sa.Enum("a", name="e"), "ENUM"),
        (pg.ENUM("a", name="e"), "ENUM"),
        (pg.JSONB(), "JSONB"),
        (sa.JSON(), "JSON"),
        (sa.BigInteger(), "BIGINT"),
        (sa.Integer(), "INTEGER"),
        (sa.DateTime(), "TIMESTAMP"),
        (pg.TIMESTAMP(timezone=True), "TIMESTAMPTZ"),
        (sa.Uuid(), "UUID"),
        (sa.Interval(), "INTERVAL"),
        (pg.ARRAY(sa.TEXT), "ARRAY"),
    ],
)
def test_a_type_takes_the_kind_of_its_most_specific_declared_class(type_: Any, name: str) -> None:
    found = kind_of(type_)
    assert found is not None
    assert found.name == name


def test_a_type_of_no_declared_class_has_no_kind() -> None:
    class Wrapped(sa.TypeDecorator[str]):
        impl = sa.String
        cache_ok = True

    for type_ in (Wrapped(), pg.INET(), pg.MONEY()):
        assert kind_of(type_) is None
        assert fast_text(type_, key=False) is None


def test_unknown_types_are_refused_with_every_known_type() -> None:
    with pytest.raises(ValueError) as refused:
        parse_column_type("SERIAL")
    assert str(refused.value) == (
        "unknown type 'SERIAL'; known types: BIGINT INTEGER SMALLINT TEXT VARCHAR(n) BOOLEAN "
        "NUMERIC(p,s) REAL DOUBLE PRECISION DATE TIME TIMESTAMP TIMESTAMPTZ JSONB JSON UUID "
        "BYTEA INTERVAL, or any of them followed by []"
    )


@pytest.mark.parametrize("kind", kinds.declared().kinds, ids=lambda kind: kind.name)
def test_a_native_kind_or_a_fast_key_needs_a_fast_path(kind: ColumnKind) -> None:
    if kind.native is not None or kind.fast_keys:
        assert kind.fast is not None


def test_the_extension_has_exactly_the_declared_native_kinds() -> None:
    copyline = pytest.importorskip("sink._copyline")
    assert {member.name: member.value for member in Native} == copyline.KINDS
    kinds.check_native_codes(copyline.KINDS)


def test_an_extension_whose_kind_codes_differ_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    copyline = pytest.importorskip("sink._copyline")
    monkeypatch.setitem(copyline.KINDS, "DATE", 99)
    with pytest.raises(RuntimeError, match=r"DATE is 99 in sink/_copyline.c but 9 in sink/kinds"):
        kinds.check_native_codes(copyline.KINDS)


def test_an_extension_missing_or_adding_a_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    copyline = pytest.importorskip("sink._copyline")
    monkeypatch.delitem(copyline.KINDS, "UUID")
    monkeypatch.setitem(copyline.KINDS, "INTERVAL", 12)
    with pytest.raises(RuntimeError) as refused:
        kinds.check_native_codes(copyline.KINDS)
    assert "INTERVAL is 12 in sink/_copyline.c but missing in sink/kinds.py" in str(refused.value)
    assert "UUID is missing in sink/_copyline.c but 10 in sink/kinds.py" in str(refused.value)


def test_a_native_kind_no_column_kind_uses_is_refused() -> None:
    without_arrays = tuple(k for k in kinds.declared().kinds if k.native is not Native.TEXT_ARRAY)
    with pytest.raises(RuntimeError, match="TEXT_ARRAY"):
        kinds._build(without_arrays)


def test_a_spelling_of_two_kinds_is_refused() -> None:
    declared = kinds.declared().kinds
    twin = dataclasses.replace(declared[0], name="TWIN", aliases=(declared[0].name,))
    with pytest.raises(RuntimeError, match="names two kinds"):
        kinds._build((*declared, twin))


def test_two_kinds_of_one_class_each_need_a_when() -> None:
    declared = kinds.declared().kinds
    twin = dataclasses.replace(declared[0], name="TWIN", aliases=(), sa_type=None)
    with pytest.raises(RuntimeError, match="several kinds"):
        kinds._build((*declared, twin))


def test_native_kinds_come_from_the_declared_kind() -> None:
    assert native_kind(sa.BIGINT(), key=True) == (Native.INT, -(2**63), 2**63 - 1)
    assert native_kind(sa.VARCHAR(5), key=True) == (Native.TEXT, 5, 0)
    assert native_kind(sa.Enum("a", name="e"), key=False) is None


def test_the_sink_refuses_to_import_with_an_extension_that_disagrees() -> None:
    pytest.importorskip("sink._copyline")
    script = "from sink import _copyline\n_copyline.KINDS['DATE'] = 99\nimport sink.copytext\n"
    run = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "RuntimeError: the native line's column kinds disagree: DATE is 99" in run.stderr
