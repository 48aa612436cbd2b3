"""One batch's rows, routed per table and streamed with COPY while they are encoded.

The COPY of a table is open while consecutive rows are for it: its text goes out in chunks as
it is encoded, so PostgreSQL parses one chunk while Python encodes the next. Rows for the other
tables wait in bounded buffers, sent by their own COPY when full or at the end of the batch.
Rows for a table outside the metadata passed to `ingest` are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

import sqlalchemy as sa

from ._db import Db
from ._encode import RowEncoder, failing_column
from ._errors import DataError, SchemaError
from ._schema import WantedTable
from ._sql import ident, idents, qualified
from ._upsert import upsert_sql

# PostgreSQL SQLSTATE classes that mean a value did not fit its column: data exceptions (22)
# and a NULL in a NOT NULL column (23502).
_BAD_VALUE_STATES = ("22", "23502")
# Characters of COPY text per write: large enough that the per-write cost vanishes, small
# enough that the server starts parsing early and holds little memory (~128 KiB of ASCII).
_CHUNK_CHARS = 128 * 1024

Line = tuple[sa.Table, str]


@dataclass(frozen=True)
class Target:
    """Where one table's rows go in this batch."""

    wanted: WantedTable
    encode: RowEncoder
    name: str
    staging: Optional[str]


def _sqlstate(error: Exception) -> str:
    return str(getattr(error, "sqlstate", None) or getattr(error, "pgcode", None) or "")


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
        self._buffers: dict[sa.Table, list[str]] = {table: [] for table in targets}
        self._staged: set[sa.Table] = set()
        self._full: Optional[sa.Table] = None
        self.counts: dict[sa.Table, int] = dict.fromkeys(targets, 0)

    def write(self, rows: Iterable[tuple[sa.Table, Any]]) -> None:
        lines = self._encoded(rows)
        for table, line in lines:
            self._buffers[table].append(line)
            self._copy(table, lines)
            while self._full is not None:
                self._copy(self._full, lines)
        for table, buffer in self._buffers.items():
            if buffer:
                self._copy(table, iter(()))

    def _encoded(self, rows: Iterable[tuple[sa.Table, Any]]) -> Iterator[Line]:
        targets = self._targets
        for position, (table, row) in enumerate(rows):
            try:
                target = targets[table]
            except (KeyError, TypeError):
                if not isinstance(table, sa.Table):
                    raise SchemaError(
                        f"row {position} of the batch is for {table!r}, which is not a table"
                    ) from None
                self._skip(table)  # as the public library does: callers share one generator
                continue
            try:
                yield table, target.encode(row)
            except Exception as error:
                raise self._data_error(target, row, position, error) from error

    @staticmethod
    def _data_error(target: Target, row: Any, position: int, error: Exception) -> DataError:
        spec, types = target.wanted.spec, target.wanted.types
        try:
            index, cause = failing_column(types, row)
        except TypeError:
            index, cause = None, error
        column = spec.columns[index].name if index is not None else None
        return DataError(spec.display, column, position, f"{type(cause).__name__}: {cause}")

    def _chunks(self, table: sa.Table, lines: Iterator[Line]) -> Iterator[str]:
        """COPY text of `table`: its buffer, then its next rows from `lines` until it has sent
        `max_rows`, another table's buffer fills (that table is `_full` then) or `lines` ends."""
        buffers, max_rows = self._buffers, self._max_rows
        chunk = buffers[table]
        buffers[table] = []
        count = len(chunk)
        size = sum(map(len, chunk))
        self._full = None
        while count < max_rows:
            for other, line in lines:
                if other is table:
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
            yield "".join(chunk)
            chunk, size = [], 0
        if chunk:
            yield "".join(chunk)
        self.counts[table] += count

    def _copy(self, table: sa.Table, lines: Iterator[Line]) -> None:
        target = self._targets[table]
        spec = target.wanted.spec
        destination = (
            f"pg_temp.{ident(target.staging)}"
            if target.staging
            else qualified(spec.schema, target.name)
        )
        if target.staging and table in self._staged:
            self._db.execute(f"TRUNCATE {destination}")
        try:
            self._db.copy_in(
                f"COPY {destination} ({idents(spec.column_names)}) FROM STDIN",
                self._chunks(table, lines),
            )
        except Exception as error:
            if not _sqlstate(error).startswith(_BAD_VALUE_STATES):
                raise
            raise DataError(spec.display, None, None, str(error).strip()) from error
        if target.staging:
            self._staged.add(table)
            self._db.execute(upsert_sql(spec, target.name, target.staging))
