"""Demo producer for deploy/compose.yaml: JSON orders shaped like the base sink.toml's table."""

from __future__ import annotations

import datetime
import json
import os
import random
import time

from confluent_kafka import Producer

# Slow enough to watch rows arrive, fast enough to fill batches.
INTERVAL_SECONDS = 0.01
CUSTOMERS = ("ada", "grace", "edsger", "barbara", "ken")


def main() -> None:
    producer = Producer({"bootstrap.servers": os.environ["BOOTSTRAP_SERVERS"]})
    topic = os.environ.get("TOPIC", "orders")
    order_id = 0
    while True:
        order_id += 1
        value = {
            "order_id": order_id,
            "customer": random.choice(CUSTOMERS),
            "amount": f"{random.uniform(1, 500):.2f}",
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        producer.produce(topic, key=str(order_id), value=json.dumps(value))
        producer.poll(0)
        if order_id % 1000 == 0:
            producer.flush()
            print(f"produced {order_id} orders", flush=True)
        time.sleep(INTERVAL_SECONDS)


if __name__ == "__main__":
    main()
