"""One migration of a table at a time: session advisory locks keyed on the tables' names.

Two callers that plan a migration of the same table at once would both plan from the same
live table and collide (a table or column created twice, a deadlock, or a second rebuild that
swaps out the first one's rows). `ingest` takes these locks before planning, in one order
whatever the order of the metadata, and holds them until nothing of its migration is left:
until the first batch has committed when it swaps a rebuilt table in, else until its changes
in place have committed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from ._db import Db
from ._schema import TableSpec

# The first of the two int4 keys of every lock `ingest` takes: the two-key space never meets
# the single bigint keys that applications (such as pg-kafka-sink) use for locks of their own.
_NAMESPACE = int.from_bytes(hashlib.sha256(b"pg-bulk-ingest").digest()[:4], "big", signed=True)


def _key(table: TableSpec) -> int:
    name = f"{table.schema}\x00{table.name}".encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:4], "big", signed=True)


@contextmanager
def migration_locks(db: Db, tables: Iterable[TableSpec]) -> Iterator[Callable[[], None]]:
    """Holds the migration lock of each table until the call it yields, or the end."""
    held: list[int] = []

    def release() -> None:
        while held:
            with db.conn.begin():
                db.execute("SELECT pg_advisory_unlock(%s, %s)", (_NAMESPACE, held[-1]))
            held.pop()

    try:
        for key in sorted({_key(table) for table in tables}):
            with db.conn.begin():
                db.execute("SELECT pg_advisory_lock(%s, %s)", (_NAMESPACE, key))
            held.append(key)
        yield release
    except BaseException:
        # The locks end with the session if the connection is gone; never hide the error.
        with contextlib.suppress(Exception):
            release()
        raise
    release()
