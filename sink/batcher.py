"""Batching: account for mapped messages per partition and say when a batch is due.

Pure, with an injected clock: a batch is due at `max_messages`, at `max_bytes` of keys and
values, or `max_age_seconds` after its first message, whichever comes first. Rows are not kept
here: they stream to PostgreSQL as they are read; the batcher keeps what the commit needs
(the offsets, the keys to delete, the dead letters).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Tuple

import sqlalchemy as sa

from pg_bulk_ingest import CopyRow, CopyTuple, copy_encoders
from sink.errors import MessageError, SinkError
from sink.records import Message, TopicPartition
from sink.tables import Deletion, Row, RowValues, Truncation

Values = Tuple[object, ...]


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be decoded or mapped; its offset advances with the batch."""

    message: Message
    error: MessageError


@dataclass(frozen=True)
class Batch:
    """What one transaction writes, besides its rows (which stream as they are read).

    `deletes` are applied after the rows: they hold the keys whose last message in the batch
    is a tombstone, so a key written again after its tombstone is not deleted, and a row
    written before its key's tombstone is deleted with it.
    """

    # Rows written per table.
    row_counts: Mapping[sa.Table, int]
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
    # Per partition: (messages, bytes of keys and values) of the batch.
    partition_sizes: Mapping[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    # Per partition: the Kafka timestamp (ms since the epoch) of the batch's first message
    # from it, and of its last; a partition whose message has no timestamp is left out.
    first_timestamps: Mapping[TopicPartition, int] = field(default_factory=dict)
    last_timestamps: Mapping[TopicPartition, int] = field(default_factory=dict)

    def by_topic(self) -> dict[str, tuple[int, int]]:
        """(messages, bytes) per topic."""
        found: dict[str, tuple[int, int]] = {}
        for tp, (count, size) in self.partition_sizes.items():
            before = found.get(tp.topic, (0, 0))
            found[tp.topic] = (before[0] + count, before[1] + size)
        return found

    @property
    def row_count(self) -> int:
        return sum(self.row_counts.values())

    @property
    def delete_count(self) -> int:
        return sum(len(keys) for keys in self.deletes.values())


class Span(NamedTuple):
    """Consecutive messages of one partition, as a batch counts them: offsets `first` to
    `last` (in order, with gaps where the log has them), `messages` of them, of `size` bytes of
    keys and values in all, and the Kafka timestamps (ms since the epoch; None: none) of the
    first and the last of them. A NamedTuple: one is built per message the general way."""

    topic: str
    partition: int
    first: int
    last: int
    messages: int
    size: int
    first_timestamp: int | None
    last_timestamp: int | None


class _Partition:
    __slots__ = (
        "byte_count",
        "first_offset",
        "first_timestamp",
        "last_timestamp",
        "message_count",
        "next_offset",
        "started",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, first_offset: int, started: float, first_timestamp: int | None
    ) -> None:
        self.tp = tp
        self.first_offset = first_offset
        self.next_offset = first_offset
        self.started = started
        self.first_timestamp = first_timestamp
        self.last_timestamp = first_timestamp
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
        self._keys: dict[sa.Table, KeyText] = {}
        # Bytes per message in the last batch taken (None before the first): how many more
        # messages fit under max_bytes.
        self._message_size: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._row_counts: dict[sa.Table, int] = {}
        # Per table: the keys whose latest message is a tombstone, by their COPY text.
        self._deletes: dict[sa.Table, dict[tuple[str, ...], Values]] = {}
        self._dead: list[DeadLetter] = []
        self._message_count = 0
        self._byte_count = 0
        self._started: float | None = None

    @property
    def message_count(self) -> int:
        return self._message_count

    @property
    def byte_count(self) -> int:
        return self._byte_count

    def add(
        self,
        span: Span,
        rows: Sequence[Row] = (),
        *,
        table: sa.Table | None = None,
        deletes: Iterable[Deletion] = (),
        dead_letter: DeadLetter | None = None,
    ) -> None:
        """Account for the messages of `span`, with the rows they map to, the keys they delete
        and, for a message that goes to the dead-letter destination instead of its tables, its
        dead letter (any may be empty: an ignored tombstone still moves its partition's
        offset). `table`: every row is a row of it and none a truncation (a run of the fast
        path, one row per message), so they are counted at once."""
        self._advance(span)
        if dead_letter is not None:
            self._dead.append(dead_letter)
        if table is None:
            for row_table, row in rows:
                self._count_row(row_table, row)
        else:
            counts = self._row_counts
            counts[table] = counts.get(table, 0) + len(rows)
            pending = self._deletes.get(table)
            if pending:  # written again after its tombstone: upserted, not deleted
                keys = self._keys_of(table)
                for _, row in rows:
                    pending.pop(keys.of_row(row), None)
        for delete_table, key in deletes:
            self._deletes.setdefault(delete_table, {})[self._keys_of(delete_table).of_key(key)] = (
                key
            )

    def _count_row(self, table: sa.Table, row: RowValues) -> None:
        if type(row) is Truncation:
            return  # a table emptied in order (see sink.writer), not a row written
        counts = self._row_counts
        counts[table] = counts.get(table, 0) + 1
        pending = self._deletes.get(table)
        if pending:  # written again after its tombstone: upserted, not deleted
            pending.pop(self._keys_of(table).of_row(row), None)

    def _keys_of(self, table: sa.Table) -> KeyText:
        keys = self._keys.get(table)
        if keys is None:
            keys = self._keys[table] = KeyText(table)
        return keys

    def next_offset(self, tp: TopicPartition) -> int | None:
        """Where the batch ends in this partition, if it holds any of its messages."""
        part = self._partitions.get(tp)
        return None if part is None else part.next_offset

    def _advance(self, span: Span) -> None:
        topic, partition, offset, last, count, size, first_timestamp, last_timestamp = span
        # A plain tuple finds the TopicPartition key (equal, same hash) without building one.
        part: _Partition | None = self._partitions.get((topic, partition))  # type: ignore[call-overload]
        if part is None:
            now = self._clock()
            tp = TopicPartition(topic, partition)
            part = self._partitions[tp] = _Partition(tp, offset, now, first_timestamp)
            if self._started is None:
                self._started = now
        elif offset < part.next_offset:
            raise SinkError(
                f"{topic}[{partition}]@{offset}: offset goes back (the batch is at "
                f"{part.next_offset}); a batch must be taken and abandoned when its partitions "
                f"are revoked or re-positioned"
            )
        # Offsets may have gaps (compaction, transaction markers): never assume +1.
        part.next_offset = last + 1
        part.last_timestamp = last_timestamp
        part.message_count += count
        part.byte_count += size
        self._message_count += count
        self._byte_count += size

    def room(self, most: int) -> int:
        """How many messages to take in one go (at least 1, at most `most`): as many as fit
        under max_messages and, at the size of this batch's messages so far (else the last
        batch's), under max_bytes, so that a batch of large messages passes max_bytes by about
        one message. (A consume call that waits for more messages keeps fetching meanwhile:
        what it returns is not bounded by librdkafka's queue.)"""
        left = self.max_messages - self._message_count
        size = self._message_size
        if self._message_count:  # the batch's own messages say more than the last batch's
            size = self._byte_count // self._message_count
        if size:
            left = min(left, (self.max_bytes - self._byte_count) // size)
        return max(1, min(most, left))

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

    def first_timestamps(self) -> dict[TopicPartition, int]:
        """`Batch.first_timestamps` of the batch so far. Safe to call from another thread
        (a metrics scrape) while this one adds to the batch."""
        return _timestamps(list(self._partitions.values()), last=False)

    def holds_any(self, partitions: Iterable[TopicPartition]) -> bool:
        """Whether the batch holds messages of these partitions (its rows went out already:
        when they are revoked, the batch must be abandoned)."""
        return any(TopicPartition(*tp) in self._partitions for tp in partitions)

    def take(self) -> Batch:
        """Hand over the batch so far (possibly empty) and start a new one."""
        batch = Batch(
            row_counts=self._row_counts,
            deletes={table: tuple(keys.values()) for table, keys in self._deletes.items()},
            dead_letters=tuple(self._dead),
            next_offsets={tp: p.next_offset for tp, p in self._partitions.items()},
            first_offsets={tp: p.first_offset for tp, p in self._partitions.items()},
            message_count=self._message_count,
            byte_count=self._byte_count,
            partition_sizes={
                tp: (p.message_count, p.byte_count) for tp, p in self._partitions.items()
            },
            first_timestamps=_timestamps(self._partitions.values(), last=False),
            last_timestamps=_timestamps(self._partitions.values(), last=True),
        )
        if self._message_count:
            self._message_size = max(1, self._byte_count // self._message_count)
        self._reset()
        return batch


def _timestamps(partitions: Iterable[_Partition], *, last: bool) -> dict[TopicPartition, int]:
    """The Kafka timestamp of each partition's first (or last) message, where it has one."""
    found = {p.tp: p.last_timestamp if last else p.first_timestamp for p in partitions}
    return {tp: timestamp for tp, timestamp in found.items() if timestamp is not None}


class KeyText:
    """A primary key as its COPY text, the one form shared by row tuples, `CopyRow` lines,
    `CopyTuple`s and the key tuples of tombstones; equal keys have equal text (the mapping
    normalises them)."""

    def __init__(self, table: sa.Table) -> None:
        encoders = copy_encoders(table)
        self._indexes = [i for i, column in enumerate(table.columns) if column.primary_key]
        self._encoders = [encoders[i] for i in self._indexes]
        # A CopyTuple comes from the native line, whose key columns are integers or text:
        # whether each key column is an integer, by column index.
        self._integers = {i: isinstance(table.columns[i].type, sa.Integer) for i in self._indexes}
        self._last_key = max(self._indexes, default=-1)

    def of_row(self, row: RowValues) -> tuple[str, ...]:
        """The key of a row tuple, of a line of COPY text or of a binary COPY tuple."""
        if type(row) is CopyRow:
            fields = row[:-1].split("\t")
            return tuple(fields[i] for i in self._indexes)
        values: Any = self._key_values(row) if type(row) is CopyTuple else row
        return tuple(encode(values[i]) for encode, i in zip(self._encoders, self._indexes))

    def _key_values(self, row: bytes) -> dict[int, object]:
        """The key columns' values of a binary COPY tuple, by column index."""
        values: dict[int, object] = {}
        wanted = self._integers
        at = 2  # past the field count
        for index in range(self._last_key + 1):
            size = int.from_bytes(row[at : at + 4], "big", signed=True)
            at += 4
            field = row[at : at + max(size, 0)]
            at += max(size, 0)
            if index in wanted:
                if size < 0:
                    values[index] = None
                elif wanted[index]:
                    values[index] = int.from_bytes(field, "big", signed=True)
                else:
                    values[index] = field.decode()
        return values

    def of_key(self, key: Values) -> tuple[str, ...]:
        """The key of a tombstone's key tuple."""
        return tuple(encode(value) for encode, value in zip(self._encoders, key))
