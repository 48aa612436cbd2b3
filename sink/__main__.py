"""The operator's command line: `pg-kafka-sink run|...` (also `python -m sink`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial

import sqlalchemy as sa

import pg_bulk_ingest

from . import admin, copytext, logs
from .config import Settings, load_settings
from .errors import SinkError
from .health import Health, database_ping
from .metrics import SinkMetrics, version
from .pipeline import Pipeline
from .retry import DATABASE_ERRORS, explain
from .tables import load_tables, with_schema_columns
from .worker import Worker
from .writer import create_engine

logger = logging.getLogger("sink")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, os.environ)
    logs.configure(settings.log.level, settings.log.format.value)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logger.info("effective configuration", extra={"configuration": settings.redacted()})
    if not copytext.NATIVE:
        logger.warning(
            "the C line writer (sink._copyline) was not built when this package was installed "
            "(no C compiler?): messages take the pure-Python path, about 1.5x slower"
        )
    engine = create_engine(settings.postgres, pool_pre_ping=True)
    # Probes get an engine of their own: a hung connect must not stall the loop, nor the loop
    # the probes.
    probe_engine = sa.create_engine(
        settings.postgres.engine_url(),
        pool_size=1,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 3},
    )
    try:
        health = Health(database_ping(probe_engine))
        # Columns that come from the topics' schemas are derived before the tables are made, and
        # again while running when a schema the tables lack comes.
        configured = settings
        settings = with_schema_columns(configured)
        derive_again = None if settings is configured else partial(with_schema_columns, configured)
        tables = load_tables(settings)
        # With the tables whose columns no message has given yet.
        later = [table for table in settings.tables if not table.columns]
        metrics = SinkMetrics(
            topics=sorted(
                {topic for target in tables.targets for topic in target.topics}
                | {topic for table in later for topic in table.topics}
            ),
            tables=[f"{t.schema or 'public'}.{t.name}" for t in tables.data_tables]
            + [table.qualified_name for table in later],
        )
        metrics.watch_database(health.database_reachable)
        pipeline = Pipeline.from_settings(settings)
        Worker(settings, engine, pipeline, health, metrics, derive_again=derive_again).run()
    finally:
        engine.dispose()
        probe_engine.dispose()
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="pg-kafka-sink",
        description="Exactly-once Kafka-to-PostgreSQL sink.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            default=None,
            help="TOML config file (default: $SINK_CONFIG); SINK_* variables override it",
        )
        return p

    command(
        "run", "consume the configured topics and write them to PostgreSQL until stopped"
    ).set_defaults(func=cmd_run)
    admin.register(command)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Until the settings are read (a config error is logged too), the log format and level
    # come from the environment alone.
    logs.configure(
        os.environ.get("SINK_LOG__LEVEL", "INFO"),
        os.environ.get("SINK_LOG__FORMAT", "auto"),
    )
    try:
        code = int(args.func(args))
        if code:
            return code
    except (SinkError, pg_bulk_ingest.IngestError) as exc:
        message = str(exc)
    except DATABASE_ERRORS as exc:
        message = explain(exc, "the sink's tables")
    else:
        return 0
    logger.error("%s", message)
    return 2


if __name__ == "__main__":
    sys.exit(main())
