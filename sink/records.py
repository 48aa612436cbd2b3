"""The values that flow through the front of the pipeline: a raw Kafka `Message` and the
`Record` that decoding makes of it.

Both are typed NamedTuples rather than frozen dataclasses: equally immutable, but built four
times faster (~0.3 µs against ~1.2 µs), and one of each is built per message at 100k+ msgs/s.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

# confluent-kafka's TIMESTAMP_NOT_AVAILABLE: the broker gave the message no timestamp.
_TIMESTAMP_NOT_AVAILABLE = 0

Headers = Tuple[Tuple[str, Optional[bytes]], ...]


class TopicPartition(NamedTuple):
    """A partition of a topic; equal to the plain tuple `(topic, partition)`."""

    topic: str
    partition: int


class Message(NamedTuple):
    """One Kafka message as read, bytes untouched."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @property
    def coordinates(self) -> str:
        """`topic[partition]@offset`, the way every error and log line names a message."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Record(NamedTuple):
    """A decoded message: the key and value as the table's formats read them.

    `value` is None only for a tombstone (a Kafka message without a value); a JSON `null`
    value is a decode error, so the two cannot be confused. `key` is None when the message
    has no key (or, with `key_format = "json"`, a JSON `null` key).
    """

    message: Message
    key: object
    value: object

    @property
    def coordinates(self) -> str:
        return self.message.coordinates

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


def message_from_kafka(msg: Any) -> Message:
    """Copy a confluent-kafka message into a `Message`.

    The caller has already handled `msg.error()`: an error event is not a message.
    """
    timestamp_type, timestamp = msg.timestamp()
    headers = msg.headers()
    # tuple.__new__ skips the NamedTuple's Python-level __new__: this runs for every message.
    return _new_tuple(
        Message,
        (
            msg.topic(),
            msg.partition(),
            msg.offset(),
            None if timestamp_type == _TIMESTAMP_NOT_AVAILABLE else timestamp,
            msg.key(),
            msg.value(),
            tuple(headers) if headers else (),
        ),
    )


def timestamp_ms(msg: Any) -> int | None:
    """The Kafka timestamp of a confluent-kafka message (CreateTime or LogAppendTime, as
    the topic says), in milliseconds since the epoch; None if it has none."""
    timestamp_type, timestamp = msg.timestamp()
    return None if timestamp_type == _TIMESTAMP_NOT_AVAILABLE else timestamp


_new_tuple = tuple.__new__
