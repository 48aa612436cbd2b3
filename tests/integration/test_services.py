"""The ground every integration test stands on: the real broker and the real database answer."""

from __future__ import annotations

import uuid
from typing import Callable

import sqlalchemy as sa
from confluent_kafka import Consumer, Producer


def test_a_message_produced_to_the_broker_is_consumed_back(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    payload = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"k", value=payload, partition=1)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        received = None
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                received = msg
                break
    finally:
        consumer.close()
    assert received is not None, "nothing consumed within 30 s"
    assert (received.partition(), received.offset(), received.value()) == (1, 0, payload)


def test_rows_written_to_the_database_are_read_back(engine: sa.engine.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{schema}".smoke (id int primary key, v text)'))
        conn.execute(sa.text(f'INSERT INTO "{schema}".smoke VALUES (1, :v)'), {"v": "é\t\n"})
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT id, v FROM "{schema}".smoke')).all()
    assert [tuple(r) for r in rows] == [(1, "é\t\n")]
