"""Runs `ingest` of the event rows once, with the pg_bulk_ingest its interpreter imports: the
public pg-bulk-ingest 0.1.3 in its own virtual environment, or another revision's tree put
first on PYTHONPATH (ingest_bench's baseline); prints seconds.

Copied into the benchmark's cache at run time, with ingest_rows.py beside it.
"""

import sys
import time

import sqlalchemy as sa
from ingest_rows import event_rows
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import HighWatermark, ingest


def main() -> None:
    url, schema, keyed, rows, batch_size = sys.argv[1:6]
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.BIGINT, primary_key=keyed == "1"),
        sa.Column("key", sa.VARCHAR(64)),
        sa.Column("at", sa.TIMESTAMP(timezone=True)),
        sa.Column("amount", sa.NUMERIC(12, 2)),
        sa.Column("status", sa.VARCHAR(16)),
        sa.Column("payload", pg.JSONB),
        sa.Column("tags", pg.ARRAY(sa.TEXT)),
        schema=schema,
    )
    data = list(event_rows(int(rows)))
    size = int(batch_size)

    def batches(_):
        for start in range(0, len(data), size):
            yield start, None, ((table, row) for row in data[start : start + size])

    engine = sa.create_engine(url, future=True)
    with engine.connect() as conn:
        started = time.perf_counter()
        ingest(conn, metadata, batches, high_watermark=HighWatermark.EARLIEST)
        print(time.perf_counter() - started)


main()
