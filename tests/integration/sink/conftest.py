"""Fixtures for driving real sink workers: configs, producers and worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.events import EVENT_COLUMNS_TOML

from .harness import SinkProcess


@pytest.fixture
def sink_config(tmp_path: Path, database_url: str, kafka_bootstrap: str) -> Callable[..., Path]:
    """Writes a sink config for one test: `sink_config(topics, schema, table, extra=...)`."""

    def write(
        topics: list[str],
        schema: str,
        table: str = "events",
        *,
        primary_key: list[str] | None = None,
        columns: str = EVENT_COLUMNS_TOML,
        table_extra: str = "",
        extra: str = "",
        max_messages: int = 2000,
        max_age_seconds: float = 0.3,
        group_id: str | None = None,
    ) -> Path:
        pk = f"primary_key = {primary_key!r}\n" if primary_key else ""
        body = f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
group_id = "{group_id or "g-" + uuid.uuid4().hex[:8]}"
start_from = "earliest"
[kafka.settings]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[postgres]
url = "{database_url}"

[batch]
max_messages = {max_messages}
max_age_seconds = {max_age_seconds}

[http]
port = 0

[shutdown]
grace_seconds = 10
{extra}
[[tables]]
schema = "{schema}"
name = "{table}"
topics = {topics!r}
{pk}{table_extra}
{columns}
""".replace("'", '"')
        path = tmp_path / f"sink-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(body)
        return path

    return write


@pytest.fixture
def start_sink(tmp_path: Path) -> Iterator[Callable[..., SinkProcess]]:
    """Starts workers, `start_sink(config, env=None)`; every one still running at the end of
    the test is killed."""
    started: list[SinkProcess] = []

    def start(config: Path, env: dict[str, str] | None = None) -> SinkProcess:
        proc = SinkProcess(config, tmp_path / f"worker-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


@pytest.fixture
def sink_role(
    engine: sa.engine.Engine, database_url: str, schema: str
) -> Iterator[Callable[..., str]]:
    """`sink_role(isolation=None, name=None, encoding=None)`: a login role of its own for the
    sink, allowed to create tables in the test's schema (with `isolation` as its
    default_transaction_isolation, `encoding` as its client_encoding); returns its libpq URL.
    Its backends can be told apart, blocked and terminated."""
    made: list[str] = []

    def make(
        isolation: str | None = None, name: str | None = None, encoding: str | None = None
    ) -> str:
        name = name or f"sink_{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'"))
            if isolation is not None:
                conn.execute(
                    sa.text(f"ALTER ROLE {name} SET default_transaction_isolation = '{isolation}'")
                )
            if encoding is not None:
                conn.execute(sa.text(f"ALTER ROLE {name} SET client_encoding = '{encoding}'"))
            conn.execute(sa.text(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO {name}'))
        made.append(name)
        url = make_url(database_url).set(username=name, password="pw")
        return url.render_as_string(hide_password=False)

    yield make
    with engine.begin() as conn:
        for name in made:
            conn.execute(sa.text(f"ALTER ROLE {name} CONNECTION LIMIT -1"))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"
                ),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f"DROP OWNED BY {name}"))
            conn.execute(sa.text(f"DROP ROLE {name}"))
