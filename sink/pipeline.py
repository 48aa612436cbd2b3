"""From one Kafka message to what a batch holds: rows for every table its topic feeds, keys
to delete for a tombstone, or nothing (an ignored tombstone). Bad input raises DecodeError."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import orjson
import sqlalchemy as sa

from pg_bulk_ingest import CopyRow

from . import debezium
from .config import REGISTRY_FORMATS, Envelope, Format, Settings, TombstonePolicy, TruncatePolicy
from .copytext import LineFunction
from .decode import decode
from .errors import ConfigError, MappingError, NotAChange
from .mapping import Mapper
from .records import Message, Record

if TYPE_CHECKING:
    from .registry import SchemaDecoders
from .tables import Deletion, MapRecord, Router, Row, TableSet, Target, Truncation, load_tables

try:
    from . import _copyline
except ImportError:  # not built: the Python form of the fast path does the same, slower
    _copyline = None  # type: ignore[assignment]

Handler = Callable[[Message], "Mapped"]
logger = logging.getLogger(__name__)


class Mapped(NamedTuple):
    """What one message contributes to its batch (a NamedTuple: one is built per message)."""

    rows: tuple[Row, ...] = ()
    deletes: tuple[Deletion, ...] = ()


_NOTHING = Mapped()
# Builds a NamedTuple without its Python-level __new__ (a third of the cost), for every message.
_new_tuple = tuple.__new__
_loads = orjson.loads
# How `decode` reads a key, per format; a key it cannot read raises ValueError (bytes: none).
_KEY_READERS: dict[Format, Callable[[bytes], object] | None] = {
    Format.JSON: _loads,
    Format.STRING: bytes.decode,
    Format.BYTES: None,
}
# The same checks in the native line (sink/_copyline.c's `enum key_format`).
_NATIVE_KEY_FORMATS = {Format.BYTES: 0, Format.STRING: 1, Format.JSON: 2}


class FastPath:
    """The common case, mapped straight from a message's key and value bytes: a topic that
    feeds one table without `map_record`, whose JSON object values give every column from a
    top-level field. `row(key, value)` gives the same `CopyRow` as `Pipeline.map` (a jsonb or
    numeric value may be spelled differently: the same value), or None where `map` would do more (a
    tombstone, a value that is not a non-empty JSON object, a key or value that does not
    decode, a value that does not map): the caller then takes `map`, which raises the error
    that names the message.

    Where every column has a native kind (see `copytext.native_kind`) and the C extension is
    built, `row` is its `Line.row`: it reads the bytes without making Python objects and hands
    anything it is not sure of to the Python form, `python_row`."""

    __slots__ = ("_line", "_read_key", "native", "native_columns", "row", "table")

    def __init__(
        self,
        table: sa.Table,
        line: LineFunction,
        key_format: Format,
        native_columns: Sequence[tuple[str, int, int, int, bool]] | None = None,
    ) -> None:
        self.table = table
        self._line = line
        self._read_key = _KEY_READERS[key_format]
        self.native_columns = native_columns
        self.row: Callable[[bytes | None, bytes | None], CopyRow | None] = self.python_row
        self.native = False
        if _copyline is not None and native_columns is not None:
            native = _copyline.Line(
                native_columns, CopyRow, self.python_row, _NATIVE_KEY_FORMATS[key_format]
            )
            self.row, self.native = native.row, True

    def python_row(self, key: bytes | None, value: bytes | None) -> CopyRow | None:
        if value is None:
            return None
        try:
            data = _loads(value)
            if key is not None and self._read_key is not None:
                self._read_key(key)
        except ValueError:  # orjson.JSONDecodeError, UnicodeDecodeError
            return None
        if type(data) is not dict or not data:
            return None
        return self._line(None, data, value)


class Pipeline:
    """Decoding and mapping for every topic of one sink, compiled once per topic."""

    def __init__(self, table_set: TableSet, schemas: SchemaDecoders | None = None) -> None:
        self.table_set = table_set
        # Reads the schema registry's formats; None when no table uses one.
        self.schemas = schemas
        self.metadata: sa.MetaData = table_set.metadata
        self.router = Router(table_set)
        self._mappers = {target.table: Mapper(target) for target in table_set.targets}
        # map_record returns rows of a tables module's own tables: each maps to its copy.
        for original, copy in table_set.copies.items():
            if copy in self._mappers:
                self._mappers[original] = self._mappers[copy]
        self._handlers: dict[str, Handler] = {}
        self._fast_paths: dict[str, FastPath | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        table_set = load_tables(settings)
        registry = settings.schema_registry
        if registry is None:
            for target in table_set.targets:
                if {target.key_format, target.value_format} & REGISTRY_FORMATS:
                    raise ConfigError(
                        f"{target.name}: its key_format or value_format reads schemas from a "
                        f"schema registry; set [schema_registry] url (SINK_SCHEMA_REGISTRY__URL)"
                    )
            return cls(table_set)
        # Loaded here: fastavro, protobuf and jsonschema take most of a second to import.
        from .registry import SchemaDecoders  # noqa: PLC0415

        return cls(table_set, SchemaDecoders.from_settings(registry))

    def subscription(self) -> list[str]:
        return self.router.subscription()

    def map(self, message: Message) -> Mapped:
        handler = self._handlers.get(message.topic)
        if handler is None:
            handler = self._handlers[message.topic] = self._compile(message.topic)
        return handler(message)

    def fast_path(self, topic: str) -> FastPath | None:
        """The fast path of `topic`'s messages, or None when they all take `map`."""
        try:
            return self._fast_paths[topic]
        except KeyError:
            path = self._fast_paths[topic] = self._compile_fast_path(topic)
            return path

    def _compile_fast_path(self, topic: str) -> FastPath | None:
        targets = self.router.targets(topic)
        if not targets:
            return None
        mapper = self._mappers[targets[0].table]
        why_not = self._why_not_fast(targets)
        if why_not is not None or mapper.value_line is None:
            logger.info("%s: messages take the general path (%s)", topic, why_not)
            return None
        path = FastPath(
            targets[0].table, mapper.value_line, targets[0].key_format, mapper.native_columns
        )
        logger.info(
            "%s: messages go straight from JSON to COPY text%s",
            topic,
            " (native)" if path.native else "",
        )
        return path

    def _why_not_fast(self, targets: Sequence[Target]) -> str | None:
        if self.table_set.map_record is not None:
            return "the tables module's map_record maps them"
        if len(targets) != 1:
            return f"the topic feeds {len(targets)} tables"
        if targets[0].envelope is not None:
            return f'envelope is "{targets[0].envelope.value}"'
        if targets[0].value_format is not Format.JSON:
            return f'value_format is "{targets[0].value_format.value}"'
        if targets[0].key_format not in _KEY_READERS:
            return f'key_format is "{targets[0].key_format.value}"'
        return self._mappers[targets[0].table].beyond_value_fields

    def _compile(self, topic: str) -> Handler:
        targets = self.router.require(topic)
        key_format, value_format = targets[0].key_format, targets[0].value_format
        schemas = self.schemas
        names = ", ".join(t.name for t in targets)
        map_record = self.table_set.map_record
        mappers = [(t, self._mappers[t.table]) for t in targets]

        def handle(message: Message) -> Mapped:
            record = decode(message, key_format, value_format, target=names, schemas=schemas)
            if record.value is None:
                return self._tombstone(record, mappers)
            if map_record is not None:
                return Mapped(rows=self._coerce(record, _call(map_record, record, names)))
            return Mapped(rows=tuple((m.table, m.line(record)) for _, m in mappers))

        if map_record is not None or len(mappers) != 1:
            return handle
        ((target, mapper),) = mappers
        if target.envelope is Envelope.DEBEZIUM:
            return self._change_handler(target, mapper)
        table, map_row = mapper.table, mapper.line

        def handle_one(message: Message) -> Mapped:
            # The common case, one table per topic, without the general case's generator:
            # this runs for every message.
            record = decode(message, key_format, value_format, target=names, schemas=schemas)
            if record.value is None:
                return self._tombstone(record, mappers)
            return _new_tuple(Mapped, (((table, map_row(record)),), ()))

        return handle_one

    def _change_handler(self, target: Target, mapper: Mapper) -> Handler:
        """Messages whose values are Debezium change events: `c`, `r` and `u` upsert the row
        in `after`; `d` deletes by the message's key (or by `before` without one); `t` empties
        the table where `truncate = "truncate"` says so; `m` does nothing."""
        key_format, value_format, schemas = target.key_format, target.value_format, self.schemas
        name, table, mappers = target.name, mapper.table, [(target, mapper)]
        truncation = Truncation.of(table) if target.truncate is TruncatePolicy.TRUNCATE else None
        # JSON values are read again with exact numbers where floats would not keep them (the
        # mapper cannot: it would read the whole event where the row is `after`).
        exact = value_format is Format.JSON

        def handle(message: Message) -> Mapped:
            record = decode(message, key_format, value_format, target=name, schemas=schemas)
            if record.value is None:  # the tombstone after a delete: deletes it again
                return self._tombstone(record, mappers)
            value = record.value
            try:
                if exact and message.value is not None:
                    value = debezium.exact_json(message.value)
                change = debezium.change(value)
            except (ValueError, RecursionError) as error:
                reason = f"the numbers of the value cannot be read exactly: {error}"
                raise MappingError(
                    record.coordinates, reason, table=name, code="not-exact"
                ) from None
            except NotAChange as error:
                raise MappingError(
                    record.coordinates, error.reason, table=name, code=error.code
                ) from None
            op = change.op
            if op in debezium.UPSERTS:
                row = mapper.line(_new_tuple(Record, (message, record.key, change.after)))
                return _new_tuple(Mapped, (((table, row),), ()))
            if op is debezium.Op.DELETE:
                return Mapped(deletes=((table, _deleted_key(record, change, mapper, name)),))
            if op is debezium.Op.TRUNCATE:
                if truncation is not None:
                    return Mapped(rows=((table, truncation),))
                logger.info(
                    '%s: the source table of %s was truncated; ignored (truncate = "ignore")',
                    record.coordinates,
                    name,
                )
            return _NOTHING

        return handle

    @staticmethod
    def _tombstone(record: Record, mappers: list[tuple[Target, Mapper]]) -> Mapped:
        deletes = tuple(
            (target.table, mapper.key_values(record))
            for target, mapper in mappers
            if target.tombstones is TombstonePolicy.DELETE
        )
        return Mapped(deletes=deletes) if deletes else _NOTHING

    def _coerce(self, record: Record, rows: object) -> tuple[Row, ...]:
        mapped: list[Row] = []
        for table, values in rows:  # type: ignore[attr-defined]
            mapper = self._mappers.get(table)
            if mapper is None:
                raise ConfigError(
                    f"{record.coordinates}: map_record returned a row for {table!r}, which is "
                    "not a table of the sink's metadata"
                )
            mapped.append((mapper.table, mapper.coerce(record, values)))
        return tuple(mapped)


def _deleted_key(
    record: Record, change: debezium.Change, mapper: Mapper, name: str
) -> tuple[object, ...]:
    """The primary key a delete event removes: its message's key (Debezium keys a table's
    events by the key columns), or the row in `before` where the message has no key."""
    if record.key is not None:
        return mapper.key_values(record)
    if change.before is None:
        raise MappingError(
            record.coordinates,
            'a delete (op "d") without a key and without before: no row to delete; key the '
            "connector's messages by the primary key (the default for a table with one)",
            table=name,
            code="no-key",
        )
    return mapper.key_values(_new_tuple(Record, (record.message, change.before, None)))


def _call(map_record: MapRecord, record: Record, names: str) -> list[Row]:
    """Runs the tables module's hook; its failure on one message makes that message a dead
    letter rather than stopping the stream."""
    try:
        return list(map_record(record))
    except Exception as exc:
        raise MappingError(
            record.coordinates,
            f"map_record raised {type(exc).__name__}: {exc}",
            table=names,
            code="map-record",
        ) from exc
