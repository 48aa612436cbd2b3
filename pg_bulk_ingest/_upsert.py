"""Upsert through a TEMPORARY staging table: COPY into it, keep the last row per key, merge.

The staging table is temporary (no WAL, gone with the session) and emptied at each commit; it is
created once per ingest call. The merge plan (scan, sort, insert) has no join, so the staging
table needs no statistics.
"""

from __future__ import annotations

import uuid

from ._schema import TableSpec
from ._sql import ident, idents, qualified

SEQUENCE_COLUMN = "pg_bulk_ingest_row"
# The target's alias in the merge; `"live".*` is the whole row even if a column is named live.
_LIVE = ident("live")


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
    """Merge of the staging rows into `target`; a later row for a key wins over an earlier.

    A live row whose stored image already equals the new one is left alone: re-delivered rows
    (a replay after a crash) then cost an index probe instead of a new row version, its index
    entries and WAL. `*<>` compares binary images, so NUMERIC 1.5 vs 1.50 or float 0.0 vs -0.0
    still count as changes.
    """
    columns = idents(table.column_names)
    key = idents(table.primary_key)
    updates = [c for c in table.column_names if c not in table.primary_key]
    action = (
        "DO UPDATE SET "
        + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updates)
        + f" WHERE {_LIVE}.* *<> EXCLUDED.*"
        if updates
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {qualified(table.schema, target)} AS {_LIVE} ({columns}) "
        f"SELECT DISTINCT ON ({key}) {columns} FROM pg_temp.{ident(staging)} "
        f"ORDER BY {key}, {ident(SEQUENCE_COLUMN)} DESC "
        f"ON CONFLICT ({key}) {action}"
    )
