"""Tables: the SQLAlchemy tables the sink writes, built from `[[tables]]` or imported from a
`[python] module`, and the `Router` that says which tables a topic feeds.

A tables module exposes:

    metadata: sa.MetaData                      # the target tables
    routes: dict[str, str | list[str]]         # topic, or regex starting with "^" -> "schema.table"
    map_record(record) -> Iterable[(sa.Table, tuple)]   # optional: one message -> many rows
    key_format = "string"; value_format = "json"        # optional

Without `map_record`, each column reads `column.info["source"]` (default "value.<name>"),
and a table's `info["tombstones"]` ("delete" | "ignore") defaults to "delete" with a primary key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Tuple, Union

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from pg_bulk_ingest import CopyRow, CopyTuple
from sink.config import (
    MAX_IDENTIFIER_BYTES,
    ColumnType,
    Envelope,
    ErrorPolicy,
    Format,
    Settings,
    Source,
    TableSettings,
    TombstonePolicy,
    TruncatePolicy,
    parse_source,
)
from sink.errors import ConfigError
from sink.kinds import named
from sink.records import Record

# A row's values in column order, or (as the mapping makes them) one line of COPY text or one
# binary COPY tuple.
RowValues = Union[Tuple[object, ...], CopyRow, CopyTuple]
Row = Tuple[sa.Table, RowValues]
# A tombstone's primary-key values, in key column order.
Deletion = Tuple[sa.Table, Tuple[object, ...]]
MapRecord = Callable[[Record], Iterable[Row]]


class Truncation(Tuple[object, ...]):
    """Stands in a batch's row stream, as its table's row, for a truncate of the table: the
    rows before it are removed, those after it kept (sink.writer). Its values are all NULL, so
    that whatever keys rows by their primary key never meets it."""

    __slots__ = ()

    @classmethod
    def of(cls, table: sa.Table) -> Truncation:
        return cls((None,) * len(table.columns))


def sa_type(column_type: ColumnType) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy (PostgreSQL dialect) type for a configured column type."""
    make = named(column_type.name).sa_type
    assert make is not None  # a parsed ColumnType names a kind the config can name
    element = make(column_type)
    return postgresql.ARRAY(element) if column_type.array else element


# eq=False: a Target is its own identity (hashing every field per message is slow).
@dataclass(frozen=True, eq=False)
class Target:
    """A table the sink writes, with everything needed to route and map messages to it."""

    table: sa.Table
    # One per column of `table`, in column order.
    sources: tuple[Source, ...]
    key_format: Format = Format.STRING
    value_format: Format = Format.JSON
    tombstones: TombstonePolicy = TombstonePolicy.IGNORE
    topics: tuple[str, ...] = ()
    # Regexes starting with "^", matched with re.search (as librdkafka does).
    topic_patterns: tuple[str, ...] = ()
    # Values are change events: columns read the row in their `after` (sink.debezium).
    envelope: Envelope | None = None
    truncate: TruncatePolicy = TruncatePolicy.IGNORE

    @property
    def name(self) -> str:
        """`schema.table`, as errors and logs name it."""
        return f"{self.table.schema or 'public'}.{self.table.name}"

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.table.primary_key.columns)


@dataclass(frozen=True)
class TableSet:
    """Every table of one sink: what to create/migrate (`metadata`) and where messages go."""

    metadata: sa.MetaData
    targets: tuple[Target, ...]
    # From a tables module: replaces column mapping for non-tombstone records.
    map_record: MapRecord | None = None
    # Whether one topic may feed several tables (a tables module's routes say so explicitly;
    # with [[tables]], a topic matching two tables is a configuration error).
    fan_out: bool = False
    dead_letter_table: sa.Table | None = None
    # The first table of `metadata`: its comment holds the offsets (see `state_table`).
    state_table: sa.Table | None = None
    # A tables module's own tables, each mapped to its copy in `metadata` (map_record returns
    # rows of the module's tables).
    copies: Mapping[sa.Table, sa.Table] = field(default_factory=dict)

    @property
    def data_tables(self) -> list[sa.Table]:
        """Every table the sink writes rows to (all but the state table)."""
        return [t for t in self.metadata.tables.values() if t is not self.state_table]


def with_schema_columns(
    settings: Settings,
    held: Mapping[str, Any] | None = None,
    seen: Mapping[str, Sequence[tuple[Any, Any]]] | None = None,
) -> Settings:
    """The settings with every `[[tables]]` entry that lists no columns given those of its
    topic's schemas (sink.schema_columns): fetched from the schema registry, or, for Kafka
    Connect's JSON, those the group's state holds (`held`, by table) widened by the (key, value)
    schemas seen on its topics (`seen`, by topic); a table of these with neither is left
    without columns, and out of the tables. The same settings when every entry lists its
    columns. Raises ConfigError, or the registry's errors."""
    if all(table.columns for table in settings.tables):
        return settings
    from sink import schema_columns  # noqa: PLC0415 - Protobuf and Avro load on use

    held, seen = held or {}, seen or {}
    registry: Any = None
    tables = []
    for configured in settings.tables:
        table = configured
        if schema_columns.from_messages(configured):
            met = [pair for topic in configured.topics for pair in seen.get(topic, ())]
            if configured.qualified_name in held or met:
                table = schema_columns.message_columns(
                    configured, held.get(configured.qualified_name), met
                )
        elif not configured.columns:
            if registry is None:
                from sink import registry as registries  # noqa: PLC0415

                assert settings.schema_registry is not None  # load_settings requires it
                registry = registries.SchemaDecoders.from_settings(settings.schema_registry)
            (table,) = schema_columns.with_schema_columns([configured], registry.versions)
        tables.append(table)
    return dataclasses.replace(settings, tables=tuple(tables))


def load_tables(settings: Settings) -> TableSet:
    """The tables of these settings: the state table first, then the targets, then the
    dead-letter table if the error policy uses one."""
    if settings.python is not None:
        table_set = tables_from_module(settings.python.module)
        schemas = {t.schema or "public" for t in table_set.metadata.tables.values()}
    else:
        table_set = tables_from_config(with_schema_columns(settings).tables)
        schemas = {t.schema for t in settings.tables}  # those still without columns too
    _check_dead_letter_topic(table_set, settings.errors.dead_letter_topic)
    metadata = sa.MetaData()
    state = state_table(settings.postgres.state_table, settings.kafka.group_id, schemas, metadata)
    copies = {t: _copy(t, metadata) for t in table_set.metadata.tables.values()}
    dead = None
    if settings.errors.policy is ErrorPolicy.DEAD_LETTER_TABLE:
        assert settings.errors.dead_letter_table is not None  # checked by load_settings
        dead = dead_letter_table(settings.errors.dead_letter_table, metadata)
    return TableSet(
        metadata,
        tuple(dataclasses.replace(t, table=copies[t.table]) for t in table_set.targets),
        table_set.map_record,
        table_set.fan_out,
        dead,
        state,
        copies,
    )


def _copy(table: sa.Table, metadata: sa.MetaData) -> sa.Table:
    if table.key in metadata.tables:
        raise ConfigError(
            f"table {table.key} is also the sink's state table; set postgres.state_table to "
            "another name"
        )
    return table.to_metadata(metadata)


STATE_TABLE_PREFIX = "kafka_sink_state_"


def state_table_name(group_id: str) -> str:
    """`kafka_sink_state_<group>`: the group lower-cased, anything but letters, digits and `_`
    replaced by `_`, so that it needs no quoting. A name past PostgreSQL's 63 bytes is cut and
    ends with a digest of the group. Two groups whose names differ only in case or punctuation
    map to one name: the state records its group, and the second one stops, naming it."""
    name = STATE_TABLE_PREFIX + re.sub(r"[^a-z0-9_]", "_", group_id.lower())
    if len(name) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(group_id.encode("utf-8")).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER_BYTES - len(digest) - 1]}_{digest}"


def state_table(
    configured: str | None, group_id: str, schemas: set[str], metadata: sa.MetaData
) -> sa.Table:
    """The sink's state table: its COMMENT holds the consumer group's offsets and the table
    definitions applied; it has no columns and no rows, so that no data table is ever locked
    to store offsets. `postgres.state_table` names it; by default it is `state_table_name`,
    in the schema of the sink's tables when they share one, else in "public"."""
    if configured is not None:
        schema, _, name = configured.rpartition(".")
    else:
        schema, name = (next(iter(schemas)) if len(schemas) == 1 else ""), ""
    return sa.Table(name or state_table_name(group_id), metadata, schema=schema or "public")


def tables_from_config(tables: Sequence[TableSettings]) -> TableSet:
    """The tables of `[[tables]]` entries, but for those whose columns are not known yet."""
    metadata = sa.MetaData()
    targets = tuple(_target_from_config(table, metadata) for table in tables if table.columns)
    return TableSet(metadata=metadata, targets=targets)


def _target_from_config(table: TableSettings, metadata: sa.MetaData) -> Target:
    columns = [
        sa.Column(
            column.name,
            sa_type(column.type),
            primary_key=column.name in table.primary_key,
            nullable=column.nullable,
        )
        for column in table.columns
    ]
    indexes = [
        sa.Index(
            index.name or _index_name(table.name, index.columns, index.unique),
            *index.columns,
            unique=index.unique,
        )
        for index in table.indexes
    ]
    sa_table = sa.Table(table.name, metadata, *columns, *indexes, schema=table.schema)
    return Target(
        table=sa_table,
        sources=tuple(column.source for column in table.columns),
        key_format=table.key_format,
        value_format=table.value_format,
        tombstones=table.tombstones,
        topics=table.topics,
        topic_patterns=() if table.topic_pattern is None else (table.topic_pattern,),
        envelope=table.envelope,
        truncate=table.truncate,
    )


def _index_name(table: str, columns: Sequence[str], unique: bool) -> str:
    name = f"{table}_{'_'.join(columns)}_{'key' if unique else 'idx'}"
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        return name
    # Keep long names unique after shortening them under PostgreSQL's identifier limit.
    digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]
    return f"{name.encode('utf-8')[:40].decode('utf-8', 'ignore')}_{digest}_idx"


DEAD_LETTER_COLUMNS = (
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
    "error_code",
    "error",
    "failed_at",
)


def dead_letter_table(qualified_name: str, metadata: sa.MetaData) -> sa.Table:
    """The dead-letter table (policy "dead-letter-table"): one row per rejected message,
    keyed by its coordinates. Rows come from `sink.mapping.dead_letter_row`."""
    schema, _, name = qualified_name.rpartition(".")
    return sa.Table(
        name,
        metadata,
        sa.Column("topic", sa.TEXT, primary_key=True),
        sa.Column("partition", sa.INTEGER, primary_key=True),
        sa.Column("offset", sa.BIGINT, primary_key=True),
        sa.Column("timestamp", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("key", postgresql.BYTEA, nullable=True),
        sa.Column("value", postgresql.BYTEA, nullable=True),
        sa.Column("headers", postgresql.JSONB, nullable=True),
        sa.Column("error_code", sa.TEXT, nullable=False),
        sa.Column("error", sa.TEXT, nullable=False),
        sa.Column("failed_at", sa.TIMESTAMP(timezone=True), nullable=False),
        schema=schema or "public",
    )


def _check_dead_letter_topic(table_set: TableSet, topic: str | None) -> None:
    if topic is None:
        return
    for target in table_set.targets:
        if _feeds(target, topic):
            raise ConfigError(
                f"errors.dead_letter_topic: {topic!r} would be consumed again into "
                f"{target.name}; pick a topic that no table's topics or patterns match"
            )


# --- tables modules ------------------------------------------------------------------------


def tables_from_module(module_name: str) -> TableSet:
    """Import a tables module (see the module docstring) and check what it exposes."""
    where = f"python.module {module_name!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"{where}: cannot be imported: {error} (is it on PYTHONPATH / installed?)"
        ) from None
    metadata = getattr(module, "metadata", None)
    if not isinstance(metadata, sa.MetaData):
        raise ConfigError(f"{where}: must define `metadata = sa.MetaData()` holding the tables")
    routes = getattr(module, "routes", None)
    if not isinstance(routes, Mapping) or not routes:
        raise ConfigError(
            f"{where}: must define `routes`, a dict of topic (or regex starting with '^') "
            f"to 'schema.table' or a list of them"
        )
    map_record = getattr(module, "map_record", None)
    if map_record is not None and not callable(map_record):
        raise ConfigError(f"{where}: map_record must be a function of one record")
    key_format = _module_format(module, where, "key_format", Format.STRING)
    value_format = _module_format(module, where, "value_format", Format.JSON)
    feeds = _invert_routes(routes, metadata, where)
    targets = tuple(
        _target_from_module(table, topics, key_format, value_format, where)
        for table, topics in feeds.items()
    )
    return TableSet(metadata=metadata, targets=targets, map_record=map_record, fan_out=True)


def _module_format(module: object, where: str, name: str, default: Format) -> Format:
    value = getattr(module, name, default.value)
    try:
        return Format(value)
    except ValueError:
        allowed = " | ".join(repr(f.value) for f in Format)
        raise ConfigError(f"{where}: {name} must be one of {allowed}, got {value!r}") from None


def _invert_routes(
    routes: Mapping[Any, Any], metadata: sa.MetaData, where: str
) -> dict[sa.Table, list[str]]:
    feeds: dict[sa.Table, list[str]] = {}
    for topic, names in routes.items():
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"{where}: routes key {topic!r} must be a topic name or regex")
        if topic.startswith("^"):
            try:
                re.compile(topic)
            except re.error as error:
                raise ConfigError(
                    f"{where}: routes[{topic!r}] is not a valid regex: {error}"
                ) from None
        for name in [names] if isinstance(names, str) else list(names):
            table = _find_table(metadata, name)
            if table is None:
                known = ", ".join(sorted(metadata.tables))
                raise ConfigError(
                    f"{where}: routes[{topic!r}] names {name!r}, which is not in metadata "
                    f"(tables: {known})"
                )
            feeds.setdefault(table, []).append(topic)
    return feeds


def _find_table(metadata: sa.MetaData, name: object) -> sa.Table | None:
    if not isinstance(name, str):
        return None
    if name in metadata.tables:
        return metadata.tables[name]
    schema, _, bare = name.rpartition(".")
    if schema == "public" and bare in metadata.tables:
        return metadata.tables[bare]
    return None


def _target_from_module(
    table: sa.Table, topics: list[str], key_format: Format, value_format: Format, where: str
) -> Target:
    sources: list[Source] = []
    for column in table.columns:
        text = column.info.get("source", f"value.{column.name}")
        try:
            sources.append(parse_source(str(text)))
        except ValueError as error:
            raise ConfigError(
                f"{where}: {table.fullname}.{column.name} info['source']: {error}"
            ) from None
    has_key = bool(table.primary_key.columns)
    default = TombstonePolicy.DELETE if has_key else TombstonePolicy.IGNORE
    try:
        tombstones = TombstonePolicy(table.info.get("tombstones", default.value))
    except ValueError:
        raise ConfigError(
            f"{where}: {table.fullname} info['tombstones'] must be 'delete' or 'ignore'"
        ) from None
    if tombstones is TombstonePolicy.DELETE and not has_key:
        raise ConfigError(f"{where}: {table.fullname} deletes tombstones but has no primary key")
    return Target(
        table=table,
        sources=tuple(sources),
        key_format=key_format,
        value_format=value_format,
        tombstones=tombstones,
        topics=tuple(t for t in topics if not t.startswith("^")),
        topic_patterns=tuple(t for t in topics if t.startswith("^")),
    )


# --- routing -------------------------------------------------------------------------------


def _feeds(target: Target, topic: str) -> bool:
    return topic in target.topics or any(re.search(p, topic) for p in target.topic_patterns)


class Router:
    """Which targets a topic feeds; resolved once per topic, then cached."""

    def __init__(self, table_set: TableSet) -> None:
        self._table_set = table_set
        self._cache: dict[str, tuple[Target, ...]] = {}

    def subscription(self) -> list[str]:
        """Topics and `^regex` patterns to pass to `Consumer.subscribe`."""
        names: list[str] = []
        for target in self._table_set.targets:
            names.extend(t for t in (*target.topics, *target.topic_patterns) if t not in names)
        return names

    def targets(self, topic: str) -> tuple[Target, ...]:
        """The targets `topic` feeds (empty if none). Raises ConfigError when a topic matches
        several `[[tables]]`, or tables that decode it differently."""
        found = self._cache.get(topic)
        if found is None:
            found = self._resolve(topic)
            self._cache[topic] = found
        return found

    def require(self, topic: str) -> tuple[Target, ...]:
        """The targets of a topic the subscription gave this worker; ConfigError when none
        matches it: librdkafka reads `^` patterns as POSIX extended regular expressions and
        the routes are read with Python's `re`, which differ (`\\d`, `[[:digit:]]`)."""
        found = self.targets(topic)
        if not found:
            patterns = ", ".join(repr(p) for t in self._table_set.targets for p in t.topic_patterns)
            raise ConfigError(
                f"topic {topic!r} was assigned to this worker by the subscription "
                f"({patterns or 'no patterns'}), but no table's topics or topic_pattern match it "
                "as Python reads the pattern; nothing of it was written. librdkafka reads "
                "patterns as POSIX extended regular expressions: write them so that both read "
                "them alike (e.g. [0-9] rather than \\d or [[:digit:]])"
            )
        return found

    def _resolve(self, topic: str) -> tuple[Target, ...]:
        found = tuple(t for t in self._table_set.targets if _feeds(t, topic))
        names = ", ".join(target.name for target in found)
        if len(found) > 1 and not self._table_set.fan_out:
            raise ConfigError(
                f"topic {topic!r} matches several [[tables]] ({names}); a topic feeds one table: "
                f"narrow the topic_pattern(s)"
            )
        formats = {(target.key_format, target.value_format) for target in found}
        if len(formats) > 1:
            raise ConfigError(
                f"topic {topic!r} feeds tables that decode it differently ({names}); give them "
                f"the same key_format and value_format"
            )
        return found
