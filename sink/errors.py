"""The sink's failure families, rooted at `SinkError`: every error the sink raises is here.

Callers decide by class: `ConfigError` stops the worker at start; a `MessageError` (a
`DecodeError`, its `MappingError` subclass, or a `RejectedError`) sends one message to the
dead-letter destination; a `TransientError`
abandons the batch, retried with backoff; any other `SinkError` stops the worker.
"""

from __future__ import annotations

from collections.abc import Mapping

from .records import Message, TopicPartition


class SinkError(Exception):
    """Root of every error the sink raises on purpose."""


class TransientError(SinkError):
    """Something outside the sink failed that passes by itself (a broker outage, say): the
    batch is abandoned and retried with backoff, like a lost PostgreSQL connection."""


class ConfigError(SinkError):
    """The configuration (file, environment, tables module) is invalid; each problem names the
    setting and the fix. Reading the config file and environment finds every problem at once:
    `problems` holds them, one line each."""

    def __init__(self, *problems: str) -> None:
        if len(problems) > 1:
            lines = "".join(f"\n  {problem}" for problem in problems)
            super().__init__(f"the configuration has {len(problems)} problems:{lines}")
        else:
            super().__init__(*problems)
        self.problems = problems


class SchemaEvolutionError(ConfigError):
    """A new version of a subject that a table takes its columns from changes a field in a way
    no column can hold together with the earlier versions (sink.schema_columns)."""


class SchemaChangedError(SinkError):
    """A value schema on a topic holds what its table, whose columns come from the topic's
    schemas, does not yet (a new field, a wider type): the worker derives the columns again
    (from the registry, or with the Connect schemas a message carries, `carried`: its key's and
    its value's), and the next batch migrates the table."""

    def __init__(
        self,
        topic: str,
        schema_id: int | None,
        change: str,
        carried: tuple[object, object] | None = None,
    ) -> None:
        which = "a Connect schema" if schema_id is None else f"schema id {schema_id}"
        super().__init__(f"{topic}: {which} {change}")
        self.topic = topic
        self.schema_id = schema_id
        self.carried = carried


class MessageError(SinkError):
    """One Kafka message cannot be written as it is: it does not decode (`DecodeError`), does
    not fit its table (`MappingError`), or PostgreSQL refused its rows (`RejectedError`); it
    goes to the dead-letter destination, or stops the worker under errors.policy = "fail".

    `code` is a short stable label for metrics and dead letters (e.g. "not-json"), `reason` the
    human explanation without the coordinates, `coordinates` is `topic[partition]@offset`.
    """

    def __init__(self, coordinates: str, reason: str, *, code: str = "decode") -> None:
        super().__init__(f"{coordinates}: {reason}")
        self.coordinates = coordinates
        self.reason = reason
        self.code = code


class DecodeError(MessageError):
    """One message's bytes do not decode by its topic's formats; or, as `MappingError`, the
    decoded value does not fit its table."""


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


class NotAChange(BadPayload):
    """A decoded value that is not a change event this sink applies (sink.debezium)."""


class Mismatch(Exception):
    """A value that its semantic type (sink.debezium.SEMANTIC_TYPES) does not describe: the
    reader that met it says where, as a BadPayload."""


class PayloadMismatch(Exception):
    """A Kafka Connect envelope's payload does not hold what its schema says, at the path the
    message names: sink.connect makes it a BadPayload."""


class Refused(Exception):
    """A column's converter refuses a value (sink.mapping): the mapper makes it a MappingError
    naming the coordinates, table and column. `code` labels its dead letter."""

    def __init__(self, reason: str, code: str = "type") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class OffsetsGoneError(SinkError):
    """A stored offset no longer exists in its partition, and kafka.out_of_range = "fail"."""


class BadMessageError(SinkError):
    """A message could not be decoded or mapped and the error policy is to stop."""


class RepeatedFailureError(SinkError):
    """A batch failed the same way, without a SQLSTATE, several times in a row while PostgreSQL
    answered: it never passes, so the worker stops rather than retry it for ever."""


class RevokedError(SinkError):
    """Partitions of the batch being written were revoked: it rolls back and is read again."""


class RejectedError(MessageError):
    """PostgreSQL refused the row(s) one message maps to (a constraint, an out-of-range value)."""

    def __init__(self, message: Message, reason: str) -> None:
        super().__init__(message.coordinates, f"PostgreSQL rejected it: {reason}", code="rejected")


class FencedError(SinkError):
    """Another worker moved a partition of this batch: this worker no longer owns it."""


class OutdatedDefinitionError(SinkError):
    """The table was migrated to a newer definition than this worker's."""


class StoredStateError(SinkError):
    """The stored state cannot be used: it is missing, unreadable, or not this sink's.

    The worker stops rather than start over from `kafka.start_from`; `reset` is the remedy.
    """

    def __init__(self, message: str, *, stored: Mapping[TopicPartition, int] | None = None) -> None:
        super().__init__(message)
        # Offsets found in the broken state, when there are some to offer `reset`.
        self.stored = stored


class PositionsUnknownError(SinkError):
    """The stored offsets of newly assigned partitions cannot be read yet (PostgreSQL is
    unreachable, say): the partitions wait, paused, until they can."""


class KafkaUnavailableError(TransientError):
    """The broker did not answer a request the sink cannot do without; worth retrying."""


class DeadLetterUnavailableError(TransientError):
    """The dead-letter topic did not take the batch's dead letters in time, for a reason that
    passes (a broker outage, too few in-sync replicas): the batch is retried."""
