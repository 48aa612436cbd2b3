"""Tables whose columns come from the Kafka Connect schemas their messages carry (JsonConverter
with schemas.enable=true, no schema registry): the first message's schema makes the table, a
later schema with more fields migrates it while the worker runs, the group's state keeps the
columns applied, and a schema no column can hold stops the worker naming the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from tests.events import events

from .harness import SinkProcess, log_end_offsets, produce, stored_state, wait_until
from .test_connect_envelope import KEY_SCHEMA, unscaled

V1_FIELDS = [
    {"type": "int64", "optional": False, "field": "id"},
    {
        "type": "bytes",
        "optional": False,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "12"},
        "field": "amount",
    },
    {
        "type": "int32",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Date",
        "version": 1,
        "field": "day",
    },
    {"type": "string", "optional": True, "field": "note"},
]
V1 = {"type": "struct", "name": "shop.orders.Value", "optional": False, "fields": V1_FIELDS}
V2 = {**V1, "fields": [*V1_FIELDS, {"type": "int16", "optional": True, "field": "channel"}]}
# `channel` as a string: no column holds both its SMALLINT and TEXT values.
V3 = {**V1, "fields": [*V1_FIELDS, {"type": "string", "optional": True, "field": "channel"}]}
TABLE = 'key_format = "connect-json"\nvalue_format = "connect-json"\n'


def order(i: int, schema: dict[str, Any], **more: Any) -> tuple[bytes, bytes]:
    payload = {"id": i, "amount": unscaled(Decimal(i) + Decimal("0.25")), "day": i, "note": None}
    payload["note"] = f"order {i}"
    payload.update(more)
    key = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}})
    return key, orjson.dumps({"schema": schema, "payload": payload})


def columns(engine: sa.engine.Engine, schema: str) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT column_name, format_type(atttypid, atttypmod), is_nullable "
                "FROM information_schema.columns JOIN pg_attribute "
                "ON attrelid = to_regclass(quote_ident(:s) || '.events') AND attname = column_name "
                "WHERE table_schema = :s AND table_name = 'events' ORDER BY ordinal_position"
            ),
            {"s": schema},
        )
        return [tuple(row) for row in found]  # type: ignore[misc]


def rows(engine: sa.engine.Engine, schema: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        found = conn.execute(sa.text(f'SELECT * FROM "{schema}".events ORDER BY id'))
        return [tuple(row) for row in found]


def test_the_first_schema_makes_the_table_and_a_new_field_adds_a_column_while_running(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    config = sink_config([topic], schema, columns="", table_extra=TABLE)
    worker = start_sink(config)

    def committed(count: int) -> Callable[[], bool]:
        def check() -> bool:
            assert worker.running(), worker.output()[-3000:]
            ends = log_end_offsets(kafka_bootstrap, topic, 2)
            stored = stored_state(engine, schema).get("offsets", {}).get(topic, {})
            return sum(ends.values()) == count and all(
                stored.get(str(p)) == end for p, end in ends.items()
            )

        return check

    # No message yet: the worker waits, serving its probes, and makes no table.
    wait_until(lambda: "waiting for a message with a Connect schema" in worker.output(), 30, "wait")
    assert columns(engine, schema) == []
    produce(kafka_bootstrap, topic, (order(i, V1) for i in range(1, 201)))
    wait_until(committed(200), 60, "the first schema's orders")
    assert columns(engine, schema) == [
        ("id", "bigint", "NO"),
        ("amount", "numeric(12,2)", "NO"),
        ("day", "date", "YES"),
        ("note", "text", "YES"),
    ]
    produce(kafka_bootstrap, topic, (order(i, V2, channel=i % 7) for i in range(150, 301)))
    produce(kafka_bootstrap, topic, [order(301, V1)])  # the first schema still reads
    wait_until(committed(352), 60, "the second schema's orders")
    assert columns(engine, schema)[-1] == ("channel", "smallint", "YES")
    expected = {i: None for i in range(1, 150)} | {i: i % 7 for i in range(150, 301)} | {301: None}
    landed = rows(engine, schema)
    assert [row[0] for row in landed] == sorted(expected)
    assert all(row[4] == expected[row[0]] for row in landed)
    assert landed[0][1:4] == (Decimal("1.25"), date(1970, 1, 2), "order 1")
    state = stored_state(engine, schema)
    assert state["columns"][f"{schema}.events"]["key"] == [["id", "BIGINT"]]
    definitions = state["definitions"]
    assert worker.terminate() == 0

    # A worker started again takes the columns the group's state holds, without a message.
    again = start_sink(config)
    produce(kafka_bootstrap, topic, [order(302, V1)])
    worker = again
    wait_until(committed(353), 60, "an order after the restart")
    assert "waiting for a message" not in again.output()
    assert stored_state(engine, schema)["definitions"] == definitions  # not migrated again
    # A schema no column can hold stops the worker, naming the field; nothing of it lands.
    produce(kafka_bootstrap, topic, [order(303, V3, channel="web")])
    assert again.exit_code(60) != 0
    assert "'channel'" in again.output() and "SMALLINT" in again.output()
    assert [row[0] for row in rows(engine, schema)][-1] == 302


def count(engine: sa.engine.Engine, schema: str) -> int:
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".events'}).scalar():
            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".events')).scalar())
        return 0


def test_workers_of_a_group_take_the_columns_another_applied_from_the_groups_state(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    # Append only (no primary key): a message written twice would be a second row.
    config = sink_config([topic], schema, columns="", table_extra='value_format = "connect-json"\n')

    def old(ids: range) -> list[tuple[bytes | None, bytes | None]]:
        return [(None, order(i, V1)[1]) for i in ids]

    produce(kafka_bootstrap, topic, old(range(1, 101)), partitions=2)
    workers = [start_sink(config), start_sink(config)]

    def held(worker: SinkProcess) -> int:
        number = 0
        for line in worker.messages().splitlines():
            if line.startswith(("assigned ", "revoked ")):
                number += line.count(f"{topic}[") * (1 if line.startswith("assigned") else -1)
        return number

    def landed(rows: int) -> Callable[[], bool]:
        def check() -> bool:
            assert all(w.running() for w in workers), [w.output()[-3000:] for w in workers]
            return count(engine, schema) >= rows

        return check

    wait_until(lambda: [held(w) for w in workers] == [1, 1], 60, "a partition each")
    wait_until(landed(100), 60, "the first orders")
    # The second schema on partition 0 only: its worker migrates the table. Then the first on
    # both: the other worker, which never read the second, meets the newer definition when it
    # commits, and takes its columns from the group's state.
    new = [(None, order(i, V2, channel=i % 7)[1]) for i in range(101, 151)]
    produce(kafka_bootstrap, topic, new, partitions=1)
    wait_until(landed(150), 60, "the second schema's orders")
    produce(kafka_bootstrap, topic, old(range(151, 251)), partitions=2)
    wait_until(landed(250), 60, "the first schema's orders again")
    expected = [(i, None) for i in range(1, 101)]
    expected += [(i, i % 7) for i in range(101, 151)] + [(i, None) for i in range(151, 251)]
    with engine.connect() as conn:
        found = conn.execute(sa.text(f'SELECT id, channel FROM "{schema}".events ORDER BY id'))
        assert [tuple(row) for row in found] == expected
    messages = [w.messages() for w in workers]
    assert all(w.running() for w in workers), messages
    assert any("newer definition than this worker's" in m for m in messages)
    assert sum("adds field 'channel'" in m for m in messages) == 1  # only one read the schema
    for worker in workers:
        assert worker.terminate() == 0


def change_event(i: int, op: str, before: Any, after: Any) -> tuple[bytes, bytes | None]:
    key = orjson.dumps({"schema": KEY_SCHEMA, "payload": {"id": i}})
    envelope = {
        "type": "struct",
        "name": "db.shop.orders.Envelope",
        "optional": False,
        "fields": [
            {**V1, "optional": True, "field": "before"},
            {**V1, "optional": True, "field": "after"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    value = {"before": before, "after": after, "op": op}
    return key, orjson.dumps({"schema": envelope, "payload": value})


def test_debezium_change_events_make_their_table_from_the_after_struct_and_apply(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic()

    def row(i: int, note: str) -> dict[str, Any]:
        return {"id": i, "amount": unscaled(Decimal(i)), "day": None, "note": note}

    events = [change_event(i, "r", None, row(i, "read")) for i in range(1, 51)]
    events += [change_event(i, "u", row(i, "read"), row(i, "updated")) for i in range(1, 11)]
    events += [change_event(i, "d", row(i, "read"), None) for i in range(41, 51)]
    events += [(change_event(i, "d", None, None)[0], None) for i in range(41, 51)]  # tombstones
    produce(kafka_bootstrap, topic, events)
    config = sink_config([topic], schema, columns="", table_extra=TABLE + 'envelope = "debezium"\n')
    worker = start_sink(config)
    end = log_end_offsets(kafka_bootstrap, topic, 1)[0]

    def caught_up() -> bool:
        assert worker.running(), worker.output()[-3000:]
        return stored_state(engine, schema).get("offsets", {}).get(topic, {}).get("0") == end

    wait_until(caught_up, 60, "every change event")
    assert worker.terminate() == 0
    assert columns(engine, schema) == [
        ("id", "bigint", "NO"),
        ("amount", "numeric(12,2)", "NO"),
        ("day", "date", "YES"),
        ("note", "text", "YES"),
    ]
    with engine.connect() as conn:
        found = conn.execute(sa.text(f'SELECT id, amount, note FROM "{schema}".events ORDER BY id'))
        landed = [tuple(row) for row in found]
    assert landed == [(i, Decimal(i), "updated" if i <= 10 else "read") for i in range(1, 41)]


def test_on_a_latin1_connection_rows_stay_text_also_after_a_schema_change_rebuilds_the_paths(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    database_url: str,
    sink_config: Callable[..., Path],
    sink_role: Callable[..., str],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    """Binary COPY tuples are UTF-8: where the connection's encoding is another, every table's
    rows go as text, also those of the paths made anew when a schema change derives columns."""
    plain, changing = new_topic(), new_topic()
    orders = f'[[tables]]\nschema = "{schema}"\nname = "orders"\ntopics = ["{changing}"]\n'
    config = sink_config([plain], schema, extra=orders + TABLE)
    config.write_text(config.read_text().replace(database_url, sink_role(encoding="LATIN1")))
    produce(kafka_bootstrap, plain, events(100))
    produce(kafka_bootstrap, changing, [order(1, V1)])
    worker = start_sink(config)

    def landed(events_count: int, orders_count: int) -> Callable[[], bool]:
        def check() -> bool:
            assert worker.running(), worker.output()[-3000:]
            with engine.connect() as conn:
                found = [
                    conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".{name}')).scalar()
                    if conn.execute(
                        sa.text("SELECT to_regclass(:t)"), {"t": f'"{schema}".{name}'}
                    ).scalar()
                    else 0
                    for name in ("events", "orders")
                ]
            return found == [events_count, orders_count]

        return check

    wait_until(landed(100, 1), 60, "the first rows")
    produce(kafka_bootstrap, changing, [order(2, V2, channel=3)])  # derives the columns again
    wait_until(lambda: "adds field 'channel'" in worker.output(), 60, "the schema change")
    produce(kafka_bootstrap, plain, events(100, start=100))
    wait_until(landed(200, 2), 60, "the rows after the schema change")
    assert "rows go as COPY text" in worker.output()
    assert worker.terminate() == 0
