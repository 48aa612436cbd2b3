"""The stored Kafka positions: parsing, the ownership fence, merging, definition history."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sink.errors import FencedError, OutdatedDefinitionError, StoredStateError
from sink.offsets import (
    MAX_DEFINITIONS,
    StoredState,
    adopt_definition,
    advance,
    check_owned,
    fingerprint,
    is_legacy_state,
    moved_marker,
    parse_state,
    reset_command,
)
from sink.records import TopicPartition

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


def test_a_watermark_that_is_not_the_sinks_state_is_refused() -> None:
    for value in (None, "text", ["x"], {"offsets": "moved"}, {"offsets": {"t": [1]}}):
        with pytest.raises(StoredStateError, match=r"s\.t"):
            parse_state(value, "s.t")


def test_the_state_of_another_consumer_group_is_refused() -> None:
    stored = StoredState({A0: 5}, ("d1",), group="other").to_json()
    assert parse_state(stored, "s.t", "other") == StoredState({A0: 5}, ("d1",), "other")
    with pytest.raises(StoredStateError, match="consumer group 'other', not 'mine'"):
        parse_state(stored, "s.t", "mine")


def test_a_moved_marker_is_not_legacy_state_and_earlier_releases_refuse_it() -> None:
    marker = moved_marker("s.state", "g")
    assert not is_legacy_state(marker)
    assert is_legacy_state(StoredState({A0: 1}).to_json())
    # What a release before the state table checks in its fence: "offsets" must be an object.
    assert not isinstance(marker["offsets"], dict)
    assert "upgrade this worker" in marker["offsets"]


def test_reset_command_lists_every_offset() -> None:
    assert reset_command({A1: 7, A0: 5, B0: 0}) == "pg-kafka-sink reset --to a:0=5,a:1=7,b:0=0"


def test_state_round_trips_through_its_json() -> None:
    state = StoredState({A0: 5, A1: 7, B0: 0}, ("d1", "d2"))
    assert parse_state(state.to_json(), "s.t") == state
    assert state.to_json() == {
        "offsets": {"a": {"0": 5, "1": 7}, "b": {"0": 0}},
        "definitions": ["d1", "d2"],
    }


@pytest.mark.parametrize(
    "value",
    [
        "2015-01-01",
        [1, 2],
        {"offsets": []},
        {"offsets": {"a": {"x": 1}}},
        {"offsets": {"a": {"0": "1"}}},
    ],
)
def test_a_watermark_this_sink_did_not_write_is_refused_naming_the_table(value: object) -> None:
    with pytest.raises(StoredStateError, match=r"s\.t"):
        parse_state(value, "s.t")


def test_a_batch_commits_only_while_its_partitions_are_where_this_worker_left_them() -> None:
    stored = StoredState({A0: 10, A1: 20})
    check_owned(stored, {A0: 10, A1: 20}, "s.t")
    check_owned(stored, {B0: -1}, "s.t")  # never stored, never seen stored
    with pytest.raises(FencedError, match=r"a\[1\] stored 25, expected 20"):
        check_owned(StoredState({A0: 10, A1: 25}), {A0: 10, A1: 20}, "s.t")
    with pytest.raises(FencedError):
        check_owned(StoredState({B0: 3}), {B0: -1}, "s.t")  # another worker got there first


def test_advancing_moves_only_the_batch_partitions_and_keeps_the_others() -> None:
    stored = StoredState({A0: 10, A1: 20, B0: 5}, ("d",))
    assert advance(stored, {A1: 27}) == StoredState({A0: 10, A1: 27, B0: 5}, ("d",))


def test_a_new_definition_is_appended_and_an_older_one_is_refused() -> None:
    state = adopt_definition(StoredState(), "old", "s.t")
    state = adopt_definition(state, "new", "s.t")
    assert state.definitions == ("old", "new")
    assert adopt_definition(state, "new", "s.t") is state
    with pytest.raises(OutdatedDefinitionError, match="will not migrate it back"):
        adopt_definition(state, "old", "s.t")


def test_the_definition_history_is_bounded() -> None:
    state = StoredState()
    for i in range(MAX_DEFINITIONS + 5):
        state = adopt_definition(state, f"d{i}", "s.t")
    assert len(state.definitions) == MAX_DEFINITIONS
    assert state.definitions[-1] == f"d{MAX_DEFINITIONS + 4}"


def _table(*columns: sa.Column[object]) -> sa.Table:
    return sa.Table("t", sa.MetaData(), *columns, schema="s")


def test_the_fingerprint_changes_with_the_definition_and_only_with_it() -> None:
    base = fingerprint([_table(sa.Column("id", sa.BIGINT, primary_key=True))])
    assert base == fingerprint([_table(sa.Column("id", sa.BIGINT, primary_key=True))])
    assert base != fingerprint(
        [_table(sa.Column("id", sa.BIGINT, primary_key=True), sa.Column("note", sa.TEXT))]
    )
    assert base != fingerprint([_table(sa.Column("id", sa.INTEGER, primary_key=True))])
