"""Reading the stored high watermark without ingesting."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import _watermark
from ._db import Db
from ._schema import DEFAULT_SCHEMA


def read_high_watermark(conn: sa.engine.Connection, table: sa.Table) -> Any:
    """The high watermark stored on `table`, or None when there is no table or none stored.

    Raises WatermarkError when the table's COMMENT is corrupt.
    """
    schema = table.schema or DEFAULT_SCHEMA
    return _watermark.watermark(_watermark.load(Db(conn), schema, table.name))
