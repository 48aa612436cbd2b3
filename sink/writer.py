"""The PostgreSQL side of the sink: one long `pg_bulk_ingest.ingest` call per run of batches,
with each batch's next offsets merged into the stored high watermark under the table lock."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

import pg_bulk_ingest

from .offsets import (
    Positions,
    StoredState,
    adopt_definition,
    advance,
    check_owned,
    fingerprint,
    parse_state,
)
from .tables import Row

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


def _no_rows() -> Iterator[Row]:
    return iter(())


# Granted locks of other sessions that conflict with the SHARE UPDATE EXCLUSIVE one each commit
# takes to write the comment.
_LOCK_HOLDER = sa.text(
    """
    SELECT l.pid, a.backend_type
    FROM pg_locks AS l LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation = to_regclass(:table)
      AND l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock',
                     'ExclusiveLock', 'AccessExclusiveLock')
    LIMIT 1
    """
)


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"pg-kafka-sink migrations {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Writer:
    """Writes batches into the sink's tables; the first table's comment holds the offsets."""

    def __init__(self, engine: sa.engine.Engine, metadata: sa.MetaData) -> None:
        self.engine = engine
        self.metadata = metadata
        self.first_table = next(iter(metadata.tables.values()))
        self.where = self.first_table.fullname
        self.definition = fingerprint(metadata.tables.values())
        self._ingesting: sa.Connection | None = None

    def read_state(self) -> StoredState:
        """The stored offsets and definitions, read on a connection of its own."""
        with self.engine.connect() as conn:
            value = pg_bulk_ingest.read_high_watermark(conn, self.first_table)
            conn.rollback()
        return parse_state(value, self.where)

    def lock_holder(self) -> str | None:
        """The session holding a lock on the first table that a commit would wait for (its
        offsets go into that table's comment), as "autovacuum worker (pid 123)"; None if none
        does. Read on a connection of its own; pg_locks needs no privilege."""
        name = self.engine.dialect.identifier_preparer.format_table(self.first_table)
        with self.engine.connect() as conn:
            found = conn.execute(_LOCK_HOLDER, {"table": name}).first()
            conn.rollback()
        return None if found is None else f"{found.backend_type or 'a session'} (pid {found.pid})"

    def run(self, batches: Callable[[], Iterator[PendingBatch]]) -> None:
        """Ingests every batch the iterator yields, each in its own transaction.

        Before any migration, the stored definitions are checked under an advisory lock held
        until the first batch (an empty one when the definition is new) has committed.
        """
        with self._migration_lock() as (state, release), self.engine.connect() as conn:
            self._ingesting = conn
            adopted = adopt_definition(state, self.definition, self.where)

            def stream(_: Any) -> Iterator[tuple[Any, Any, Iterator[Row]]]:
                if adopted != state:
                    logger.info("applying table definition %s to %s", self.definition, self.where)
                    yield self._watermark(conn, PendingBatch(_no_rows, {}, {}, {})), None, iter(())
                release()
                for batch in batches():
                    yield self._watermark(conn, batch), batch, batch.rows()

            pg_bulk_ingest.ingest(
                conn,
                self.metadata,
                stream,
                high_watermark=pg_bulk_ingest.HighWatermark.LATEST,
                on_before_visible=self._delete_keys,
                # The batcher bounds a batch. Unbounded here, each table's COPY (and upsert
                # merge) ends once per batch, after its last message is read: the worker reads
                # the next batch ahead meanwhile.
                max_rows_per_table_buffer=sys.maxsize,
            )
            self._ingesting = None

    def cancel(self) -> None:
        """Cancels the statement in flight, from any thread; its batch rolls back."""
        conn = self._ingesting
        if conn is not None and not conn.closed:
            conn.connection.driver_connection.cancel()  # type: ignore[union-attr]

    def _watermark(self, conn: sa.Connection, batch: PendingBatch) -> Callable[[], Any]:
        def merged() -> Any:
            # Called by ingest inside the batch transaction, under the table's
            # SHARE UPDATE EXCLUSIVE lock: no other worker can write the comment meanwhile.
            value = pg_bulk_ingest.read_high_watermark(conn, self.first_table)
            stored = parse_state(value, self.where)
            check_owned(stored, batch.expected, self.where)
            stored = adopt_definition(stored, self.definition, self.where)
            return advance(stored, batch.next_offsets).to_json()

        return merged

    @staticmethod
    def _delete_keys(conn: sa.Connection, _table: Any, batch: PendingBatch | None) -> None:
        if batch is None:
            return
        for table, keys in batch.deletes.items():
            if keys:
                columns = sa.tuple_(*table.primary_key.columns)
                conn.execute(sa.delete(table).where(columns.in_(keys)))

    @contextmanager
    def _migration_lock(self) -> Iterator[tuple[StoredState, Callable[[], None]]]:
        """Holds a session advisory lock, on a connection of its own, until released.

        Yields the stored state read under the lock, and the function that releases it.
        """
        key = _lock_key(self.where)
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            state = parse_state(
                pg_bulk_ingest.read_high_watermark(conn, self.first_table), self.where
            )
            conn.commit()
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()

            try:
                yield state, release
            finally:
                if not conn.invalidated:
                    release()
