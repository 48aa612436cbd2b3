"""The worker's peak RSS with large messages, at the default batch limits.

    python -m tests.benchmarks.memory [--messages N] [--size BYTES]

One worker lands N JSON messages of about BYTES each (default: 400 of 1 MB) into a table with
a JSONB column, at the default batch limits (50,000 messages, 16 MiB, 1 s), and its peak RSS
(VmHWM) is printed. `batch.max_bytes` bounds what a batch holds whatever the message size; the
README gives the bound. Also the `memory` section of `make bench`. Targets the local services
only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.sink.harness import stored_offsets

from .e2e import run_config, start_workers, state_table
from .measure import PARTITIONS, delete_topics, standalone


def produce_large(bootstrap: str, topic: str, messages: int, size: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    limit = str(2 * size)
    new = NewTopic(topic, PARTITIONS, 1, config={"max.message.bytes": limit})
    admin.create_topics([new])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2 * size})
    for i in range(messages):
        value = orjson.dumps({"id": i, "payload": {"blob": f"{i:07d}" * (size // 7)}})
        producer.produce(topic, value=value, partition=i % PARTITIONS)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"{topic}: messages not acknowledged")


def peak_with_large_messages(
    *,
    bootstrap: str,
    database_url: str,
    engine: sa.engine.Engine,
    schema: str,
    run_dir: Path,
    messages: int,
    size: int,
) -> dict[str, float]:
    """One worker lands `messages` of `size` bytes; its peak RSS and the rate."""
    topic = f"bench-memory-{run_dir.name}"
    produce_large(bootstrap, topic, messages, size)
    config, _ = run_config(
        run_dir,
        "memory",
        bootstrap=bootstrap,
        database_url=database_url,
        topic=topic,
        schema=schema,
        upsert=False,
    )
    started = time.monotonic()
    (worker,) = start_workers(config, 1, run_dir, "memory")
    try:
        while (
            sum(stored_offsets(engine, schema, state_table("memory")).get(topic, {}).values())
            < messages
        ):
            worker.check_alive()
            worker.sample()
            time.sleep(0.2)
        seconds = time.monotonic() - started
        worker.sample()
    finally:
        worker.stop()
        delete_topics(bootstrap, [topic])
    return {"messages": messages, "size": size, "seconds": seconds, "peak_mb": worker.peak_mb or 0}


def describe(result: dict[str, float]) -> str:
    return (
        f"{result['messages']:,.0f} messages of {result['size']:,.0f} bytes in "
        f"{result['seconds']:.1f} s: peak RSS {result['peak_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--size", type=int, default=1_000_000)
    args = parser.parse_args()
    with standalone("memory") as run:
        result = peak_with_large_messages(
            bootstrap=run.bootstrap,
            database_url=run.database_url,
            engine=run.engine,
            schema=run.schema,
            run_dir=run.run_dir,
            messages=args.messages,
            size=args.size,
        )
    print(describe(result))


if __name__ == "__main__":
    main()
