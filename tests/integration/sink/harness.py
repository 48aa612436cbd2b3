"""Drives real sink workers as subprocesses against the real broker and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from tests.events import events

REPO = Path(__file__).resolve().parents[3]


def produce(
    bootstrap: str,
    topic: str,
    pairs: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partitions: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produces (key, value) pairs; with `partitions`, round-robin over them, else by key."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000}
    )
    count = 0
    for i, (key, value) in enumerate(pairs):
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partitions is not None:
            kwargs["partition"] = i % partitions
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0, "messages left unsent"
    return count


def produce_steadily(
    bootstrap: str, topic: str, total: int, partitions: int, *, chunk: int, pause: float
) -> threading.Thread:
    """Produces `total` events in chunks with pauses, in a thread, so that workers keep
    catching up with a live stream while a test kills, adds or restarts things."""

    def run() -> None:
        for start in range(0, total, chunk):
            produce(bootstrap, topic, events(chunk, start=start), partitions=partitions)
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def log_end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "harness-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(KafkaTopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def stored_offsets(engine: sa.engine.Engine, schema: str, table: str) -> dict[str, dict[str, int]]:
    """The sink's stored next offsets, read straight from the table comment."""
    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"),
            {"t": f'"{schema}"."{table}"'},
        ).scalar()
    if comment is None:
        return {}
    state = orjson.loads(comment)["pg-bulk-ingest"]["high-watermark"]
    return dict(state["offsets"])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class SinkProcess:
    """One `python -m sink run` worker; its output goes to a log file for post-mortems."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sink", "run", "--config", str(config)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.running():
            self.kill()
        self._log.close()


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
