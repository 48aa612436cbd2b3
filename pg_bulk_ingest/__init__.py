"""Ingest batches of rows into SQLAlchemy-defined PostgreSQL tables, migrating them as needed."""

from ._binary import copy_tuple_columns
from ._encode import CopyRow, CopyTuple, copy_encoders
from ._errors import DataError, IngestError, MigrationError, SchemaError, WatermarkError
from ._ingest import ingest, takes_copy_tuples
from ._options import Delete, HighWatermark, Upsert, Visibility
from ._plan import PlannedStep, migration_plan
from ._watermark import read_high_watermark, write_high_watermark

__all__ = [
    "CopyRow",
    "CopyTuple",
    "DataError",
    "Delete",
    "HighWatermark",
    "IngestError",
    "MigrationError",
    "PlannedStep",
    "SchemaError",
    "Upsert",
    "Visibility",
    "WatermarkError",
    "copy_encoders",
    "copy_tuple_columns",
    "ingest",
    "migration_plan",
    "read_high_watermark",
    "takes_copy_tuples",
    "write_high_watermark",
]
