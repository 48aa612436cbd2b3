"""The pure parts of the operator commands: `reset --to` parsing and the lag arithmetic."""

from __future__ import annotations

import pytest

from sink.admin import parse_reset_target, partition_status
from sink.config import StartFrom
from sink.errors import ConfigError
from sink.records import TopicPartition

TP0, TP1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


@pytest.mark.parametrize("text", ["earliest", "latest"])
def test_reset_to_named_positions(text: str) -> None:
    assert parse_reset_target(text).kind == text


def test_reset_to_explicit_offsets() -> None:
    target = parse_reset_target("orders:0=12, orders.v2:3=0")
    assert target.kind == "explicit"
    assert target.offsets == {TP0: 12, TopicPartition("orders.v2", 3): 0}


@pytest.mark.parametrize(
    ("text", "epoch_ms"),
    [
        ("timestamp:1700000000123", 1_700_000_000_123),
        ("timestamp:2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("timestamp:2023-11-15T00:13:20+02:00", 1_700_000_000_000),
    ],
)
def test_reset_to_a_timestamp(text: str, epoch_ms: int) -> None:
    target = parse_reset_target(text)
    assert (target.kind, target.timestamp_ms) == ("timestamp", epoch_ms)


@pytest.mark.parametrize(
    "text", ["timestamp:2023-11-14T22:13:20", "timestamp:soon", "orders:x=1", "beginning"]
)
def test_reset_rejects_ambiguous_or_unknown_targets(text: str) -> None:
    with pytest.raises(ConfigError, match="--to"):
        parse_reset_target(text)


def test_lag_is_log_end_minus_stored_and_counts_unstored_partitions_from_start() -> None:
    rows = partition_status(
        [TP0, TP1], {TP0: 90}, {TP0: 0, TP1: 5}, {TP0: 100, TP1: 25}, StartFrom.EARLIEST
    )
    assert [(r.partition, r.stored_next_offset, r.log_end_offset, r.lag) for r in rows] == [
        (0, 90, 100, 10),
        (1, None, 25, 20),
    ]


def test_nothing_stored_with_start_from_latest_is_no_lag() -> None:
    [row] = partition_status([TP1], {}, {TP1: 0}, {TP1: 25}, StartFrom.LATEST)
    assert row.lag == 0


def test_offsets_deleted_by_retention_do_not_count_as_lag() -> None:
    [row] = partition_status([TP0], {TP0: 10}, {TP0: 50}, {TP0: 60}, StartFrom.EARLIEST)
    assert row.lag == 10
