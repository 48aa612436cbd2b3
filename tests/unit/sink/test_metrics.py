"""The Prometheus text the sink exposes, and what the run loop's calls make of it."""

from __future__ import annotations

import re

import sqlalchemy as sa

from sink.batcher import Batcher, DeadLetter, Span
from sink.errors import DecodeError, MappingError
from sink.metrics import SinkMetrics
from sink.records import Message, TopicPartition

# name{label="value",...} value — the sample line grammar of the text format 0.0.4.
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$"
)


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line.startswith("# HELP "):
            assert line.split()[2].startswith(("pg_kafka_sink_", "process_", "python_"))
        else:
            assert SAMPLE.match(line), line
            base = re.sub(r"(_bucket|_sum|_count)$", "", line.split("{")[0].split()[0])
            assert base in typed or line.split("{")[0].split()[0] in typed, line


def table(name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), sa.Column("id", sa.BIGINT, primary_key=True), schema="s")


def message(topic: str, partition: int, offset: int, value: bytes = b"{}") -> Message:
    return Message(topic, partition, offset, 1_700_000_000_000, b"k", value)


def span(message: Message) -> Span:
    """The batch's account of one message."""
    size = len(message.key or b"") + len(message.value or b"")
    at = message.timestamp_ms
    return Span(message.topic, message.partition, message.offset, message.offset, 1, size, at, at)


def test_committed_batch_counts_messages_rows_per_table_and_dead_letters_by_reason() -> None:
    events, other = table("events"), table("other")
    batcher = Batcher(max_messages=100, max_bytes=1 << 20, max_age_seconds=1)
    batcher.add(span(message("t", 0, 5)), [(events, (1,)), (other, (1,))])
    batcher.add(span(message("t", 0, 6)), [(events, (2,))])
    for bad, error in (
        (message("t", 1, 9), DecodeError("t[1]@9", "bad", code="not-json")),
        (message("t", 1, 10), MappingError("t[1]@10", "bad", table="s.events", code="type")),
    ):
        batcher.add(span(bad), dead_letter=DeadLetter(bad, error))
    metrics = SinkMetrics()
    metrics.partitions_assigned([TopicPartition("t", 0), TopicPartition("t", 1)], {})
    metrics.batch_committed(batcher.take(), 0.2, commit_seconds=0.03, now=1_700_000_123.5)

    found = samples(metrics.render())
    assert found['pg_kafka_sink_messages_total{topic="t"}'] == 4
    assert found['pg_kafka_sink_bytes_total{topic="t"}'] == 4 * 3
    assert found['pg_kafka_sink_rows_total{table="s.events"}'] == 2
    assert found['pg_kafka_sink_rows_total{table="s.other"}'] == 1
    assert found['pg_kafka_sink_dead_letters_total{reason="not-json"}'] == 1
    assert found['pg_kafka_sink_dead_letters_total{reason="type"}'] == 1
    assert found["pg_kafka_sink_batches_total"] == 1
    assert found["pg_kafka_sink_batch_duration_seconds_count"] == 1
    assert found['pg_kafka_sink_commit_duration_seconds_bucket{le="0.025"}'] == 0
    assert found['pg_kafka_sink_commit_duration_seconds_bucket{le="0.05"}'] == 1
    assert found['pg_kafka_sink_batch_messages_bucket{le="10.0"}'] == 1
    assert found["pg_kafka_sink_last_commit_timestamp_seconds"] == 1_700_000_123.5
    assert found['pg_kafka_sink_stored_next_offset{partition="0",topic="t"}'] == 7
    assert found['pg_kafka_sink_stored_next_offset{partition="1",topic="t"}'] == 11
    assert_valid_exposition(metrics.render())


def test_lag_is_log_end_minus_stored_next_offset_per_partition() -> None:
    metrics = SinkMetrics()
    tp0, tp1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
    metrics.partitions_assigned([tp0, tp1], {tp0: 100, tp1: None})
    metrics.log_end_offsets({tp0: 250, tp1: 40})
    found = samples(metrics.render())
    assert found['pg_kafka_sink_partition_lag{partition="0",topic="orders"}'] == 150
    assert found['pg_kafka_sink_log_end_offset{partition="1",topic="orders"}'] == 40
    # Nothing stored yet for partition 1: its lag is unknown, not made up.
    assert 'pg_kafka_sink_partition_lag{partition="1",topic="orders"}' not in found

    metrics.offsets_stored({tp0: 250, tp1: 30})
    found = samples(metrics.render())
    assert found['pg_kafka_sink_partition_lag{partition="0",topic="orders"}'] == 0
    assert found['pg_kafka_sink_partition_lag{partition="1",topic="orders"}'] == 10


def test_revoked_partitions_drop_their_series_and_count_as_rebalances() -> None:
    metrics = SinkMetrics()
    tp0, tp1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
    metrics.partitions_assigned([tp0, tp1], {tp0: 1, tp1: 2})
    metrics.log_end_offsets({tp0: 5, tp1: 5})
    metrics.partitions_revoked([tp1])
    metrics.partitions_revoked([tp0], lost=True)
    metrics.log_end_offsets({tp0: 9})  # a late update for a partition no longer owned

    text = metrics.render()
    found = samples(text)
    assert 'topic="orders"' not in text
    assert found["pg_kafka_sink_assigned_partitions"] == 0
    assert found['pg_kafka_sink_rebalances_total{event="assign"}'] == 1
    assert found['pg_kafka_sink_rebalances_total{event="revoke"}'] == 1
    assert found['pg_kafka_sink_rebalances_total{event="lost"}'] == 1


def test_retries_and_commit_failures_are_counted_by_kind() -> None:
    metrics = SinkMetrics()
    metrics.retried("serialization")
    metrics.retried("serialization")
    metrics.commit_failed("fenced")
    found = samples(metrics.render())
    assert found['pg_kafka_sink_retries_total{kind="serialization"}'] == 2
    assert found['pg_kafka_sink_commit_failures_total{kind="fenced"}'] == 1


def test_fresh_metrics_render_every_help_and_type_line_and_known_series_at_zero() -> None:
    text = SinkMetrics(topics=["orders"], tables=["s.events"]).render()
    assert_valid_exposition(text)
    for name in ("messages_total", "batch_duration_seconds", "partition_lag", "dead_letters_total"):
        assert f"# TYPE pg_kafka_sink_{name} " in text
    found = samples(text)
    assert found['pg_kafka_sink_messages_total{topic="orders"}'] == 0
    assert found['pg_kafka_sink_rows_total{table="s.events"}'] == 0
    assert found['pg_kafka_sink_rebalances_total{event="lost"}'] == 0


def test_process_and_build_series_are_exposed() -> None:
    found = samples(SinkMetrics().render())
    assert found["process_resident_memory_bytes"] > 0
    (build,) = [name for name in found if name.startswith("pg_kafka_sink_build_info{")]
    assert 'librdkafka="' in build and 'python="' in build and 'version="' in build


def test_the_dead_letter_help_names_the_label_it_has() -> None:
    text = SinkMetrics().render()
    (help_line,) = [
        line for line in text.splitlines() if line.startswith("# HELP pg_kafka_sink_dead_le")
    ]
    assert "by reason" in help_line


class Clock:
    """A Unix time that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stamped(topic: str, partition: int, offset: int, timestamp_ms: int | None) -> Message:
    return Message(topic, partition, offset, timestamp_ms, b"k", b"{}")


def test_produce_to_visible_is_observed_per_partition_for_its_first_message_at_commit() -> None:
    batcher = Batcher(max_messages=100, max_bytes=1 << 20, max_age_seconds=1)
    batcher.add(span(stamped("orders", 0, 10, 1_700_000_000_000)))  # waited 12.5 s
    batcher.add(span(stamped("orders", 0, 11, 1_700_000_010_000)))
    batcher.add(span(stamped("orders", 1, 3, 1_700_000_012_000)))  # waited 0.5 s
    batcher.add(span(stamped("audit", 0, 7, None)))  # no timestamp: not observed
    batcher.add(span(stamped("audit", 0, 8, 1_700_000_011_000)))
    metrics = SinkMetrics(topics=["orders", "audit"])
    metrics.batch_committed(batcher.take(), 0.2, now=1_700_000_012.5)

    found = samples(metrics.render())
    count = 'pg_kafka_sink_produce_to_visible_seconds_count{topic="orders"}'
    assert found[count] == 2
    assert found['pg_kafka_sink_produce_to_visible_seconds_sum{topic="orders"}'] == 13.0
    assert found['pg_kafka_sink_produce_to_visible_seconds_bucket{le="0.5",topic="orders"}'] == 1
    assert found['pg_kafka_sink_produce_to_visible_seconds_bucket{le="10.0",topic="orders"}'] == 1
    assert found['pg_kafka_sink_produce_to_visible_seconds_bucket{le="30.0",topic="orders"}'] == 2
    assert found['pg_kafka_sink_produce_to_visible_seconds_count{topic="audit"}'] == 0
    assert_valid_exposition(metrics.render())


def test_produce_to_visible_of_a_producer_clock_ahead_of_ours_is_zero() -> None:
    batcher = Batcher(max_messages=100, max_bytes=1 << 20, max_age_seconds=1)
    batcher.add(span(stamped("orders", 0, 1, 1_700_000_005_000)))
    metrics = SinkMetrics()
    metrics.batch_committed(batcher.take(), 0.2, now=1_700_000_000.0)
    found = samples(metrics.render())
    assert found['pg_kafka_sink_produce_to_visible_seconds_bucket{le="0.1",topic="orders"}'] == 1
    assert found['pg_kafka_sink_produce_to_visible_seconds_sum{topic="orders"}'] == 0


def test_lag_seconds_is_the_age_of_the_oldest_uncommitted_message_or_zero_when_caught_up() -> None:
    clock = Clock(1_700_000_100.0)
    metrics = SinkMetrics(clock=clock)
    read, idle, unknown = (TopicPartition("orders", p) for p in range(3))
    uncommitted = {read: 1_700_000_040_000}  # read, not committed: 60 s old
    metrics.watch_uncommitted(lambda: uncommitted)
    metrics.partitions_assigned([read, idle, unknown], {read: 5, idle: 9, unknown: None})
    metrics.log_end_offsets({read: 5, idle: 9})  # both caught up, as far as the worker knows

    assert metrics.lag_seconds() == {read: 60.0, idle: 0.0}  # `unknown`: nothing stored yet
    found = samples(metrics.render())
    assert found['pg_kafka_sink_partition_lag_seconds{partition="0",topic="orders"}'] == 60
    assert found['pg_kafka_sink_partition_lag_seconds{partition="1",topic="orders"}'] == 0
    assert 'pg_kafka_sink_partition_lag_seconds{partition="2"' not in metrics.render()

    clock.now += 30  # a scrape later, the same message has waited longer
    assert metrics.lag_seconds()[read] == 90.0
    assert_valid_exposition(metrics.render())


def test_lag_seconds_of_a_message_not_read_yet_is_bounded_without_counting_time_caught_up() -> None:
    clock = Clock(1_700_000_000.0)
    metrics = SinkMetrics(clock=clock)
    tp = TopicPartition("orders", 0)
    metrics.partitions_assigned([tp], {tp: 0})
    batcher = Batcher(max_messages=100, max_bytes=1 << 20, max_age_seconds=1)
    batcher.add(span(stamped("orders", 0, 0, 1_699_999_990_000)))
    batcher.add(span(stamped("orders", 0, 1, 1_699_999_995_000)))  # the last committed: 5 s old
    metrics.batch_committed(batcher.take(), 0.2)
    metrics.log_end_offsets({tp: 4})  # two more, not read yet

    assert metrics.lag_seconds() == {tp: 5.0}  # at most as old as the last one committed
    clock.now += 10
    assert metrics.lag_seconds() == {tp: 15.0}

    metrics.log_end_offsets({tp: 2})  # caught up (and the two were not there after all)
    assert metrics.lag_seconds() == {tp: 0.0}
    clock.now += 3600  # an hour caught up, then a message arrives
    caught_up_at = clock.now
    metrics.log_end_offsets({tp: 2})
    clock.now += 2
    metrics.log_end_offsets({tp: 3})
    assert metrics.lag_seconds() == {tp: clock.now - caught_up_at}  # 2 s, not an hour

    metrics.partitions_revoked([tp])
    assert metrics.lag_seconds() == {}
    assert "partition_lag_seconds{" not in metrics.render()
