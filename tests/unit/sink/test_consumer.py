"""The consumer's librdkafka configuration: our defaults, then the user's settings."""

from __future__ import annotations

import orjson
from confluent_kafka import KafkaError

from sink.consumer import BrokerWatch, consumer_config


def test_fetching_resumes_soon_after_the_prefetch_queue_fills() -> None:
    config = consumer_config("127.0.0.1:9092", "g", {})
    assert config["fetch.queue.backoff.ms"] == 100
    assert config["enable.auto.commit"] is False


def test_members_hear_of_a_rebalance_within_a_second_unless_the_broker_sets_it() -> None:
    assert consumer_config("127.0.0.1:9092", "g", {})["heartbeat.interval.ms"] == 1000
    kip848 = consumer_config("127.0.0.1:9092", "g", {"group.protocol": "consumer"})
    assert "heartbeat.interval.ms" not in kip848


def test_the_users_settings_override_the_defaults_but_not_the_fixed_ones() -> None:
    settings = {"fetch.queue.backoff.ms": 1000, "enable.auto.commit": True}
    config = consumer_config("127.0.0.1:9092", "g", settings)
    assert config["fetch.queue.backoff.ms"] == 1000
    assert config["enable.auto.commit"] is False


class _Error:
    def __init__(self, code: int, text: str) -> None:
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text


def test_the_broker_watch_says_once_why_every_broker_is_down_and_once_that_one_is_up() -> None:
    changes: list[str | None] = []
    watch = BrokerWatch(changes.append)
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    for _ in range(50):  # librdkafka repeats both while the outage lasts
        watch.error(_Error(KafkaError._TRANSPORT, refused))  # type: ignore[arg-type]
        watch.error(_Error(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))  # type: ignore[arg-type]
        watch.statistics(orjson.dumps({"brokers": {"b": {"state": "CONNECT"}}}).decode())
    assert changes == [refused]
    watch.statistics(orjson.dumps({"brokers": {"b": {"state": "UP"}}}).decode())
    watch.statistics(orjson.dumps({"brokers": {"b": {"state": "UP"}}}).decode())
    assert changes == [refused, None] and watch.brokers_up == 1
