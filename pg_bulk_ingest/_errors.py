"""The exceptions `ingest` raises: one root, one class per failure family; and, last, the two
signals its encoders raise and catch inside the package, which never reach a caller as such."""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error raised by pg_bulk_ingest itself (database errors pass through)."""


class SchemaError(IngestError):
    """A table definition that cannot be created, matched or migrated."""


class WatermarkError(IngestError):
    """A table COMMENT that should hold the high watermark but cannot be parsed."""


class DataError(IngestError):
    """A value that cannot be written to its column."""

    def __init__(self, table: str, column: str | None, row: int | None, reason: str) -> None:
        where = f"{table}.{column}" if column is not None else table
        at = f" at row {row} of the batch" if row is not None else ""
        super().__init__(f"{where}{at}: {reason}")
        self.table = table
        self.column = column
        self.row = row
        self.reason = reason


class MigrationError(SchemaError):
    """A migration refused because rows already stored cannot take the new definition (a
    value the new type cannot hold exactly, a NULL in a column becoming NOT NULL, a repeated
    new key); nothing was changed."""

    def __init__(self, table: str, column: str | None, reason: str) -> None:
        where = f"{table}.{column}" if column is not None else table
        super().__init__(f"{where}: {reason}")
        self.table = table
        self.column = column
        self.reason = reason


class NulInTextError(ValueError):
    """PostgreSQL text, json and jsonb values cannot hold the NUL character: the encoder's
    caller turns it into a DataError naming the table, column and row."""

    def __init__(self) -> None:
        super().__init__("the value holds a NUL character (\\x00), which PostgreSQL cannot store")


class NotBinary(ValueError):
    """A value binary COPY cannot carry with the meaning its COPY text has: the row is written
    by the text encoders instead."""
