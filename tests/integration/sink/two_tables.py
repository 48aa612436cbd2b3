"""A tables module for the tests: each order message becomes a row in `orders` and one in
`order_audit`, in the same transaction. Schema and topic come from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

SCHEMA = os.environ.get("TWO_TABLES_SCHEMA", "public")
TOPIC = os.environ.get("TWO_TABLES_TOPIC", "orders")

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.BIGINT, primary_key=True),
    sa.Column("status", sa.VARCHAR(16)),
    schema=SCHEMA,
)
order_audit = sa.Table(
    "order_audit",
    metadata,
    sa.Column("order_id", sa.BIGINT, nullable=False),
    sa.Column("kafka_offset", sa.BIGINT, nullable=False),
    schema=SCHEMA,
)
routes = {TOPIC: [f"{SCHEMA}.orders", f"{SCHEMA}.order_audit"]}


def map_record(record: Any) -> Iterator[tuple[sa.Table, tuple[Any, ...]]]:
    yield orders, (record.value["id"], record.value["status"])
    yield order_audit, (record.value["id"], record.message.offset)
