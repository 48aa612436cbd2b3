"""The Kafka side: a confluent-kafka consumer whose positions come from PostgreSQL.

Kafka's committed offsets are advisory (for lag tools); on every assignment the stored next
offsets decide where each partition is read from.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_STORED,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from .deadletter import admin_client
from .errors import KafkaUnavailableError, PositionsUnknownError
from .logs import librdkafka_logger
from .records import Message, TopicPartition, message_from_kafka

logger = logging.getLogger(__name__)

# Settings the sink relies on for exactly-once; a user cannot override them.
FIXED_SETTINGS = {
    # Partitions without a stored offset start at an offset resolved from start_from; a
    # stored offset that no longer exists is the worker's to handle (kafka.out_of_range).
    "auto.offset.reset": "error",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
}
# How long asking a partition's leader for its log start and end offsets may take.
WATERMARK_TIMEOUT_SECONDS = 10.0
# How long asking the broker for the group's committed offsets may take.
GROUP_OFFSETS_TIMEOUT_SECONDS = 30.0
# Settings that librdkafka rejects under the KIP-848 group protocol.
CLASSIC_ONLY = ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms")

Assigned = Callable[[list[TopicPartition]], Mapping[TopicPartition, int | None]]
Revoked = Callable[[list[TopicPartition], bool], None]
# How many assigned partitions wait for their stored offsets, and why (None: none wait).
Waiting = Callable[[int, "str | None"], None]

# How often the stored offsets of partitions that wait for them are looked up again.
WAITING_RETRY_SECONDS = 2.0
# How often librdkafka reports its statistics, from which BrokerWatch sees brokers come back.
STATISTICS_INTERVAL_MS = 5000


def consumer_config(
    bootstrap_servers: str, group_id: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The librdkafka configuration: our defaults, the user's settings, then the fixed ones."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "partition.assignment.strategy": "cooperative-sticky",
        # A member learns of a rebalance at its next heartbeat. With cooperative-sticky, moving
        # partitions to a worker that joins takes two rebalances: the moved partitions are
        # read by no one for one interval, and the new worker reads them two after joining
        # (3 s and 5 s at librdkafka's 3000 ms). A heartbeat a second costs the broker little.
        # (Not sent under KIP-848's group protocol, where the broker sets the interval.)
        "heartbeat.interval.ms": 1000,
        # librdkafka's 500 ms default delays the first fetch after a seek (a retried batch)
        # and adds to end-to-end latency; an idle fetch every 100 ms costs the broker little.
        "fetch.wait.max.ms": 100,
        # librdkafka stops fetching a partition whose prefetched messages pass its queue
        # thresholds, and looks again after this long (1000 ms by default): long enough for a
        # worker that keeps up to empty the queue and wait. The default cost a fifth of the
        # benchmark's throughput; a check every 100 ms costs next to nothing.
        "fetch.queue.backoff.ms": 100,
        # librdkafka's statistics say which brokers are up (see BrokerWatch).
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
        **settings,
        **FIXED_SETTINGS,
    }
    if str(config.get("group.protocol", "classic")).lower() == "consumer":
        for name in CLASSIC_ONLY:
            if name not in settings:
                config.pop(name, None)
    return config


class BrokerWatch:
    """Whether the client reaches a broker, from librdkafka's error events (every broker
    down) and its statistics (a broker up again); `on_change(reason)` is called once per
    change, with why it is unreachable, or None once it is reachable again."""

    def __init__(self, on_change: Callable[[str | None], None]) -> None:
        self._on_change = on_change
        self.down: str | None = None
        self.brokers_up = 0
        self._last_failure = ""

    def error(self, error: KafkaError) -> None:
        """librdkafka's error_cb."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_up = 0
            if self.down is None:
                self.down = self._last_failure or str(error.str())
                self._on_change(self.down)
        elif error.code() in (
            KafkaError._TRANSPORT,
            KafkaError._RESOLVE,
            KafkaError._AUTHENTICATION,
            KafkaError._SSL,
        ):
            self._last_failure = str(error.str())

    def statistics(self, document: str) -> None:
        """librdkafka's stats_cb: counts the brokers in state UP."""
        brokers = orjson.loads(document).get("brokers") or {}
        self.brokers_up = sum(1 for b in brokers.values() if b.get("state") == "UP")
        if self.brokers_up and self.down is not None:
            self.down = None
            self._on_change(None)


class KafkaSource:
    """Subscribes and positions partitions; called from one thread at a time."""

    def __init__(
        self,
        config: Mapping[str, Any],
        start_from: str,
        on_assigned: Assigned,
        on_revoked: Revoked,
        *,
        on_waiting: Waiting = lambda count, why: None,
        brokers: BrokerWatch | None = None,
    ) -> None:
        watched = dict(config)
        if brokers is not None:
            watched.update(error_cb=brokers.error, stats_cb=brokers.statistics)
        self._consumer = Consumer(watched, logger=librdkafka_logger())
        self._config = dict(config)
        self._admin: AdminClient | None = None
        self._from_end = start_from != "earliest"
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_waiting = on_waiting
        # Assigned partitions whose stored offsets are not known yet: paused, never read.
        self._waiting: set[TopicPartition] = set()
        self._retry_at = 0.0
        # Where each assigned partition without a stored offset started, resolved to an offset
        # once at assignment: every re-read of an uncommitted batch goes back exactly there
        # (`latest` resolved again would skip whatever arrived meanwhile).
        self._starts: dict[TopicPartition, int] = {}
        # Whether an assignment (even an empty one) came since subscribing.
        self._joined = False

    def subscribe(self, topics: Iterable[str]) -> None:
        self._consumer.subscribe(
            list(topics), on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lose
        )

    def _assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        try:
            stored = self._on_assigned(tps)
        except PositionsUnknownError as exc:
            # Assigned (the rebalance must complete) but paused: nothing is read from them
            # until their stored offsets are known (see retry_waiting).
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            self._waiting.update(tps)
            self._retry_at = time.monotonic() + WAITING_RETRY_SECONDS
            logger.warning(
                "assigned %s, paused until their stored offsets can be read: %s",
                _names(tps),
                exc,
            )
            self._on_waiting(len(self._waiting), str(exc))
            return
        positioned = [self._positioned(tp, stored.get(tp)) for tp in tps]
        if not self._joined:
            self._joined = True
            logger.info(
                "joined consumer group %r, %d partition(s) assigned",
                self._config.get("group.id"),
                len(positioned),
            )
        if positioned:  # a cooperative rebalance that changes nothing here assigns none
            logger.info(
                "assigned %s",
                ", ".join(f"{p.topic}[{p.partition}]@{_at(p.offset)}" for p in positioned),
                extra={"partitions": {f"{p.topic}[{p.partition}]": p.offset for p in positioned}},
            )
        consumer.incremental_assign(positioned)

    def retry_waiting(self) -> None:
        """Reads the stored offsets of the partitions that wait for them, at most every
        WAITING_RETRY_SECONDS; those found are positioned there and resumed."""
        if not self._waiting or time.monotonic() < self._retry_at:
            return
        self._retry_at = time.monotonic() + WAITING_RETRY_SECONDS
        tps = sorted(self._waiting)
        try:
            stored = self._on_assigned(tps)
        except PositionsUnknownError as exc:
            logger.info("%d partition(s) still wait for their stored offsets: %s", len(tps), exc)
            self._on_waiting(len(tps), str(exc))
            return
        self._waiting.clear()
        self.seek(stored)
        self._consumer.resume([KafkaTopicPartition(tp.topic, tp.partition) for tp in tps])
        logger.info("resumed %s at their stored offsets", _names(tps))
        self._on_waiting(0, None)

    def _revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._give_up(consumer, partitions, lost=False)

    def _lose(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        self._give_up(consumer, partitions, lost=True)

    def _give_up(
        self, consumer: Consumer, partitions: list[KafkaTopicPartition], *, lost: bool
    ) -> None:
        tps = [TopicPartition(p.topic, p.partition) for p in partitions]
        if tps:
            logger.info(
                "%s %s",
                "lost" if lost else "revoked",
                _names(tps),
                extra={"partitions": [f"{t}[{p}]" for t, p in tps]},
            )
        waited = [tp for tp in tps if tp in self._waiting]
        self._waiting.difference_update(tps)
        if waited:
            self._on_waiting(len(self._waiting), None)
        self._on_revoked([tp for tp in tps if tp not in waited], lost)
        for tp in tps:
            self._starts.pop(tp, None)
        consumer.incremental_unassign(partitions)

    def _start_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset `start_from` means now for each partition: its log start or end."""
        return {
            tp: high if self._from_end else low
            for tp, (low, high) in self.log_ranges(partitions).items()
        }

    def restart(self, tp: TopicPartition) -> None:
        """A partition without a stored offset whose start vanished (retention): it starts
        again where `start_from` says now."""
        self._starts.update(self._start_offsets([tp]))
        self.seek({tp: None})

    def positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the consumer reads each partition next: past the last message it delivered
        and any transaction markers after it (no broker round trip)."""
        found = self._consumer.position([KafkaTopicPartition(t, p) for t, p in partitions])
        return {TopicPartition(k.topic, k.partition): k.offset for k in found if k.offset >= 0}

    def log_ranges(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """Each partition's log start and end offsets, from its leader."""
        return {
            tp: self._consumer.get_watermark_offsets(
                KafkaTopicPartition(tp.topic, tp.partition), timeout=WATERMARK_TIMEOUT_SECONDS
            )
            for tp in partitions
        }

    def topic_ids(self, topics: Iterable[str]) -> dict[str, str]:
        """Kafka's id of each topic (it changes when a topic is deleted and created again)."""
        names = sorted(set(topics))
        if not names:
            return {}
        if self._admin is None:
            self._admin = admin_client(self._config)
        futures = self._admin.describe_topics(
            TopicCollection(names), request_timeout=WATERMARK_TIMEOUT_SECONDS
        )
        try:
            return {name: str(future.result().topic_id) for name, future in futures.items()}
        finally:
            self._admin.poll(0)  # hands its queued log lines to the logger

    def _positioned(self, tp: TopicPartition, next_offset: int | None) -> KafkaTopicPartition:
        if next_offset is None and tp not in self._starts:
            self._starts.update(self._start_offsets([tp]))
        offset = self._starts[tp] if next_offset is None else next_offset
        return KafkaTopicPartition(tp.topic, tp.partition, offset)

    def consume(self, max_messages: int, timeout: float) -> list[Any]:
        return self._consumer.consume(num_messages=max_messages, timeout=timeout)

    def log_end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Log end offsets as last seen in fetch responses (no broker round trip)."""
        ends: dict[TopicPartition, int] = {}
        for tp in partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    KafkaTopicPartition(tp.topic, tp.partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                ends[tp] = high
        return ends

    def seek(self, positions: Mapping[TopicPartition, int | None]) -> None:
        """Moves assigned partitions back to their stored positions (after an abandoned batch)."""
        for tp, next_offset in positions.items():
            target = self._positioned(tp, next_offset)
            try:
                self._consumer.seek(target)
            except KafkaException:
                # Not fetching yet: re-assigning at the position has the same effect.
                self._consumer.incremental_unassign([KafkaTopicPartition(tp.topic, tp.partition)])
                self._consumer.incremental_assign([target])

    def commit_advisory(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Tells Kafka how far the sink got, for lag dashboards; PostgreSQL is the truth."""
        offsets = [KafkaTopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            logger.debug("advisory offset commit failed: %s", exc)

    def close(self) -> None:
        self._starts.clear()
        self._consumer.close()


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in partitions)


# librdkafka's logical offsets, by name.
_LOGICAL_OFFSETS = {OFFSET_BEGINNING: "earliest", OFFSET_END: "latest", OFFSET_STORED: "stored"}


def _at(offset: int) -> str:
    return _LOGICAL_OFFSETS.get(offset, str(offset))


# Consumer errors about one message the client cannot read (a record batch that fails its
# CRC check, or does not decompress): librdkafka reports them at the offset and fetches it
# again, forever, unless the consumer seeks past it.
UNREADABLE_MESSAGE = (
    KafkaError._BAD_MSG,
    KafkaError._BAD_COMPRESSION,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
)


def is_fatal(error: KafkaError) -> bool:
    """Whether a consumer error event must stop the worker (vs. librdkafka retrying by itself)."""
    return bool(error.fatal()) or error.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    )


def group_offsets(client_config: Mapping[str, Any], group_id: str) -> dict[TopicPartition, int]:
    """The offsets the consumer group has committed in Kafka (the sink's advisory ones)."""
    admin = admin_client(client_config)
    request = [ConsumerGroupTopicPartitions(group_id)]
    try:
        future = admin.list_consumer_group_offsets(
            request, request_timeout=GROUP_OFFSETS_TIMEOUT_SECONDS
        )[group_id]
        found = future.result(timeout=GROUP_OFFSETS_TIMEOUT_SECONDS)
    except (KafkaException, concurrent.futures.TimeoutError) as exc:
        raise KafkaUnavailableError(
            f"cannot read the committed offsets of consumer group {group_id!r} from Kafka "
            f"({exc}); they tell whether the sink stored offsets before"
        ) from None
    return {
        TopicPartition(p.topic, p.partition): p.offset
        for p in found.topic_partitions or ()
        if p.offset >= 0
    }


def peek(
    config: Mapping[str, Any],
    topics: Iterable[str],
    wanted: Callable[[Message], bool],
    *,
    positions: Mapping[TopicPartition, int],
    start_from: str,
    seconds: float,
) -> dict[str, Message]:
    """The first message of each topic that `wanted` takes, read from where its group reads each
    partition next (`positions`, else `start_from`) for at most `seconds`, without joining the
    group or committing anything."""
    consumer = Consumer(dict(config), logger=librdkafka_logger())
    found: dict[str, Message] = {}
    try:
        listed = consumer.list_topics(timeout=seconds).topics
        start = OFFSET_BEGINNING if start_from == "earliest" else OFFSET_END
        assignment = [
            KafkaTopicPartition(topic, number, positions.get(TopicPartition(topic, number), start))
            for topic in topics
            if topic in listed and listed[topic].error is None
            for number in listed[topic].partitions
        ]
        if not assignment:
            return found
        consumer.assign(assignment)
        waiting = {tp.topic for tp in assignment}
        deadline = time.monotonic() + seconds
        while waiting and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None and msg.topic() in waiting:
                    message = message_from_kafka(msg)
                    if wanted(message):
                        found[message.topic] = message
                        waiting.discard(message.topic)
        return found
    finally:
        consumer.close()
