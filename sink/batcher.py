"""Batching: accumulate mapped messages per partition and say when a batch is due.

Pure, with an injected clock: a batch is due at `max_messages`, at `max_bytes` of keys and
values, or `max_age_seconds` after its first message, whichever comes first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Callable, Hashable, List, Tuple, TypeVar

import sqlalchemy as sa

from pg_bulk_ingest import CopyRow, copy_encoders
from sink.errors import DecodeError, SinkError
from sink.records import Message, TopicPartition
from sink.tables import Deletion, Row, RowValues

Values = Tuple[object, ...]
# (partition, sequence number of the message in the batch, row or key values)
_Entry = Tuple[TopicPartition, int, RowValues]
_KeyEntry = Tuple[TopicPartition, int, Values]
_E = TypeVar("_E", _Entry, _KeyEntry)


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be decoded or mapped; its offset advances with the batch."""

    message: Message
    error: DecodeError


@dataclass(frozen=True)
class Batch:
    """Everything one transaction writes.

    `deletes` and `table_rows` may be applied in either order: a row whose key a later
    tombstone of the same batch deletes is left out of `table_rows`, and a key written again
    after its tombstone is left out of `deletes`.
    """

    # Rows per table, in column order, in arrival order.
    table_rows: Mapping[sa.Table, Sequence[RowValues]]
    # Primary-key tuples to delete, per table, each key once.
    deletes: Mapping[sa.Table, Sequence[Values]]
    dead_letters: tuple[DeadLetter, ...]
    # Per partition: the next offset to read after this batch (last offset + 1).
    next_offsets: Mapping[TopicPartition, int]
    # Per partition: the offset of the batch's first message from it. With gaps (compaction,
    # transaction markers) it can be past the stored position the worker started from.
    first_offsets: Mapping[TopicPartition, int]
    message_count: int
    byte_count: int

    def rows(self) -> Iterator[Row]:
        """`(sa.Table, row)` pairs, as pg_bulk_ingest takes them."""
        for table, rows in self.table_rows.items():
            for row in rows:
                yield table, row

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.table_rows.values())

    @property
    def delete_count(self) -> int:
        return sum(len(keys) for keys in self.deletes.values())


class _Partition:
    __slots__ = ("byte_count", "first_offset", "message_count", "next_offset", "started", "tp")

    def __init__(self, tp: TopicPartition, first_offset: int, started: float) -> None:
        self.tp = tp
        self.first_offset = first_offset
        self.next_offset = first_offset
        self.started = started
        self.message_count = 0
        self.byte_count = 0


class Batcher:
    """Collects messages until a batch is due; `take()` hands it over and starts the next."""

    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1 or max_bytes < 1 or not max_age_seconds > 0:
            raise ValueError("max_messages, max_bytes and max_age_seconds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._rows: dict[sa.Table, List[_Entry]] = {}
        self._deletes: dict[sa.Table, List[_KeyEntry]] = {}
        self._dead: list[DeadLetter] = []
        self._message_count = 0
        self._byte_count = 0
        self._sequence = 0
        self._started: float | None = None

    @property
    def message_count(self) -> int:
        return self._message_count

    @property
    def byte_count(self) -> int:
        return self._byte_count

    def add(
        self, message: Message, rows: Iterable[Row] = (), *, deletes: Iterable[Deletion] = ()
    ) -> None:
        """Add one message with the rows it maps to and the keys it deletes (either may be
        empty: an ignored tombstone still moves its partition's offset)."""
        tp = self._advance(message)
        sequence = self._sequence
        for table, row in rows:
            entries = self._rows.get(table)
            if entries is None:
                entries = self._rows[table] = []
            entries.append((tp, sequence, row))
        for table, key in deletes:
            self._deletes.setdefault(table, []).append((tp, sequence, key))

    def add_dead_letter(self, message: Message, error: DecodeError) -> None:
        """Add a message that goes to the dead-letter destination instead of its tables."""
        self._advance(message)
        self._dead.append(DeadLetter(message, error))

    def _advance(self, message: Message) -> TopicPartition:
        topic, partition, offset, _, key, value, _ = message
        # A plain tuple finds the TopicPartition key (equal, same hash) without building one.
        part: _Partition | None = self._partitions.get((topic, partition))  # type: ignore[call-overload]
        if part is None:
            now = self._clock()
            tp = TopicPartition(topic, partition)
            part = self._partitions[tp] = _Partition(tp, offset, now)
            if self._started is None:
                self._started = now
        elif offset < part.next_offset:
            raise SinkError(
                f"{message.coordinates}: offset goes back (the batch is at "
                f"{part.next_offset}); drop_partitions() must be called when a partition is "
                f"revoked or re-positioned"
            )
        # Offsets may have gaps (compaction, transaction markers): never assume +1.
        part.next_offset = offset + 1
        size = (len(key) if key else 0) + (len(value) if value else 0)  # as Message.size
        part.message_count += 1
        part.byte_count += size
        self._message_count += 1
        self._byte_count += size
        self._sequence += 1
        return part.tp

    def is_due(self, now: float | None = None) -> bool:
        return self.time_until_due(now) == 0.0

    def time_until_due(self, now: float | None = None) -> float:
        """Seconds until the batch is due (0.0 if it is); `max_age_seconds` when empty, since
        a batch started now would be due then. Use it as the poll timeout."""
        if self._started is None:
            return self.max_age_seconds
        if self._message_count >= self.max_messages or self._byte_count >= self.max_bytes:
            return 0.0
        now = self._clock() if now is None else now
        return max(self._started + self.max_age_seconds - now, 0.0)

    def drop_partitions(self, revoked: Iterable[TopicPartition]) -> None:
        """Forget everything read from these partitions: rows, deletes, dead letters, offsets."""
        gone = {TopicPartition(*tp) for tp in revoked} & set(self._partitions)
        if not gone:
            return
        for tp in gone:
            part = self._partitions.pop(tp)
            self._message_count -= part.message_count
            self._byte_count -= part.byte_count
        _drop_entries(self._rows, gone)
        _drop_entries(self._deletes, gone)
        self._dead = [d for d in self._dead if d.message.topic_partition not in gone]
        starts = [part.started for part in self._partitions.values()]
        self._started = min(starts) if starts else None

    def take(self) -> Batch:
        """Hand over the batch so far (possibly empty) and start a new one."""
        deletes: dict[sa.Table, Sequence[Values]] = {}
        rows: dict[sa.Table, Sequence[RowValues]] = {}
        deleted_at: dict[sa.Table, dict[Hashable, int]] = {}
        for table, entries in self._deletes.items():
            keys = _Keys(table)
            last: dict[Hashable, int] = {}
            unique: dict[Hashable, Values] = {}
            for _, sequence, key in entries:
                text = keys.of_key(key)
                last[text] = sequence
                unique.setdefault(text, key)
            deleted_at[table] = last
            # A key written again after its tombstone is upserted, not deleted.
            written_at = {
                keys.of_row(row): sequence for _, sequence, row in self._rows.get(table, [])
            }
            deletes[table] = tuple(
                key for text, key in unique.items() if last[text] > written_at.get(text, -1)
            )
        for table, written in self._rows.items():
            if table in deleted_at:
                rows[table] = _without_deleted(_Keys(table), written, deleted_at[table])
            else:
                rows[table] = [row for _, _, row in written]
        batch = Batch(
            table_rows=rows,
            deletes=deletes,
            dead_letters=tuple(self._dead),
            next_offsets={tp: p.next_offset for tp, p in self._partitions.items()},
            first_offsets={tp: p.first_offset for tp, p in self._partitions.items()},
            message_count=self._message_count,
            byte_count=self._byte_count,
        )
        self._reset()
        return batch


def _drop_entries(entries_by_table: dict[sa.Table, List[_E]], gone: set[TopicPartition]) -> None:
    for table, entries in list(entries_by_table.items()):
        kept = [entry for entry in entries if entry[0] not in gone]
        if kept:
            entries_by_table[table] = kept
        else:
            del entries_by_table[table]


class _Keys:
    """Primary keys as their COPY text, the one form shared by row tuples, `CopyRow` lines and
    the key tuples of tombstones; equal keys have equal text (the mapping normalises them)."""

    def __init__(self, table: sa.Table) -> None:
        encoders = copy_encoders(table)
        self._indexes = [i for i, column in enumerate(table.columns) if column.primary_key]
        self._encoders = [encoders[i] for i in self._indexes]

    def of_row(self, row: RowValues) -> Hashable:
        if type(row) is CopyRow:
            fields = row[:-1].split("\t")
            return tuple(fields[i] for i in self._indexes)
        return tuple(encode(row[i]) for encode, i in zip(self._encoders, self._indexes))

    def of_key(self, key: Values) -> Hashable:
        return tuple(encode(value) for encode, value in zip(self._encoders, key))


def _without_deleted(
    keys: _Keys, entries: list[_Entry], deleted_at: dict[Hashable, int]
) -> list[RowValues]:
    """Rows not deleted by a later tombstone of the same batch."""
    kept: list[RowValues] = []
    for _, sequence, row in entries:
        if deleted_at.get(keys.of_row(row), -1) < sequence:
            kept.append(row)
    return kept
