"""The batch-due policy and what a batch holds, with a fake clock."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pg_bulk_ingest import CopyRow
from sink.batcher import Batcher, DeadLetter, Span
from sink.errors import DecodeError, SinkError
from sink.records import Message, TopicPartition
from sink.tables import Truncation

METADATA = sa.MetaData()
EVENTS = sa.Table(
    "events", METADATA, sa.Column("id", sa.BIGINT, primary_key=True), sa.Column("v", sa.TEXT)
)
LOG = sa.Table("log", METADATA, sa.Column("line", sa.TEXT))
A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(
    tp: TopicPartition, offset: int, value: bytes | None = b"x", key: bytes | None = None
) -> Message:
    return Message(tp.topic, tp.partition, offset, None, key, value)


def span(message: Message) -> Span:
    """The batch's account of one message."""
    size = len(message.key or b"") + len(message.value or b"")
    at = message.timestamp_ms
    return Span(message.topic, message.partition, message.offset, message.offset, 1, size, at, at)


def batcher(
    clock: Clock, max_messages: int = 100, max_bytes: int = 10_000, max_age: float = 1.0
) -> Batcher:
    return Batcher(max_messages, max_bytes, max_age, clock=clock)


def test_an_empty_batcher_is_never_due_and_waits_at_most_the_linger() -> None:
    clock = Clock()
    b = batcher(clock)
    clock.now += 1000
    assert not b.is_due()
    assert b.time_until_due() == 1.0
    assert b.message_count == 0


def test_due_at_max_messages() -> None:
    b = batcher(Clock(), max_messages=3)
    b.add(span(msg(A0, 0)), [(LOG, ("a",))])
    b.add(span(msg(A0, 1)))
    assert not b.is_due()
    b.add(span(msg(A1, 0)))
    assert b.is_due()
    assert b.time_until_due() == 0.0


def test_due_at_max_bytes_of_keys_and_values() -> None:
    b = batcher(Clock(), max_bytes=10)
    b.add(span(msg(A0, 0, value=b"12345", key=b"123")))
    assert (b.byte_count, b.is_due()) == (8, False)
    b.add(span(msg(A0, 1, value=b"12")))
    assert (b.byte_count, b.is_due()) == (10, True)


def test_due_max_age_after_the_first_message() -> None:
    clock = Clock()
    b = batcher(clock, max_age=2.0)
    b.add(span(msg(A0, 0)))
    clock.now += 1.5
    b.add(span(msg(A0, 1)))
    assert not b.is_due()
    assert b.time_until_due() == pytest.approx(0.5)
    assert b.time_until_due(now=clock.now + 0.25) == pytest.approx(0.25)
    clock.now += 0.5
    assert b.is_due()
    assert b.is_due(now=clock.now)


def test_take_hands_over_row_counts_offsets_and_counts_then_starts_afresh() -> None:
    clock = Clock()
    b = batcher(clock)
    b.add(span(msg(A0, 10, value=b"abc")), [(EVENTS, (1, "x")), (LOG, ("l1",))])
    b.add(span(msg(B0, 3)), [(EVENTS, (2, "y"))])
    b.add(span(msg(A0, 11)), [(LOG, ("l2",))])
    batch = b.take()
    assert batch.row_counts == {EVENTS: 2, LOG: 2}
    assert batch.next_offsets == {A0: 12, B0: 4}
    assert batch.first_offsets == {A0: 10, B0: 3}
    assert (batch.message_count, batch.byte_count, batch.row_count) == (3, 5, 4)
    assert (b.message_count, b.byte_count) == (0, 0)
    assert not b.is_due()
    assert b.take().next_offsets == {}


def test_next_offset_follows_the_last_offset_across_gaps() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 5)))
    b.add(span(msg(A0, 9)))  # 6..8 compacted away or transaction markers
    b.add(span(msg(A0, 20)))
    batch = b.take()
    assert batch.next_offsets == {A0: 21}
    assert batch.first_offsets == {A0: 5}


def test_messages_without_rows_still_advance_their_partition() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 7, value=None)))  # an ignored tombstone
    assert b.take().next_offsets == {A0: 8}


def test_an_offset_going_back_within_a_batch_is_refused() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 5)))
    with pytest.raises(SinkError, match=r"a\[0\]@5: offset goes back .*abandoned"):
        b.add(span(msg(A0, 5)))


def test_a_batch_holding_messages_of_revoked_partitions_says_so() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 0)), [(EVENTS, (1, "a0"))])
    bad = msg(A1, 1)
    b.add(span(bad), dead_letter=DeadLetter(bad, DecodeError("a[1]@1", "bad")))
    assert b.holds_any([A1, TopicPartition("c", 0)])
    assert b.holds_any([("a", 0)])
    assert not b.holds_any([B0, TopicPartition("c", 0)])
    b.take()
    assert not b.holds_any([A0, A1])


def test_a_key_whose_last_message_is_a_tombstone_is_deleted() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 0)), [(EVENTS, (1, "v1"))])
    b.add(span(msg(A0, 1)), [(EVENTS, (2, "v2"))])
    b.add(span(msg(A0, 2, value=None)), deletes=[(EVENTS, (1,))])
    batch = b.take()
    # Deletes apply after the rows: the row of key 1 is written, then deleted.
    assert batch.row_counts == {EVENTS: 2}
    assert batch.deletes == {EVENTS: ((1,),)}
    assert batch.delete_count == 1


def test_a_key_written_after_its_tombstone_is_not_deleted() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 0, value=None)), deletes=[(EVENTS, (1,)), (EVENTS, (2,))])
    b.add(span(msg(A0, 1)), [(EVENTS, (1, "again"))])
    batch = b.take()
    assert batch.deletes == {EVENTS: ((2,),)}


def test_only_the_last_of_several_writes_and_tombstones_of_a_key_counts() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 0, value=None)), deletes=[(EVENTS, (1,))])
    b.add(span(msg(A0, 1)), [(EVENTS, (1, "again"))])
    b.add(span(msg(A0, 2, value=None)), deletes=[(EVENTS, (1,))])
    b.add(span(msg(A0, 3)), [(EVENTS, (1, "last"))])
    b.add(span(msg(A0, 4, value=None)), deletes=[(EVENTS, (7,))])
    b.add(span(msg(A0, 5, value=None)), deletes=[(EVENTS, (7,))])
    batch = b.take()
    # The last write of key 1 is an upsert that replaces the row: no delete for that key.
    assert batch.deletes == {EVENTS: ((7,),)}


def test_tombstones_match_rows_given_as_copy_lines_by_their_key_text() -> None:
    keyed = sa.Table(
        "keyed",
        METADATA,
        sa.Column("id", sa.BIGINT, primary_key=True),
        sa.Column("code", sa.TEXT, primary_key=True),
        sa.Column("v", sa.TEXT),
    )
    b = batcher(Clock())
    b.add(span(msg(A0, 0, value=None)), deletes=[(keyed, (1, "tab\there")), (keyed, (3, "c"))])
    b.add(span(msg(A0, 1, value=None)), deletes=[(keyed, (4, "d"))])
    b.add(span(msg(A0, 2)), [(keyed, CopyRow("2\tb\tkept\n"))])
    b.add(span(msg(A0, 3)), [(keyed, CopyRow("3\tc\tre-created\n"))])
    b.add(span(msg(A0, 4)), [(keyed, (4, "d", "a typed row"))])
    b.add(span(msg(A0, 5)), [(keyed, CopyRow("1\ttab\\there\tescaped like the key\n"))])
    batch = b.take()
    assert batch.deletes == {keyed: ()}
    assert batch.row_counts == {keyed: 4}


def test_dead_letters_travel_with_the_batch_and_advance_their_offset() -> None:
    b = batcher(Clock())
    error = DecodeError("a[0]@4", "value is not JSON", code="not-json")
    bad = msg(A0, 4, value=b"{bad")
    b.add(span(bad), dead_letter=DeadLetter(bad, error))
    batch = b.take()
    assert [(d.message.offset, d.error) for d in batch.dead_letters] == [(4, error)]
    assert batch.next_offsets == {A0: 5}
    assert batch.message_count == 1


@pytest.mark.parametrize(("messages", "size", "age"), [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.0)])
def test_limits_must_be_positive(messages: int, size: int, age: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Batcher(messages, size, age)


def test_a_run_of_messages_of_one_table_is_accounted_for_as_each_message_is() -> None:
    by_message, by_parts = batcher(Clock()), batcher(Clock())
    for b in (by_message, by_parts):
        b.add(span(msg(A0, 0, value=None)), deletes=[(EVENTS, (1,)), (EVENTS, (2,))])
    run = [(EVENTS, CopyRow("1\tagain\n")), (EVENTS, CopyRow("4\tfour\n"))]
    by_message.add(span(msg(A0, 4, value=b"12345", key=b"k1")), [run[0]])
    by_message.add(span(msg(A0, 7, value=b"6")), [run[1]])  # a gap: 5 and 6 are compacted away
    by_message.add(span(msg(B0, 9, value=b"678")), [(EVENTS, CopyRow("3\tnew\n"))])
    by_parts.add(Span("a", 0, 4, 7, 2, 8, None, None), run, table=EVENTS)
    new = [(EVENTS, CopyRow("3\tnew\n"))]
    by_parts.add(Span("b", 0, 9, 9, 1, 3, None, None), new, table=EVENTS)
    taken = by_parts.take()
    assert taken == by_message.take()
    assert taken.next_offsets[TopicPartition("a", 0)] == 8
    assert taken.deletes == {EVENTS: ((2,),)}  # key 1 was written again after its tombstone
    assert (taken.message_count, taken.row_count) == (4, 3)


def test_a_run_that_goes_back_is_refused() -> None:
    b = batcher(Clock())
    two = [(LOG, ("l",)), (LOG, ("l",))]
    b.add(Span("a", 0, 5, 6, 2, 2, None, None), two, table=LOG)
    with pytest.raises(SinkError, match=r"a\[0\]@6: offset goes back"):
        b.add(Span("a", 0, 6, 8, 2, 2, None, None), two, table=LOG)


def test_a_truncation_in_the_row_stream_is_no_row_written() -> None:
    b = batcher(Clock())
    b.add(span(msg(A0, 0)), [(EVENTS, (1, "a"))])
    b.add(span(msg(A0, 1)), [(EVENTS, Truncation.of(EVENTS))])
    b.add(span(msg(A0, 2)), [(EVENTS, (2, "b"))])
    batch = b.take()
    assert batch.row_counts == {EVENTS: 2}
    assert batch.message_count == 3
