"""Where one worker's time goes: the sink's front half alone, stage by stage, on one topic.

    python -m tests.benchmarks.ceiling [--events N]

Reads the same pre-produced topic (the benchmark's events, 6 partitions) three times in one
process, each time with a fresh consumer group, and prints the rate of each stage:

1. consume only: librdkafka's consume loop, nothing done with the messages;
2. plus decode, map and batch the general way: a `Message` and a `Record` per message, then
   the topic's general way and `Batcher.add` (the way of messages the fast path leaves);
3. plus the worker's intake (`Intake.add`), where this topic takes the fast path.

The sink end to end can be no faster than the last line; the ingest core alone (the
`ingest` section of `make bench`) starts from ready rows and skips all of it.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from confluent_kafka import Consumer

from sink.batcher import Batcher
from sink.config import load_settings
from sink.consumer import consumer_config
from sink.health import Health
from sink.metrics import SinkMetrics
from sink.path import Intake, TopicPath
from sink.pipeline import Pipeline
from sink.records import TopicPartition
from sink.worker import Worker
from tests.events import events
from tests.integration.sink.harness import produce

from .e2e import write_config
from .measure import PARTITIONS, create_topic, delete_topics

CHUNK = 2000


def _read_all(
    bootstrap: str, topic: str, count: int, handle: Callable[[list[Any]], object]
) -> float:
    """Seconds from the first message to the last, calling `handle` on each list consumed."""
    config = consumer_config(bootstrap, f"ceiling-{uuid.uuid4().hex[:8]}", {})
    # A fresh group has no stored offset: the worker resolves start_from, this reads from 0.
    consumer = Consumer({**config, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen, started = 0, None
    try:
        while seen < count:
            messages = consumer.consume(CHUNK, 1.0)
            if messages and started is None:
                started = time.perf_counter()
            handle(messages)
            seen += len(messages)
    finally:
        consumer.close()
    assert started is not None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    count = parser.parse_args().events
    bootstrap = os.environ["SINK_TEST_KAFKA_BOOTSTRAP"]
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    try:
        produce(bootstrap, topic, events(count), partitions=PARTITIONS)
        with tempfile.TemporaryDirectory() as folder:
            config = write_config(
                Path(folder) / "sink.toml",
                bootstrap=bootstrap,
                database_url="postgresql://unused@127.0.0.1:1/unused",
                topic=topic,
                schema="ceiling",
                table="events",
                group_id="unused",
                upsert=False,
            )
            settings = load_settings(config, {})
        pipeline = Pipeline.from_settings(settings)
        batcher = Batcher(10_000, 1 << 40, 3600.0)
        # The intake, every message of which takes the general way.
        intake = Intake(
            lambda topic: TopicPath(None, pipeline.path(topic).lines),
            batcher,
            {TopicPartition(topic, p): 0 for p in range(PARTITIONS)},
            settings.errors.policy,
            out_of_range=lambda tp: None,
            seek=lambda offsets: None,
        )

        def general(msgs: list[Any]) -> None:
            intake.add(msgs)
            if batcher.message_count >= batcher.max_messages:
                batcher.take()

        # A worker that never connects (the engine is lazy), its partitions assigned at 0.
        worker = Worker(
            settings,
            sa.create_engine(settings.postgres.engine_url()),
            pipeline,
            Health(lambda: None),
            SinkMetrics(),
        )
        worker.positions.update({TopicPartition(topic, p): 0 for p in range(PARTITIONS)})

        def worker_loop(msgs: list[Any]) -> None:
            worker.intake.add(msgs)
            if worker.batcher.message_count >= worker.batcher.max_messages:
                worker.batcher.take()

        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])  # as the worker does
        stages: list[tuple[str, Callable[[list[Any]], object]]] = [
            ("consume only", lambda msgs: None),
            ("+ decode, map, batch (general)", general),
            ("+ the worker's loop (fast path)", worker_loop),
        ]
        print(f"{count:,} events of ~250 bytes, {PARTITIONS} partitions, one process")
        for name, handle in stages:
            seconds = _read_all(bootstrap, topic, count, handle)
            rate, each = count / seconds, seconds / count * 1e6
            print(f"  {name:<32} {rate:>10,.0f} events/s  {each:6.2f} µs each")
    finally:
        delete_topics(bootstrap, [topic])


if __name__ == "__main__":
    main()
