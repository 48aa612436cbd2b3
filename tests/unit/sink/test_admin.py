"""The pure parts of the operator commands: `reset --to` parsing, the lag arithmetic and the
topics they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from sink.admin import Context, parse_reset_target, partition_status
from sink.config import StartFrom, load_settings
from sink.errors import ConfigError
from sink.records import TopicPartition
from sink.tables import load_tables

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


def test_the_commands_read_the_topics_of_tables_whose_columns_no_message_gave_yet(
    tmp_path: Path,
) -> None:
    config = tmp_path / "sink.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "broker:9092"\n'
        '[postgres]\nurl = "postgresql://sink@db:5432/sink"\n'
        '[[tables]]\nname = "orders"\ntopics = ["orders"]\nvalue_format = "connect-json"\n'
        '[[tables]]\nname = "audit"\ntopics = ["audit"]\n'
        '[[tables.columns]]\nname = "id"\ntype = "BIGINT"\n'
    )
    settings = load_settings(config, {})
    context = Context(settings, load_tables(settings))
    assert [t.name for t in context.tables.targets] == ["public.audit"]
    assert context.subscription() == (["audit", "orders"], [])
