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


def state_table(engine: sa.engine.Engine, schema: str, name: str | None = None) -> str | None:
    """The sink's state table `name` in `schema` (as `"schema"."table"`), or without a name
    the one state table there; None if there is none."""
    pattern = name or "kafka\\_sink\\_state\\_%"
    with engine.connect() as conn:
        names = (
            conn.execute(
                sa.text(
                    "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace(:schema) "
                    "AND relname LIKE :pattern"
                ),
                {"schema": schema, "pattern": pattern},
            )
            .scalars()
            .all()
        )
    assert len(names) <= 1, f"several state tables in {schema}: {names}"
    return f'"{schema}"."{names[0]}"' if names else None


def stored_state(engine: sa.engine.Engine, schema: str, name: str | None = None) -> dict[str, Any]:
    """The sink's stored state, read straight from its state table's comment ({} if none)."""
    table = state_table(engine, schema, name)
    if table is None:
        return {}
    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"), {"t": table}
        ).scalar()
    if comment is None:
        return {}
    state: dict[str, Any] = orjson.loads(comment)["pg-bulk-ingest"]["high-watermark"]
    return state


def stored_offsets(
    engine: sa.engine.Engine, schema: str, name: str | None = None
) -> dict[str, dict[str, int]]:
    """The sink's stored next offsets, per topic and partition (see `state_table`)."""
    return dict(stored_state(engine, schema, name).get("offsets", {}))


def autovacuum_cancels(server_log: str, table: str) -> int:
    """How many "canceling autovacuum task" errors of a PostgreSQL log name `table`
    (`schema.name`) in the context lines that follow them."""
    lines = server_log.splitlines()
    return sum(
        1
        for i, line in enumerate(lines)
        if "canceling autovacuum task" in line and table in " ".join(lines[i + 1 : i + 3])
    )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class SinkProcess:
    """One `python -m sink run` worker; its output goes to a log file for post-mortems."""

    def __init__(
        self, config: Path, log: Path, env: dict[str, str] | None = None, cwd: Path = REPO
    ) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sink", "run", "--config", str(config)],
            cwd=cwd,
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
        """SIGTERM once the worker takes it as a request to stop (its handlers are set before
        it serves HTTP); sent earlier, while Python starts, the signal's default action ends
        the process (-15), as a test whose rows were all written before it started would."""
        wait_until(
            lambda: not self.running() or "serving /livez" in self.output(),
            60,
            "the worker to serve HTTP",
        )
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def running(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self, timeout: float = 60) -> int:
        """Waits for the worker to stop by itself; its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout:.0f} s: {self.output()[-2000:]}"
            ) from None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def messages(self) -> str:
        """The log's messages, one per line (JSON log lines decoded)."""
        lines = []
        for line in self.output().splitlines():
            try:
                lines.append(str(orjson.loads(line)["message"]))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                lines.append(line)
        return "\n".join(lines)

    def close(self) -> None:
        if self.running():
            self.kill()
        self._log.close()


def sink_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m sink ARGS` (check, status, reset) as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "sink", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
