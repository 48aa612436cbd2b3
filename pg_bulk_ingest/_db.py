"""The driver connection under a SQLAlchemy Connection: plain SQL and COPY, psycopg or psycopg2.

Statements go straight to the DBAPI cursor so that SQLAlchemy never parses our SQL (a `:name`
inside a JSON comment is not a bind parameter); transactions stay SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

# psycopg2 pulls COPY data from a file object in reads of "this size"; ours returns one chunk
# per read whatever the size, so this only has to be positive.
_PSYCOPG2_COPY_READ_SIZE = 1 << 20


class _ChunkReader:
    """A file object for psycopg2's `copy_expert` whose reads are the next chunks of COPY data,
    text (str) or binary (bytes), a chunk longer than the read's `size` in pieces: psycopg2
    sends each read as one CopyData message, which PostgreSQL refuses past 1 GB by closing the
    connection."""

    def __init__(self, chunks: Iterable[str | bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk: str | bytes = b""
        self._at = 0  # how much of `_chunk` was read
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> str | bytes:
        if self._at >= len(self._chunk):
            try:
                self._chunk, self._at = next(self._chunks, b""), 0
            except BaseException as error:  # psycopg2 would replace it by a QueryCanceled
                self.error = error
                raise
            if size < 0 or len(self._chunk) <= size:
                self._at = len(self._chunk)
                return self._chunk
        start = self._at
        self._at = len(self._chunk) if size < 0 else start + size
        return self._chunk[start : self._at]


class Db:
    def __init__(self, conn: sa.engine.Connection) -> None:
        self.conn = conn
        self.psycopg2 = conn.dialect.driver == "psycopg2"
        if conn.dialect.driver not in ("psycopg", "psycopg2"):
            raise ValueError(
                f"pg_bulk_ingest needs the psycopg or psycopg2 driver, not {conn.dialect.driver!r}"
            )

    @property
    def server_version(self) -> tuple[int, int]:
        """The server's version, as SQLAlchemy read it on connecting: (15, 18) for 15.18;
        (0, 0) where it is not known."""
        version = self.conn.dialect.server_version_info or ()
        major, minor, *_ = [*(part for part in version if isinstance(part, int)), 0, 0]
        return major, minor

    def _cursor(self) -> Any:
        return self.conn.connection.cursor()

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> None:
        with self._cursor() as cursor:
            cursor.execute(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def last_rows(self, *statements: str) -> list[tuple[Any, ...]]:
        """Runs the statements (without parameters) in one round trip, in order: the rows of
        the last."""
        with self._cursor() as cursor:
            cursor.execute("; ".join(statements))
            # psycopg (3) stands on the first statement's result; psycopg2 keeps the last.
            while cursor.description is None and not self.psycopg2 and cursor.nextset():
                pass
            return list(cursor.fetchall())

    def value(self, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def copy_in(self, sql: str, chunks: Iterable[str | bytes]) -> None:
        """Runs `COPY ... FROM STDIN`, sending each chunk as it is produced: text (str) for the
        text format, bytes for binary (whose header and trailer are the caller's).

        An exception raised by `chunks` aborts the COPY and propagates unchanged.
        """
        with self._cursor() as cursor:
            if self.psycopg2:
                reader = _ChunkReader(chunks)
                try:
                    cursor.copy_expert(sql, reader, size=_PSYCOPG2_COPY_READ_SIZE)
                except Exception:
                    if reader.error is not None:
                        raise reader.error from None
                    raise
            else:
                with cursor.copy(sql) as copy:
                    for chunk in chunks:
                        copy.write(chunk)


def sqlstate(error: BaseException) -> str:
    """The SQLSTATE of a driver error, psycopg or psycopg2; "" for one without."""
    return str(getattr(error, "sqlstate", None) or getattr(error, "pgcode", None) or "")
