"""The consumer's librdkafka configuration: our defaults, then the user's settings."""

from __future__ import annotations

from sink.consumer import consumer_config


def test_fetching_resumes_soon_after_the_prefetch_queue_fills() -> None:
    config = consumer_config("127.0.0.1:9092", "g", {})
    assert config["fetch.queue.backoff.ms"] == 100
    assert config["enable.auto.commit"] is False


def test_the_users_settings_override_the_defaults_but_not_the_fixed_ones() -> None:
    settings = {"fetch.queue.backoff.ms": 1000, "enable.auto.commit": True}
    config = consumer_config("127.0.0.1:9092", "g", settings)
    assert config["fetch.queue.backoff.ms"] == 1000
    assert config["enable.auto.commit"] is False
