"""Upsert through a TEMPORARY staging table: COPY into it, keep the last row per key, merge.

The staging table is temporary (no WAL, gone with the session) and emptied at each commit.
"""

from __future__ import annotations

import uuid

from ._schema import TableSpec
from ._sql import ident, idents, qualified

SEQUENCE_COLUMN = "pg_bulk_ingest_row"


def staging_name() -> str:
    return f"pg_bulk_ingest_stage_{uuid.uuid4().hex[:16]}"


def create_staging_sql(table: TableSpec, name: str) -> str:
    columns = ", ".join(f"{ident(c.name)} {c.type}" for c in table.columns)
    return (
        f"CREATE TEMPORARY TABLE {ident(name)} ({columns}, "
        f"{ident(SEQUENCE_COLUMN)} bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS"
    )


def drop_staging_sql(name: str) -> str:
    return f"DROP TABLE IF EXISTS pg_temp.{ident(name)}"


def upsert_sql(table: TableSpec, target: str, staging: str) -> str:
    """Merge of the staging rows into `target`; a later row for a key wins over an earlier."""
    columns = idents(table.column_names)
    key = idents(table.primary_key)
    updates = [c for c in table.column_names if c not in table.primary_key]
    action = (
        "DO UPDATE SET " + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updates)
        if updates
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {qualified(table.schema, target)} ({columns}) "
        f"SELECT DISTINCT ON ({key}) {columns} FROM pg_temp.{ident(staging)} "
        f"ORDER BY {key}, {ident(SEQUENCE_COLUMN)} DESC "
        f"ON CONFLICT ({key}) {action}"
    )
