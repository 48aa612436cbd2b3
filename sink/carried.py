"""The Kafka Connect schemas that messages carry, for tables whose columns come from them (a
`value_format = "connect-json"` table without columns, sink.schema_columns): the (key, value)
schemas a worker has met on each topic, and, until a worker of the group has applied columns,
the first message with a schema on each such table's topic, read where the group reads next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import KafkaSettings, TableSettings
from .connect import schema_of
from .consumer import consumer_config, peek
from .offsets import StoredState
from .records import Message

# How long to read the topics at a time for a first message with a schema.
PEEK_SECONDS = 5.0


class CarriedSchemas:
    """By topic, the (key, value) schemas of the messages whose table lacked what they hold,
    oldest first: the columns derived hold them from then on."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[Any, Any]]] = {}

    def add(self, topic: str, carried: tuple[Any, Any]) -> None:
        self.seen.setdefault(topic, []).append(carried)

    def wanting(self, tables: Sequence[TableSettings], state: StoredState | None) -> list[str]:
        """The topics of the tables without columns that neither the group's state holds
        columns of nor a schema seen on one of their topics gives them."""
        held = {} if state is None else state.columns
        return [
            topic
            for table in tables
            if not table.columns
            and table.qualified_name not in held
            and not any(topic in self.seen for topic in table.topics)
            for topic in table.topics
        ]

    def read_first(
        self, kafka: KafkaSettings, topics: Sequence[str], state: StoredState | None
    ) -> None:
        """Reads each topic from where the group reads it next, for a while, for its first
        message with a schema. Raises KafkaException."""
        found = peek(
            consumer_config(kafka.bootstrap_servers, kafka.group_id, kafka.client_config()),
            topics,
            _carries_schema,
            positions={} if state is None else state.offsets,
            start_from=kafka.start_from.value,
            seconds=PEEK_SECONDS,
        )
        for topic, message in found.items():
            key = None if message.key is None else schema_of(message.key)
            self.seen[topic] = [(key, schema_of(message.value or b""))]


def _carries_schema(message: Message) -> bool:
    return message.value is not None and isinstance(schema_of(message.value), dict)
