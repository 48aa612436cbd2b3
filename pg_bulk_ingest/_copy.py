"""One batch's rows, routed per table and streamed with COPY while they are encoded.

The COPY of a table is open while consecutive rows are for it: its data goes out in chunks as
it is encoded, so PostgreSQL parses one chunk while Python encodes the next. A COPY is binary
when its first row is a binary tuple (bytes), text when it is a text line (str); where a row of
the other kind comes (a table that turns to text mid-COPY, see `TableEncoder`, or a `CopyTuple`
after that), the COPY ends there and one of the row's kind begins.
Rows for the other tables wait in bounded buffers, sent by their own COPY when full or at the
end of the batch. Rows for a table outside the metadata passed to `ingest` are skipped. A value
PostgreSQL rejects raises a DataError naming the user's table (never the staging or new table),
the column, the value and the row of the batch, as far as PostgreSQL's error says them.
"""

from __future__ import annotations

import array
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

import sqlalchemy as sa

from ._binary import HEADER, TRAILER, TableEncoder
from ._db import Db, sqlstate
from ._encode import failing_column
from ._errors import DataError, IngestError, SchemaError
from ._schema import WantedTable
from ._sql import ident, idents, qualified
from ._upsert import merge

# PostgreSQL SQLSTATE classes that mean a value did not fit its column: data exceptions (22),
# a NULL in a NOT NULL column (23502), and a value past a limit of PostgreSQL's own (54000: one
# over 1 GB, an index entry too big for its B-tree page).
_BAD_VALUE_STATES = ("22", "23502", "54000")
# What PostgreSQL's DETAIL says of a value past 1 GB (MaxAllocSize), the most one value holds.
_PAST_FIELD_LIMIT = "Cannot enlarge string buffer"
# Characters of COPY text (or bytes of binary COPY) per write: large enough that the per-write
# cost vanishes, small enough that the server starts parsing early and holds little memory.
_CHUNK_CHARS = 128 * 1024

# One row encoded for COPY: a binary tuple, or a line of text.
Encoded = Union[str, bytes]
Line = tuple[sa.Table, Encoded]


@dataclass(frozen=True)
class Target:
    """Where one table's rows go in this batch."""

    wanted: WantedTable
    encoder: TableEncoder
    name: str
    staging: Optional[str]


def _copy_context(context: str, relation: str, columns: Iterable[str]) -> tuple[int, str, str]:
    """The line of the COPY into `relation`, the column and the value it names in the CONTEXT of
    its error (`COPY name, line 2, column amount: "x1"`; a binary COPY's names no value, and
    its lines are its tuples); 0 and "" for what it does not say, as under an lc_messages other
    than English."""
    for context_line in context.splitlines():
        found = re.match(rf"COPY {re.escape(relation)}, line (\d+)(.*)", context_line)
        if found is None:
            continue
        rest = found[2]
        for column in sorted(columns, key=len, reverse=True):
            named = f", column {column}"
            if rest == named:
                return int(found[1]), column, ""
            if rest.startswith(named + ": "):
                return int(found[1]), column, rest[len(named) + 2 :]
        return int(found[1]), "", ""
    return 0, "", ""


class _Keys:
    """The primary keys of an upserted table's rows in the batch so far, kept while no two are
    equal: `distinct` tells `merge` that the staged rows hold each key once, so they need no
    sort to keep the last row per key. Rows that are not sequences of values (`CopyRow` lines,
    `CopyTuple`s) and keys that cannot be hashed make it false. Keys equal in PostgreSQL but not
    in Python (two NaNs, a case-insensitive collation) only make the insert fail and the upsert
    run instead (see `merge`)."""

    __slots__ = ("_key", "_seen", "distinct")

    def __init__(self, indexes: list[int]) -> None:
        self._key = operator.itemgetter(*indexes)
        self._seen: set[Any] = set()
        self.distinct = True

    def add(self, row: Any) -> None:
        if not self.distinct:
            return
        seen = self._seen
        before = len(seen)
        try:
            if not isinstance(row, (tuple, list)):
                raise TypeError("not a row of values")
            seen.add(self._key(row))
        except Exception:  # unhashable, or a row too short: its own encoder names the fault
            before = len(seen)
        if len(seen) == before:
            self.distinct = False
            seen.clear()


class BatchWriter:
    """Streams each table's rows with COPY, at most `max_rows` rows per COPY and per buffer."""

    def __init__(
        self,
        db: Db,
        targets: dict[sa.Table, Target],
        max_rows: int,
        skip: Callable[[sa.Table], None],
    ) -> None:
        self._db = db
        self._targets = targets
        self._max_rows = max_rows
        self._skip = skip
        self._buffers: dict[sa.Table, list[Encoded]] = {table: [] for table in targets}
        self._staged: set[sa.Table] = set()
        self._full: Optional[sa.Table] = None
        # Where each run of consecutive rows for one table starts in the batch, and its table:
        # maps a line of a COPY back to its row of the batch when PostgreSQL rejects it. Kept
        # to 16 bytes a run: a batch alternating between tables has a run per row.
        self._run_starts = array.array("q")
        self._run_tables: list[Any] = []
        self.counts: dict[sa.Table, int] = dict.fromkeys(targets, 0)
        # The keys of each upserted table's rows (a staging table's), while they are distinct.
        self._keys = {
            table: _Keys([target.wanted.spec.column_names.index(c) for c in primary_key])
            for table, target in targets.items()
            if target.staging and (primary_key := target.wanted.spec.primary_key)
        }

    def write(self, rows: Iterable[tuple[sa.Table, Any]]) -> None:
        lines = self._encoded(rows)
        for table, line in lines:
            self._buffers[table].append(line)
            self._copy(table, lines)
            while self._full is not None:
                self._copy(self._full, lines)
        for table in self._buffers:
            while self._buffers[table]:  # once a run of its rows of one kind, binary or text
                self._copy(table, iter(()))

    def _encoded(self, rows: Iterable[tuple[sa.Table, Any]]) -> Iterator[Line]:
        targets, run_starts, run_tables = self._targets, self._run_starts, self._run_tables
        # The table of the run of rows so far, its target (None: skipped) and its encoder of
        # the moment, looked up once a run.
        current: Any = None
        target: Optional[Target] = None
        attempt: Any = None
        keys: Optional[_Keys] = None
        for position, (table, row) in enumerate(rows):
            if table is not current:
                current = table
                run_starts.append(position)
                run_tables.append(table)
                try:
                    target = targets[table]
                except (KeyError, TypeError):
                    if not isinstance(table, sa.Table):
                        raise SchemaError(
                            f"row {position} of the batch is for {table!r}, which is not a table"
                        ) from None
                    target = None
                else:
                    attempt = target.encoder.attempt
                    keys = self._keys.get(table)
            if target is None:
                self._skip(table)  # as the public library does: callers share one generator
                continue
            if keys is not None:
                keys.add(row)
            try:
                line = attempt(row)
            except Exception as error:
                line = self._after_attempt(target, row, position, error)
                attempt = target.encoder.attempt  # text, once binary could not carry a row
            yield table, line

    def _after_attempt(self, target: Target, row: Any, position: int, error: Exception) -> Encoded:
        """The row's line once binary could not carry it (the table turns to text), or the
        DataError of a row its text encoder refuses, which is encoded once only."""
        if not target.encoder.binary:
            raise self._data_error(target, row, position, error) from error
        try:
            return target.encoder.encode(row)
        except Exception as text_error:
            raise self._data_error(target, row, position, text_error) from text_error

    @staticmethod
    def _data_error(target: Target, row: Any, position: int, error: Exception) -> DataError:
        spec, types = target.wanted.spec, target.wanted.types
        try:
            index, cause = failing_column(types, row)
        except TypeError:
            index, cause = None, error
        column = spec.columns[index].name if index is not None else None
        return DataError(spec.display, column, position, f"{type(cause).__name__}: {cause}")

    def _chunks(self, table: sa.Table, lines: Iterator[Line], binary: bool) -> Iterator[Any]:
        """COPY data of `table`: its buffer, then its next rows from `lines` until it has sent
        `max_rows`, another table's buffer fills (that table is `_full` then), `lines` ends, or
        a row comes of the other kind than the COPY's (binary or text: the table is `_full`
        then, and goes on in a COPY of that row's kind)."""
        buffers, max_rows = self._buffers, self._max_rows
        kind = bytes if binary else str
        chunk = buffers[table]
        buffers[table] = []
        self._full = None
        if not isinstance(chunk[-1], kind):
            cut = next(i for i, line in enumerate(chunk) if not isinstance(line, kind))
            chunk, buffers[table] = chunk[:cut], chunk[cut:]
            self._full = table
        count = len(chunk)
        size = sum(map(len, chunk))
        join = b"".join if binary else "".join
        while count < max_rows and self._full is None:
            for other, line in lines:
                if other is table:
                    if not isinstance(line, kind):
                        buffers[table].append(line)
                        self._full = table
                        break
                    chunk.append(line)
                    count += 1
                    size += len(line)
                    if size >= _CHUNK_CHARS or count >= max_rows:
                        break
                else:
                    buffer = buffers[other]
                    buffer.append(line)
                    if len(buffer) >= max_rows:
                        self._full = other
                        break
            else:
                break  # no more rows
            if self._full is not None:
                break
            yield join(chunk)  # type: ignore[arg-type]
            chunk, size = [], 0
        if chunk:
            yield join(chunk)  # type: ignore[arg-type]
        self.counts[table] += count

    def _position(self, table: sa.Table, index: int) -> Optional[int]:
        """The row of the batch that is the `index`-th (from 0) row for `table`."""
        starts = self._run_starts
        for number, owner in enumerate(self._run_tables):
            if owner is not table:
                continue
            if number + 1 == len(starts) or index < starts[number + 1] - starts[number]:
                return starts[number] + index
            index -= starts[number + 1] - starts[number]
        return None

    def _rejected(self, target: Target, relation: str, sent: int, error: Exception) -> DataError:
        """The DataError for a row PostgreSQL rejected in the COPY into `relation` (after
        `sent` rows for the table in this batch) or in the merge: it names the user's table,
        the column, the value and the row of the batch, never the staging or new table."""
        spec = target.wanted.spec
        diag = getattr(error, "diag", None)
        primary = getattr(diag, "message_primary", None) or str(error).strip().split("\n")[0]
        detail = getattr(diag, "message_detail", None)
        line, named, value = _copy_context(
            getattr(diag, "context", None) or "", relation, spec.column_names
        )
        column: Optional[str] = getattr(diag, "column_name", None) or named or None
        reason = primary
        if value and value not in primary:
            reason = f"{reason}: {value}"
        if detail:
            reason = f"{reason} ({detail.rstrip('.')})"
            if detail.startswith(_PAST_FIELD_LIMIT):
                reason += "; PostgreSQL holds at most 1 GB in one value"
        for internal in {relation, target.name} - {spec.name}:
            reason = reason.replace(internal, spec.name)
        row = self._position(target.wanted.table, sent + line - 1) if line else None
        return DataError(spec.display, column, row, reason)

    def _copy(self, table: sa.Table, lines: Iterator[Line]) -> None:
        target = self._targets[table]
        spec = target.wanted.spec
        relation = target.staging or target.name
        destination = (
            f"pg_temp.{ident(relation)}" if target.staging else qualified(spec.schema, relation)
        )
        if target.staging and table in self._staged:
            self._db.execute(f"TRUNCATE {destination}")
        sent = self.counts[table]
        binary = isinstance(self._buffers[table][0], bytes)
        sql = f"COPY {destination} ({idents(spec.column_names)}) FROM STDIN"
        chunks = self._chunks(table, lines, binary)
        if binary:
            if not target.encoder.takes_tuples:
                raise IngestError(
                    f"{spec.display}: a CopyTuple row needs binary COPY, which ingest writes only "
                    "where the server and client encodings are UTF8; send rows as values or "
                    "CopyRow lines to this database"
                )
            sql += " (FORMAT binary)"
            chunks = itertools.chain((HEADER,), chunks, (TRAILER,))
        try:
            self._db.copy_in(sql, chunks)
            if target.staging:
                self._staged.add(table)
                keys = self._keys.get(table)
                merge(
                    self._db, spec, target.name, target.staging, keys is not None and keys.distinct
                )
        except Exception as error:
            if not sqlstate(error).startswith(_BAD_VALUE_STATES):
                raise
            raise self._rejected(target, relation, sent, error) from error
