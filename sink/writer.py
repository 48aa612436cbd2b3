"""The PostgreSQL side of the sink: one long `pg_bulk_ingest.ingest` call per run of batches,
with each batch's next offsets merged into the stored high watermark under the state table's
lock, and everything else that reads or writes that state (creating it, adopting the layout
of earlier releases, `reset`)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import pg_bulk_ingest

from .batcher import KeyText
from .config import PostgresSettings, TruncatePolicy
from .errors import StoredStateError
from .offsets import (
    MOVED,
    Positions,
    StoredState,
    adopt_definition,
    advance,
    check_owned,
    fingerprint,
    is_legacy_state,
    moved_marker,
    parse_state,
    reset_command,
)
from .retry import DATABASE_ERRORS, sqlstate
from .tables import Row, TableSet, Truncation

logger = logging.getLogger(__name__)


class PendingBatch:
    """What the writer needs of one batch: rows to write, keys to delete, where it ends.

    `expected` maps each partition of the batch to the stored next offset this worker last saw,
    `next_offsets` to where the batch ends: both go into the fenced watermark update. Rows may
    be read as they stream: `deletes`, `expected` and `next_offsets` are read only once the
    rows are exhausted, and may be filled in by then.
    """

    def __init__(
        self,
        rows: Callable[[], Iterator[Row]],
        deletes: Mapping[sa.Table, Sequence[tuple[Any, ...]]],
        expected: Positions,
        next_offsets: Positions,
    ) -> None:
        self.rows = rows
        self.deletes = deletes
        self.expected = expected
        self.next_offsets = next_offsets
        # Kafka's id of each topic of the batch, stored with its offsets.
        self.topic_ids: Mapping[str, str] = {}
        # Per table truncated in the batch: the primary keys (COPY text) of the rows written
        # since its last truncation, which the truncation keeps.
        self.kept: dict[sa.Table, dict[tuple[str, ...], None]] = {}


def _no_rows() -> Iterator[Row]:
    return iter(())


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"pg-kafka-sink migrations {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


UNDEFINED_TABLE = "42P01"


def create_engine(postgres: PostgresSettings, **options: Any) -> sa.engine.Engine:
    """An engine for the sink's tables and its state. READ COMMITTED whatever the role's,
    database's or server's default: a commit locks the state table and then reads the stored
    offsets, and only under READ COMMITTED does that read see what another worker committed
    while this transaction waited for the lock."""
    return sa.create_engine(
        postgres.engine_url(), future=True, isolation_level="READ COMMITTED", **options
    )


# Tables named like a state table, in any schema: where the state went when it is not here.
_STATE_TABLES_ELSEWHERE = sa.text(
    "SELECT n.nspname || '.' || c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = :name AND c.relkind IN ('r', 'p') ORDER BY 1"
)


class Writer:
    """Writes batches into the sink's tables; the state table's comment holds the offsets."""

    def __init__(
        self,
        engine: sa.engine.Engine,
        tables: TableSet,
        group: str,
        *,
        confirm: Callable[[StoredState], None] | None = None,
        held: Mapping[str, Any] | None = None,
    ) -> None:
        """`confirm`, if given, is called with the stored state under the migration lock before
        this writer applies its definition, and may refuse it (OutdatedDefinitionError).
        `held`: by table, the columns from messages' schemas its commits store (see
        StoredState.columns)."""
        assert tables.state_table is not None  # load_tables always adds it
        self.engine = engine
        self.metadata = tables.metadata
        self.state_table = tables.state_table
        self.data_tables = tables.data_tables
        self.group = group
        self.where = f"{self.state_table.schema}.{self.state_table.name}"
        self.definition = fingerprint(self.data_tables)
        self._confirm = confirm
        self._held = dict(held or {})
        self._ingesting: sa.Connection | None = None
        # Tables whose rows may hold a Truncation: only their sinks watch the rows go by.
        self._truncated = {
            target.table: KeyText(target.table)
            for target in tables.targets
            if target.truncate is TruncatePolicy.TRUNCATE
        }

    # --- the stored state --------------------------------------------------------------------

    def open_state(self, prior: Callable[[], Positions]) -> StoredState:
        """The stored state; on first start, creates the state table first, with the offsets
        that a release before the state table kept on a data table, if one did.

        Raises StoredStateError where positions were stored before but the state is gone or
        unreadable; `prior()` gives the consumer group's offsets in Kafka, which say so and
        are offered to `reset`."""
        with self._migration_lock() as (conn, release):
            try:
                return self._open(conn, prior)
            finally:
                release()

    def _open(self, conn: sa.Connection, prior: Callable[[], Positions]) -> StoredState:
        with conn.begin():
            if self._exists(conn):
                return self._read_or_explain(conn, prior)
            state = self._adopt_legacy(conn)
            if state is None:
                self._check_never_stored(conn, prior)
                state = StoredState(group=self.group)
            self._create(conn, state)
        logger.info(
            "created the state table %s for consumer group %r (%d stored offsets)",
            self.where,
            self.group,
            len(state.offsets),
        )
        return state

    def read_state(self) -> StoredState:
        """The stored offsets and definitions, read on a connection of its own."""
        state = self.stored_state()
        if state is None:
            raise StoredStateError(self._missing())
        return state

    def takes_copy_tuples(self) -> bool:
        """Whether the database takes rows as binary COPY tuples (UTF8 encodings)."""
        with self.engine.connect() as conn, conn.begin():
            return pg_bulk_ingest.takes_copy_tuples(conn)

    def stored_state(self) -> StoredState | None:
        """As `read_state`, but None when the state table does not exist (yet)."""
        with self.engine.connect() as conn, conn.begin():
            return self._read(conn) if self._exists(conn) else None

    def reset(
        self, next_offsets: Positions, *, dry_run: bool = False
    ) -> tuple[StoredState | None, str | None]:
        """Stores these next offsets, every other partition kept; creates the state table if
        there is none and replaces a state that cannot be read. Returns the state before
        (None without one) and why it could not be read, if it could not."""
        with self.engine.connect() as conn, conn.begin():
            if not self._exists(conn):
                if not dry_run:
                    self._create(conn, StoredState(dict(next_offsets), group=self.group))
                return None, None
            before: StoredState | None = None
            problem = None
            if not dry_run:  # as a commit does: the read below sees the last commit's offsets
                conn.execute(sa.text(f"LOCK TABLE {self._quoted()} IN SHARE UPDATE EXCLUSIVE MODE"))
            try:
                before = self._read(conn)
            except StoredStateError as exc:
                problem = str(exc)
            if not dry_run:
                base = before or StoredState(group=self.group)
                self._store(conn, advance(base, next_offsets))
            return before, problem

    def _exists(self, conn: sa.Connection) -> bool:
        found = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": self._quoted()}).scalar()
        return found is not None

    def _quoted(self) -> str:
        return self.engine.dialect.identifier_preparer.format_table(self.state_table)

    def _read(self, conn: sa.Connection) -> StoredState:
        """The state in the table's comment; StoredStateError if there is none, or not ours."""
        try:
            value = pg_bulk_ingest.read_high_watermark(conn, self.state_table)
        except pg_bulk_ingest.WatermarkError as exc:
            raise StoredStateError(
                f"the sink's state table {self.where} is unreadable: {exc}"
            ) from None
        if value is None:
            found = conn.execute(
                sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
                {"t": self._quoted()},
            ).scalar()
            shown = "no comment" if found is None else f"the comment {_short(found)}"
            raise StoredStateError(
                f"the COMMENT of the sink's state table {self.where} no longer holds the sink's "
                f"state (found {shown}): it was replaced, or the table made again by hand"
            )
        return parse_state(value, f"the sink's state table {self.where}", self.group)

    def _read_or_explain(self, conn: sa.Connection, prior: Callable[[], Positions]) -> StoredState:
        try:
            return self._read(conn)
        except StoredStateError as exc:
            raise lost_state(str(exc), prior(), KAFKA_OFFSETS) from None

    def _missing(self) -> str:
        return (
            f"the sink's state table {self.where} does not exist, yet offsets of consumer group "
            f"{self.group!r} were stored before: it was dropped, or postgres.state_table (or "
            "kafka.group_id, which names it by default) changed"
        )

    def _check_never_stored(self, conn: sa.Connection, prior: Callable[[], Positions]) -> None:
        """Raises StoredStateError unless nothing suggests that offsets were ever stored: no
        data table says its offsets moved to a state table, and the consumer group has no
        offsets in Kafka (the sink commits them there too, after each batch)."""
        moved = [t for t, value in self._stored_on_data_tables(conn) if MOVED in value]
        offsets = prior()
        if not moved and not offsets:
            return
        elsewhere = [
            name
            for (name,) in conn.execute(_STATE_TABLES_ELSEWHERE, {"name": self.state_table.name})
        ]
        what = self._missing()
        if moved:
            what += f" ({', '.join(t.fullname for t in moved)} says its offsets moved there)"
        if elsewhere:
            what += (
                f"; a state table of that name exists as {', '.join(elsewhere)}: if it is this "
                f'sink\'s, set postgres.state_table = "{elsewhere[0]}"'
            )
        raise lost_state(what, offsets, KAFKA_OFFSETS)

    def _stored_on_data_tables(self, conn: sa.Connection) -> list[tuple[sa.Table, dict[str, Any]]]:
        """Data tables whose comment holds a watermark that the sink wrote (before the state
        table: its state; since: the marker saying where it moved)."""
        found = []
        for table in self.data_tables:
            try:
                value = pg_bulk_ingest.read_high_watermark(conn, table)
            except pg_bulk_ingest.WatermarkError:
                continue  # a data table's comment is not the sink's to judge
            if is_legacy_state(value) or (isinstance(value, dict) and MOVED in value):
                found.append((table, value))
        return found

    def _adopt_legacy(self, conn: sa.Connection) -> StoredState | None:
        """The state a release before the state table kept in a data table's comment, moved
        here: that comment then says where it went, which makes such a release's workers stop
        at their next commit (their fence reads it and refuses it)."""
        candidates = [t for t, value in self._stored_on_data_tables(conn) if MOVED not in value]
        if not candidates:
            return None
        # As those workers do to commit: lock, then read what the last of them committed.
        for table in candidates:
            name = self.engine.dialect.identifier_preparer.format_table(table)
            conn.execute(sa.text(f"LOCK TABLE {name} IN SHARE UPDATE EXCLUSIVE MODE"))
        legacy = [(t, pg_bulk_ingest.read_high_watermark(conn, t)) for t in candidates]
        legacy = [(t, value) for t, value in legacy if is_legacy_state(value)]
        if len(legacy) > 1:
            raise StoredStateError(
                f"the comments of {', '.join(t.fullname for t, _ in legacy)} all hold offsets "
                "stored by an earlier release; which are current cannot be told. Set the "
                "offsets with pg-kafka-sink reset --to TOPIC:PARTITION=OFFSET,..."
            )
        if not legacy:
            return None
        ((table, value),) = legacy
        state = dataclasses.replace(parse_state(value, table.fullname), group=self.group)
        pg_bulk_ingest.write_high_watermark(conn, table, moved_marker(self.where, self.group))
        logger.warning(
            "moved the offsets stored in the comment of %s (%d partitions) to the state table "
            "%s; workers of earlier releases stop at their next commit",
            table.fullname,
            len(state.offsets),
            self.where,
        )
        return state

    def _create(self, conn: sa.Connection, state: StoredState) -> None:
        """Creates the state table with its comment, both in the caller's transaction."""
        schema = self.state_table.schema
        assert schema is not None  # state_table always names one
        if (
            conn.execute(sa.text("SELECT to_regnamespace(:s)"), {"s": _ident(schema)}).scalar()
            is None
        ):
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {_ident(schema)}"))
        self.state_table.create(conn)
        about = orjson.dumps({"about": _about(self.group)}).decode()
        with _cursor(conn) as cursor:
            cursor.execute(f"COMMENT ON TABLE {self._quoted()} IS {_literal(about)}")
        self._store(conn, state)

    def _store(self, conn: sa.Connection, state: StoredState) -> None:
        pg_bulk_ingest.write_high_watermark(conn, self.state_table, state.to_json())

    def run(self, batches: Callable[[], Iterator[PendingBatch]]) -> None:
        """Ingests every batch the iterator yields, each in its own transaction.

        Before any migration, the stored definitions are checked under an advisory lock held
        until the first batch, always an empty one, has committed.
        """
        with self._migration_lock() as (locked, release), self.engine.connect() as conn:
            with locked.begin():
                state = self._read(locked)
            adopted = adopt_definition(state, self.definition, self.where)
            if adopted != state and self._confirm is not None:
                self._confirm(state)
            self._ingesting = conn

            def stream(_: Any) -> Iterator[tuple[Any, Any, Iterator[Row]]]:
                if adopted != state:
                    logger.info("applying table definition %s to %s", self.definition, self.where)
                # A first batch without rows: any table ingest rebuilds is swapped in by it,
                # so no batch's deletes (run before a swap) meet a table about to be replaced.
                yield self._watermark(conn, PendingBatch(_no_rows, {}, {}, {})), None, iter(())
                release()
                for batch in batches():
                    rows = self._watch_truncations(batch) if self._truncated else batch.rows()
                    yield self._watermark(conn, batch), batch, rows

            try:
                pg_bulk_ingest.ingest(
                    conn,
                    self.metadata,
                    stream,
                    high_watermark=pg_bulk_ingest.HighWatermark.LATEST,
                    on_before_visible=self._delete_keys,
                    # The batcher bounds a batch. Unbounded here, each table's COPY (and upsert
                    # merge) ends once per batch, after its last message is read: the worker
                    # reads the next batch ahead meanwhile.
                    max_rows_per_table_buffer=sys.maxsize,
                )
            except DATABASE_ERRORS as exc:
                # The state table dropped while running: say so rather than "does not exist".
                if sqlstate(exc) == UNDEFINED_TABLE and not self._exists_now():
                    raise StoredStateError(self._missing()) from exc
                raise
            finally:
                self._ingesting = None

    def cancel(self) -> None:
        """Cancels the statement in flight, from any thread; its batch rolls back."""
        conn = self._ingesting
        if conn is not None and not conn.closed:
            conn.connection.driver_connection.cancel()  # type: ignore[union-attr]

    def _watermark(self, conn: sa.Connection, batch: PendingBatch) -> Callable[[], Any]:
        def merged() -> Any:
            # Called by ingest inside the batch transaction, under the state table's
            # SHARE UPDATE EXCLUSIVE lock: no other worker can write the comment meanwhile,
            # and (READ COMMITTED) this reads what the last one committed.
            stored = self._read(conn)
            check_owned(stored, batch.expected, self.where)
            stored = adopt_definition(stored, self.definition, self.where)
            if self._held:
                stored = dataclasses.replace(stored, columns={**stored.columns, **self._held})
            return advance(stored, batch.next_offsets, batch.topic_ids).to_json()

        return merged

    def _watch_truncations(self, batch: PendingBatch) -> Iterator[Row]:
        """The batch's rows without its truncations, each of which starts again the keys
        its table keeps (see `_delete_keys`)."""
        watched, kept = self._truncated, batch.kept
        for row in batch.rows():
            table, values = row
            if type(values) is Truncation:
                kept[table] = {}
                continue
            keys = kept.get(table)
            if keys is not None:
                keys[watched[table].of_row(values)] = None
            yield row

    @staticmethod
    def _delete_keys(conn: sa.Connection, _table: Any, batch: PendingBatch | None) -> None:
        """Applies a batch's truncations, then its deletes, once its rows are written: a
        truncated table keeps only the rows written after its last truncation, and of those
        the keys whose last message deletes them go too."""
        if batch is None:
            return
        for table, kept in batch.kept.items():
            since = list(kept)
            removed = conn.execute(_delete_all_but(table), _text_arrays(table, since)).rowcount
            logger.info(
                "%s.%s truncated at its source: %d rows deleted, %d written since kept",
                table.schema or "public",
                table.name,
                removed,
                len(since),
            )
        for table, keys in batch.deletes.items():
            if keys:
                conn.execute(_delete_by_key(table), _key_arrays(table, keys))

    def _exists_now(self) -> bool:
        with self.engine.connect() as conn:
            return self._exists(conn)

    @contextmanager
    def _migration_lock(self) -> Iterator[tuple[sa.Connection, Callable[[], None]]]:
        """Holds a session advisory lock, on a connection of its own, until released: one
        worker of the group at a time creates the state table or applies a definition.

        Yields that connection, and the function that releases the lock.
        """
        key = _lock_key(self.where)
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            conn.commit()
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()

            try:
                yield conn, release
            finally:
                if not conn.invalidated:
                    release()


def _delete_by_key(table: sa.Table) -> sa.TextClause:
    """Deletes the rows whose primary key is among the keys bound as one array per key
    column: a batch of any size is one statement with as many parameters as key columns
    (PostgreSQL's protocol takes at most 65,535)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    columns = list(table.primary_key.columns)
    arrays = ", ".join(
        f"CAST(:k{i} AS {column.type.compile(dialect=dialect)}[])"
        for i, column in enumerate(columns)
    )
    names = ", ".join(f"k{i}" for i in range(len(columns)))
    matches = " AND ".join(f"t.{quote(column.name)} = k.k{i}" for i, column in enumerate(columns))
    target = dialect.identifier_preparer.format_table(table)
    return sa.text(
        f"DELETE FROM {target} AS t USING unnest({arrays}) AS k({names}) WHERE {matches}"
    )


def _key_arrays(table: sa.Table, keys: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    return {f"k{i}": [key[i] for key in keys] for i in range(len(table.primary_key.columns))}


def _delete_all_but(table: sa.Table) -> sa.TextClause:
    """Deletes every row but those whose primary key is among the keys bound as one text
    array per key column (each key's text as PostgreSQL reads it into the column's type).

    A DELETE rather than TRUNCATE: the table is never locked against readers, who see the
    rows until the batch commits."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    quote = dialect.identifier_preparer.quote
    columns = list(table.primary_key.columns)
    arrays = ", ".join(f"CAST(:k{i} AS text[])" for i in range(len(columns)))
    names = ", ".join(f"k{i}" for i in range(len(columns)))
    matches = " AND ".join(
        f"t.{quote(column.name)} = CAST(k.k{i} AS {column.type.compile(dialect=dialect)})"
        for i, column in enumerate(columns)
    )
    target = dialect.identifier_preparer.format_table(table)
    return sa.text(
        f"DELETE FROM {target} AS t WHERE NOT EXISTS "
        f"(SELECT FROM unnest({arrays}) AS k({names}) WHERE {matches})"
    )


def _text_arrays(table: sa.Table, keys: Sequence[tuple[str, ...]]) -> dict[str, list[str]]:
    return {
        f"k{i}": [_unescape(key[i]) for key in keys] for i in range(len(table.primary_key.columns))
    }


_COPY_ESCAPES = {"t": "\t", "n": "\n", "r": "\r"}
_COPY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(text: str) -> str:
    """A value's text as PostgreSQL reads it, from its COPY text."""
    if "\\" not in text:
        return text
    return _COPY_ESCAPE.sub(lambda match: _COPY_ESCAPES.get(match[1], match[1]), text)


def lost_state(what: str, known: Positions, whose: str) -> StoredStateError:
    """The error that stops a worker whose stored state is gone: what was found, and the
    `reset` commands that resume from `known` offsets or start over."""
    resume = f"`{reset_command(known)}` resumes from {whose}; " if known else ""
    return StoredStateError(
        f"{what}. Nothing was written, and the sink does not start over from kafka.start_from "
        f"by itself: {resume}`pg-kafka-sink reset --to earliest` (or latest) starts over",
        stored=known,
    )


# How `lost_state` names the consumer group's offsets in Kafka.
KAFKA_OFFSETS = (
    "the consumer group's offsets in Kafka, which trail the stored ones by at most the last "
    "batch of each partition"
)


def _about(group: str) -> str:
    return (
        f"pg-kafka-sink: the Kafka offsets of consumer group {group!r}, stored in this comment "
        "in the same transaction as each batch. Change them only with pg-kafka-sink reset."
    )


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@contextmanager
def _cursor(conn: sa.Connection) -> Iterator[Any]:
    """The driver's cursor: COMMENT takes no bind parameters, and nothing may parse `:name`
    or `%` inside the text."""
    cursor = conn.connection.cursor()
    try:
        yield cursor
    finally:
        cursor.close()
