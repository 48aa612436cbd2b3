"""The thread that reads the next batch while one commits (sink.readahead)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sink.readahead import ReadAhead


def _reader(batches: list[list[Any]], seen: list[str], done: threading.Event) -> Any:
    """Reads `batches`, then returns None and sets `done` (stop() ends reading at once)."""

    def read(held: int) -> list[Any] | None:
        seen.append(threading.current_thread().name)
        if batches:
            return batches.pop(0)
        done.set()
        return None

    return read


def test_one_thread_reads_ahead_for_every_batch_and_hands_the_rows_over_once() -> None:
    ahead = ReadAhead()
    seen: list[str] = []
    try:
        for number in range(5):
            done = threading.Event()
            ahead.start(_reader([[number, "a"], [number, "b"]], seen, done))
            assert done.wait(5)
            assert ahead.stop() is None
            assert ahead.take() == [number, "a", number, "b"]
            assert ahead.take() == []
        reading = [t for t in threading.enumerate() if t.name == "read-ahead"]
        assert len(reading) == 1 and set(seen) == {"read-ahead"}
    finally:
        ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_stop_ends_a_read_that_goes_on_and_returns_what_a_read_raised() -> None:
    ahead = ReadAhead()
    started, calls = threading.Event(), []

    def endless(held: int) -> list[Any]:
        calls.append(held)
        started.set()
        return [len(calls)]

    try:
        ahead.start(endless)
        assert started.wait(5)
        assert ahead.stop() is None
        assert ahead.take() == list(range(1, len(calls) + 1))
        assert calls[:3] == [0, 1, 2]  # `held`: the rows read so far

        failed = threading.Event()

        def failing(held: int) -> list[Any]:
            failed.set()
            raise ValueError("bad message")

        ahead.start(failing)
        assert failed.wait(5)
        error = ahead.stop()
        assert isinstance(error, ValueError) and str(error) == "bad message"
        assert ahead.stop() is None  # once
        with pytest.raises(AssertionError, match="already reading ahead"):
            ahead.start(endless)
            ahead.start(endless)
    finally:
        ahead.close()


def test_wait_settled_returns_once_the_batch_in_flight_has_settled() -> None:
    ahead = ReadAhead()
    waited = threading.Event()

    def read(held: int) -> list[Any] | None:
        ahead.wait_settled()  # as a Kafka callback inside a consume call does
        waited.set()
        return None

    try:
        ahead.start(read)
        assert not waited.wait(0.2)
        assert ahead.stop() is None
        assert waited.is_set()
    finally:
        ahead.close()


def test_a_closed_read_ahead_starts_a_thread_again() -> None:
    ahead = ReadAhead()
    seen: list[str] = []
    done = threading.Event()
    ahead.start(_reader([[1]], seen, done))
    assert done.wait(5)
    ahead.stop()
    ahead.close()
    done.clear()
    ahead.start(_reader([[2]], seen, done))
    assert done.wait(5)
    assert ahead.stop() is None
    assert ahead.take() == [1, 2]
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]
