"""Column kinds: every column type the sink knows, declared once in `declared()`.

Config parsing (names, aliases, parameters), the SQLAlchemy type of a `[[tables]]` column, the
mapping's converter, the fast COPY text and the native line's kind code all come from it. A
column type from a tables module finds its kind by its class (`kind_of`).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from sink.config import ColumnType
    from sink.copytext import FastText
    from sink.mapping import Converter

SaType = sa.types.TypeEngine[Any]


class Takes(enum.Enum):
    """The parameters a configured type takes."""

    NOTHING = enum.auto()
    LENGTH = enum.auto()  # VARCHAR(n)
    PRECISION_SCALE = enum.auto()  # NUMERIC(p,s)
    FRACTION_DIGITS = enum.auto()  # TIMESTAMP(p): digits of the seconds' fraction kept

    @property
    def hint(self) -> str:
        """How the list of known types shows them (TIMESTAMP(p) is rarely written)."""
        return {Takes.LENGTH: "(n)", Takes.PRECISION_SCALE: "(p,s)"}.get(self, "")


class Native(enum.IntEnum):
    """The column kinds of the native line: sink/_copyline.c's `enum kind`, which the extension
    exports as `_copyline.KINDS` (checked against this by `check_native_codes`)."""

    INT = 1
    TEXT = 2
    NUMERIC = 3
    FLOAT = 4
    BOOL = 5
    JSONB = 6
    TIMESTAMPTZ = 7
    TIMESTAMP = 8
    DATE = 9
    UUID = 10
    TEXT_ARRAY = 11


def _no_parameters(type_: Any) -> tuple[int, int]:
    return 0, 0


@dataclass(frozen=True)
class ColumnKind:
    """One column type: how the config spells it, its SQLAlchemy type, how a JSON value
    becomes the value the ingest core encodes, and its fast and native COPY text."""

    # The canonical config name (`ColumnType.name`), or for a kind only a tables module can
    # declare (arrays, enums), a name that is not accepted in a config.
    name: str
    # The SQLAlchemy classes of this kind: a type takes the kind of the first of its classes
    # (`type(t).__mro__`) declared here, so a subclass (sa.REAL, sa.Text) finds its own kind
    # before its base's (sa.Float, sa.String).
    classes: tuple[type, ...]
    # The converter of a column of this type (sink.mapping).
    convert: Callable[[Any], Converter]
    # Other config spellings, as written upper case with single spaces.
    aliases: tuple[str, ...] = ()
    takes: Takes = Takes.NOTHING
    # The SQLAlchemy type of a configured column, or None for a kind the config cannot name.
    sa_type: Optional[Callable[[ColumnType], SaType]] = None
    # Among kinds declaring the same class, whether a type is of this one (TIMESTAMPTZ).
    when: Optional[Callable[[Any], bool]] = None
    # The fast COPY text of a value (sink.copytext), None for none; the factory may say None.
    fast: Optional[Callable[[Any], Optional[FastText]]] = None
    # Whether primary-key columns take the fast path: only where its text is the general
    # path's exactly (the batcher compares keys by their COPY text).
    fast_keys: bool = False
    # The native line's kind, where the fast path has one, and its two parameters.
    native: Optional[Native] = None
    native_parameters: Callable[[Any], tuple[int, int]] = _no_parameters
    # Whether the column stores a number with the digits the message wrote, so that a float
    # read from it may not be what it stores (see sink.mapping.keeps_digits).
    keeps_digits: bool = False

    @property
    def configurable(self) -> bool:
        return self.sa_type is not None


@dataclass(frozen=True)
class Kinds:
    """The declared kinds, and the indexes every lookup uses."""

    kinds: tuple[ColumnKind, ...]
    # Every config spelling (upper case, single spaces) of a configurable kind.
    spellings: Mapping[str, ColumnKind]
    by_class: Mapping[type, tuple[ColumnKind, ...]]
    # The types a config accepts, as the error for an unknown one lists them.
    known: str


def _bits(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _time_type(column: ColumnType) -> SaType:
    if column.precision is None:
        return sa.TIME()
    return postgresql.TIME(precision=column.precision)


def _timestamp_type(timezone: bool) -> Callable[[ColumnType], SaType]:
    def make(column: ColumnType) -> SaType:
        if column.precision is None:
            return sa.TIMESTAMP(timezone=timezone)
        return postgresql.TIMESTAMP(timezone=timezone, precision=column.precision)

    return make


def _numeric_parameters(type_: Any) -> tuple[int, int]:
    if type_.precision is None:
        return 1000, 1000
    scale = type_.scale or 0
    return type_.precision - scale, scale


def _text_parameters(type_: Any) -> tuple[int, int]:
    return -1 if type_.length is None else type_.length, 0


@functools.cache
def declared() -> Kinds:
    """Every column kind. Declared in a function, built once on first use: the converters and
    fast paths it names live in sink.mapping and sink.copytext, which look kinds up here."""
    from sink import copytext, mapping  # noqa: PLC0415 (they import this module)

    def integer(
        name: str, aliases: tuple[str, ...], class_: type, make: Callable[[], SaType], bits: int
    ) -> ColumnKind:
        return ColumnKind(
            name,
            (class_,),
            convert=lambda t: mapping._integer(mapping._type_name(t), bits),
            aliases=aliases,
            sa_type=lambda c: make(),
            fast=lambda t: copytext._integer(bits),
            fast_keys=True,
            native=Native.INT,
            native_parameters=lambda t: _bits(bits),
        )

    def text_kind(name: str, aliases: tuple[str, ...], class_: type, takes: Takes) -> ColumnKind:
        return ColumnKind(
            name,
            (class_,),
            convert=lambda t: mapping._text(mapping._type_name(t), t.length),
            aliases=aliases,
            takes=takes,
            sa_type=lambda c: sa.VARCHAR(c.length) if takes is Takes.LENGTH else sa.TEXT(),
            fast=lambda t: copytext._text(t.length),
            fast_keys=True,
            native=Native.TEXT,
            native_parameters=_text_parameters,
            keeps_digits=True,
        )

    def timestamp(name: str, aliases: tuple[str, ...], timezone: bool) -> ColumnKind:
        return ColumnKind(
            name,
            (sa.DateTime,),
            convert=lambda t: mapping._timestamp(timezone),
            aliases=aliases,
            takes=Takes.FRACTION_DIGITS,
            sa_type=_timestamp_type(timezone),
            when=lambda t: bool(t.timezone) is timezone,
            fast=lambda t: copytext._timestamp(timezone),
            native=Native.TIMESTAMPTZ if timezone else Native.TIMESTAMP,
        )

    def json(
        name: str, class_: type, make: Callable[[], SaType], native: Native | None
    ) -> ColumnKind:
        return ColumnKind(
            name,
            (class_,),
            convert=lambda t: mapping._json,
            sa_type=lambda c: make(),
            fast=lambda t: copytext._json,
            native=native,
            keeps_digits=True,
        )

    return _build(
        (
            integer("BIGINT", ("INT8",), sa.BigInteger, sa.BIGINT, 64),
            integer("INTEGER", ("INT", "INT4"), sa.Integer, sa.INTEGER, 32),
            integer("SMALLINT", ("INT2",), sa.SmallInteger, sa.SMALLINT, 16),
            text_kind("TEXT", (), sa.Text, Takes.NOTHING),
            text_kind("VARCHAR", ("CHARACTER VARYING",), sa.String, Takes.LENGTH),
            ColumnKind(
                "BOOLEAN",
                (sa.Boolean,),
                convert=lambda t: mapping._boolean,
                aliases=("BOOL",),
                sa_type=lambda c: sa.BOOLEAN(),
                fast=lambda t: copytext._boolean,
                native=Native.BOOL,
            ),
            ColumnKind(
                "NUMERIC",
                (sa.Numeric,),
                convert=lambda t: mapping._numeric(t.precision, t.scale),
                aliases=("DECIMAL",),
                takes=Takes.PRECISION_SCALE,
                sa_type=lambda c: sa.NUMERIC(c.precision, c.scale),
                fast=lambda t: copytext._numeric(t.precision, t.scale),
                native=Native.NUMERIC,
                native_parameters=_numeric_parameters,
                keeps_digits=True,
            ),
            ColumnKind(
                "REAL",
                (sa.REAL,),
                convert=lambda t: mapping._float(single=True),
                aliases=("FLOAT4",),
                sa_type=lambda c: sa.REAL(),
                fast=lambda t: copytext._float(single=True),
                native=Native.FLOAT,
                native_parameters=lambda t: (1, 0),
            ),
            ColumnKind(
                "DOUBLE PRECISION",
                (sa.Float,),
                convert=lambda t: mapping._float(single=False),
                aliases=("FLOAT8",),
                sa_type=lambda c: postgresql.DOUBLE_PRECISION(),
                fast=lambda t: copytext._float(single=False),
                native=Native.FLOAT,
            ),
            ColumnKind(
                "DATE",
                (sa.Date,),
                convert=lambda t: mapping._date,
                sa_type=lambda c: sa.DATE(),
                fast=lambda t: copytext._date,
                native=Native.DATE,
            ),
            ColumnKind(
                "TIME",
                (sa.Time,),
                convert=lambda t: mapping._time,
                takes=Takes.FRACTION_DIGITS,
                sa_type=_time_type,
            ),
            timestamp("TIMESTAMP", ("TIMESTAMP WITHOUT TIME ZONE",), timezone=False),
            timestamp("TIMESTAMPTZ", ("TIMESTAMP WITH TIME ZONE",), timezone=True),
            # jsonb stores one value for any spelling of it, which the native line keeps; json
            # keeps the text as written, so it has no native kind.
            json("JSONB", postgresql.JSONB, postgresql.JSONB, Native.JSONB),
            json("JSON", sa.JSON, postgresql.JSON, None),
            ColumnKind(
                "UUID",
                (postgresql.UUID, sa.Uuid),
                convert=lambda t: mapping._uuid,
                sa_type=lambda c: postgresql.UUID(as_uuid=True),
                fast=lambda t: copytext._uuid,
                native=Native.UUID,
            ),
            ColumnKind(
                "BYTEA",
                (sa.LargeBinary,),
                convert=lambda t: mapping._bytea,
                sa_type=lambda c: postgresql.BYTEA(),
            ),
            ColumnKind(
                "INTERVAL",
                (sa.Interval, postgresql.INTERVAL),
                convert=lambda t: mapping._interval,
                sa_type=lambda c: postgresql.INTERVAL(),
            ),
            # Only from a tables module: a config's `TYPE[]` is its element's kind in an ARRAY.
            ColumnKind(
                "ARRAY",
                (sa.ARRAY,),
                convert=lambda t: mapping._array(mapping.converter(t.item_type)),
                fast=copytext._text_array_of,
                native=Native.TEXT_ARRAY,
            ),
            ColumnKind(
                "ENUM",
                (sa.Enum,),
                convert=lambda t: mapping._text(mapping._type_name(t), t.length),
            ),
        )
    )


def _build(kinds: tuple[ColumnKind, ...]) -> Kinds:
    """Index the declared kinds, refusing a table that contradicts itself."""
    spellings: dict[str, ColumnKind] = {}
    by_class: dict[type, tuple[ColumnKind, ...]] = {}
    for kind in kinds:
        for spelling in (kind.name, *kind.aliases) if kind.configurable else ():
            if spelling in spellings:
                raise RuntimeError(f"column kinds: {spelling!r} names two kinds")
            spellings[spelling] = kind
        for class_ in kind.classes:
            shared = by_class.get(class_, ())
            if shared and any(other.when is None for other in (*shared, kind)):
                raise RuntimeError(
                    f"column kinds: {class_.__name__} has several kinds; give each a `when`"
                )
            by_class[class_] = (*shared, kind)
    unused = set(Native) - {kind.native for kind in kinds}
    if unused:
        names = ", ".join(sorted(member.name for member in unused))
        raise RuntimeError(f"column kinds: no kind declares the native kind(s) {names}")
    known = " ".join(kind.name + kind.takes.hint for kind in kinds if kind.configurable)
    return Kinds(kinds, spellings, by_class, f"{known}, or any of them followed by []")


def configured(spelling: str) -> ColumnKind | None:
    """The kind a config spelling (upper case, single spaces) names, or None."""
    return declared().spellings.get(spelling)


def named(name: str) -> ColumnKind:
    """The kind of a parsed `ColumnType.name`."""
    return declared().spellings[name]


def known_types() -> str:
    return declared().known


def kind_of(type_: SaType) -> ColumnKind | None:
    """The kind of a SQLAlchemy type (instance), or None for one the sink does not know (its
    values then pass through unchanged, and take the general path)."""
    by_class = declared().by_class
    for class_ in type(type_).__mro__:
        for kind in by_class.get(class_, ()):
            if kind.when is None or kind.when(type_):
                return kind
    return None


def check_native_codes(extension: Mapping[str, int]) -> None:
    """Refuse a built sink/_copyline.c whose `enum kind` (`extension`, its KINDS) is not
    `Native`: a column would be written as another kind."""
    ours = {member.name: member.value for member in Native}
    if dict(extension) == ours:
        return
    problems = [
        f"{name} is {extension.get(name, 'missing')} in sink/_copyline.c but "
        f"{ours.get(name, 'missing')} in sink/kinds.py"
        for name in sorted(set(ours) | set(extension))
        if extension.get(name) != ours.get(name)
    ]
    raise RuntimeError(
        "the native line's column kinds disagree: " + "; ".join(problems) + ". Make "
        "sink/_copyline.c's KIND_LIST and sink.kinds.Native the same, then rebuild the "
        "extension (make venv)"
    )
