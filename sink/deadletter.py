"""Dead-letter destinations for messages that cannot be decoded or mapped.

A topic (`DeadLetterProducer`, sent and acknowledged before the batch commits) or a table
(`dead_letter_rows`, written in the batch's own transaction). Either way the message's offset
only advances once its dead letter is durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Tuple

import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from .batcher import DeadLetter
from .errors import DeadLetterUnavailableError, MappingError, SinkError
from .logs import librdkafka_logger
from .mapping import dead_letter_row
from .tables import DEAD_LETTER_COLUMNS

logger = logging.getLogger(__name__)

# Long enough for a leader election on the dead-letter topic, short enough to stay well under
# max.poll.interval.ms (300 s by default) with the batch's own work.
DEAD_LETTER_TIMEOUT_SECONDS = 30.0
# How long to wait for room in librdkafka's queue before polling for deliveries again.
_QUEUE_FULL_POLL_SECONDS = 0.1

# librdkafka settings that only mean something to a consumer: left out of the producer's and
# admin client's configurations, where librdkafka would warn about each of them.
CONSUMER_ONLY_SETTINGS = frozenset(
    {
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.message.max.bytes",
        "fetch.error.backoff.ms",
        "fetch.queue.backoff.ms",
        "isolation.level",
        "check.crcs",
    }
)

HEADER_CODE = "dlq.error.code"
HEADER_REASON = "dlq.error.reason"
HEADER_TABLE = "dlq.error.table"
HEADER_COLUMN = "dlq.error.column"
HEADER_TOPIC = "dlq.source.topic"
HEADER_PARTITION = "dlq.source.partition"
HEADER_OFFSET = "dlq.source.offset"
HEADER_TIMESTAMP = "dlq.source.timestamp"


def without_consumer_settings(client_config: Mapping[str, Any]) -> dict[str, Any]:
    """A librdkafka configuration minus the consumer-only settings (see above)."""
    return {k: v for k, v in client_config.items() if k not in CONSUMER_ONLY_SETTINGS}


def admin_client(client_config: Mapping[str, Any], **callbacks: Any) -> AdminClient:
    """An admin client on the consumer's configuration, logging through the sink's logger
    (whose lines it hands over on `poll`), with librdkafka callbacks such as `error_cb`."""
    config: dict[str, Any] = without_consumer_settings(client_config)
    config.update(logger=librdkafka_logger(), **callbacks)
    return AdminClient(config)


def dead_letter_headers(dead: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    """The original headers, then where the message came from and why it was set aside.

    `dlq.source.timestamp` is the original timestamp in epoch milliseconds (absent when the
    message had none); `dlq.error.table` / `dlq.error.column` are present for mapping errors.
    """
    message, error = dead.message, dead.error
    headers: list[tuple[str, str | bytes | None]] = list(message.headers)
    headers.append((HEADER_CODE, error.code.encode()))
    headers.append((HEADER_REASON, error.reason.encode("utf-8", "replace")))
    if isinstance(error, MappingError):
        headers.append((HEADER_TABLE, error.table.encode()))
        if error.column is not None:
            headers.append((HEADER_COLUMN, error.column.encode()))
    headers.append((HEADER_TOPIC, message.topic.encode()))
    headers.append((HEADER_PARTITION, str(message.partition).encode()))
    headers.append((HEADER_OFFSET, str(message.offset).encode()))
    if message.timestamp_ms is not None:
        headers.append((HEADER_TIMESTAMP, str(message.timestamp_ms).encode()))
    return headers


class DeadLetterProducer:
    """Produces dead letters to one topic, idempotently, and waits for every acknowledgement.

    Delivery to the topic is at least once: a batch that fails after `send` is read and sent
    again. Use it from the polling thread only.
    """

    def __init__(
        self,
        client_config: Mapping[str, Any],
        topic: str,
        *,
        timeout_seconds: float = DEAD_LETTER_TIMEOUT_SECONDS,
    ) -> None:
        self.topic = topic
        self.timeout_seconds = timeout_seconds
        config = without_consumer_settings(client_config)
        config.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                # librdkafka gives up on a message after this long (its default is 5 min).
                "message.timeout.ms": int(timeout_seconds * 1000),
            }
        )
        self._producer = Producer(config, logger=librdkafka_logger())

    def send(self, dead_letters: Iterable[DeadLetter]) -> None:
        """Produces each dead letter (original key, value and headers plus the `dlq.*`
        headers) and waits until all are acknowledged by every in-sync replica.

        Raises SinkError naming the failed coordinates if any delivery fails or is not
        acknowledged within `timeout_seconds`; then the batch must not commit.
        """
        failures: list[tuple[str, KafkaError]] = []
        deadline = time.monotonic() + self.timeout_seconds
        count = 0
        for dead in dead_letters:
            self._produce(dead, failures, deadline)
            count += 1
        if not count:
            return
        left = self._producer.flush(max(deadline - time.monotonic(), 0.0))
        if left:
            raise DeadLetterUnavailableError(
                f"dead-letter topic {self.topic!r}: {left} of {count} dead letters not "
                f"acknowledged within {self.timeout_seconds:.0f} s; the batch is not committed "
                "and is tried again (check the topic exists and the brokers are reachable)"
            )
        if failures:
            shown = "; ".join(f"{where}: {error.str()}" for where, error in failures[:5])
            passing = all(_passes(error) for _, error in failures)
            kind = DeadLetterUnavailableError if passing else SinkError
            raise kind(
                f"dead-letter topic {self.topic!r}: {len(failures)} of {count} dead letters "
                f"failed ({shown}); the batch is not committed"
                + (" and is tried again" if passing else "")
            )
        logger.debug("sent %d dead letters to %s", count, self.topic)

    def _produce(
        self, dead: DeadLetter, failures: list[tuple[str, KafkaError]], deadline: float
    ) -> None:
        coordinates = dead.message.coordinates

        def delivered(error: KafkaError | None, _msg: object) -> None:
            if error is not None:
                failures.append((coordinates, error))

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=dead.message.key,
                    value=dead.message.value,
                    headers=dead_letter_headers(dead),
                    on_delivery=delivered,
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise SinkError(
                        f"dead-letter topic {self.topic!r}: the producer queue stayed full for "
                        f"{self.timeout_seconds:.0f} s"
                    ) from None
                self._producer.poll(_QUEUE_FULL_POLL_SECONDS)
            except KafkaException as exc:
                raise SinkError(
                    f"dead-letter topic {self.topic!r}: cannot produce {coordinates}: {exc}"
                ) from exc

    def close(self) -> None:
        """Waits (up to `timeout_seconds`) for anything still in flight."""
        left = self._producer.flush(self.timeout_seconds)
        if left:
            logger.warning("%d dead letters still unacknowledged at close", left)


def _passes(error: KafkaError) -> bool:
    """Whether a delivery failure is one that a later attempt may not meet."""
    return bool(error.retriable()) or error.code() in (
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
    )


Values = Tuple[object, ...]


def dead_letter_rows(
    table: sa.Table, dead_letters: Iterable[DeadLetter], *, failed_at: datetime | None = None
) -> list[Values]:
    """Rows of the dead-letter table (`sink.tables.dead_letter_table`) in its column order,
    one per dead letter, stamped `failed_at` (default: now, UTC)."""
    positions = {name: i for i, name in enumerate(DEAD_LETTER_COLUMNS)}
    try:
        order = [positions[column.name] for column in table.columns]
    except KeyError as missing:
        raise SinkError(
            f"{table.fullname} is not a dead-letter table: it has column {missing}, "
            f"expected only {', '.join(DEAD_LETTER_COLUMNS)}"
        ) from None
    stamp = failed_at if failed_at is not None else datetime.now(timezone.utc)
    rows = []
    for dead in dead_letters:
        row = dead_letter_row(dead.message, dead.error, stamp)
        rows.append(tuple(row[i] for i in order))
    return rows
