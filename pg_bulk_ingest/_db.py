"""The driver connection under a SQLAlchemy Connection: plain SQL and COPY, psycopg or psycopg2.

Statements go straight to the DBAPI cursor so that SQLAlchemy never parses our SQL (a `:name`
inside a JSON comment is not a bind parameter); transactions stay SQLAlchemy's.
"""

from __future__ import annotations

import io
from typing import Any

import sqlalchemy as sa

# psycopg2 pulls COPY data from a file object in reads of this size: large reads mean few calls.
_PSYCOPG2_COPY_READ_SIZE = 1 << 20


class Db:
    def __init__(self, conn: sa.engine.Connection) -> None:
        self.conn = conn
        self.psycopg2 = conn.dialect.driver == "psycopg2"
        if conn.dialect.driver not in ("psycopg", "psycopg2"):
            raise ValueError(
                f"pg_bulk_ingest needs the psycopg or psycopg2 driver, not {conn.dialect.driver!r}"
            )

    def _cursor(self) -> Any:
        return self.conn.connection.cursor()

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> None:
        with self._cursor() as cursor:
            cursor.execute(sql, params)

    def rows(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def value(self, sql: str, params: tuple[Any, ...] | None = None) -> Any:
        found = self.rows(sql, params)
        return found[0][0] if found else None

    def copy_from_text(self, sql: str, text: str) -> None:
        """Runs `COPY ... FROM STDIN` with `text` as its data, in PostgreSQL's text format."""
        with self._cursor() as cursor:
            if self.psycopg2:
                cursor.copy_expert(sql, io.StringIO(text), size=_PSYCOPG2_COPY_READ_SIZE)
            else:
                with cursor.copy(sql) as copy:
                    copy.write(text)
