"""The benchmark's event rows: deterministic, shared verbatim with the public library's runner."""

from __future__ import annotations

import datetime
import decimal
import random
from collections.abc import Iterator
from typing import Any

STATUSES = ("new", "paid", "shipped", "cancelled")
TAGS = (["a"], ["red", "blue"], ["x,y", 'q"uote'], [], None)
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def event_rows(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Rows of (id, key, at, amount, status, payload, tags); about one value in ten is NULL."""
    rng = random.Random(seed)
    for i in range(count):
        payload = {
            "user": rng.randrange(1_000_000),
            "items": [rng.randrange(100) for _ in range(3)],
            "source": "web" if i % 3 else "app",
            "note": "order placed via checkout v2",
            "ok": True,
        }
        yield (
            i,
            f"key-{i % 50_000}",
            START + datetime.timedelta(seconds=i),
            decimal.Decimal(rng.randrange(1_000_000)) / 100 if i % 10 else None,
            STATUSES[i % 4],
            payload if i % 13 else None,
            TAGS[i % 5],
        )
