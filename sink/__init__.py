"""pg-kafka-sink: an exactly-once Kafka-to-PostgreSQL sink on the `pg_bulk_ingest` core.

`python -m sink` runs the worker; the modules read as its pipeline: config, consumer, decode,
mapping, batcher, offsets, writer, worker, health, metrics.
"""

from __future__ import annotations

__version__ = "0.1.0"
