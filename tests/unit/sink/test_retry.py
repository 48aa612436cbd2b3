"""Failure classification: retry, split the batch, or stop, by SQLSTATE and driver class."""

from __future__ import annotations

import random

import psycopg
import psycopg2
import pytest
import sqlalchemy as sa

import pg_bulk_ingest
from sink.retry import (
    BACKOFF_CAP_SECONDS,
    Failure,
    backoff_seconds,
    classify,
    explain,
    failure_kind,
)


def _driver_error(sqlstate: str | None, base: type[Exception] = psycopg.Error) -> Exception:
    error = base("boom")
    if sqlstate is not None:
        cls = psycopg.errors.lookup(sqlstate)
        error = cls("boom")
    return error


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("40001", Failure.TRANSIENT),  # serialization failure
        ("40P01", Failure.TRANSIENT),  # deadlock
        ("57P01", Failure.TRANSIENT),  # admin shutdown (a restart or failover)
        ("08006", Failure.TRANSIENT),  # connection failure
        ("55P03", Failure.TRANSIENT),  # lock not available
        ("23505", Failure.REJECTED),  # unique violation
        ("22003", Failure.REJECTED),  # numeric out of range
        ("42501", Failure.PERMANENT),  # insufficient privilege
        ("28P01", Failure.PERMANENT),  # invalid password
        ("3D000", Failure.PERMANENT),  # unknown database
        ("XX000", Failure.PERMANENT),  # internal error: a human looks
    ],
)
def test_errors_are_classified_by_sqlstate_raw_or_wrapped(sqlstate: str, expected: Failure) -> None:
    raw = _driver_error(sqlstate)
    assert classify(raw) is expected
    wrapped = sa.exc.DBAPIError("COPY ...", None, raw)
    assert classify(wrapped) is expected


def test_a_lost_connection_without_sqlstate_is_transient_for_both_drivers() -> None:
    assert classify(psycopg.OperationalError("server closed the connection")) is Failure.TRANSIENT
    assert classify(psycopg2.OperationalError("server closed the connection")) is Failure.TRANSIENT
    invalidated = sa.exc.DBAPIError("SELECT 1", None, Exception("x"), connection_invalidated=True)
    assert classify(invalidated) is Failure.TRANSIENT


def test_a_driver_error_raised_through_the_ingest_core_is_found_by_its_cause() -> None:
    try:
        try:
            raise _driver_error("23505")
        except psycopg.Error as error:
            raise RuntimeError("while copying") from error
    except RuntimeError as outer:
        assert classify(outer) is Failure.REJECTED


def test_a_value_the_ingest_core_refuses_is_a_rejected_row() -> None:
    assert classify(pg_bulk_ingest.DataError("s.t", "c", 3, "NUL")) is Failure.REJECTED


def test_anything_else_stops_the_worker() -> None:
    assert classify(ValueError("bug")) is Failure.PERMANENT


def test_backoff_grows_with_attempts_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(0)
    first = [backoff_seconds(1, rng) for _ in range(50)]
    late = [backoff_seconds(30, rng) for _ in range(50)]
    assert all(0.5 <= d <= 1.0 for d in first)
    assert all(BACKOFF_CAP_SECONDS / 2 <= d <= BACKOFF_CAP_SECONDS for d in late)
    assert len(set(late)) > 1


def test_an_ownership_refusal_is_explained_with_the_fix() -> None:
    message = explain(_driver_error("42501"), "s.t")
    assert "42501" in message and "OWNER TO" in message
    assert failure_kind(_driver_error("40001")) == "SerializationFailure"
