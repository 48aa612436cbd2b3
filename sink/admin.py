"""Operator commands next to `run`: `check` (ready to run?), `status` (stored offsets and lag)
and `reset` (move the stored offsets), all reading the same config as the worker.

The stored offsets are the ingest high watermark in the COMMENT of the sink's state table; Kafka
is only asked for topics, partitions, log offsets and group membership.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]

import pg_bulk_ingest

from . import logs
from .config import ErrorPolicy, Settings, StartFrom, load_settings, quoted_name
from .consumer import BrokerWatch
from .deadletter import admin_client
from .errors import ConfigError, SinkError
from .offsets import StoredState, adopt_definition
from .records import TopicPartition
from .retry import refused_login
from .tables import TableSet, load_tables
from .writer import Writer, create_engine

# Every Kafka request of a command waits at most this long: enough for a broker that is
# electing leaders, short enough that a wrong bootstrap address fails visibly.
KAFKA_TIMEOUT_SECONDS = 15.0
# Likewise for connecting to PostgreSQL.
CONNECT_TIMEOUT_SECONDS = 10

# How long one metadata request of a command waits before it looks whether every broker is down.
KAFKA_PROBE_SECONDS = 1.0

Command = Callable[[str, str], argparse.ArgumentParser]


_EARLIEST: Any = _OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: Any = _OffsetSpec.latest()  # type: ignore[no-untyped-call]


def register(command: Command) -> None:
    """Adds `check`, `status` and `reset`; `command(name, help)` makes a subparser that
    already has `--config`."""
    command(
        "check",
        "validate the config, connect to PostgreSQL and Kafka, and print the migration plan "
        "of the tables without changing anything (exit 1 listing the problems)",
    ).set_defaults(func=cmd_check)
    status = command(
        "status", "print, per partition, the stored next offset, the log end offset and the lag"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=cmd_status)
    reset = command(
        "reset",
        "set the stored offsets (in the state table's COMMENT) of the subscribed partitions; "
        "creates the state table, or replaces a state that cannot be read",
    )
    reset.add_argument(
        "--to",
        required=True,
        metavar="WHERE",
        help="earliest | latest | timestamp:<ISO-8601 with offset, or epoch ms> | "
        "TOPIC:PARTITION=OFFSET[,...] (only the listed partitions change)",
    )
    reset.add_argument(
        "--dry-run", action="store_true", help="print what would be set and change nothing"
    )
    reset.add_argument(
        "--force",
        action="store_true",
        help="reset even while the consumer group has active members (they notice on their "
        "next batch, abandon it and re-read from the new offsets)",
    )
    reset.set_defaults(func=cmd_reset)


# --- shared ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    settings: Settings
    tables: TableSet
    # Every broker down (librdkafka says so through error_cb): why, from its last failure.
    kafka_down: BrokerWatch = field(default_factory=lambda: BrokerWatch(lambda _: None))

    @property
    def state_name(self) -> str:
        """The state table, whose COMMENT holds the offsets, as `schema.table` (quoted as SQL
        needs it)."""
        table = self.tables.state_table
        assert table is not None  # load_tables always adds it
        return quoted_name(table.schema or "public", table.name)

    def engine(self) -> sa.engine.Engine:
        return create_engine(
            self.settings.postgres, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        )

    def writer(self, engine: sa.engine.Engine) -> Writer:
        return Writer(engine, self.tables, self.settings.kafka.group_id)

    def admin(self) -> Any:
        return admin_client(self.settings.kafka.client_config(), error_cb=self.kafka_down.error)

    def subscription(self) -> tuple[list[str], list[str]]:
        """(topic names, `^regex` patterns) the sink subscribes to."""
        names: list[str] = []
        patterns: list[str] = []
        for target in self.tables.targets:
            names.extend(t for t in target.topics if t not in names)
            patterns.extend(p for p in target.topic_patterns if p not in patterns)
        for table in self.settings.tables:  # those whose columns no message has given yet
            names.extend(t for t in table.topics if not table.columns and t not in names)
        return names, patterns


def _context(args: argparse.Namespace) -> Context:
    settings = load_settings(args.config, os.environ)
    logs.configure(settings.log.level, settings.log.format.value)
    return Context(settings, load_tables(settings))


def _kafka_error(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return f"{type(exc).__name__}: {exc}"


def _cluster_topics(context: Context, admin: Any) -> dict[str, int]:
    """Every topic in the cluster with its partition count; fails as soon as librdkafka says
    that every broker is down, else after KAFKA_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + KAFKA_TIMEOUT_SECONDS
    while True:
        try:
            metadata = admin.list_topics(timeout=KAFKA_PROBE_SECONDS)
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb (and the log lines)
            why = context.kafka_down.down
            if why is None and time.monotonic() < deadline:
                continue
            raise SinkError(
                f"Kafka at {context.settings.kafka.bootstrap_servers} does not answer: "
                f"{why or _kafka_error(exc)} (check kafka.bootstrap_servers and kafka.settings)"
            ) from None
    admin.poll(0)
    return {
        name: len(topic.partitions) for name, topic in metadata.topics.items() if not topic.error
    }


def _subscribed(context: Context, cluster: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """(subscribed topics that exist with their partition counts, missing topic names)."""
    names, patterns = context.subscription()
    found = {name: cluster[name] for name in names if name in cluster}
    for pattern in patterns:
        for name in sorted(cluster):
            if not name.startswith("__") and re.search(pattern, name):
                found.setdefault(name, cluster[name])
    return found, [name for name in names if name not in cluster]


def _partitions(topics: Mapping[str, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t, count in sorted(topics.items()) for p in range(count)]


def _list_offsets(
    admin: Any, partitions: Iterable[TopicPartition], spec: Any
) -> dict[TopicPartition, int]:
    """The offset `spec` names for each partition (-1 when none, e.g. a timestamp past the
    last message)."""
    request = {KafkaTopicPartition(tp.topic, tp.partition): spec for tp in partitions}
    if not request:
        return {}
    futures = admin.list_offsets(request, request_timeout=KAFKA_TIMEOUT_SECONDS)
    found = {}
    try:
        for ktp, future in futures.items():
            found[TopicPartition(ktp.topic, ktp.partition)] = int(
                future.result(timeout=KAFKA_TIMEOUT_SECONDS).offset
            )
    except KafkaException as exc:
        raise SinkError(f"cannot list offsets: {_kafka_error(exc)}") from None
    return found


# --- check -------------------------------------------------------------------------------


class _Report:
    """What `check` prints as it goes, and the problems it gathers: each is printed once, in
    the list at the end, and marked by its number where it was found."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def say(self, line: str) -> None:
        print(line, flush=True)

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  PROBLEM {len(self.problems)} (listed below)", flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    report = _Report()
    try:
        context = _context(args)
    except ConfigError as exc:
        report.say("config: invalid")
        report.problems.extend(exc.problems)
        return _verdict(report)
    settings = context.settings
    tables = ", ".join(
        quoted_name(t.schema or "public", t.name) for t in context.tables.metadata.tables.values()
    )
    report.say(
        f"config: valid; tables {tables}; group {settings.kafka.group_id!r}; "
        f"state table {context.state_name}; errors.policy {settings.errors.policy.value}"
    )
    _check_kafka(context, report)
    _check_postgres(context, report)
    return _verdict(report)


def _verdict(report: _Report) -> int:
    if report.problems:
        print(f"\nnot ready: {len(report.problems)} problem(s)")
        for number, text in enumerate(report.problems, 1):
            print(f"  {number}. {text}")
        return 1
    print("\nready to run")
    return 0


def _check_kafka(context: Context, report: _Report) -> None:
    kafka = context.settings.kafka
    try:
        cluster = _cluster_topics(context, context.admin())
    except SinkError as exc:
        report.say(f"kafka: {kafka.bootstrap_servers}")
        report.problem(str(exc))
        return
    report.say(f"kafka: connected to {kafka.bootstrap_servers}")
    found, missing = _subscribed(context, cluster)
    for name, count in sorted(found.items()):
        report.say(f"  topic {name}: {count} partition(s)")
    for name in missing:
        report.problem(f"topic {name!r} does not exist (create it, or fix the tables' topics)")
    _, patterns = context.subscription()
    for pattern in patterns:
        if not any(re.search(pattern, name) for name in found):
            report.say(f"  pattern {pattern!r}: matches no topic yet")
    errors = context.settings.errors
    if errors.policy is ErrorPolicy.DEAD_LETTER_TOPIC and errors.dead_letter_topic is not None:
        if errors.dead_letter_topic in cluster:
            report.say(f"  dead-letter topic {errors.dead_letter_topic}: exists")
        else:
            report.problem(
                f"dead-letter topic {errors.dead_letter_topic!r} does not exist (create it, or "
                "set errors.dead_letter_topic)"
            )


def _check_postgres(context: Context, report: _Report) -> None:
    engine = context.engine()
    try:
        with engine.connect() as conn:
            role, database, version = conn.execute(
                sa.text(
                    "SELECT current_user, current_database(), current_setting('server_version')"
                )
            ).one()
            conn.rollback()
            report.say(
                f"postgres: connected to database {database!r} as role {role!r} "
                f"(PostgreSQL {version})"
            )
            _check_plan(context, conn, report)
            _check_offsets(context, conn, report)
    except sa.exc.OperationalError as exc:
        where = context.settings.postgres.url.render_as_string(hide_password=True)
        detail = str(exc.orig).strip().splitlines()[0]
        if exc.orig is not None and refused_login(exc.orig):
            report.problem(
                f"PostgreSQL at {where} refused the login: {detail} (check the user in "
                "postgres.url, and the password: postgres.password_file or "
                "SINK_POSTGRES__PASSWORD)"
            )
        else:
            report.problem(
                f"PostgreSQL at {where} does not answer: {detail} (check the host, port and "
                "database in postgres.url, and that PostgreSQL runs)"
            )
    finally:
        engine.dispose()


def _check_plan(context: Context, conn: sa.engine.Connection, report: _Report) -> None:
    try:
        steps = pg_bulk_ingest.migration_plan(conn, context.tables.metadata)
    except pg_bulk_ingest.SchemaError as exc:
        report.problem(str(exc))
        return
    report.say("migration plan (check changes nothing):")
    # A step names its table "schema.name", unquoted: shown as SQL needs it written.
    shown = {
        f"{t.schema or 'public'}.{t.name}": quoted_name(t.schema or "public", t.name)
        for t in context.tables.metadata.tables.values()
    }
    changed: dict[str, str] = {}
    for table, group in itertools.groupby(steps, key=lambda step: step.table):
        table_steps = list(group)
        head = table_steps[0]
        reason = next((s.reason for s in table_steps if s.sql is None and s.reason), None)
        report.say(
            f"  {shown.get(table, table)}: {head.action}" + (f" ({reason})" if reason else "")
        )
        for step in table_steps:
            if step.sql is not None:
                via = ", part of a rebuild + swap" if step.rebuild else ""
                report.say(f"      {step.sql};  -- lock: {step.lock}{via}")
        if head.action != "nothing to do":
            changed[table] = head.action
    for table in context.tables.metadata.tables.values():
        name = f"{table.schema or 'public'}.{table.name}"
        _check_privileges(conn, report, table, changed.get(name))
    conn.rollback()


def _check_privileges(
    conn: sa.engine.Connection, report: _Report, table: sa.Table, action: str | None
) -> None:
    schema, name = table.schema or "public", table.name
    shown = quoted_name(schema, name)
    found = conn.execute(
        sa.text(
            "SELECT pg_get_userbyid(c.relowner), pg_has_role(current_user, c.relowner, 'USAGE'),"
            " has_table_privilege(c.oid, 'INSERT') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :name"
        ),
        {"schema": schema, "name": name},
    ).first()
    if found is None:
        schema_ok = conn.execute(
            sa.text(
                "SELECT CASE WHEN to_regnamespace(quote_ident(:schema)) IS NULL "
                "THEN has_database_privilege(current_database(), 'CREATE') "
                "ELSE has_schema_privilege(:schema, 'CREATE') END"
            ),
            {"schema": schema},
        ).scalar()
        if not schema_ok:
            report.problem(
                f"the role cannot create {shown} (grant CREATE on {quoted_name(schema)})"
            )
        return
    owner, owns, can_insert = found
    if action is not None and not owns:
        report.problem(f"{shown} needs a migration ({action}) but is owned by {owner!r}")
    if not can_insert:
        report.problem(f"the role cannot INSERT into {shown} (owned by {owner!r})")


def _check_offsets(context: Context, conn: sa.engine.Connection, report: _Report) -> None:
    first = context.state_name
    state_table = context.tables.state_table
    assert state_table is not None
    owner = conn.execute(
        sa.text(
            "SELECT pg_get_userbyid(c.relowner), pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relname = :name"
        ),
        {"schema": state_table.schema, "name": state_table.name},
    ).first()
    if owner is None:
        report.say(
            f"offsets: the state table {first} does not exist yet; the first worker creates it "
            "(adopting offsets that an earlier release stored on a data table)"
        )
        conn.rollback()
        return
    role = conn.execute(sa.text("SELECT current_user")).scalar()
    if owner[1]:
        report.say(
            f"offsets: stored in the state table {first}; role {role!r} can COMMENT ON it "
            f"(owner {owner[0]!r})"
        )
    else:
        report.problem(
            f"role {role!r} cannot COMMENT ON {first}, where the offsets are stored: it is "
            f"owned by {owner[0]!r} (ALTER TABLE {first} OWNER TO {quoted_name(str(role))}, or "
            "grant the role)"
        )
    conn.rollback()
    writer = context.writer(conn.engine)
    try:
        state = writer.read_state()
        adopt_definition(state, writer.definition, first)
        report.say(f"  {len(state.offsets)} partition offset(s) stored")
    except (SinkError, pg_bulk_ingest.IngestError) as exc:
        report.problem(str(exc))


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    stored_next_offset: int | None
    log_start_offset: int | None
    log_end_offset: int | None
    lag: int | None


def partition_status(
    partitions: Iterable[TopicPartition],
    stored: Mapping[TopicPartition, int],
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    start_from: StartFrom,
) -> list[PartitionStatus]:
    """Lag per partition: log end - stored next offset; where nothing is stored yet, what the
    sink would read from its start position (start_from)."""
    rows = []
    for tp in sorted(set(partitions) | set(stored)):
        next_offset, start, end = stored.get(tp), starts.get(tp), ends.get(tp)
        if end is None:
            lag = None
        elif next_offset is not None:
            lag = max(end - max(next_offset, start or 0), 0)
        elif start_from is StartFrom.EARLIEST and start is not None:
            lag = end - start
        else:
            lag = 0
        rows.append(PartitionStatus(tp.topic, tp.partition, next_offset, start, end, lag))
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    context = _context(args)
    admin = context.admin()
    found, missing = _subscribed(context, _cluster_topics(context, admin))
    engine = context.engine()
    try:
        state = context.writer(engine).stored_state() or StoredState()
    finally:
        engine.dispose()
    cluster_partitions = _partitions(found)
    known = set(cluster_partitions) | {tp for tp in state.offsets if tp.topic in found}
    starts = _list_offsets(admin, known, _EARLIEST)
    ends = _list_offsets(admin, known, _LATEST)
    rows = partition_status(
        cluster_partitions, state.offsets, starts, ends, context.settings.kafka.start_from
    )
    unknown = sum(row.lag is None for row in rows)
    # A lag that cannot be read is not zero: no total then, and a non-zero exit.
    total = None if unknown or missing else sum(row.lag or 0 for row in rows)
    code = 0 if total is not None else 1
    if args.json:
        document = {
            "state_table": context.state_name,
            "group_id": context.settings.kafka.group_id,
            "partitions": [vars(row) for row in rows],
            "missing_topics": missing,
            "total_lag": total,
        }
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return code
    print(
        f"offsets of consumer group {context.settings.kafka.group_id!r}, stored in the COMMENT "
        f"of {context.state_name}"
    )
    print(
        _table(
            ["TOPIC", "PARTITION", "STORED", "LOG-END", "LAG"],
            [
                [
                    row.topic,
                    row.partition,
                    _show(row.stored_next_offset),
                    _show(row.log_end_offset),
                    "unknown" if row.lag is None else row.lag,
                ]
                for row in rows
            ],
        )
    )
    if total is not None:
        print(f"total: {len(rows)} partition(s), lag {total}")
    else:
        print(
            f"total: {len(rows)} partition(s), lag unknown: {unknown} partition(s) without a "
            f"readable log end, {len(missing)} topic(s) not found"
        )
    for name in missing:
        print(f"topic {name!r} does not exist, or this client may not describe it")
    return code


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in cells
    )


# --- reset -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetTarget:
    """Where `--to` points: "earliest", "latest", a timestamp (epoch ms), or explicit offsets."""

    kind: str
    timestamp_ms: int | None = None
    offsets: Mapping[TopicPartition, int] | None = None


def parse_reset_target(text: str) -> ResetTarget:
    """Parses `--to`; raises ConfigError saying what is accepted."""
    text = text.strip()
    if text in ("earliest", "latest"):
        return ResetTarget(text)
    if "=" in text:
        return ResetTarget("explicit", offsets=_parse_explicit(text))
    if text.startswith("timestamp:"):
        return ResetTarget("timestamp", timestamp_ms=_parse_timestamp(text[len("timestamp:") :]))
    raise ConfigError(
        f"--to {text!r}: use earliest, latest, timestamp:<ISO-8601 or epoch ms>, or "
        "TOPIC:PARTITION=OFFSET[,...]"
    )


def _parse_explicit(text: str) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"(?P<topic>[^:=\s]+):(?P<partition>\d+)=(?P<offset>\d+)", item)
        if match is None:
            raise ConfigError(f"--to: {item!r} is not TOPIC:PARTITION=OFFSET (e.g. orders:0=1200)")
        offsets[TopicPartition(match["topic"], int(match["partition"]))] = int(match["offset"])
    return offsets


def _parse_timestamp(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(
            f"--to timestamp:{text}: give epoch milliseconds or an ISO-8601 time with its UTC "
            "offset, e.g. timestamp:2026-01-31T12:00:00Z"
        )
    return int(moment.timestamp() * 1000)


def _active_members(context: Context, admin: Any) -> int:
    group = context.settings.kafka.group_id
    future = admin.describe_consumer_groups([group], request_timeout=KAFKA_TIMEOUT_SECONDS)[group]
    try:
        description = future.result(timeout=KAFKA_TIMEOUT_SECONDS)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return 0
        raise SinkError(f"cannot describe consumer group {group!r}: {_kafka_error(exc)}") from None
    return len(description.members or ())


def _reset_offsets(context: Context, admin: Any, target: ResetTarget) -> dict[TopicPartition, int]:
    found, missing = _subscribed(context, _cluster_topics(context, admin))
    if target.offsets is not None:
        unknown = [
            f"{tp.topic}[{tp.partition}]"
            for tp in target.offsets
            if not 0 <= tp.partition < found.get(tp.topic, 0)
        ]
        if unknown:
            raise ConfigError(
                f"--to names partitions the sink does not subscribe to: {', '.join(unknown)}"
            )
        return dict(target.offsets)
    if missing:
        print(f"topics {', '.join(missing)} do not exist: nothing to reset for them")
    partitions = _partitions(found)
    if target.kind == "earliest":
        return _list_offsets(admin, partitions, _EARLIEST)
    ends = _list_offsets(admin, partitions, _LATEST)
    if target.kind == "latest":
        return ends
    assert target.timestamp_ms is not None
    at = _list_offsets(admin, partitions, _OffsetSpec.for_timestamp(target.timestamp_ms))
    # -1: no message at or after the timestamp, so start after the last one.
    return {tp: offset if offset >= 0 else ends[tp] for tp, offset in at.items()}


def cmd_reset(args: argparse.Namespace) -> int:
    target = parse_reset_target(args.to)
    context = _context(args)
    admin = context.admin()
    members = _active_members(context, admin)
    group = context.settings.kafka.group_id
    if members and not args.force:
        print(
            f"{'dry run, but a reset would refuse' if args.dry_run else 'refusing to reset'}: "
            f"consumer group {group!r} has {members} active member(s); stop the workers "
            "first, or pass --force (they abandon their next batch and re-read from the new "
            "offsets)"
        )
        if not args.dry_run:
            return 1
    new_offsets = _reset_offsets(context, admin, target)
    engine = context.engine()
    try:
        before, problem = context.writer(engine).reset(new_offsets, dry_run=args.dry_run)
    finally:
        engine.dispose()
    verb = "would set" if args.dry_run else "set"
    if before is None and problem is None:
        print(f"the state table {context.state_name} does not exist: {verb[:-3]}create it")
    if problem is not None:
        print(
            f"the stored state cannot be read ({problem}); it is replaced: only the offsets below"
        )
    print(f"{verb} stored offsets in the COMMENT of {context.state_name}:")
    stored = {} if before is None else before.offsets
    for tp, offset in sorted(new_offsets.items()):
        print(f"  {tp.topic}[{tp.partition}]: {_show(stored.get(tp))} -> {offset}")
    if args.dry_run:
        print("dry run: nothing changed")
    elif members:
        print(f"note: {members} active member(s) of {group!r} re-read from the new offsets")
    return 0
