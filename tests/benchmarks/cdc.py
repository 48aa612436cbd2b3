"""The cdc section's topic: change events as Debezium's PostgreSQL connector writes them with the
JSON converter and schemas (an envelope with before, after, source and op; a struct key), for a
table shaped like the benchmark's events. Mostly inserts, some updates and deletes, each delete
followed by its tombstone, an id's events in one partition. Both the sink (envelope = "debezium")
and Debezium's own JDBC sink (upsert, deletes enabled) read it; each must leave the table the
changes leave, which `Changes.applied` checks."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa

from tests.events import event
from tests.integration.sink.harness import produce

from .e2e import Source
from .measure import create_topic

# Of the change events: the share of updates and of deletes; the rest are inserts.
UPDATES, DELETES = 0.10, 0.05
SERVER = "bench.public.events"  # the connector's topic prefix, schema and table
# What the sink's [[tables]] entry says to read the topic.
TABLE_SETTINGS = (
    'envelope = "debezium"\nkey_format = "connect-json"\nvalue_format = "connect-json"\n'
)


def _field(field: str, type_: str, optional: bool = True, **more: object) -> dict[str, object]:
    """One field of a Connect struct schema; `more` holds a semantic type's name, version and
    parameters."""
    return {"type": type_, "optional": optional, **more, "field": field}


ROW_SCHEMA: dict[str, object] = {
    "type": "struct",
    "fields": [
        _field("id", "int64", optional=False),
        _field("key", "string"),
        _field("ts", "string", name="io.debezium.time.ZonedTimestamp", version=1),
        _field(
            "amount",
            "bytes",
            name="org.apache.kafka.connect.data.Decimal",
            version=1,
            parameters={"scale": "2", "connect.decimal.precision": "12"},
        ),
        _field("status", "string"),
        _field("payload", "string", name="io.debezium.data.Json", version=1),
        _field("tags", "array", items={"type": "string", "optional": True}),
    ],
    "optional": True,
    "name": f"{SERVER}.Value",
}
SOURCE_SCHEMA: dict[str, object] = {
    "type": "struct",
    "fields": [
        _field("version", "string", optional=False),
        _field("connector", "string", optional=False),
        _field("name", "string", optional=False),
        _field("ts_ms", "int64", optional=False),
        _field("db", "string", optional=False),
        _field("schema", "string", optional=False),
        _field("table", "string", optional=False),
        _field("txId", "int64"),
        _field("lsn", "int64"),
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "field": "source",
}
ENVELOPE_SCHEMA: dict[str, object] = {
    "type": "struct",
    "fields": [
        {**ROW_SCHEMA, "field": "before"},
        {**ROW_SCHEMA, "field": "after"},
        SOURCE_SCHEMA,
        _field("op", "string", optional=False),
        _field("ts_ms", "int64"),
    ],
    "optional": False,
    "name": f"{SERVER}.Envelope",
    "version": 1,
}
KEY_SCHEMA: dict[str, object] = {
    "type": "struct",
    "fields": [_field("id", "int64", optional=False)],
    "optional": False,
    "name": f"{SERVER}.Key",
}
_VALUE_PREFIX = b'{"schema":' + orjson.dumps(ENVELOPE_SCHEMA) + b',"payload":'
_KEY_PREFIX = b'{"schema":' + orjson.dumps(KEY_SCHEMA) + b',"payload":'


@dataclass
class Changes:
    """The change events of one topic, and the table they leave: ids and amounts in cents."""

    events: int
    seed: int = 11
    amounts: dict[int, int] = field(default_factory=dict)
    messages: int = 0  # change events and tombstones

    def generate(self) -> Iterator[tuple[bytes, bytes | None]]:
        rng = random.Random(self.seed)
        live: list[int] = []
        lsn = 1_000
        for i in range(self.events):
            lsn += 8
            draw = rng.random()
            key: int
            if draw < DELETES and live:
                at = rng.randrange(len(live))
                key, live[at] = live[at], live[-1]
                live.pop()
                del self.amounts[key]
                before = {"id": key, **dict.fromkeys(("key", "ts", "amount", "status"))}
                yield _key(key), _value("d", before | {"payload": None, "tags": None}, None, lsn)
                yield _key(key), None  # the connector's tombstone after a delete
                continue
            if draw < DELETES + UPDATES and live:
                key = live[rng.randrange(len(live))]
                cents = self.amounts[key] = self.amounts[key] + 100
                yield _key(key), _value("u", None, _row(key, cents, rng), lsn)
                continue
            key = i
            cents = self.amounts[key] = rng.randrange(1, 1_000_000)
            live.append(key)
            yield _key(key), _value("c", None, _row(key, cents, rng), lsn)

    def produce(self, bootstrap: str, topic: str) -> float:
        """Creates `topic` and fills it; returns seconds taken."""
        started = time.monotonic()
        create_topic(bootstrap, topic)
        self.messages = produce(bootstrap, topic, self.generate())  # partitioned by key
        return time.monotonic() - started

    def applied(self, engine: sa.engine.Engine, schema: str, table: str) -> bool:
        """Whether the table holds exactly the live ids with their last amounts: every update
        adds 1.00, so a missing insert, update or delete changes the count or the sum."""
        with engine.connect() as conn:
            count, cents = conn.execute(
                sa.text(
                    f'SELECT count(*), coalesce(sum(amount) * 100, 0) FROM "{schema}"."{table}"'
                )
            ).one()
        return bool(count == len(self.amounts) and cents == sum(self.amounts.values()))

    def source(self) -> Source:
        """How the sink reads this topic, and what it must leave."""
        return Source(
            label="-cdc",
            table_settings=TABLE_SETTINGS,
            rows=len(self.amounts),
            done=self.applied,
        )


def _row(key: int, cents: int, rng: random.Random) -> dict[str, object]:
    row = event(key, rng)
    # Connect's Decimal: the unscaled value's shortest two's complement, big-endian, in base64.
    unscaled = cents.to_bytes(cents.bit_length() // 8 + 1, "big", signed=True)
    return row | {
        "amount": base64.b64encode(unscaled).decode(),
        "payload": orjson.dumps(row["payload"]).decode(),
    }


def _value(op: str, before: object, after: object, lsn: int) -> bytes:
    source = {
        "version": "3.6.1.Final",
        "connector": "postgresql",
        "name": "bench",
        "ts_ms": 1_764_547_200_000 + lsn,
        "db": "bench",
        "schema": "public",
        "table": "events",
        "txId": lsn // 8,
        "lsn": lsn,
    }
    payload = {
        "before": before,
        "after": after,
        "source": source,
        "op": op,
        "ts_ms": source["ts_ms"],
    }
    return _VALUE_PREFIX + orjson.dumps(payload) + b"}"


def _key(key: int) -> bytes:
    return _KEY_PREFIX + orjson.dumps({"id": key}) + b"}"
