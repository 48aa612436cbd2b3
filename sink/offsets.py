"""Kafka positions as the ingest high watermark: parse, fence-check and merge, all pure.

The stored value, JSON in the comment of the sink's state table through pg_bulk_ingest, is
`{"group": group_id, "offsets": {topic: {partition: next_offset}}, "definitions": [...]}`.
Offsets are always the next offset to read; `definitions` lists the table definitions that
have been applied, newest last, so a worker with an older one never migrates the table back.
Releases before the state table kept the same value, without "group", on the first data table.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from .errors import FencedError, OutdatedDefinitionError, StoredStateError
from .records import TopicPartition

# Enough history to recognise any definition from recent rollouts, small enough for a comment.
MAX_DEFINITIONS = 20

Positions = Mapping[TopicPartition, int]


@dataclass(frozen=True)
class StoredState:
    """What the state table's comment holds for the sink."""

    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    definitions: tuple[str, ...] = ()
    group: str | None = None
    # Kafka's id of each topic whose offsets are stored: a topic deleted and created again
    # under the same name has a new one, and its old offsets mean nothing there.
    topic_ids: dict[str, str] = field(default_factory=dict)
    # Per table ("schema.name") whose columns come from the Connect schemas its values carry,
    # the columns the group has applied (sink.schema_columns.held_columns).
    columns: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        topics: dict[str, dict[str, int]] = {}
        for (topic, partition), next_offset in sorted(self.offsets.items()):
            topics.setdefault(topic, {})[str(partition)] = next_offset
        document: dict[str, Any] = {"offsets": topics, "definitions": list(self.definitions)}
        if self.group is not None:
            document = {"group": self.group, **document}
        if self.topic_ids:
            document["topic_ids"] = dict(sorted(self.topic_ids.items()))
        if self.columns:
            document["columns"] = dict(sorted(self.columns.items()))
        return document


# What a data table's comment says once its offsets moved to a state table: a value that
# releases before the state table refuse to read ("offsets" is not an object), so that a
# worker of such a release, still running during a rolling upgrade, stops at its next commit.
MOVED = "moved"


def moved_marker(state_table: str, group: str) -> dict[str, Any]:
    return {
        "offsets": f"moved to the state table {state_table} for consumer group {group!r} by a "
        "newer pg-kafka-sink: upgrade this worker",
        MOVED: state_table,
    }


def is_legacy_state(value: Any) -> bool:
    """Whether a data table's stored watermark is the sink's state as kept before the state
    table (and not yet moved)."""
    return isinstance(value, dict) and isinstance(value.get("offsets"), dict) and MOVED not in value


def parse_state(value: Any, where: str, group: str | None = None) -> StoredState:
    """The sink's state from a stored high watermark; `group`, if given, must be its owner."""
    if not isinstance(value, dict) or not isinstance(value.get("offsets", {}), dict):
        raise StoredStateError(
            f"{where}: the stored high watermark {_short(value)} was not written by this sink"
        )
    owner = value.get("group")
    if group is not None and owner is not None and owner != group:
        raise StoredStateError(
            f"{where} holds the offsets of consumer group {owner!r}, not {group!r}: each "
            "consumer group needs a state table of its own (set postgres.state_table, or leave "
            "it unset to derive one from kafka.group_id)"
        )
    offsets: dict[TopicPartition, int] = {}
    for topic, partitions in value.get("offsets", {}).items():
        if not isinstance(partitions, dict):
            raise StoredStateError(f"{where}: offsets of topic {topic!r} are not an object")
        for partition, next_offset in partitions.items():
            if not (str(partition).isdigit() and isinstance(next_offset, int)):
                raise StoredStateError(
                    f"{where}: stored offset {topic}[{partition}] = {next_offset!r} is not a "
                    "partition number mapped to an integer offset"
                )
            offsets[TopicPartition(topic, int(partition))] = next_offset
    definitions = value.get("definitions", [])
    if not isinstance(definitions, list) or not all(isinstance(d, str) for d in definitions):
        raise StoredStateError(f"{where}: stored definitions {definitions!r} are not a list")
    topic_ids = value.get("topic_ids", {})
    if not isinstance(topic_ids, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in topic_ids.items()
    ):
        raise StoredStateError(f"{where}: stored topic ids {_short(topic_ids)} are not an object")
    columns = value.get("columns", {})
    if not isinstance(columns, dict) or not all(map(_held_columns, columns.values())):
        raise StoredStateError(
            f"{where}: stored columns {_short(columns)} are not an object of tables' columns"
        )
    group = owner if isinstance(owner, str) else group
    return StoredState(offsets, tuple(definitions), group, dict(topic_ids), dict(columns))


def _held_columns(held: Any) -> bool:
    """Whether `held` is what sink.schema_columns.held_columns gives."""
    return (
        isinstance(held, dict)
        and isinstance(held.get("value"), list)
        and isinstance(held.get("key"), list)
        and all(
            isinstance(c, list) and len(c) == 3 and isinstance(c[2], bool) for c in held["value"]
        )
        and all(isinstance(c, list) and len(c) == 2 for c in held["key"])
        and all(isinstance(part, str) for c in held["value"] + held["key"] for part in c[:2])
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_owned(stored: StoredState, expected: Positions, where: str) -> None:
    """Raise FencedError unless every partition is still where this worker last left it.

    `expected` maps each partition of the batch to the stored next offset this worker read at
    assignment or wrote at its last commit; a partition it never saw stored is absent from
    `stored` as well as -1 in `expected`.
    """
    moved = [
        f"{tp.topic}[{tp.partition}] stored {stored.offsets.get(tp, -1)}, expected {position}"
        for tp, position in expected.items()
        if stored.offsets.get(tp, -1) != position
    ]
    if moved:
        raise FencedError(
            f"{where}: partitions moved on by another worker since this one read them "
            f"({'; '.join(sorted(moved))}); the batch is abandoned and the partitions re-read"
        )


def advance(
    stored: StoredState, next_offsets: Positions, topic_ids: Mapping[str, str] | None = None
) -> StoredState:
    """The stored state with this batch's partitions moved on and every other one kept (and
    the ids of the batch's topics, where known)."""
    return dataclasses.replace(
        stored,
        offsets={**stored.offsets, **next_offsets},
        topic_ids={**stored.topic_ids, **(topic_ids or {})},
    )


def fingerprint(tables: Iterable[sa.Table]) -> str:
    """A short stable digest of the DDL that defines the tables and their indexes."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    digest = hashlib.sha256()
    for table in sorted(tables, key=lambda t: t.fullname):
        digest.update(str(sa.schema.CreateTable(table).compile(dialect=dialect)).encode())
        for index in sorted(table.indexes, key=lambda i: [c.name for c in i.columns]):
            digest.update(repr(([c.name for c in index.columns], index.unique)).encode())
    return digest.hexdigest()[:16]


def adopt_definition(stored: StoredState, mine: str, where: str) -> StoredState:
    """The stored state once this worker's definition is applied, or OutdatedDefinitionError.

    A definition seen before that is not the newest belongs to a worker that a rollout is
    replacing: it must not migrate the table back.
    """
    if stored.definitions and stored.definitions[-1] == mine:
        return stored
    if mine in stored.definitions:
        raise OutdatedDefinitionError(
            f"{where}: the table was migrated to a newer definition than this worker's "
            f"({stored.definitions[-1]} after {mine}); this worker will not migrate it back. "
            "Roll out the new table definition to every worker"
        )
    history = (*stored.definitions, mine)[-MAX_DEFINITIONS:]
    return dataclasses.replace(stored, definitions=history)


def reset_command(offsets: Positions) -> str:
    """The `reset` command that stores these offsets."""
    listed = ",".join(f"{t}:{p}={o}" for (t, p), o in sorted(offsets.items()))
    return f"pg-kafka-sink reset --to {listed}"
