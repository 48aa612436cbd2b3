"""How long partitions moved to a worker that joins the group go unread, under the consumer
configuration the worker uses (a real broker, cooperative-sticky assignment)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from sink.consumer import consumer_config

# Two heartbeats of 1000 ms and the broker's answers, with room for a loaded machine; at
# librdkafka's default heartbeat (3000 ms) the joining member reads its partitions only about
# 5 s after it subscribes.
JOINED_READS_WITHIN_SECONDS = 3.5


def test_a_joining_member_reads_its_partitions_within_two_heartbeats(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=6)
    config = consumer_config(kafka_bootstrap, f"g-{uuid.uuid4().hex[:8]}", {})
    assigned: dict[str, list[float]] = {"first": [], "joining": []}
    stop = threading.Event()

    def member(name: str) -> tuple[Consumer, threading.Thread]:
        consumer = Consumer(config)

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            if partitions:
                assigned[name].append(time.monotonic())
            c.incremental_assign(partitions)

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            c.incremental_unassign(partitions)

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)

        def poll() -> None:
            while not stop.is_set():
                consumer.poll(0.05)

        thread = threading.Thread(target=poll, name=name)
        thread.start()
        return consumer, thread

    members = [member("first")]
    try:
        deadline = time.monotonic() + 30
        while not assigned["first"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assigned["first"], "the first member was never assigned its partitions"
        joined = time.monotonic()
        members.append(member("joining"))
        while not assigned["joining"] and time.monotonic() < joined + 30:
            time.sleep(0.01)
        assert assigned["joining"], "the joining member was never assigned partitions"
        waited = assigned["joining"][0] - joined
        assert waited < JOINED_READS_WITHIN_SECONDS, f"partitions moved after {waited:.2f} s"
    finally:
        stop.set()
        for consumer, thread in members:
            thread.join()
            consumer.close()
