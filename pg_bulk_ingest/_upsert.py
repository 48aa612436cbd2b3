"""Upsert through a TEMPORARY staging table: COPY into it, keep the last row per key, merge.

The staging table is temporary (no WAL, gone with the session) and emptied at each commit; it is
created once per ingest call. It has no statistics: the planner takes its last rows per key for
a few hundred (a tenth of its rows for a key of several columns), so MERGE joins them to the
target by its primary key's index, a probe per row as ON CONFLICT makes, and never scans a
target much larger than the batch.
"""

from __future__ import annotations

import uuid

from ._db import Db, sqlstate
from ._schema import TableSpec
from ._sql import ident, idents, qualified

# The name of the staging table's own column numbering its rows, but for a table that has a
# column of that name: see `sequence_column`.
SEQUENCE_COLUMN = "pg_bulk_ingest_row"
# Row numbers the staging sequence hands out per access: one access per this many rows instead
# of one per row (nearly a tenth of the staging COPY's server time for the benchmark's rows).
# The numbers still grow row after row: the temporary sequence is this session's alone.
_SEQUENCE_CACHE = 1000
# The aliases of the target and of the staging table; `"live".*` is the whole row even if a
# column is named live.
_LIVE = ident("live")
_STAGED = ident("staged")
# The savepoint that a plain INSERT or a MERGE, which a concurrent writer's row can make fail,
# runs under.
_SAVEPOINT = ident("pg_bulk_ingest_insert")
_UNIQUE_VIOLATION = "23505"
# The first server version whose MERGE gives a row another transaction updated or deleted
# meanwhile the outcome ON CONFLICT gives it, under READ COMMITTED (15.0 to 15.2 did not).
_MERGE_SINCE = (15, 3)
# The isolation level MERGE is used at: under REPEATABLE READ and SERIALIZABLE, where ON CONFLICT
# fails with a serialization error on a row updated since the snapshot, MERGE skipped such a row
# until 15.16 and 17.8.
_MERGE_ISOLATION = "read committed"


def staging_name() -> str:
    return f"pg_bulk_ingest_stage_{uuid.uuid4().hex[:16]}"


def sequence_column(table: TableSpec) -> str:
    """The name of the staging table's row number: `SEQUENCE_COLUMN`, or the first of
    `SEQUENCE_COLUMN_1`, `SEQUENCE_COLUMN_2`... that is not a column of `table`."""
    taken = set(table.column_names)
    name, number = SEQUENCE_COLUMN, 0
    while name in taken:
        number += 1
        name = f"{SEQUENCE_COLUMN}_{number}"
    return name


def create_staging_sql(table: TableSpec, name: str) -> str:
    columns = ", ".join(f"{ident(c.name)} {c.type}" for c in table.columns)
    return (
        f"CREATE TEMPORARY TABLE {ident(name)} ({columns}, "
        f"{ident(sequence_column(table))} bigint GENERATED ALWAYS AS IDENTITY "
        f"(CACHE {_SEQUENCE_CACHE})) ON COMMIT DELETE ROWS"
    )


def drop_staging_sql(name: str) -> str:
    return f"DROP TABLE IF EXISTS pg_temp.{ident(name)}"


def _last_rows_sql(table: TableSpec, staging: str) -> str:
    """The staging rows, the last one per key, in key order."""
    columns = idents(table.column_names)
    key = idents(table.primary_key)
    return (
        f"SELECT DISTINCT ON ({key}) {columns} FROM pg_temp.{ident(staging)} "
        f"ORDER BY {key}, {ident(sequence_column(table))} DESC"
    )


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
        f"{_last_rows_sql(table, staging)} "
        f"ON CONFLICT ({key}) {action}"
    )


def insert_sql(table: TableSpec, target: str, staging: str, distinct: bool = False) -> str:
    """Plain INSERT of the staging rows into `target`, the last row per key; all of them, in
    the order staged, where the caller knows each key `distinct` (no sort then)."""
    columns = idents(table.column_names)
    rows = (
        f"SELECT {columns} FROM pg_temp.{ident(staging)}"
        if distinct
        else _last_rows_sql(table, staging)
    )
    return f"INSERT INTO {qualified(table.schema, target)} ({columns}) {rows}"


def merge_sql(table: TableSpec, target: str, staging: str) -> str:
    """MERGE of the staging rows into `target`, to the outcome of `upsert_sql`.

    A matched live row whose image equals the staged one is only read: ON CONFLICT inserts the
    staged row speculatively and locks the live one before its WHERE skips the update, which is
    most of a re-load's time. The images are those of the batch's columns as records: two bare
    row constructors would be compared column by column, with a `*<>` of each column's type,
    which no type has.
    """
    names = table.column_names
    on = " AND ".join(f"{_LIVE}.{ident(c)} = {_STAGED}.{ident(c)}" for c in table.primary_key)
    updates = [c for c in names if c not in table.primary_key]
    live = ", ".join(f"{_LIVE}.{ident(c)}" for c in names)
    staged = ", ".join(f"{_STAGED}.{ident(c)}" for c in names)
    matched = (
        f"WHEN MATCHED AND ROW({live})::record *<> ROW({staged})::record THEN UPDATE SET "
        + ", ".join(f"{ident(c)} = {_STAGED}.{ident(c)}" for c in updates)
        + " "
        if updates
        else ""
    )
    return (
        f"MERGE INTO {qualified(table.schema, target)} AS {_LIVE} "
        f"USING ({_last_rows_sql(table, staging)}) AS {_STAGED} ON {on} "
        f"{matched}WHEN NOT MATCHED THEN INSERT ({idents(names)}) VALUES ({staged})"
    )


def keys_follow_sql(table: TableSpec, target: str, staging: str) -> str:
    """Whether every staged key sorts after every key of `target` (true when it is empty); and
    the transaction's isolation level.

    The greatest live key is one step of the primary key's index, read backwards; each staged
    key is compared to it under the live column's collation (a non-default one wins over the
    staging column's default), as the index orders them.
    """
    key = table.primary_key
    descending = ", ".join(f"{ident(c)} DESC" for c in key)
    staged = ", ".join(f"{_STAGED}.{ident(c)}" for c in key)
    live = ", ".join(f"{_LIVE}.{ident(c)}" for c in key)
    return (
        f"SELECT NOT EXISTS (SELECT FROM pg_temp.{ident(staging)} AS {_STAGED}, "
        f"(SELECT {idents(key)} FROM {qualified(table.schema, target)} "
        f"ORDER BY {descending} LIMIT 1) AS {_LIVE} "
        f"WHERE ({staged}) <= ({live})), current_setting('transaction_isolation')"
    )


def merge(db: Db, table: TableSpec, target: str, staging: str, distinct: bool = False) -> None:
    """Merges the staging rows into `target`, as `upsert_sql` does; `distinct`: the caller
    saw each staged key once (see `insert_sql`).

    When every staged key follows every live key (a first load, keys that only grow), no staged
    row can conflict but with a row a concurrent writer adds meanwhile. A plain INSERT then
    spares each row ON CONFLICT's speculative insertion (its extra index probe, lock and WAL
    record: about a third of the merge), and with `distinct` the sort that keeps the last row
    per key. Keys the caller took for distinct that PostgreSQL finds equal fail the INSERT like
    a concurrent writer's row. Other batches MERGE where the server has it, sparing
    unchanged rows their lock (`merge_sql`), in READ COMMITTED transactions. Should a concurrent
    writer's new row make either fail (neither turns a conflict into an update as ON CONFLICT
    does), the upsert runs instead, from a savepoint: the outcome is the upsert's in every case.
    """
    follow, isolation = db.rows(keys_follow_sql(table, target, staging))[0]
    if follow:
        statement = insert_sql(table, target, staging, distinct)
    elif db.server_version >= _MERGE_SINCE and isolation == _MERGE_ISOLATION:
        statement = merge_sql(table, target, staging)
    else:
        db.execute(upsert_sql(table, target, staging))
        return
    db.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        db.execute(statement)
    except Exception as error:
        if sqlstate(error) != _UNIQUE_VIOLATION:
            raise
        db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
    else:
        db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return
    db.execute(upsert_sql(table, target, staging))
