"""Ingest batches of rows into SQLAlchemy-defined PostgreSQL tables, migrating them as needed."""

from ._errors import DataError, IngestError, SchemaError, WatermarkError
from ._ingest import ingest
from ._options import Delete, HighWatermark, Upsert, Visibility
from ._plan import PlannedStep, migration_plan
from ._read import read_high_watermark

__all__ = [
    "DataError",
    "Delete",
    "HighWatermark",
    "IngestError",
    "PlannedStep",
    "SchemaError",
    "Upsert",
    "Visibility",
    "WatermarkError",
    "ingest",
    "migration_plan",
    "read_high_watermark",
]
