"""What to do when a batch fails: retry it later, split it to find a rejected message, or stop.

Decided on the driver's exception class and SQLSTATE (psycopg 3 or psycopg2, raised raw by the
ingest core's COPY or wrapped by SQLAlchemy), never on message text; and, for a failure without
a SQLSTATE, on whether it keeps repeating while PostgreSQL answers.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

import pg_bulk_ingest

from .errors import TransientError

# Retry delays after transient database failures: doubling from the base, capped, jittered.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0

# SQLSTATE classes: what no retry can fix (authorization, privilege or syntax, unknown
# database), what one row of the batch caused (data exception, integrity constraint), and what
# passes by itself (connection, resources, operator intervention such as a restart or failover,
# serialization failures and deadlocks, system errors).
PERMANENT_CLASSES = ("28", "42", "3D")
REJECTED_CLASSES = ("22", "23")
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
LOCK_NOT_AVAILABLE = "55P03"

# Identical failures of one batch in a row, each without a SQLSTATE and each while PostgreSQL
# answers a new connection, after which the worker stops. Such a failure is retried as a lost
# connection, and a lost connection comes back, or leaves PostgreSQL unreachable meanwhile; but
# libpq refusing the batch before it is sent, or a connection cut each time the batch goes
# through, repeats unchanged for ever. Three: two drops of one batch in a row by chance are
# still retried, and a batch that cannot pass stops within seconds (after backoffs of 0.5 to
# 1 s and 1 to 2 s).
REPEATS_BEFORE_STOP = 3


DRIVER_ERRORS: tuple[type[Exception], ...] = (psycopg.Error,)
CONNECTION_LOST: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError)
try:
    import psycopg2
except ImportError:  # psycopg2 is an optional extra
    pass
else:
    DRIVER_ERRORS = (*DRIVER_ERRORS, psycopg2.Error)
    CONNECTION_LOST = (*CONNECTION_LOST, psycopg2.OperationalError, psycopg2.InterfaceError)

# Everything a database call can raise: the drivers' own errors and SQLAlchemy's wrappers.
DATABASE_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, sa.exc.DBAPIError)


class Failure(enum.Enum):
    TRANSIENT = "transient"  # retry the batch after a backoff
    REJECTED = "rejected"  # PostgreSQL refused a row: split the batch to find its message
    PERMANENT = "permanent"  # a human must change something: stop with a clear message


def _driver_error(exc: BaseException) -> BaseException | None:
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.orig
    while exc is not None and not isinstance(exc, DRIVER_ERRORS):
        exc = exc.__cause__  # type: ignore[assignment]
    return exc


_BY_CLASS = {
    **dict.fromkeys(PERMANENT_CLASSES, Failure.PERMANENT),
    **dict.fromkeys(REJECTED_CLASSES, Failure.REJECTED),
    **dict.fromkeys(TRANSIENT_CLASSES, Failure.TRANSIENT),
}


def sqlstate(exc: BaseException) -> str | None:
    error = _driver_error(exc)
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, TransientError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    ):
        return Failure.TRANSIENT
    if isinstance(exc, pg_bulk_ingest.SchemaError):
        # A definition (or a migration of stored rows) refused: no message of the batch is
        # at fault, whatever SQLSTATE the driver error under it has.
        return Failure.PERMANENT
    code = sqlstate(exc)
    if code is None:
        if isinstance(exc, pg_bulk_ingest.DataError):
            return Failure.REJECTED
        # No SQLSTATE from a driver error: the connection itself failed.
        lost = isinstance(_driver_error(exc), CONNECTION_LOST)
        return Failure.TRANSIENT if lost else Failure.PERMANENT
    if code == LOCK_NOT_AVAILABLE:
        return Failure.TRANSIENT
    return _BY_CLASS.get(code[:2], Failure.PERMANENT)


def failure_kind(exc: BaseException) -> str:
    """A short stable label for metrics: the driver's exception class."""
    error = _driver_error(exc)
    return type(error if error is not None else exc).__name__


def unexplained(exc: BaseException) -> str | None:
    """The driver's class and first line of a database failure without a SQLSTATE; None for
    one PostgreSQL gave a SQLSTATE (it says what failed) and for any other failure (Kafka)."""
    error = _driver_error(exc)
    if error is None or sqlstate(exc) is not None:
        return None
    detail = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {detail}"


class Repeats:
    """Counts the identical failures without a SQLSTATE of the batch being retried, each seen
    while PostgreSQL answers, to stop retrying one that can never pass (REPEATS_BEFORE_STOP)."""

    def __init__(self, limit: int = REPEATS_BEFORE_STOP) -> None:
        self.limit = limit
        self.count = 0
        self.failure: str | None = None

    def reset(self) -> None:
        """Starts over (a batch committed, or another failure came between)."""
        self.count, self.failure = 0, None

    def failed(self, exc: BaseException, answers: Callable[[], bool]) -> bool:
        """Counts a failure of the batch; True once it is the `limit`-th identical one in a
        row. `answers` (a ping of PostgreSQL) is asked only for a failure without SQLSTATE; a
        failure with one, or while PostgreSQL does not answer (an outage), starts over."""
        failure = unexplained(exc)
        if failure is None or not answers():
            self.reset()
            return False
        if failure != self.failure:
            self.count, self.failure = 0, failure
        self.count += 1
        return self.count >= self.limit


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**attempt)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 16))
    return rng.uniform(ceiling / 2, ceiling)


# What libpq says when the server refuses a login. A connection attempt's error carries no
# SQLSTATE (there is no result), so only its text can tell a wrong password from a server
# that is down; this only chooses the advice given, never whether to retry.
_LOGIN_REFUSED = ("authentication failed", "no pg_hba.conf entry", "no password supplied")


def refused_login(error: BaseException) -> bool:
    """Whether a connection attempt failed because the server refused the login."""
    text = str(error)
    return isinstance(error, CONNECTION_LOST) and any(part in text for part in _LOGIN_REFUSED)


def explain(exc: BaseException, where: str) -> str:
    """One message for an operator: what PostgreSQL refused and what to change."""
    code = sqlstate(exc) or ""
    error = _driver_error(exc) or exc
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if not code and refused_login(error):
        return (
            f"PostgreSQL refused the login: {detail}. To fix: check the user and host in "
            "postgres.url, and the password (postgres.password_file, or the variable "
            "SINK_POSTGRES__PASSWORD)"
        )
    if code == "42501":
        remedy = (
            f"grant the sink's role what it needs on {where}: INSERT on each table (and UPDATE "
            "and DELETE with a primary key), ownership of a table it must migrate (ALTER TABLE "
            "... OWNER TO <role>), and CREATE in the schemas where it creates tables, its "
            "state table included"
        )
    elif code.startswith("28"):
        remedy = "check postgres.url and postgres.password(_file): the credentials were refused"
    elif code == "3D000":
        remedy = "check the database name in postgres.url"
    else:
        remedy = "see the PostgreSQL error above"
    return f"PostgreSQL refused ({code or 'no SQLSTATE'}): {detail}. To fix: {remedy}"
