"""A dead letter can always be written to the dead-letter table, whatever the bad message holds
(headers with NUL or binary bytes, a Kafka timestamp past the year 9999): the worker carries on
past it, rather than retrying a row PostgreSQL refuses, or stopping."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import orjson
import sqlalchemy as sa
from confluent_kafka import Producer

from tests.events import events

from .harness import SinkProcess, log_end_offsets, stored_offsets, wait_until

# Microseconds since 1970 sent as milliseconds: a CreateTime in the year 55,000 or so.
MICROSECONDS_AS_MS = 1_700_000_000_000_000
# Kafka 4 refuses timestamps more than an hour ahead unless the topic allows them.
ANY_TIMESTAMP = {"message.timestamp.after.max.ms": str(2**63 - 1)}
DEAD_LETTER_POLICY = (
    '[errors]\npolicy = "dead-letter-table"\ndead_letter_table = "{}.dead_letters"\n'
)
ID_AND_KAFKA_TIME = """
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
[[tables.columns]]
name = "at"
type = "TIMESTAMPTZ"
source = "kafka.timestamp"
"""

Sent = Tuple[Optional[bytes], Optional[bytes], Dict[str, Any]]


def _produce(bootstrap: str, topic: str, messages: Sequence[Sent]) -> None:
    """Produces each (key, value, extra produce() arguments), in order, to partition 0."""
    producer = Producer({"bootstrap.servers": bootstrap})
    failures: list[object] = []
    for key, value, extra in messages:
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=0,
            on_delivery=lambda error, _msg: error is None or failures.append(error),
            **extra,
        )
    assert producer.flush(30) == 0 and not failures, failures


def _catch_up(
    engine: sa.engine.Engine, bootstrap: str, topic: str, schema: str, worker: SinkProcess
) -> None:
    ends = {str(p): n for p, n in log_end_offsets(bootstrap, topic, 1).items()}
    wait_until(
        lambda: stored_offsets(engine, schema).get(topic) == ends or not worker.running(),
        60,
        "the stored offsets to reach the log end",
    )
    assert worker.running(), worker.output()[-3000:]
    assert worker.terminate() == 0, worker.output()[-3000:]


def _dead_letters(engine: sa.engine.Engine, schema: str) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text(f'SELECT * FROM "{schema}".dead_letters ORDER BY "offset"'))
            .mappings()
            .all()
        )


def _ids(engine: sa.engine.Engine, schema: str) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.text(f'SELECT id FROM "{schema}".events ORDER BY id')).scalars()
        )


def _good(start: int, count: int) -> list[Sent]:
    return [(key, value, {}) for key, value in events(count, start=start)]


def test_a_dead_letter_whose_headers_hold_nul_and_binary_bytes_is_written_with_them_encoded(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=1)
    headers = [("trace", b"a\x00b"), ("bin", b"\xff\xfe"), ("hop", b"one"), ("hop", b"two")]
    _produce(
        kafka_bootstrap,
        topic,
        [*_good(0, 3), (b"bad", b"{not json", {"headers": headers}), *_good(3, 3)],
    )
    config = sink_config([topic], schema, extra=DEAD_LETTER_POLICY.format(schema))
    _catch_up(engine, kafka_bootstrap, topic, schema, start_sink(config))

    assert _ids(engine, schema) == list(range(6))
    [letter] = _dead_letters(engine, schema)
    assert (letter["offset"], letter["error_code"]) == (3, "not-json")
    assert (letter["key"], letter["value"]) == (b"bad", b"{not json")
    assert letter["headers"] == {
        "trace": {"base64": base64.b64encode(b"a\x00b").decode()},
        "bin": {"base64": base64.b64encode(b"\xff\xfe").decode()},
        "hop": ["one", "two"],
    }


def test_a_dead_letter_with_a_timestamp_past_the_year_9999_is_written_without_it(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=1, config=ANY_TIMESTAMP)
    late = {"timestamp": MICROSECONDS_AS_MS}
    _produce(kafka_bootstrap, topic, [*_good(0, 2), (b"bad", b"{not json", late), *_good(2, 2)])
    config = sink_config([topic], schema, extra=DEAD_LETTER_POLICY.format(schema))
    _catch_up(engine, kafka_bootstrap, topic, schema, start_sink(config))

    assert _ids(engine, schema) == list(range(4))
    [letter] = _dead_letters(engine, schema)
    assert (letter["offset"], letter["error_code"], letter["timestamp"]) == (2, "not-json", None)
    assert "value is not JSON" in letter["error"]
    assert f"the Kafka timestamp {MICROSECONDS_AS_MS}" in letter["error"]
    assert "after the year 9999" in letter["error"]


def test_a_message_whose_kafka_timestamp_a_column_cannot_take_becomes_a_dead_letter(
    engine: sa.engine.Engine,
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    schema: str,
    sink_config: Callable[..., Path],
    start_sink: Callable[[Path], SinkProcess],
) -> None:
    topic = new_topic(partitions=1, config=ANY_TIMESTAMP)
    late = {"timestamp": MICROSECONDS_AS_MS}
    _produce(
        kafka_bootstrap,
        topic,
        [(None, orjson.dumps({"id": i}), late if i == 1 else {}) for i in range(3)],
    )
    config = sink_config(
        [topic], schema, columns=ID_AND_KAFKA_TIME, extra=DEAD_LETTER_POLICY.format(schema)
    )
    _catch_up(engine, kafka_bootstrap, topic, schema, start_sink(config))

    assert _ids(engine, schema) == [0, 2]
    [letter] = _dead_letters(engine, schema)
    assert (letter["offset"], letter["error_code"], letter["timestamp"]) == (1, "range", None)
    assert f"{schema}.events.at: the Kafka timestamp {MICROSECONDS_AS_MS}" in letter["error"]
    assert "micro- or nanoseconds" in letter["error"]
