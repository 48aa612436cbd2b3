"""The high watermark, kept in the first table's COMMENT as JSON next to any other keys.

A comment whose first non-blank character is `{` must be a JSON object whose "pg-bulk-ingest"
key, if any, is an object; anything else starting with `{` is corrupt and raises. Any other
comment is a human's: it is kept, under "comment", when the first watermark is saved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa

from ._catalog import comment, comment_after, table_oid
from ._db import Db
from ._errors import WatermarkError
from ._schema import DEFAULT_SCHEMA
from ._sql import literal, qualified

KEY = "pg-bulk-ingest"
WATERMARK = "high-watermark"
HUMAN_COMMENT = "comment"


def parse(table: str, comment: str | None) -> dict[str, Any]:
    """The comment as a JSON object; a human comment becomes {"comment": text}."""
    if comment is None or not comment.strip():
        return {}
    if not comment.lstrip().startswith("{"):
        return {HUMAN_COMMENT: comment}
    try:
        document = orjson.loads(comment)
    except orjson.JSONDecodeError as error:
        raise WatermarkError(
            f"the COMMENT of {table} starts with '{{' but is not valid JSON ({error}); "
            f'fix it to {{"{KEY}": {{"{WATERMARK}": ...}}}} or remove it'
        ) from None
    if not isinstance(document, dict):
        raise WatermarkError(f"the COMMENT of {table} is JSON but not an object")
    ours = document.get(KEY, {})
    if not isinstance(ours, dict):
        raise WatermarkError(
            f'the COMMENT of {table} has "{KEY}": {ours!r}; it must be an object such as '
            f'{{"{WATERMARK}": ...}}'
        )
    return document


def watermark(document: dict[str, Any]) -> Any:
    return document.get(KEY, {}).get(WATERMARK)


def with_watermark(document: dict[str, Any], value: Any) -> dict[str, Any]:
    """The document with the watermark replaced, every other key kept."""
    return {**document, KEY: {**document.get(KEY, {}), WATERMARK: value}}


def serialize(table: str, document: dict[str, Any]) -> str:
    try:
        return orjson.dumps(document).decode()
    except TypeError as error:
        raise WatermarkError(
            f"the high watermark for {table} is not JSON-encodable: {error}"
        ) from None


# On a connection's `info`, by (schema, table): the comment `ingest` read under the table's
# lock, from then until it saves the watermark. Meanwhile nothing but this transaction can
# change that comment, so `load` (the high-watermark callable's read included) takes it from
# here instead of asking again: two round trips fewer per batch.
_READ_UNDER_LOCK = "pg_bulk_ingest.comment_read_under_lock"


@contextmanager
def locked(db: Db, schema: str, name: str) -> Iterator[None]:
    """Takes the table's SHARE UPDATE EXCLUSIVE lock and reads its comment in one round trip;
    within the block, `load` of that table reads nothing more, until a `save`."""
    lock = f"LOCK TABLE {qualified(schema, name)} IN SHARE UPDATE EXCLUSIVE MODE"
    text = comment_after(db, lock, schema, name)
    held: dict[tuple[str, str], str | None] = db.conn.info.setdefault(_READ_UNDER_LOCK, {})
    held[schema, name] = text
    try:
        yield
    finally:
        held.pop((schema, name), None)


def load(db: Db, schema: str, name: str) -> dict[str, Any]:
    held = db.conn.info.get(_READ_UNDER_LOCK)
    if held and (schema, name) in held:
        return parse(f"{schema}.{name}", held[schema, name])
    return parse(f"{schema}.{name}", comment(db, schema, name))


def save(db: Db, schema: str, name: str, value: Any) -> None:
    """Merges the watermark into the comment; the caller holds the table's comment lock."""
    table = f"{schema}.{name}"
    text = serialize(table, with_watermark(load(db, schema, name), value))
    db.execute(f"COMMENT ON TABLE {qualified(schema, name)} IS {literal(text)}")
    held = db.conn.info.get(_READ_UNDER_LOCK)
    if held:
        held.pop((schema, name), None)  # read afresh after this, if read again


def read_high_watermark(conn: sa.engine.Connection, table: sa.Table) -> Any:
    """The high watermark stored on `table`, or None when there is no table or none stored.

    Raises WatermarkError when the table's COMMENT is corrupt.
    """
    return watermark(load(Db(conn), table.schema or DEFAULT_SCHEMA, table.name))


def write_high_watermark(conn: sa.engine.Connection, table: sa.Table, value: Any) -> None:
    """Stores `value` as the high watermark of `table`, as `ingest` does after a batch: every
    other key of the COMMENT is kept. Runs in the caller's transaction, which holds the table's
    SHARE UPDATE EXCLUSIVE lock from here to its end, so that concurrent writers of the
    watermark queue up (under READ COMMITTED, each then reads the one written before it).

    Raises WatermarkError when the table does not exist or its COMMENT is corrupt.
    """
    db, schema = Db(conn), table.schema or DEFAULT_SCHEMA
    if table_oid(db, schema, table.name) is None:
        raise WatermarkError(f"{schema}.{table.name} does not exist: no watermark to write")
    db.execute(f"LOCK TABLE {qualified(schema, table.name)} IN SHARE UPDATE EXCLUSIVE MODE")
    save(db, schema, table.name, value)
