"""The sink's failure families, rooted at `SinkError`.

Callers decide by class: `ConfigError` stops the worker at start; `DecodeError` (and its
`MappingError` subclass) sends one message to the dead-letter destination; a `TransientError`
abandons the batch, retried with backoff; any other `SinkError` stops the worker.
"""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error the sink raises on purpose."""


class TransientError(SinkError):
    """Something outside the sink failed that passes by itself (a broker outage, say): the
    batch is abandoned and retried with backoff, like a lost PostgreSQL connection."""


class ConfigError(SinkError):
    """The configuration (file, environment, tables module) is invalid; the message names the
    setting and the fix."""


class DecodeError(SinkError):
    """One Kafka message cannot be decoded.

    `code` is a short stable label for metrics and dead letters (e.g. "not-json"), `reason` the
    human explanation without the coordinates, `coordinates` is `topic[partition]@offset`.
    """

    def __init__(self, coordinates: str, reason: str, *, code: str = "decode") -> None:
        super().__init__(f"{coordinates}: {reason}")
        self.coordinates = coordinates
        self.reason = reason
        self.code = code


class MappingError(DecodeError):
    """One decoded message does not fit its target table; names the table and column."""

    def __init__(
        self,
        coordinates: str,
        reason: str,
        *,
        table: str,
        column: str | None = None,
        code: str = "mapping",
    ) -> None:
        where = table if column is None else f"{table}.{column}"
        super().__init__(coordinates, f"{where}: {reason}", code=code)
        self.table = table
        self.column = column


class SchemaRegistryUnavailableError(TransientError):
    """The schema registry did not answer, or answered that it cannot now (5xx, 408, 429): the
    batch is abandoned and retried with backoff; no message is set aside for it."""


class SchemaRegistryRefusedError(SinkError):
    """The schema registry refused in a way no retry fixes (credentials, a URL that is not its
    API, a schema the sink cannot read): the worker stops with the remedy."""


class BadPayload(Exception):
    """A key or value in the schema registry's wire format does not read (sink.registry):
    `decode` makes it a DecodeError with the message's coordinates. `code` is the stable label
    of dead letters and metrics."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
