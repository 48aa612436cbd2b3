"""Runs every pg_bulk_ingest integration test under psycopg (3) and psycopg2."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import sqlalchemy_url

SQLALCHEMY_2 = int(sa.__version__.split(".")[0]) >= 2


# SQLAlchemy 1.4 has no psycopg (3) dialect: under it, the suite runs with psycopg2 alone.
DRIVERS = ["psycopg", "psycopg2"] if SQLALCHEMY_2 else ["psycopg2"]


@pytest.fixture(scope="session", params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def driver_engine(database_url: str, driver: str) -> Iterator[sa.engine.Engine]:
    engine = sa.create_engine(sqlalchemy_url(database_url, driver), future=True)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(driver_engine: sa.engine.Engine) -> Iterator[sa.engine.Connection]:
    with driver_engine.connect() as connection:
        yield connection


@pytest.fixture
def query(driver_engine: sa.engine.Engine) -> Callable[[str], list[tuple[Any, ...]]]:
    """Runs SQL in a transaction of its own, as another client would; returns its rows."""

    def run(sql: str) -> list[tuple[Any, ...]]:
        with driver_engine.begin() as other:
            result = other.exec_driver_sql(sql)
            return [tuple(row) for row in result.fetchall()] if result.returns_rows else []

    return run


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.engine.Engine]:
    """The shared `engine` (used by `schema`), on a driver this SQLAlchemy supports."""
    found = sa.create_engine(
        sqlalchemy_url(database_url, "psycopg" if SQLALCHEMY_2 else "psycopg2"), future=True
    )
    yield found
    found.dispose()
