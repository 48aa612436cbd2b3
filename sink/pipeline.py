"""From one Kafka message to what a batch holds: rows for every table its topic feeds, keys
to delete for a tombstone, or nothing (an ignored tombstone). Bad input raises DecodeError."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import avroline, debezium
from .avroline import AvroFastPath
from .config import REGISTRY_FORMATS, Envelope, Format, Settings, TombstonePolicy, TruncatePolicy
from .connect import SchemaWatch
from .decode import decode
from .errors import ConfigError, MappingError, NotAChange
from .mapping import Mapper
from .path import KEY_READERS, FastPath, Handler, Mapped, TopicPath
from .records import Message, Record

if TYPE_CHECKING:
    from .registry import SchemaDecoders
from .tables import MapRecord, Router, Row, TableSet, Target, Truncation, load_tables

logger = logging.getLogger(__name__)

_NOTHING = Mapped()
_new_tuple = tuple.__new__


class Pipeline:
    """Decoding and mapping for every topic of one sink, compiled once per topic."""

    def __init__(
        self,
        table_set: TableSet,
        schemas: SchemaDecoders | None = None,
        watch: SchemaWatch | None = None,
    ) -> None:
        self.table_set = table_set
        # Reads the schema registry's formats; None when no table uses one.
        self.schemas = schemas
        # Checks the Connect schemas of the topics whose tables take their columns from them.
        self.watch = watch
        self.metadata: sa.MetaData = table_set.metadata
        self.router = Router(table_set)
        self._mappers = {target.table: Mapper(target) for target in table_set.targets}
        # map_record returns rows of a tables module's own tables: each maps to its copy.
        for original, copy in table_set.copies.items():
            if copy in self._mappers:
                self._mappers[original] = self._mappers[copy]
        self._paths: dict[str, TopicPath] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        table_set = load_tables(settings)
        registry = settings.schema_registry
        watch = None
        if any(table.columns_from_messages for table in settings.tables):
            from .schema_columns import changes  # noqa: PLC0415

            watch = SchemaWatch(
                {
                    topic: changes(table)
                    for table in settings.tables
                    if table.columns_from_messages
                    for topic in table.topics
                }
            )
        if registry is None:
            for target in table_set.targets:
                if {target.key_format, target.value_format} & REGISTRY_FORMATS:
                    raise ConfigError(
                        f"{target.name}: its key_format or value_format reads schemas from a "
                        f"schema registry; set [schema_registry] url (SINK_SCHEMA_REGISTRY__URL)"
                    )
            return cls(table_set, watch=watch)
        # Loaded here: fastavro, protobuf and jsonschema take most of a second to import.
        from .registry import SchemaDecoders  # noqa: PLC0415
        from .schema_columns import changes  # noqa: PLC0415

        # Tables whose columns come from their topics' schemas watch for a schema they lack.
        watched = {
            topic: changes(table)
            for table in settings.tables
            if table.schema_versions
            for topic in table.topics
        }
        return cls(table_set, SchemaDecoders.from_settings(registry, watched), watch)

    def write_text(self) -> None:
        """Every table's rows as COPY text lines or values, none a binary COPY tuple: for a
        database whose encodings are not UTF8, which would read a tuple's UTF-8 as another
        encoding (the ingest core refuses them there)."""
        for mapper in self._mappers.values():
            mapper.binary_columns, mapper.binary = None, False
        self._paths.clear()

    def subscription(self) -> list[str]:
        return self.router.subscription()

    def path(self, topic: str) -> TopicPath:
        """The way of `topic`'s messages to their rows, compiled once; ConfigError for a
        topic no table takes."""
        try:
            return self._paths[topic]
        except KeyError:
            lines = self._compile(topic)
            if self.watch is not None and self.watch.watches(topic):
                lines = self._watched(topic, lines, self.watch)
            fast = self._compile_fast_path(topic)
            if isinstance(fast, AvroFastPath):  # each schema id the general way reads first
                lines = fast.learning(lines)
            path = self._paths[topic] = TopicPath(fast, lines)
            return path

    @staticmethod
    def _watched(topic: str, lines: Handler, watch: SchemaWatch) -> Handler:
        def handle(message: Message) -> Mapped:
            if message.value is not None:
                watch.check(topic, message.key, message.value)
            return lines(message)

        return handle

    def native_rows(self) -> int:
        """How many rows the topics' native Avro paths gave so far."""
        return sum(
            path.fast.native_rows
            for path in self._paths.values()
            if isinstance(path.fast, AvroFastPath)
        )

    def copy_lines(self, message: Message) -> Mapped:
        """What one message contributes to its batch, the general way: its rows (COPY lines
        but for the rows of map_record and truncations) and the keys it deletes."""
        return self.path(message.topic).lines(message)

    def _compile_fast_path(self, topic: str) -> FastPath | AvroFastPath | None:
        targets = self.router.targets(topic)
        if not targets:
            return None
        mapper = self._mappers[targets[0].table]
        why_not = self._why_not_fast(targets)
        if why_not is None and targets[0].value_format is Format.AVRO:
            return self._avro_path(topic, targets[0], mapper)
        if why_not is not None or mapper.value_line is None:
            logger.info("%s: messages take the general path (%s)", topic, why_not)
            return None
        path = FastPath(
            targets[0].table,
            mapper.value_line,
            targets[0].key_format,
            mapper.native_columns,
            mapper.binary_columns,
        )
        logger.info(
            "%s: messages go straight from JSON to COPY text%s",
            topic,
            (" (native)" + (", as binary COPY tuples" if mapper.binary else ""))
            if path.native
            else "",
        )
        return path

    def _avro_path(self, topic: str, target: Target, mapper: Mapper) -> AvroFastPath | None:
        why_not = None
        if not avroline.NATIVE:
            why_not = "the C extension is not built"
        elif mapper.native_columns is None:
            why_not = "a column has no native kind"
        elif target.key_format in REGISTRY_FORMATS:  # keys read through the registry too
            why_not = f'key_format is "{target.key_format.value}"'
        if why_not is not None or mapper.native_columns is None or self.schemas is None:
            logger.info("%s: messages take the general path (%s)", topic, why_not)
            return None
        logger.info(
            "%s: Avro values go straight to COPY text (native) per schema id%s",
            topic,
            ", as binary COPY tuples" if mapper.binary else "",
        )
        return AvroFastPath(
            target.table,
            mapper.native_columns,
            target.key_format,
            self.schemas,
            mapper.binary_columns,
        )

    def _why_not_fast(self, targets: Sequence[Target]) -> str | None:
        if self.table_set.map_record is not None:
            return "the tables module's map_record maps them"
        if len(targets) != 1:
            return f"the topic feeds {len(targets)} tables"
        if targets[0].envelope is not None:
            return f'envelope is "{targets[0].envelope.value}"'
        if targets[0].value_format not in (Format.JSON, Format.AVRO):
            return f'value_format is "{targets[0].value_format.value}"'
        if targets[0].value_format is Format.JSON and targets[0].key_format not in KEY_READERS:
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
            return Mapped(rows=tuple((m.table, m.row(record)) for _, m in mappers))

        if map_record is not None or len(mappers) != 1:
            return handle
        ((target, mapper),) = mappers
        if target.envelope is Envelope.DEBEZIUM:
            return self._change_handler(target, mapper)
        table, map_row = mapper.table, mapper.row

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
