"""One batch's rows, routed per table into bounded buffers of COPY text, flushed with COPY."""

from __future__ import annotations

from collections.abc import Iterable
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
    """Buffers encoded rows per table and writes each buffer when full and at the end."""

    def __init__(self, db: Db, targets: dict[sa.Table, Target], max_rows: int) -> None:
        self._db = db
        self._targets = targets
        self._max_rows = max_rows
        self._buffers: dict[sa.Table, list[str]] = {table: [] for table in targets}
        self._staged: set[sa.Table] = set()
        self.counts: dict[sa.Table, int] = dict.fromkeys(targets, 0)

    def write(self, rows: Iterable[tuple[sa.Table, Any]]) -> None:
        targets, buffers, max_rows = self._targets, self._buffers, self._max_rows
        position = -1
        for position, (table, row) in enumerate(rows):
            try:
                target = targets[table]
            except (KeyError, TypeError):
                raise SchemaError(
                    f"row {position} of the batch is for {getattr(table, 'fullname', table)!r}, "
                    "which is not a table of the metadata passed to ingest"
                ) from None
            try:
                line = target.encode(row)
            except Exception as error:
                raise self._data_error(target, row, position, error) from error
            buffer = buffers[table]
            buffer.append(line)
            if len(buffer) >= max_rows:
                self._flush(table)
        for table in self._targets:
            self._flush(table)

    @staticmethod
    def _data_error(target: Target, row: Any, position: int, error: Exception) -> DataError:
        spec, types = target.wanted.spec, target.wanted.types
        try:
            index, cause = failing_column(types, row)
        except TypeError:
            index, cause = None, error
        column = spec.columns[index].name if index is not None else None
        return DataError(spec.display, column, position, f"{type(cause).__name__}: {cause}")

    def _flush(self, table: sa.Table) -> None:
        lines = self._buffers[table]
        if not lines:
            return
        self._buffers[table] = []
        target = self._targets[table]
        spec = target.wanted.spec
        self.counts[table] += len(lines)
        destination = (
            f"pg_temp.{ident(target.staging)}"
            if target.staging
            else qualified(spec.schema, target.name)
        )
        if target.staging and table in self._staged:
            self._db.execute(f"TRUNCATE {destination}")
        try:
            self._db.copy_from_text(
                f"COPY {destination} ({idents(spec.column_names)}) FROM STDIN", "".join(lines)
            )
        except Exception as error:
            if not _sqlstate(error).startswith(_BAD_VALUE_STATES):
                raise
            raise DataError(spec.display, None, None, str(error).strip()) from error
        if target.staging:
            self._staged.add(table)
            self._db.execute(upsert_sql(spec, target.name, target.staging))
