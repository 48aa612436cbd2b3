"""From consumed messages to the batch being read: each topic's path (the native line, the
compiled line, or the general way: decode, then map), and the `Intake` that takes every
consumed message along its topic's path into the batcher and hands back the rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import orjson
import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException

from pg_bulk_ingest import CopyRow, CopyTuple

from .batcher import Batcher, DeadLetter, Span
from .config import ErrorPolicy, Format
from .consumer import UNREADABLE_MESSAGE, is_fatal
from .copytext import LineFunction
from .errors import (
    BadMessageError,
    DecodeError,
    MessageError,
    RejectedError,
    SchemaChangedError,
    SinkError,
)
from .records import Message, TopicPartition, message_from_kafka, timestamp_ms
from .tables import Deletion, Row

try:
    from . import _copyline
except ImportError:  # not built: the Python form of the fast path does the same, slower
    _copyline = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class Mapped(NamedTuple):
    """What one message contributes to its batch (a NamedTuple: one is built per message)."""

    rows: tuple[Row, ...] = ()
    deletes: tuple[Deletion, ...] = ()


Handler = Callable[[Message], Mapped]
# Builds a NamedTuple without its Python-level __new__ (a third of the cost), for every message.
_new_tuple = tuple.__new__
_loads = orjson.loads
# How `decode` reads a key, per format; a key it cannot read raises ValueError (bytes: none).
KEY_READERS: dict[Format, Callable[[bytes], object] | None] = {
    Format.JSON: _loads,
    Format.STRING: bytes.decode,
    Format.BYTES: None,
}
# The same checks in the native line (sink/_copyline.c's `enum key_format`).
_NATIVE_KEY_FORMATS = {Format.BYTES: 0, Format.STRING: 1, Format.JSON: 2}


class FastPath:
    """The common case, mapped straight from a message's key and value bytes: a topic that
    feeds one table without `map_record`, whose JSON object values give every column from a
    top-level field. `row(key, value)` gives the same `CopyRow` as the general way (a jsonb or
    numeric value may be spelled differently: the same value), or None where the general way
    would do more (a tombstone, a value that is not a non-empty JSON object, a key or value
    that does not decode, a value that does not map): the message then takes the general way,
    which raises the error that names the message.

    Where every column has a native kind (see `copytext.native_kind`) and the C extension is
    built, `row` is its `Line.row`: it reads the bytes without making Python objects and hands
    anything it is not sure of to the Python form, `python_row`.

    With `binary_columns` (a table the ingest core writes in binary COPY, see
    `Mapper.binary_columns`), the native line gives a `CopyTuple`, and what it is not sure of
    takes the general way, whose values (`Mapper.values`) the core encodes to the same bytes."""

    __slots__ = ("_line", "_read_key", "native", "native_columns", "row", "table")

    def __init__(
        self,
        table: sa.Table,
        line: LineFunction,
        key_format: Format,
        native_columns: Sequence[tuple[str, int, int, int, bool]] | None = None,
        binary_columns: Sequence[int] | None = None,
    ) -> None:
        self.table = table
        self._line = line
        self._read_key = KEY_READERS[key_format]
        self.native_columns = native_columns
        self.row: Callable[[bytes | None, bytes | None], CopyRow | CopyTuple | None] = (
            self.python_row
        )
        self.native = False
        if _copyline is not None and native_columns is not None:
            key = _NATIVE_KEY_FORMATS[key_format]
            if binary_columns is None:
                native = _copyline.Line(native_columns, CopyRow, self.python_row, key)
            else:
                native = _copyline.Line(
                    native_columns, CopyTuple, _general_way, key, binary=binary_columns
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


def _general_way(key: bytes | None, value: bytes | None) -> None:
    return None  # a binary line's fallback: the message takes the general way


class RowPath(Protocol):
    """What the intake asks of a fast path (FastPath, sink.avroline.AvroFastPath): its table,
    and `row(key, value)`, the message's row or None for the general way."""

    @property
    def table(self) -> sa.Table: ...
    @property
    def row(self) -> Callable[[bytes | None, bytes | None], CopyRow | CopyTuple | None]: ...


class TopicPath:
    """One topic's way from a message to what its batch holds: its fast path (native or
    compiled; None when every message of the topic takes the general way), and the general
    way, `lines`, which takes any message and raises DecodeError for bad input."""

    __slots__ = ("fast", "lines")

    def __init__(self, fast: RowPath | None, lines: Handler) -> None:
        self.fast = fast
        self.lines = lines


class Intake:
    """Takes consumed messages along their topics' paths into the batch being read: `add`
    accounts for each in the batcher and returns the rows to stream to PostgreSQL.

    It holds what the worker's thread and the thread reading ahead (see sink.readahead) both
    read and change about the batch being read; one thread at a time uses it:

    - `failing`: a bad message met under errors.policy = "fail", or a schema the tables lack
      (SchemaChangedError), after others of the batch: reading stopped there, the batch
      commits what came before, then this is raised;
    - `spoiled`: partitions of the batch were revoked (or their topic created again) after its
      rows went out: it must not commit;
    - `reject(at, reason)`: an offset PostgreSQL rejected, set aside as a dead letter when it
      is read again (meanwhile every message takes the general way); `rejecting` says whether
      any waits;
    - `forget()`: drops the batch so far with all of the above but the rejected offsets;
    - `next_offset(tp)`: where a partition is read next, as the batch so far says;
    - `paths`: the topics' paths, made anew when the tables' columns are derived again.
    """

    def __init__(
        self,
        paths: Callable[[str], TopicPath],
        batcher: Batcher,
        positions: Mapping[TopicPartition, int],
        policy: ErrorPolicy,
        *,
        out_of_range: Callable[[TopicPartition], None],
        seek: Callable[[dict[TopicPartition, int]], None],
    ) -> None:
        self.paths = paths
        self._batcher = batcher
        # The partitions assigned: a message of any other was fetched before a revocation.
        self._positions = positions
        self._policy = policy
        # When the client finds the offset it fetches from gone; and how to read on elsewhere.
        self._out_of_range = out_of_range
        self._seek = seek
        self.failing: SinkError | None = None
        self.spoiled = False
        self._rejected: dict[tuple[str, int, int], str] = {}
        # Partitions sought past a message the client cannot read, in this consume call.
        self._seeked: set[TopicPartition] = set()

    @property
    def rejecting(self) -> bool:
        """Whether offsets PostgreSQL rejected wait to be read again."""
        return bool(self._rejected)

    def reject(self, at: tuple[str, int, int], reason: str) -> None:
        self._rejected[at] = reason

    def forget(self) -> None:
        self._batcher.take()
        self.spoiled = False
        self.failing = None

    def next_offset(self, tp: TopicPartition) -> int:
        """The offset of an assigned partition's next message: where the batch read ends in
        it, else its stored position (-1: none stored)."""
        expected = self._batcher.next_offset(tp)
        return self._positions[tp] if expected is None else expected

    def add(self, msgs: list[Any]) -> list[Row]:
        """Accounts for consumed messages in the batch; returns the rows they map to, up to a
        bad message that stops the worker (see `failing`).

        A message its topic's fast path maps goes from the consumer's message to its row, and
        the batcher takes each run of such messages of one partition at once; any other
        message, and every one while rejected offsets are pending, takes the general way
        (`_one`). This loop runs for every message."""
        self._seeked.clear()
        rows: list[Row] = []
        paths, positions, add = self.paths, self._positions, self._batcher.add
        fast = not self._rejected
        # The run: messages of one partition that took the fast path, with offsets first..last
        # and `size` bytes; rows[start:] are their rows, all of `table`.
        topic, partition, held, table, row_of = "", -1, False, None, None
        start, first, last, size = 0, -1, -1, 0
        # Each message of a run adds one row, each other message is counted here less the rows
        # it added: msgs[i + shift] is the message of the run's row rows[i].
        shift = 0

        def account_for_run() -> None:
            end = len(rows)
            if end > start:
                first_at, last_at = (
                    timestamp_ms(msgs[start + shift]),
                    timestamp_ms(msgs[end - 1 + shift]),
                )
                run = (topic, partition, first, last, end - start, size, first_at, last_at)
                add(_new_tuple(Span, run), rows[start:], table=table)

        for msg in msgs:
            error = msg.error()
            if error is None:
                offset = msg.offset()
                if msg.partition() != partition or msg.topic() != topic or offset <= last:
                    account_for_run()
                    topic, partition = msg.topic(), msg.partition()
                    start, first, last, size = len(rows), -1, -1, 0
                    # Not in positions: fetched before its partition was revoked, and skipped.
                    held = (topic, partition) in positions
                    path = paths(topic).fast if fast and held else None
                    table, row_of = (None, None) if path is None else (path.table, path.row)
                key, value = msg.key(), msg.value()
                # What the batch byte limit counts, for every message.
                bytes_ = (len(key) if key else 0) + (len(value) if value else 0)
                if row_of is not None:
                    row = row_of(key, value)
                    if row is not None:
                        if first < 0:
                            first = offset
                        last = offset
                        size += bytes_
                        rows.append((table, row))  # type: ignore[arg-type]
                        continue
                account_for_run()  # in offset order, before the message that ends it
                added = self._one(msg, topic, partition, offset, bytes_) if held else ()
            else:
                account_for_run()
                self._event(msg, error)
                added = ()
            rows.extend(added)
            shift += 1 - len(added)
            start, first, size = len(rows), -1, 0
            if self.failing is not None:
                break  # reading stops at the bad message (errors.policy = "fail")
        account_for_run()
        return rows

    def _one(self, msg: Any, topic: str, partition: int, offset: int, size: int) -> tuple[Row, ...]:
        """The general way of one message (at these coordinates, of `size` bytes) of an
        assigned partition: accounts for it in the batch; returns the rows it maps to."""
        message = message_from_kafka(msg)
        timestamp = message.timestamp_ms
        one = _new_tuple(Span, (topic, partition, offset, offset, 1, size, timestamp, timestamp))
        if self._rejected:
            rejected = self._rejected.pop((topic, partition, offset), None)
            if rejected is not None:
                self._bad(message, RejectedError(message, rejected), one)
                return ()
        try:
            mapped = self.paths(topic).lines(message)
        except DecodeError as exc:
            self._bad(message, exc, one)
            return ()
        except SchemaChangedError as exc:
            self._stop_at(exc)  # read again once the columns are derived again
            return ()
        self._batcher.add(one, mapped.rows, deletes=mapped.deletes)
        return mapped.rows

    def _event(self, msg: Any, error: KafkaError) -> None:
        """A consumer error in place of a message."""
        if is_fatal(error):
            raise KafkaException(error)
        tp = TopicPartition(msg.topic(), msg.partition())
        if error.code() == KafkaError._AUTO_OFFSET_RESET and tp in self._positions:
            self._out_of_range(tp)
        elif error.code() not in UNREADABLE_MESSAGE or tp not in self._positions:
            logger.warning("consumer: %s", error)
        elif tp not in self._seeked:  # later reports in one consume call predate its seek
            self._seeked.add(tp)
            self._unreadable(msg, error)

    def _unreadable(self, msg: Any, error: KafkaError) -> None:
        """A message the client cannot read is bad input like any other: a dead letter with
        its coordinates (or a stop, per errors.policy); then reading goes on after it.

        The message is the partition's next one: the client reports a corrupt record batch at
        its first offset (or at an offset read from the corrupt bytes), again and again, so
        each report sets aside the next offset, until a readable message comes."""
        tp = TopicPartition(msg.topic(), msg.partition())
        expected = self.next_offset(tp)
        offset = expected if expected >= 0 else msg.offset()
        message = Message(tp.topic, tp.partition, offset, None, None, None)
        reason = f"the Kafka client cannot read it: {error.str()}"
        error_ = DecodeError(message.coordinates, reason, code="unreadable")
        self._bad(message, error_, Span(tp.topic, tp.partition, offset, offset, 1, 0, None, None))
        self._seek({tp: offset + 1})

    def _bad(self, message: Message, error: MessageError, span: Span) -> None:
        """A message that cannot be written: a dead letter, or under errors.policy = "fail" a
        stop, at once if the batch holds nothing before it, else once that has committed."""
        if self._policy is ErrorPolicy.FAIL:
            failing = BadMessageError(
                f'{error}. Stopping: errors.policy is "fail"; everything before it is '
                f"committed. To skip it, stop the group's workers and run: pg-kafka-sink reset "
                f"--to {message.topic}:{message.partition}={message.offset + 1}; or set "
                f'errors.policy to "dead-letter-topic" or "dead-letter-table" to set bad '
                f"messages aside and carry on"
            )
            failing.__cause__ = error
            self._stop_at(failing)
            return
        self._batcher.add(span, dead_letter=DeadLetter(message, error))

    def _stop_at(self, error: SinkError) -> None:
        """Reading stops at the message that raised `error`: raised at once if the batch holds
        nothing before it, else once that has committed (see Worker._stream)."""
        if not self._batcher.message_count:
            raise error
        self.failing = error
