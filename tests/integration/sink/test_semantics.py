"""What lands in the tables: upserts, deletes, several topics, several tables."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import sqlalchemy as sa

from tests.events import events

from .harness import SinkProcess, produce, stored_offsets, wait_until

ORDER_COLUMNS = """
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "status"
type = "VARCHAR(16)"
[[tables.columns]]
name = "amount"
type = "NUMERIC(12,2)"
"""


def rows(engine: sa.engine.Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql)).all()]


def order(i: int, status: str) -> tuple[bytes, bytes]:
    return str(i).encode(), orjson.dumps({"id": i, "status": status, "amount": f"{i}.50"})


def test_upserts_keep_the_last_value_per_key_and_tombstones_delete(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=2)
    config = sink_config(
        [topic],
        schema,
        "orders",
        primary_key=["id"],
        columns=ORDER_COLUMNS,
        table_extra='tombstones = "delete"\n',
    )
    # Within one batch: 1 updated twice, 2 deleted, 3 deleted then re-created, 4 untouched.
    produce(
        kafka_bootstrap,
        topic,
        [
            order(1, "created"),
            order(2, "created"),
            order(3, "created"),
            order(4, "created"),
            order(1, "paid"),
            (b"2", None),
            (b"3", None),
            order(3, "again"),
            order(1, "shipped"),
        ],
    )
    worker = start_sink(config)
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) == 9,
        60,
        "the first messages committed",
    )
    assert rows(engine, f'SELECT id, status FROM "{schema}".orders ORDER BY id') == [
        (1, "shipped"),
        (3, "again"),
        (4, "created"),
    ]
    # Across batches: delete 1, update 4.
    produce(kafka_bootstrap, topic, [(b"1", None), order(4, "paid")])
    wait_until(
        lambda: sum(stored_offsets(engine, schema).get(topic, {}).values()) == 11,
        60,
        "the next messages committed",
    )
    assert rows(engine, f'SELECT id, status FROM "{schema}".orders ORDER BY id') == [
        (3, "again"),
        (4, "paid"),
    ]
    assert worker.terminate() == 0


def test_several_topics_feed_one_table_with_offsets_kept_per_topic(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    first, second = new_topic(partitions=2), new_topic(partitions=3)
    config = sink_config([first, second], schema, primary_key=["id"])
    produce(kafka_bootstrap, first, events(1000), partitions=2)
    produce(kafka_bootstrap, second, events(1500, start=1000), partitions=3)
    worker = start_sink(config)
    wait_until(
        lambda: (
            rows(engine, f'SELECT count(*) FROM "{schema}".events') == [(2500,)]
            if stored_offsets(engine, schema)
            else False
        ),
        60,
        "2500 rows",
    )
    assert worker.terminate() == 0
    assert stored_offsets(engine, schema) == {
        first: {"0": 500, "1": 500},
        second: {"0": 500, "1": 500, "2": 500},
    }


def test_one_message_lands_in_two_tables_atomically_even_when_killed(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    tmp_path: Path,
    database_url: str,
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=3)
    config = tmp_path / "two.toml"
    config.write_text(f"""
[kafka]
bootstrap_servers = "{kafka_bootstrap}"
group_id = "two-{schema}"
[kafka.settings]
"session.timeout.ms" = "6000"
[postgres]
url = "{database_url}"
[batch]
max_messages = 500
max_age_seconds = 0.2
[http]
port = 0
[python]
module = "tests.integration.sink.two_tables"
""")
    import os

    os.environ.update(TWO_TABLES_SCHEMA=schema, TWO_TABLES_TOPIC=topic)
    total, chunk = 30_000, 500

    def produce_steadily() -> None:  # the kill lands while orders are still arriving
        for start in range(0, total, chunk):
            orders = (order(i, "new") for i in range(start, start + chunk))
            produce(kafka_bootstrap, topic, orders, partitions=3)
            time.sleep(0.1)

    try:
        both = (
            f'SELECT (SELECT count(*) FROM "{schema}".orders),'
            f' (SELECT count(*) FROM "{schema}".order_audit)'
        )
        worker = start_sink(config)
        producer = threading.Thread(target=produce_steadily)
        producer.start()
        wait_until(lambda: _exists(engine, schema) and rows(engine, both)[0][0] > 0, 60, "rows")
        seen = []
        for _ in range(5):
            seen.append(rows(engine, both)[0])
            time.sleep(0.05)
        worker.signal(signal.SIGKILL)
        producing = producer.is_alive()
        worker.proc.wait(10)
        seen.append(rows(engine, both)[0])
        producer.join()
        assert producing, "the orders were all produced before the kill: it proved nothing"
        restarted = start_sink(config)
        wait_until(lambda: rows(engine, both)[0] == (total, total), 120, "every order twice")
        assert restarted.terminate() == 0
    finally:
        del os.environ["TWO_TABLES_SCHEMA"], os.environ["TWO_TABLES_TOPIC"]
    assert all(a == b for a, b in seen), seen
    assert rows(
        engine,
        f"SELECT count(DISTINCT kafka_offset || ':' || order_id) FROM \"{schema}\".order_audit",
    ) == [(total,)]


def _exists(engine: sa.engine.Engine, schema: str) -> bool:
    return rows(engine, f"SELECT to_regclass('\"{schema}\".order_audit')")[0][0] is not None
