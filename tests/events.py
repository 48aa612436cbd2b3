"""Sample events shared by the demo, the tests and the benchmarks (~250 bytes of JSON each)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

STATUSES = ("created", "paid", "shipped", "delivered", "refunded")
TAGS = ("web", "mobile", "promo", "gift", "express", "retry")

# The event table as the sink's config declares it (TOML), for `[[tables]]` blocks.
EVENT_COLUMNS_TOML = """
[[tables.columns]]
name = "id"
type = "BIGINT"
nullable = false
[[tables.columns]]
name = "key"
type = "VARCHAR(64)"
[[tables.columns]]
name = "ts"
type = "TIMESTAMPTZ"
[[tables.columns]]
name = "amount"
type = "NUMERIC(12,2)"
[[tables.columns]]
name = "status"
type = "VARCHAR(16)"
[[tables.columns]]
name = "payload"
type = "JSONB"
[[tables.columns]]
name = "tags"
type = "TEXT[]"
"""


def event(i: int, rng: random.Random) -> dict[str, object]:
    return {
        "id": i,
        "key": f"customer-{rng.randrange(100_000)}",
        "ts": (
            f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{i % 1000:03d}Z"
        ),
        "amount": f"{rng.randrange(1, 1_000_000) / 100:.2f}",
        "status": None if i % 17 == 0 else STATUSES[i % len(STATUSES)],
        "payload": {
            "sku": f"SKU-{rng.randrange(10_000):05d}",
            "qty": rng.randrange(1, 9),
            "note": 'line\twith "quotes", commas and ünïcode',
            "ip": f"10.{i % 256}.{(i // 256) % 256}.{rng.randrange(256)}",
        },
        "tags": [TAGS[(i + k) % len(TAGS)] for k in range(i % 3)],
    }


def events(count: int, *, start: int = 0, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of JSON events with ids start..start+count-1."""
    rng = random.Random(seed + start)
    for i in range(start, start + count):
        yield str(i).encode(), orjson.dumps(event(i, rng))
