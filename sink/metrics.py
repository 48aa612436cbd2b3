"""Metrics: counters, gauges and histograms the run loop updates, rendered for Prometheus.

The loop (one thread) calls `SinkMetrics` methods with plain values; the HTTP thread calls
`render()`. One lock per registry keeps the two consistent; nothing here touches Kafka or
PostgreSQL.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Dict, Tuple

from .batcher import Batch
from .records import TopicPartition

PREFIX = "pg_kafka_sink_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds per batch: from a few milliseconds (small batches on an idle topic) to a minute
# (a first batch that rebuilds and swaps a large table).
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Messages per batch, up to the largest batch.max_messages worth configuring.
BATCH_MESSAGES_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)

LabelValues = Tuple[str, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values))
    return "{" + pairs + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = lock

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise ValueError(
                f"{self.name} takes labels {self.label_names}, got {len(labels)} values"
            )
        return tuple(str(value) for value in labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (until the process restarts)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock):
        super().__init__(name, help_text, labels, lock)
        self._values: Dict[LabelValues, float] = {}
        if not self.label_names:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, labels: Sequence[str] = ()) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, labels: Sequence[str] = ()) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, key)} {_number(value)}"
            for key, value in sorted(self._values.items())
        ]


class Gauge(_Metric):
    """A value that goes up and down; a labelled series can be removed."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str], lock: threading.Lock):
        super().__init__(name, help_text, labels, lock)
        self._values: Dict[LabelValues, float] = {}

    def set(self, value: float, labels: Sequence[str] = ()) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def remove(self, labels: Sequence[str]) -> None:
        key = self._key(labels)
        with self._lock:
            self._values.pop(key, None)

    def value(self, labels: Sequence[str] = ()) -> float | None:
        with self._lock:
            return self._values.get(self._key(labels))

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.label_names, key)} {_number(value)}"
            for key, value in sorted(self._values.items())
        ]


class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        lock: threading.Lock,
        buckets: Sequence[float],
    ):
        super().__init__(name, help_text, labels, lock)
        if "le" in self.label_names:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be distinct and non-empty")
        self.bounds = tuple(b for b in bounds if not math.isinf(b))
        # Per label values: counts per bucket (non-cumulative, +Inf last), sum.
        self._series: Dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, labels: Sequence[str] = ()) -> None:
        key = self._key(labels)
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = ([0] * (len(self.bounds) + 1), [0.0])
            series[0][index] += 1
            series[1][0] += value

    def count(self, labels: Sequence[str] = ()) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        lines = []
        for key, (counts, total) in sorted(self._series.items()):
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), counts):
                cumulative += count
                labels = _labels((*self.label_names, "le"), (*key, _number(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            plain = _labels(self.label_names, key)
            lines.append(f"{self.name}_sum{plain} {_number(total[0])}")
            lines.append(f"{self.name}_count{plain} {cumulative}")
        return lines


class Registry:
    """The metrics of one process, rendered in the Prometheus text exposition format 0.0.4."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """A counter named `<prefix><name>`; `name` must end in `_total`."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        metric = Counter(self.prefix + name, help_text, labels, self._lock)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        metric = Gauge(self.prefix + name, help_text, labels, self._lock)
        self._add(metric)
        return metric

    def histogram(
        self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        metric = Histogram(self.prefix + name, help_text, labels, self._lock, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """Every metric: HELP and TYPE lines, then its samples sorted by label values."""
        lines: list[str] = []
        with self._lock:
            for metric in self._metrics.values():
                lines.extend(metric.header())
                lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


def _partition_labels(tp: TopicPartition) -> tuple[str, str]:
    return tp[0], str(tp[1])


class SinkMetrics:
    """The sink's metrics, as methods the run loop calls with plain values.

    Calls come from the worker's polling threads, one at a time (never from an HTTP handler);
    `render()` may be called from any thread. Every per-partition series is removed when its
    partition is revoked, so that summing lag over workers counts each partition once.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.messages = r.counter(
            "messages_total",
            "Kafka messages committed to PostgreSQL (rows, deletes, dead letters).",
        )
        self.bytes = r.counter("bytes_total", "Bytes of Kafka keys and values committed.")
        self.rows = r.counter("rows_total", "Rows written, by target table.", ["table"])
        self.deletes = r.counter(
            "deleted_keys_total", "Primary keys deleted by tombstones, by target table.", ["table"]
        )
        self.batches = r.counter("batches_total", "Batches committed.")
        self.batch_seconds = r.histogram(
            "batch_duration_seconds",
            "Seconds from a batch's first message to its commit (rows stream to COPY meanwhile).",
            BATCH_SECONDS_BUCKETS,
        )
        self.batch_messages = r.histogram(
            "batch_messages", "Messages per committed batch.", BATCH_MESSAGES_BUCKETS
        )
        self.dead_letters = r.counter(
            "dead_letters_total",
            "Messages set aside to the dead-letter destination, by error code.",
            ["reason"],
        )
        self.retries = r.counter("retries_total", "Retried operations, by kind.", ["kind"])
        self.commit_failures = r.counter(
            "commit_failures_total", "Batches that failed to commit, by kind.", ["kind"]
        )
        self.rebalances = r.counter(
            "rebalances_total", "Partition rebalance events, by event.", ["event"]
        )
        self.assigned = r.gauge("assigned_partitions", "Partitions assigned to this worker.")
        self.jumped = r.counter(
            "offsets_jumped_total",
            "Stored offsets that no longer existed and were jumped over "
            '(kafka.out_of_range = "jump"), by topic and reason (deleted, truncated, recreated).',
            ["topic", "reason"],
        )
        self.waiting = r.gauge(
            "waiting_partitions",
            "Assigned partitions paused until their stored offsets can be read.",
        )
        self.stored_offset = r.gauge(
            "stored_next_offset",
            "Next offset to read stored in PostgreSQL, per assigned partition.",
            ["topic", "partition"],
        )
        self.log_end_offset = r.gauge(
            "log_end_offset",
            "Log end offset (high watermark) last seen from Kafka, per assigned partition.",
            ["topic", "partition"],
        )
        self.lag = r.gauge(
            "partition_lag",
            "Messages not yet committed to PostgreSQL (log end offset - stored next offset), "
            "per assigned partition.",
            ["topic", "partition"],
        )
        self.last_commit = r.gauge(
            "last_commit_timestamp_seconds", "Unix time of the last committed batch."
        )
        self._assigned: set[TopicPartition] = set()
        self._stored: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}

    def render(self) -> str:
        return self.registry.render()

    # --- batches -------------------------------------------------------------------------

    def batch_committed(self, batch: Batch, seconds: float, *, now: float | None = None) -> None:
        """A batch has committed. `batch` is what `Batcher.take()` returned, `seconds` the time
        from its first message to the commit, `now` the unix time (default: now).

        Counts messages, bytes, rows and deletes per table, the batch, its dead letters by
        `error.code`, and moves each partition's stored offset (and lag) to `next_offsets`.
        """
        self.messages.inc(batch.message_count)
        self.bytes.inc(batch.byte_count)
        for table, count in batch.row_counts.items():
            self.rows.inc(count, [_table_name(table.schema, table.name)])
        for table, keys in batch.deletes.items():
            self.deletes.inc(len(keys), [_table_name(table.schema, table.name)])
        for dead in batch.dead_letters:
            self.dead_letters.inc(1, [dead.error.code])
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.batch_messages.observe(batch.message_count)
        self.offsets_stored(batch.next_offsets)
        self.last_commit.set(time.time() if now is None else now)

    def retried(self, kind: str) -> None:
        """An operation is being retried; `kind` is a short stable label such as
        "serialization", "deadlock", "connection" or "dead-letter-producer"."""
        self.retries.inc(1, [kind])

    def commit_failed(self, kind: str) -> None:
        """A batch did not commit; `kind` is a short stable label such as "fenced",
        "outdated-definition", "database" or "dead-letter"."""
        self.commit_failures.inc(1, [kind])

    # --- partitions ----------------------------------------------------------------------

    def partitions_assigned(
        self, partitions: Iterable[TopicPartition], stored: Mapping[TopicPartition, int | None]
    ) -> None:
        """Partitions were assigned (on_assign, even with an empty list). `stored` maps them to
        the next offset read from PostgreSQL (None: nothing stored yet)."""
        self.rebalances.inc(1, ["assign"])
        added = [TopicPartition(*tp) for tp in partitions]
        self._assigned.update(added)
        self.assigned.set(len(self._assigned))
        self.offsets_stored({tp: v for tp, v in stored.items() if v is not None and v >= 0})

    def offsets_jumped(self, tp: TopicPartition, reason: str) -> None:
        """A stored offset of `tp` no longer existed; reading jumped to one that does."""
        self.jumped.inc(1, [tp.topic, reason])

    def partitions_waiting(self, count: int) -> None:
        """`count` assigned partitions wait, paused, for their stored offsets."""
        self.waiting.set(count)

    def partitions_revoked(
        self, partitions: Iterable[TopicPartition], *, lost: bool = False
    ) -> None:
        """Partitions were revoked (on_revoke) or lost (on_lost, `lost=True`); their
        per-partition series disappear."""
        self.rebalances.inc(1, ["lost" if lost else "revoke"])
        for tp in (TopicPartition(*tp) for tp in partitions):
            self._assigned.discard(tp)
            self._stored.pop(tp, None)
            self._ends.pop(tp, None)
            labels = _partition_labels(tp)
            for gauge in (self.stored_offset, self.log_end_offset, self.lag):
                gauge.remove(labels)
        self.assigned.set(len(self._assigned))

    def offsets_stored(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """The stored next offsets of these partitions are now known (read at assignment or
        after a re-seek, or written by a commit); partitions not assigned are ignored."""
        for tp, next_offset in next_offsets.items():
            if tp not in self._assigned:
                continue
            self._stored[tp] = next_offset
            self.stored_offset.set(next_offset, _partition_labels(tp))
            self._update_lag(tp)

    def log_end_offsets(self, ends: Mapping[TopicPartition, int]) -> None:
        """Log end offsets seen from Kafka (e.g. `Consumer.get_watermark_offsets(tp,
        cached=True)[1]` on the polling thread after a consume); negative values (unknown)
        and partitions not assigned are ignored."""
        for tp, end in ends.items():
            if end < 0 or tp not in self._assigned:
                continue
            self._ends[tp] = end
            self.log_end_offset.set(end, _partition_labels(tp))
            self._update_lag(tp)

    def _update_lag(self, tp: TopicPartition) -> None:
        stored, end = self._stored.get(tp), self._ends.get(tp)
        if stored is not None and end is not None:
            # A log end older than a fresh commit would read as negative lag: it is none.
            self.lag.set(max(end - stored, 0), _partition_labels(tp))


def _table_name(schema: str | None, name: str) -> str:
    return f"{schema or 'public'}.{name}"
