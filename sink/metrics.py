"""Metrics: counters, gauges and histograms the run loop updates, exposed for Prometheus.

Kept by prometheus-client, in a registry of the sink's own: the process and platform
collectors, and `pg_kafka_sink_build_info`, are in it too. The loop calls `SinkMetrics`
methods with plain values; the HTTP thread calls `render()`. Nothing here touches Kafka or
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import confluent_kafka
import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from .batcher import Batch
from .records import TopicPartition

PREFIX = "pg_kafka_sink_"
# The text format every Prometheus version reads (the names here need none of 1.0.0's escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Seconds per batch: from a few milliseconds (small batches on an idle topic) to a minute
# (a first batch that rebuilds and swaps a large table).
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Messages per batch, up to the largest batch.max_messages worth configuring.
BATCH_MESSAGES_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
# Seconds from a message's Kafka timestamp to its commit: from about a batch's age on a live
# topic (batch.max_age_seconds is 1 s by default) to the hours a backlog or a stopped sink adds.
VISIBLE_SECONDS_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0
)  # fmt: skip
# The rebalance events counted, shown at zero from the start.
REBALANCE_EVENTS = ("assign", "revoke", "lost")

# Counters export `_total` only: a `_created` series per counter doubles the scrape for
# nothing a dashboard of this sink uses.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("pg-kafka-sink")
    except importlib.metadata.PackageNotFoundError:  # a checkout without package metadata
        return "unknown"


def _partition_labels(tp: TopicPartition) -> tuple[str, str]:
    return tp[0], str(tp[1])


class SinkMetrics:
    """The sink's metrics, as methods the run loop calls with plain values.

    Calls come from the worker's polling threads, one at a time (never from an HTTP handler);
    `render()` may be called from any thread. Every per-partition series is removed when its
    partition is revoked, so that summing lag over workers counts each partition once. The
    series of the `topics` and `tables` named at construction show from the start, at zero.
    `clock` gives the Unix time (the time Kafka timestamps are compared with).
    """

    def __init__(
        self,
        *,
        topics: Iterable[str] = (),
        tables: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info(PREFIX + "build", "The sink's version and the libraries it runs on.", registry=r).info(
            {
                "version": version(),
                "python": platform.python_version(),
                "librdkafka": confluent_kafka.libversion()[0],
                "confluent_kafka": confluent_kafka.version()[0],
            }
        )

        def counter(name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(PREFIX + name, help_text, list(labels), registry=r)

        def gauge(name: str, help_text: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(PREFIX + name, help_text, list(labels), registry=r)

        self.messages = counter(
            "messages_total",
            "Kafka messages committed to PostgreSQL (rows, deletes, dead letters), by topic.",
            ["topic"],
        )
        self.bytes = counter(
            "bytes_total", "Bytes of Kafka keys and values committed, by topic.", ["topic"]
        )
        self.rows = counter("rows_total", "Rows written, by target table.", ["table"])
        self.deletes = counter(
            "deleted_keys_total", "Primary keys deleted by tombstones, by target table.", ["table"]
        )
        self.batches = counter("batches_total", "Batches committed.")
        self.batch_seconds = Histogram(
            PREFIX + "batch_duration_seconds",
            "Seconds from a batch's first message to its commit (rows stream to COPY meanwhile).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            PREFIX + "commit_duration_seconds",
            "Seconds from a batch's last message to its commit: the commit step alone (the rest "
            "of the upsert merge, deletes, dead letters, the offsets and COMMIT).",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.visible_seconds = Histogram(
            PREFIX + "produce_to_visible_seconds",
            "Seconds from a message's Kafka timestamp to the commit that made it visible in "
            "PostgreSQL, by topic: one observation per partition of each committed batch, for "
            "the batch's first message from that partition (the one that waited longest).",
            ["topic"],
            buckets=VISIBLE_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            PREFIX + "batch_messages",
            "Messages per committed batch.",
            buckets=BATCH_MESSAGES_BUCKETS,
            registry=r,
        )
        self.dead_letters = counter(
            "dead_letters_total",
            "Messages set aside to the dead-letter destination, by reason (the error code).",
            ["reason"],
        )
        self.retries = counter("retries_total", "Retried operations, by kind.", ["kind"])
        self.commit_failures = counter(
            "commit_failures_total", "Batches that failed to commit, by kind.", ["kind"]
        )
        self.rebalances = counter(
            "rebalances_total", "Partition rebalance events, by event.", ["event"]
        )
        self.assigned = gauge("assigned_partitions", "Partitions assigned to this worker.")
        self.jumped = counter(
            "offsets_jumped_total",
            "Stored offsets that no longer existed and were jumped over "
            '(kafka.out_of_range = "jump"), by topic and reason (deleted, truncated, recreated).',
            ["topic", "reason"],
        )
        self.waiting = gauge(
            "waiting_partitions",
            "Assigned partitions paused until their stored offsets can be read.",
        )
        self.stored_offset = gauge(
            "stored_next_offset",
            "Next offset to read stored in PostgreSQL, per assigned partition.",
            ["topic", "partition"],
        )
        self.log_end_offset = gauge(
            "log_end_offset",
            "Log end offset (high watermark) last seen from Kafka, per assigned partition.",
            ["topic", "partition"],
        )
        self.lag = gauge(
            "partition_lag",
            "Messages not yet committed to PostgreSQL (log end offset - stored next offset), "
            "per assigned partition.",
            ["topic", "partition"],
        )
        self.last_commit = gauge(
            "last_commit_timestamp_seconds", "Unix time of the last committed batch."
        )
        self.kafka_up = gauge(
            "kafka_up",
            "1 while the consumer reaches a broker; 0 once librdkafka reports every broker "
            "down, until one is up again.",
        )
        self.kafka_up.set(1)
        r.register(_LagSeconds(self))
        for topic in topics:
            self.messages.labels(topic)
            self.bytes.labels(topic)
            self.visible_seconds.labels(topic)
        for name in tables:
            self.rows.labels(name)
            self.deletes.labels(name)
        for event in REBALANCE_EVENTS:
            self.rebalances.labels(event)
        self._clock = clock
        # The partition state below is written by the polling threads and read by a scrape
        # (lag_seconds), under this lock.
        self._lock = threading.Lock()
        self._assigned: set[TopicPartition] = set()
        self._stored: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        # Per partition: the Kafka timestamp (s) of the last message committed, and when the
        # lag was last seen at 0 (Unix time).
        self._newest: dict[TopicPartition, float] = {}
        self._caught_up_at: dict[TopicPartition, float] = {}
        self._uncommitted: Callable[[], Mapping[TopicPartition, int]] = dict

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    # --- batches -------------------------------------------------------------------------

    def batch_committed(
        self,
        batch: Batch,
        seconds: float,
        *,
        commit_seconds: float | None = None,
        now: float | None = None,
    ) -> None:
        """A batch has committed. `batch` is what `Batcher.take()` returned, `seconds` the time
        from its first message to the commit, `commit_seconds` from its last message to the
        commit (the commit step alone), `now` the Unix time of the commit (default: now).

        Counts messages, bytes, rows and deletes per table, the batch, its dead letters by
        `error.code`, observes each partition's produce-to-visible time, and moves each
        partition's stored offset (and lag) to `next_offsets`.
        """
        now = self._clock() if now is None else now
        for topic, (messages, size) in batch.by_topic().items():
            self.messages.labels(topic).inc(messages)
            self.bytes.labels(topic).inc(size)
        for table, count in batch.row_counts.items():
            self.rows.labels(_table_name(table.schema, table.name)).inc(count)
        for table, keys in batch.deletes.items():
            self.deletes.labels(_table_name(table.schema, table.name)).inc(len(keys))
        for dead in batch.dead_letters:
            self.dead_letters.labels(dead.error.code).inc()
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        if commit_seconds is not None:
            self.commit_seconds.observe(commit_seconds)
        self.batch_messages.observe(batch.message_count)
        for tp, timestamp in batch.first_timestamps.items():
            # A producer's clock ahead of ours (CreateTime) would make it negative.
            self.visible_seconds.labels(tp.topic).observe(max(now - timestamp / 1000, 0.0))
        with self._lock:
            for tp, timestamp in batch.last_timestamps.items():
                if tp in self._assigned:
                    self._newest[tp] = timestamp / 1000
        self.offsets_stored(batch.next_offsets)
        self.last_commit.set(now)

    def watch_uncommitted(self, oldest: Callable[[], Mapping[TopicPartition, int]]) -> None:
        """`lag_seconds` asks `oldest` at each scrape, from the scrape's thread, for the Kafka
        timestamp (ms) of the oldest message read but not committed yet, per partition."""
        self._uncommitted = oldest

    def watch_database(self, reachable: Callable[[], bool]) -> None:
        """`pg_kafka_sink_database_up` asks `reachable` (a cached ping) at each scrape."""
        up = Gauge(
            PREFIX + "database_up",
            "1 while PostgreSQL answers a ping (cached for a few seconds), else 0.",
            registry=self.registry,
        )
        up.set_function(lambda: 1.0 if reachable() else 0.0)

    def kafka_reachable(self, up: bool) -> None:
        """Every broker went down (False), or one is up again (True)."""
        self.kafka_up.set(1 if up else 0)

    def retried(self, kind: str) -> None:
        """An operation is being retried; `kind` is a short stable label such as
        "serialization", "deadlock", "connection" or "dead-letter-producer"."""
        self.retries.labels(kind).inc()

    def commit_failed(self, kind: str) -> None:
        """A batch did not commit; `kind` is a short stable label such as "fenced",
        "outdated-definition", "database" or "dead-letter"."""
        self.commit_failures.labels(kind).inc()

    # --- partitions ----------------------------------------------------------------------

    def partitions_assigned(
        self, partitions: Iterable[TopicPartition], stored: Mapping[TopicPartition, int | None]
    ) -> None:
        """Partitions were assigned (on_assign, even with an empty list). `stored` maps them to
        the next offset read from PostgreSQL (None: nothing stored yet)."""
        self.rebalances.labels("assign").inc()
        added = [TopicPartition(*tp) for tp in partitions]
        with self._lock:
            self._assigned.update(added)
            self.assigned.set(len(self._assigned))
        self.offsets_stored({tp: v for tp, v in stored.items() if v is not None and v >= 0})

    def offsets_jumped(self, tp: TopicPartition, reason: str) -> None:
        """A stored offset of `tp` no longer existed; reading jumped to one that does."""
        self.jumped.labels(tp.topic, reason).inc()

    def partitions_waiting(self, count: int) -> None:
        """`count` assigned partitions wait, paused, for their stored offsets."""
        self.waiting.set(count)

    def partitions_revoked(
        self, partitions: Iterable[TopicPartition], *, lost: bool = False
    ) -> None:
        """Partitions were revoked (on_revoke) or lost (on_lost, `lost=True`); their
        per-partition series disappear."""
        self.rebalances.labels("lost" if lost else "revoke").inc()
        with self._lock:
            for tp in (TopicPartition(*tp) for tp in partitions):
                self._assigned.discard(tp)
                for known in (self._stored, self._ends, self._newest, self._caught_up_at):
                    known.pop(tp, None)
                labels = _partition_labels(tp)
                for gauge in (self.stored_offset, self.log_end_offset, self.lag):
                    with contextlib.suppress(KeyError):  # a series never set
                        gauge.remove(*labels)
            self.assigned.set(len(self._assigned))

    def offsets_stored(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """The stored next offsets of these partitions are now known (read at assignment or
        after a re-seek, or written by a commit); partitions not assigned are ignored."""
        with self._lock:
            for tp, next_offset in next_offsets.items():
                if tp not in self._assigned:
                    continue
                self._stored[tp] = next_offset
                self.stored_offset.labels(*_partition_labels(tp)).set(next_offset)
                self._update_lag(tp)

    def log_end_offsets(self, ends: Mapping[TopicPartition, int]) -> None:
        """Log end offsets seen from Kafka (e.g. `Consumer.get_watermark_offsets(tp,
        cached=True)[1]` on the polling thread after a consume); negative values (unknown)
        and partitions not assigned are ignored."""
        with self._lock:
            for tp, end in ends.items():
                if end < 0 or tp not in self._assigned:
                    continue
                self._ends[tp] = end
                self.log_end_offset.labels(*_partition_labels(tp)).set(end)
                if self._update_lag(tp) == 0:  # caught up, as of the last fetch response
                    self._caught_up_at[tp] = self._clock()

    def _update_lag(self, tp: TopicPartition) -> int | None:
        stored, end = self._stored.get(tp), self._ends.get(tp)
        if stored is None or end is None:
            return None
        # A log end older than a fresh commit would read as negative lag: it is none.
        lag = max(end - stored, 0)
        self.lag.labels(*_partition_labels(tp)).set(lag)
        return lag

    def lag_seconds(self) -> dict[TopicPartition, float]:
        """`pg_kafka_sink_partition_lag_seconds`: per assigned partition, how long the oldest
        message not committed yet has been in Kafka (now - its Kafka timestamp).

        - The worker has read it (it is in the batch being read or committed): its age.
        - The partition's lag is 0 (and nothing of it is read but not committed): 0.
        - Otherwise the message is not read yet: an upper bound of its age, the time since
          the later of the last committed message's timestamp and the moment the lag was
          last seen at 0 (so that time caught up does not count); left out while neither is
          known, as when the lag is unknown.
        """
        oldest = self._uncommitted()  # first: it takes the worker's lock, never inside ours
        now = self._clock()
        found: dict[TopicPartition, float] = {}
        with self._lock:
            for tp in self._assigned:
                if tp in oldest:
                    since = oldest[tp] / 1000
                else:
                    stored, end = self._stored.get(tp), self._ends.get(tp)
                    if stored is None or end is None:
                        continue
                    if end <= stored:
                        found[tp] = 0.0
                        continue
                    bounds = [at[tp] for at in (self._newest, self._caught_up_at) if tp in at]
                    if not bounds:
                        continue
                    since = max(bounds)
                # A producer's clock ahead of ours (CreateTime) would make it negative.
                found[tp] = max(now - since, 0.0)
        return found


class _LagSeconds:
    """Collects `SinkMetrics.lag_seconds()` at each scrape, so that it ages between commits."""

    NAME = PREFIX + "partition_lag_seconds"
    HELP = (
        "Seconds the oldest message not yet committed to PostgreSQL has been in Kafka (now - "
        "its Kafka timestamp), per assigned partition; 0 while the lag is 0. Until the worker "
        "reads that message: an upper bound, the time since the later of the last committed "
        "message's timestamp and when the lag was last 0."
    )

    def __init__(self, metrics: SinkMetrics) -> None:
        self._metrics = metrics

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.NAME, self.HELP, labels=["topic", "partition"])

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for tp, seconds in sorted(self._metrics.lag_seconds().items()):
            family.add_metric(_partition_labels(tp), seconds)
        yield family


def _table_name(schema: str | None, name: str) -> str:
    return f"{schema or 'public'}.{name}"
