"""Repeated failures without a SQLSTATE: when retrying a batch stops making sense."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from sink.errors import TransientError
from sink.retry import REPEATS_BEFORE_STOP, Repeats, unexplained

REFUSED = "sending query and params failed: number of parameters must be between 0 and 65535"


def answers() -> bool:
    return True


def silent() -> bool:
    return False


def wrapped(error: Exception) -> sa.exc.DBAPIError:
    return sa.exc.DBAPIError("DELETE ...", None, error)


def test_the_same_failure_without_sqlstate_stops_at_the_limit_while_postgresql_answers() -> None:
    repeats = Repeats()
    verdicts = [
        repeats.failed(psycopg.OperationalError(REFUSED), answers)
        for _ in range(REPEATS_BEFORE_STOP)
    ]
    assert verdicts == [False] * (REPEATS_BEFORE_STOP - 1) + [True]
    assert repeats.failure == f"OperationalError: {REFUSED}"


def test_raw_and_wrapped_driver_errors_are_the_same_failure() -> None:
    repeats = Repeats(limit=3)
    assert not repeats.failed(psycopg.OperationalError("the connection is lost"), answers)
    assert not repeats.failed(wrapped(psycopg.OperationalError("the connection is lost")), answers)
    assert repeats.failed(psycopg.OperationalError("the connection is lost"), answers)


def test_a_different_failure_starts_the_count_again() -> None:
    repeats = Repeats(limit=2)
    assert not repeats.failed(psycopg.OperationalError("the connection is lost"), answers)
    assert not repeats.failed(psycopg.OperationalError(REFUSED), answers)
    assert repeats.count == 1
    assert repeats.failed(psycopg.OperationalError(REFUSED), answers)


def test_failures_while_postgresql_does_not_answer_are_an_outage_and_never_stop() -> None:
    repeats = Repeats(limit=2)
    for _ in range(10):
        assert not repeats.failed(psycopg.OperationalError("the connection is lost"), silent)
    assert repeats.count == 0
    assert not repeats.failed(psycopg.OperationalError("the connection is lost"), answers)
    assert not repeats.failed(psycopg.OperationalError("the connection is lost"), silent)
    assert not repeats.failed(psycopg.OperationalError("the connection is lost"), answers)


def test_failures_with_a_sqlstate_or_outside_the_database_are_not_counted_nor_pinged() -> None:
    def must_not_ping() -> bool:
        raise AssertionError("pinged for a failure that is not counted")

    repeats = Repeats(limit=1)
    for error in (
        psycopg.errors.LockNotAvailable("lock timeout"),
        wrapped(psycopg.errors.DeadlockDetected("deadlock detected")),
        TransientError("the dead-letter topic did not acknowledge"),
    ):
        assert unexplained(error) is None
        assert not repeats.failed(error, must_not_ping)


def test_a_committed_batch_starts_the_count_again() -> None:
    repeats = Repeats(limit=2)
    assert not repeats.failed(psycopg.OperationalError(REFUSED), answers)
    repeats.reset()
    assert not repeats.failed(psycopg.OperationalError(REFUSED), answers)
    assert repeats.failed(psycopg.OperationalError(REFUSED), answers)
