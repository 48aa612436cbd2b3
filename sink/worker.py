"""The run loop: poll, decode, map, batch, and commit each batch with its offsets.

A batch and the positions it reaches are committed in one PostgreSQL transaction; a batch
that fails is abandoned and its partitions re-read from their stored positions.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from types import FrameType
from typing import Any

import sqlalchemy as sa
from confluent_kafka import KafkaException

from .batcher import Batch, Batcher
from .carried import CarriedSchemas
from .config import ErrorPolicy, OutOfRange, Settings
from .consumer import (
    BrokerWatch,
    KafkaSource,
    consumer_config,
    group_offsets,
)
from .deadletter import DeadLetterProducer, dead_letter_rows
from .errors import (
    FencedError,
    KafkaUnavailableError,
    OffsetsGoneError,
    OutdatedDefinitionError,
    PositionsUnknownError,
    RepeatedFailureError,
    RevokedError,
    SchemaChangedError,
    SchemaEvolutionError,
    SinkError,
    StoredStateError,
    TransientError,
)
from .health import Health, HealthServer, database_ping
from .logs import DEAD_LETTERS
from .metrics import SinkMetrics
from .offsets import Positions, adopt_definition
from .path import Intake
from .pipeline import Pipeline
from .readahead import ReadAhead
from .records import Message, TopicPartition
from .retry import DATABASE_ERRORS, Failure, Repeats, backoff_seconds, classify, failure_kind
from .tables import Row
from .writer import PendingBatch, Writer, lost_state

logger = logging.getLogger(__name__)

# How long one consume call may block: bounds how late a signal or a due batch is noticed.
POLL_SECONDS = 0.5
# Messages taken from librdkafka per call: large enough to amortise the call, small enough to
# keep a batch's age check frequent.
CONSUME_CHUNK = 2000
# Messages per consume call while reading ahead: small, so that the thread hands the
# interpreter back soon after PostgreSQL answers the commit it waits for.
AHEAD_CHUNK = 200
# How long one consume call may block while reading ahead: bounds the wait for the thread
# to stop once the batch in flight has committed.
AHEAD_POLL_SECONDS = 0.02
# Rows read ahead at most: they wait in memory, and a message may map to many rows.
AHEAD_MAX_ROWS = 20_000
# How long a thread that wants the interpreter waits before the running one must hand it over
# (CPython's default is 5 ms). While a batch commits, the thread waiting on PostgreSQL needs it
# back after every reply; the thread reading ahead rarely gives it up by itself.
SWITCH_SECONDS = 0.0005
# Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 50_000
# Waits between attempts when the table was migrated by a newer worker of a rollout.
OUTDATED_RETRY_SECONDS = 15.0
# The settings with the columns derived anew of tables whose columns come from their topics'
# schemas, given the columns the group's state holds by table and the Connect schemas seen by
# topic (sink.tables.with_schema_columns).
Derive = Callable[[Mapping[str, Any], Mapping[str, Sequence[tuple[Any, Any]]]], Settings]
# Waits between attempts to ask an unreachable broker for the group's offsets at start.
KAFKA_RETRY_SECONDS = 5.0


class Worker:
    """One sink worker: a consumer-group member writing its partitions to PostgreSQL."""

    def __init__(
        self,
        settings: Settings,
        engine: sa.engine.Engine,
        pipeline: Pipeline,
        health: Health,
        metrics: SinkMetrics,
        *,
        derive_again: Derive | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.pipeline = pipeline
        self.health = health
        self.metrics = metrics
        # The settings with their tables' columns derived anew, where some come from their
        # topics' schemas (sink.tables.with_schema_columns).
        self._derive_again = derive_again
        # The Connect schemas met of tables whose columns come from their messages' schemas.
        self._carried = CarriedSchemas()
        # Whether the database takes no binary COPY tuples (encodings other than UTF8): every
        # pipeline then writes text lines or values (Pipeline.write_text).
        self._text_only = False
        self.writer = self._writer()
        self.dead_letter_producer: DeadLetterProducer | None = None
        self.batcher = Batcher(
            max_messages=settings.batch.max_messages,
            max_bytes=settings.batch.max_bytes,
            max_age_seconds=settings.batch.max_age_seconds,
        )
        # The stored next offset of each assigned partition as this worker last saw or wrote it
        # (-1: none stored); a batch commits only if the table still says the same.
        self.positions: dict[TopicPartition, int] = {}
        self.stopping = threading.Event()
        self.source: KafkaSource | None = None
        self.committed_batches = 0
        self._random = random.Random()
        # Whether PostgreSQL answers, asked when a batch fails without a SQLSTATE.
        self._ping = database_ping(engine)
        # Set while a batch PostgreSQL rejected is being split to find the message at fault.
        self._isolating = False
        # The batch being written, once its last message is read.
        self._in_flight: Batch | None = None
        # Kafka's id of each topic assigned, as seen at assignment.
        self.topic_ids: dict[str, str] = {}
        # Dead letters already produced for batches not committed yet.
        self._sent: set[tuple[str, int, int]] = set()
        # When every broker went down, for the log line once one is up again.
        self._kafka_down_since = 0.0
        # When the batch in flight took its last message: its commit step starts there.
        self._taken_at = 0.0
        # Consumed messages into the batch being read, along their topics' paths.
        self.intake = Intake(
            pipeline.path,
            self.batcher,
            self.positions,
            settings.errors.policy,
            out_of_range=self._out_of_range,
            seek=self._seek,
        )
        # While a batch commits, the next one is read on a thread of its own (see _read_next).
        self._ahead = ReadAhead()
        # Held while a batch moves from the batcher to `_in_flight`: a metrics scrape (see
        # _oldest_uncommitted) finds its messages in the one or the other.
        self._handover = threading.Lock()
        metrics.watch_uncommitted(self._oldest_uncommitted)

    def _writer(self, settings: Settings | None = None, pipeline: Pipeline | None = None) -> Writer:
        settings, pipeline = settings or self.settings, pipeline or self.pipeline
        if self._derive_again is None:
            return Writer(self.engine, pipeline.table_set, settings.kafka.group_id)
        # Never older columns than another worker's.
        from .schema_columns import held_columns, no_newer  # noqa: PLC0415 - loads Protobuf

        numbers = pipeline.schemas.numbers if pipeline.schemas is not None else None
        held = {
            table.qualified_name: held_columns(table)
            for table in settings.tables
            if table.columns_from_messages
        }
        return Writer(
            self.engine,
            pipeline.table_set,
            settings.kafka.group_id,
            confirm=partial(no_newer, settings.tables, numbers),
            held=held,
        )

    # --- tables whose columns come from their topics' schemas -------------------------------

    def _derived_again(self, why: SinkError | str) -> bool:
        """Derives the columns again from the schema registry (after `why`); whether that
        changed the tables' definition, which the next batch then applies. The batch read so far
        is forgotten: it is read again along the new paths."""
        if self._derive_again is None:
            return False
        settings = self._derive_again(self._held_columns(), self._carried.seen)
        pipeline = Pipeline.from_settings(settings)
        if self._text_only:
            pipeline.write_text()
        writer = self._writer(settings, pipeline)
        if writer.definition == self.writer.definition:
            return False
        logger.info(
            "%s: table definition %s derived from the topics' schemas replaces %s",
            why,
            writer.definition,
            self.writer.definition,
        )
        self._forget_unread()
        self.settings, self.pipeline, self.writer = settings, pipeline, writer
        self.intake.paths = pipeline.path
        return True

    def _held_columns(self) -> Mapping[str, Any]:
        """The columns the group's stored state holds of tables whose columns come from the
        Connect schemas of their messages ({} without such tables, or a state table)."""
        # A table without columns here is one whose columns no message has given yet.
        if not any(t.columns_from_messages or not t.columns for t in self.settings.tables):
            return {}
        state = self.writer.stored_state()
        return {} if state is None else state.columns

    def _derived_again_if_answered(self, why: OutdatedDefinitionError) -> bool:
        """`_derived_again`, False while the registry cannot answer (then the worker waits as
        for any newer definition, and derives again when it next checks)."""
        try:
            return self._derived_again(why)
        except TransientError as exc:
            logger.warning("%s; the columns cannot be derived again now: %s", why, exc)
            return False

    def _schema_changed(self, change: SchemaChangedError) -> None:
        """A schema the tables lack came: derives their columns again, for the batch read next
        to migrate them; stops the worker if the registry's versions do not hold it either."""
        if change.carried is not None:
            self._carried.add(change.topic, change.carried)
        try:
            changed = self._derived_again(change)
        except TransientError as exc:  # the registry did not answer: read again, then retry
            logger.warning("%s; %s; retrying in %.0f s", change, exc, KAFKA_RETRY_SECONDS)
            self.health.set_retrying(str(exc))
            self.stopping.wait(KAFKA_RETRY_SECONDS)
            return
        if not changed:
            raise SchemaEvolutionError(
                f"{change}, which no version registered under the subject its table takes "
                f"its columns from has; register the schema under <topic>-value, or list the "
                f"table's columns"
            ) from change

    # --- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.stopping.is_set():
            return
        grace = self.settings.shutdown.grace_seconds
        logger.info(
            "received %s: finishing the current batch within %.0f s",
            signal.Signals(signum).name,
            grace,
        )
        self.stopping.set()
        timer = threading.Timer(grace, self._abandon_batch)
        timer.daemon = True
        timer.start()

    def _abandon_batch(self) -> None:
        """Past the grace budget: cancel the batch in flight; it rolls back, nothing is lost."""
        logger.warning("shutdown grace budget spent: abandoning the batch in flight")
        self.writer.cancel()

    def run(self) -> None:
        with ExitStack() as stack:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous = signal.signal(sig, self.request_stop)
                stack.callback(signal.signal, sig, previous)
            http = self.settings.http
            stack.enter_context(HealthServer(http.host, http.port, self.health, self.metrics))
            errors = self.settings.errors
            if errors.policy is ErrorPolicy.DEAD_LETTER_TOPIC:
                assert errors.dead_letter_topic is not None  # checked by load_settings
                self.dead_letter_producer = DeadLetterProducer(
                    self.settings.kafka.client_config(), errors.dead_letter_topic
                )
                stack.callback(self.dead_letter_producer.close)
            stack.callback(self._ahead.close)
            # Everything allocated so far lives as long as the process: keep it out of the
            # collector's way, and collect young objects less often, since each message
            # allocates several short-lived ones (about a quarter of the time otherwise).
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            sys.setswitchinterval(SWITCH_SECONDS)
            while self._wait_for_definition():
                try:
                    with self._membership():
                        self._ingest_until_stopped()
                except OutdatedDefinitionError as exc:
                    if not self._derived_again_if_answered(exc):
                        logger.warning("%s; left the consumer group until it is rolled out", exc)
        native = self.pipeline.native_rows()
        if native:
            logger.info("%d rows came natively from Avro values", native)
        logger.info("stopped")

    @contextmanager
    def _membership(self) -> Iterator[KafkaSource]:
        """Joins the consumer group for the block; leaves it cleanly on the way out."""
        kafka = self.settings.kafka
        self.source = KafkaSource(
            consumer_config(kafka.bootstrap_servers, kafka.group_id, kafka.client_config()),
            kafka.start_from.value,
            self._assigned,
            self._revoked,
            on_waiting=self._waiting,
            brokers=BrokerWatch(self._kafka_reachable),
        )
        try:
            self.source.subscribe(self.pipeline.subscription())
            yield self.source
        finally:
            logger.info("leaving the consumer group")
            self.health.set_joined(False)
            self.source.close()
            self.source = None
            self.positions.clear()
            self._forget_unread()  # whatever was not committed is read again by the next owner

    def _wait_for_definition(self) -> bool:
        """Opens the stored state (creating the state table on first start), then waits,
        outside the group, while a newer definition of the tables is live.

        False once asked to stop."""
        unreachable = False
        while not self.stopping.is_set():
            if not self._columns_from_first_messages():
                self.health.beat()
                self.stopping.wait(KAFKA_RETRY_SECONDS)
                continue
            try:
                state = self.writer.open_state(self._group_offsets)
                adopt_definition(state, self.writer.definition, self.writer.where)
                if not self._text_only and not self.writer.takes_copy_tuples():
                    logger.info("the database's encodings are not UTF8: rows go as COPY text")
                    self._text_only = True
                    self.pipeline.write_text()
                if unreachable:
                    self.health.set_kafka_down(None)
                return True
            except OutdatedDefinitionError as exc:
                if self._derived_again_if_answered(exc):
                    continue
                logger.warning("%s; checking again in %.0f s", exc, OUTDATED_RETRY_SECONDS)
                self.health.beat()
                self.stopping.wait(OUTDATED_RETRY_SECONDS)
            except KafkaUnavailableError as exc:
                # Once per outage at WARNING; the attempts after it at DEBUG.
                logger.log(
                    logging.DEBUG if unreachable else logging.WARNING,
                    "%s; trying again every %.0f s",
                    exc,
                    KAFKA_RETRY_SECONDS,
                )
                unreachable = True
                self.health.set_kafka_down(str(exc))
                self.health.beat()
                self.stopping.wait(KAFKA_RETRY_SECONDS)
        return False

    def _columns_from_first_messages(self) -> bool:
        """Whether every table has its columns; those of a table whose columns come from its
        messages' schemas, and that the group's state does not hold yet, come from the first
        message on its topic that carries one."""
        if all(table.columns for table in self.settings.tables):
            return True
        state = self.writer.stored_state()
        wanting = self._carried.wanting(self.settings.tables, state)
        if wanting:
            try:
                self._carried.read_first(self.settings.kafka, wanting, state)
            except KafkaException as exc:
                logger.warning("the topics cannot be read for their schemas now: %s", exc)
                return False
            wanting = self._carried.wanting(self.settings.tables, state)
        if wanting:
            logger.info(
                "waiting for a message with a Connect schema on %s to take the columns of its "
                "table from; checking again in %.0f s",
                ", ".join(wanting),
                KAFKA_RETRY_SECONDS,
            )
            return False
        self._derived_again("the tables' columns come from their messages' schemas")
        return True

    def _ingest_until_stopped(self) -> None:
        """Runs batches until asked to stop; an abandoned batch is read again from Kafka."""
        failures = 0
        repeats = Repeats()  # of the failure without a SQLSTATE of the batch being retried
        reposition = False
        while not self.stopping.is_set():
            committed = self.committed_batches
            try:
                if reposition:
                    self._reposition()
                try:
                    self.writer.run(self._batches)
                finally:
                    self._ahead.stop()
                return
            except StoredStateError as exc:
                raise self._lost(exc) from None
            except SchemaChangedError as exc:
                self._schema_changed(exc)
            except (FencedError, RevokedError) as exc:
                fenced = isinstance(exc, FencedError)
                logger.log(logging.WARNING if fenced else logging.INFO, "%s", exc)
                self.metrics.commit_failed("fenced" if fenced else "revoked")
                repeats.reset()
            except Exception as exc:
                failure = classify(exc)
                if failure is Failure.PERMANENT:
                    raise
                if self.stopping.is_set():
                    logger.warning("batch abandoned while stopping: %s", exc)
                    return
                if self.committed_batches > committed:
                    failures = 0
                    repeats.reset()
                if failure is Failure.REJECTED:
                    self.metrics.commit_failed("rejected")
                    repeats.reset()
                    self._isolate(exc)
                    reposition = True
                    continue
                if repeats.failed(exc, self._database_answers):
                    raise self._repeated(repeats) from exc
                failures += 1
                self._wait_to_retry(exc, failures, repeats)
            reposition = True

    def _wait_to_retry(self, exc: Exception, failures: int, repeats: Repeats) -> None:
        """Says why the batch was abandoned, then waits before it is read again."""
        self.metrics.retried(failure_kind(exc))
        delay = backoff_seconds(failures, self._random)
        reason = str(exc).strip().splitlines()[0]
        self.health.set_retrying(reason)
        logger.warning(
            "%s; batch abandoned, retrying in %.1f s (attempt %d%s)",
            reason if isinstance(exc, TransientError) else f"PostgreSQL failed ({reason})",
            delay,
            failures,
            f"; {repeats.count} of {repeats.limit} failures in a row without a SQLSTATE "
            f"while PostgreSQL answers before the worker stops"
            if repeats.count
            else "",
        )
        # What was read stays uncommitted meanwhile: its lag counts from the log end.
        self._refresh_lag()
        self.stopping.wait(delay)

    def _group_offsets(self) -> Positions:
        kafka = self.settings.kafka
        return group_offsets(kafka.client_config(), kafka.group_id)

    def _lost(self, error: StoredStateError) -> StoredStateError:
        """The error with the `reset` command that resumes this worker's partitions."""
        if error.stored is not None:
            return error
        known = {tp: position for tp, position in self.positions.items() if position >= 0}
        return lost_state(
            str(error),
            known,
            "the offsets this worker last stored or read for its partitions (the group's other "
            "workers print theirs)",
        )

    def _database_answers(self) -> bool:
        try:
            self._ping()
        except Exception:  # whatever fails, PostgreSQL did not answer: an outage, retried
            return False
        return True

    def _repeated(self, repeats: Repeats) -> RepeatedFailureError:
        """The stop after `repeats`: the failure, the batch it failed (none of it committed),
        and where to look."""
        batch, self._in_flight = self._in_flight or self.batcher.take(), None
        first = batch.first_offsets or {tp: at for tp, at in self.positions.items() if at >= 0}
        where = ", ".join(
            f"{tp.topic}[{tp.partition}]@{offset}"
            + (f" to @{batch.next_offsets[tp] - 1}" if tp in batch.next_offsets else "")
            for tp, offset in sorted(first.items())
        )
        written = {*batch.row_counts, *batch.deletes} or set(self.writer.data_tables)
        tables = ", ".join(sorted(f"{t.schema}.{t.name}" for t in written))
        return RepeatedFailureError(
            f"the batch of {where or 'no message yet'} for {tables} failed {repeats.count} "
            f"times in a row the same way, without a SQLSTATE, while PostgreSQL answers a new "
            f"connection ({repeats.failure}). Retrying will not help: the driver refuses the "
            f"batch before PostgreSQL sees it, or the connection is cut each time the batch is "
            f"sent. Nothing of it was committed; it is read again when the worker starts. To "
            f"fix: see the PostgreSQL server log and anything between the sink and PostgreSQL "
            f"(a pooler, a proxy, a firewall) at these times; if the batch is too large for "
            f"them, lower batch.max_messages or batch.max_bytes"
        )

    def _isolate(self, error: Exception) -> None:
        """Halves the batch size until the one message PostgreSQL rejects is alone, then sets
        it aside as a dead letter so the rest of the stream lands."""
        # The batch failed after its last message (then it is in flight) or while its rows
        # were streaming (then the batcher holds what was read of it).
        batch, self._in_flight = self._in_flight or self.batcher.take(), None
        if not batch.message_count:
            raise error
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        if batch.message_count == 1:
            ((topic, partition), offset), *_ = batch.first_offsets.items()
            self.intake.reject((topic, partition, offset), reason)
            logger.warning("%s[%d]@%d rejected: %s", topic, partition, offset, reason)
        else:
            self._isolating = True
            self.batcher.max_messages = max(1, batch.message_count // 2)
            logger.warning(
                "a batch of %d messages was rejected (%s); retrying in batches of %d to find "
                "the message at fault",
                batch.message_count,
                reason,
                self.batcher.max_messages,
            )

    # --- Kafka callbacks (run inside consume, on this thread) -------------------------------

    def _assigned(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        for topic in {tp.topic for tp in partitions}:
            self.pipeline.router.require(topic)  # a topic no table takes stops the worker
        try:
            state = self.writer.read_state()
        except DATABASE_ERRORS as exc:
            if classify(exc) is not Failure.TRANSIENT:
                raise
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise PositionsUnknownError(f"PostgreSQL failed ({reason})") from exc
        found = {tp: state.offsets.get(tp) for tp in partitions}
        seek_to = self._existing(found, state.topic_ids)
        self.positions.update({tp: -1 if pos is None else pos for tp, pos in found.items()})
        self.metrics.partitions_assigned(partitions, found)
        self.health.set_joined(True)
        self.health.set_partitions(len(self.positions))
        return seek_to

    def _existing(
        self, found: dict[TopicPartition, int | None], stored_ids: Mapping[str, str]
    ) -> dict[TopicPartition, int | None]:
        """Where to read each newly assigned partition: its stored offset, checked against
        what the partition holds now (see `_gone`)."""
        assert self.source is not None
        self.topic_ids.update(self.source.topic_ids({tp.topic for tp in found}))
        stored = {tp: offset for tp, offset in found.items() if offset is not None}
        seek_to = dict(found)
        for tp, (low, high) in self.source.log_ranges(stored).items():
            recreated = (
                stored_ids.get(tp.topic, self.topic_ids[tp.topic]) != self.topic_ids[tp.topic]
            )
            if recreated or not low <= stored[tp] <= high:
                seek_to[tp] = self._gone(tp, stored[tp], low, high, recreated=recreated)
        return seek_to

    def _gone(
        self, tp: TopicPartition, stored: int, low: int, high: int, *, recreated: bool
    ) -> int:
        """A stored offset that no longer exists: an error (kafka.out_of_range = "fail"), or
        the nearest offset that exists, logged as an error and counted ("jump")."""
        if recreated:
            what = "the topic was deleted and created again since (its topic id changed)"
        else:
            what = f"the partition holds offsets {low} to {high} now"
        where = f"{tp.topic}[{tp.partition}]"
        if self.settings.kafka.out_of_range is OutOfRange.FAIL:
            raise OffsetsGoneError(
                f"{where}: the stored next offset {stored} no longer exists: {what}. Nothing of "
                f'it was read. Set kafka.out_of_range = "jump" to go on from the nearest '
                f"offset that exists, or choose one: pg-kafka-sink reset --to "
                f"{tp.topic}:{tp.partition}=<offset>"
            )
        target = low if recreated or stored < low else high
        reason = "recreated" if recreated else ("deleted" if stored < low else "truncated")
        logger.error(
            "%s: the stored next offset %d no longer exists: %s; jumping to %d "
            '(kafka.out_of_range = "jump")',
            where,
            stored,
            what,
            target,
        )
        self.metrics.offsets_jumped(tp, reason)
        return target

    def _out_of_range(self, tp: TopicPartition) -> None:
        """The client found the offset it fetches from gone (retention passed it while it
        was read, say); librdkafka waits for the worker (auto.offset.reset = error)."""
        assert self.source is not None
        expected = self.intake.next_offset(tp)
        if expected < 0:
            self.source.restart(tp)  # nothing stored: start_from, resolved anew
            return
        ids = self.source.topic_ids([tp.topic])
        ((low, high),) = self.source.log_ranges([tp]).values()
        recreated = ids[tp.topic] != self.topic_ids.get(tp.topic, ids[tp.topic])
        target = self._gone(tp, expected, low, high, recreated=recreated)
        self.topic_ids.update(ids)
        if target < expected and self.batcher.next_offset(tp) is not None:
            self.intake.spoiled = True  # the batch holds messages of the old topic: read again
        self.source.seek({tp: target})

    def _seek(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.source is not None
        self.source.seek(offsets)

    def _kafka_reachable(self, down: str | None) -> None:
        """Every broker went down (`down` says why), or one is up again (None)."""
        if down is not None:
            self._kafka_down_since = time.monotonic()
            logger.warning(
                "Kafka unreachable: every broker is down (%s); the worker keeps trying, and "
                "says so here once it reaches one again",
                down,
            )
        else:
            logger.info(
                "Kafka reachable again after %.0f s", time.monotonic() - self._kafka_down_since
            )
        self.health.set_kafka_down(down)
        self.metrics.kafka_reachable(down is None)

    def _waiting(self, count: int, reason: str | None) -> None:
        self.health.set_joined(True)  # a member, with partitions it cannot read yet
        self.health.set_waiting(count, reason)
        self.metrics.partitions_waiting(count)

    def _revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        # Called while reading ahead, a batch may be committing: it commits (or fails) first.
        self._ahead.wait_settled()
        if self.batcher.holds_any(partitions):
            # Its rows went out already (or were read ahead): the batch is abandoned and read
            # again, the revoked partitions by their new owner. It cannot commit before the
            # check in _stream.
            self.intake.spoiled = True
        for tp in partitions:
            self.positions.pop(tp, None)
        self.metrics.partitions_revoked(partitions, lost=lost)
        self.health.set_partitions(len(self.positions))

    def _forget_unread(self) -> None:
        """Drops what was read but not committed: the batch so far and the rows read ahead."""
        self.intake.forget()
        self._ahead.take()

    def _reposition(self) -> None:
        """After an abandoned batch: forget it and re-read every assigned partition."""
        assert self.source is not None
        self._forget_unread()
        stored = self.writer.read_state().offsets
        found = {tp: stored.get(tp) for tp in self.positions}
        self.positions.update({tp: -1 if pos is None else pos for tp, pos in found.items()})
        self.metrics.offsets_stored({tp: pos for tp, pos in found.items() if pos is not None})
        self.source.seek(found)

    # --- batches ---------------------------------------------------------------------------

    def _batches(self) -> Iterator[PendingBatch]:
        """Yields a batch once its first message is read; its rows stream to PostgreSQL as
        they are read, so PostgreSQL writes while the next messages are decoded. Resumes only
        once ingest has committed the batch."""
        while not self.stopping.is_set():
            first = self._first_rows()
            if first is None:
                return
            started = time.monotonic()
            self._in_flight = None
            pending = self._open(first)
            yield pending
            visible_at = time.time()  # committed: its rows are visible from now on
            error = self._ahead.stop()
            assert self._in_flight is not None  # set by _stream once the batch is complete
            now = time.monotonic()
            self._committed(self._in_flight, now - started, now - self._taken_at, visible_at)
            if error is not None:
                raise error  # met reading the next batch ahead
            if self.intake.failing is not None and not self.batcher.message_count:
                raise self.intake.failing  # what came before the bad message is committed

    def _open(self, first: list[Row]) -> PendingBatch:
        """A batch whose rows stream from `first` on; `_stream` completes it as they end."""
        pending: PendingBatch = PendingBatch(lambda: self._stream(first, pending), {}, {}, {})
        return pending

    def _first_rows(self) -> list[Row] | None:
        """The rows read ahead, or else polls until a message arrives (rows, a tombstone or a
        dead letter); None once asked to stop. No transaction is open meanwhile."""
        assert self.source is not None
        rows = self._ahead.take()
        if self.intake.spoiled:
            # Partitions read ahead were revoked; the others are read again from the table.
            logger.info("partitions read ahead were revoked; reading the others again")
            self._reposition()
            rows = []
        while not self.batcher.message_count:
            self.health.beat()
            self.source.retry_waiting()
            if self.stopping.is_set():
                return None
            # One message: the batch opens with it, and the rest stream while PostgreSQL writes.
            consumed = self.source.consume(1, POLL_SECONDS)
            if not consumed:
                self.health.set_retrying(None)  # nothing (left) to retry
                self._refresh_lag()  # idle: so that time caught up is not counted as lag
            rows.extend(self.intake.add(consumed))
        return rows

    def _stream(self, first: list[Row], pending: PendingBatch) -> Iterator[Row]:
        """The batch's rows: consumed, taken along their topics' paths into the batch
        (`Intake.add`) and streamed on, until the batch is due (or a stop is asked for); then
        completes `pending`, and reads the next batch ahead while this one commits; last, the
        batch's dead letters."""
        assert self.source is not None
        yield from first
        # Sent: let the rows read ahead go now. The batch holds this list in a cycle (it and
        # its rows function), which the collector frees late (see GC_YOUNG_THRESHOLD).
        first.clear()
        batcher = self.batcher
        while True:
            self.health.beat()
            now = time.monotonic()
            if self.stopping.is_set() or self.intake.failing is not None:
                break
            if batcher.is_due(now):
                break
            wait = min(POLL_SECONDS, batcher.time_until_due(now))
            room = batcher.room(CONSUME_CHUNK)
            self.source.retry_waiting()
            yield from self.intake.add(self.source.consume(room, wait))
            if self.intake.spoiled:
                self.intake.spoiled = False
                raise RevokedError("partitions of the batch were revoked; it is read again")
        batch = self._complete(pending)
        self._ahead.start(self._read_next)
        yield from self._dead_letter_rows(batch)

    def _complete(self, pending: PendingBatch) -> Batch:
        """Takes the batch read, now in flight, and completes `pending` with its deletes and
        the offsets it reaches."""
        with self._handover:
            batch = self._in_flight = self.batcher.take()
        self._taken_at = time.monotonic()
        # Past a bad message that stops the worker, the consumer read on: no markers then.
        if self.intake.failing is None:
            batch = self._in_flight = self._past_markers(batch)
        pending.deletes = batch.deletes
        pending.expected = {tp: self.positions[tp] for tp in batch.next_offsets}
        pending.next_offsets = batch.next_offsets
        pending.topic_ids = {
            tp.topic: self.topic_ids[tp.topic]
            for tp in batch.next_offsets
            if tp.topic in self.topic_ids
        }
        return batch

    def _past_markers(self, batch: Batch) -> Batch:
        """The batch ending, in each partition, where the consumer reads next: past the
        transaction markers after its last message, so that a topic written by transactional
        producers drains to a lag of 0 (the last message + 1 is the marker's offset)."""
        assert self.source is not None
        positions = self.source.positions(batch.next_offsets)
        past = {tp: at for tp, at in positions.items() if at > batch.next_offsets[tp]}
        if not past:
            return batch
        return dataclasses.replace(batch, next_offsets={**batch.next_offsets, **past})

    def _read_next(self, held: int) -> list[Row] | None:
        """Reading ahead (on its thread, while the batch in flight commits): the rows of one
        consume call; None once the next batch is due or `held` reaches AHEAD_MAX_ROWS, or
        when a stop, a revocation or a bad message that stops the worker came meanwhile."""
        assert self.source is not None
        if self.stopping.is_set() or self.intake.spoiled or self.intake.failing is not None:
            return None
        self.health.beat()
        if self.batcher.is_due() or held >= AHEAD_MAX_ROWS:
            return None
        return self.intake.add(
            self.source.consume(self.batcher.room(AHEAD_CHUNK), AHEAD_POLL_SECONDS)
        )

    def _refresh_lag(self) -> None:
        """Shows the lag against the log end offsets last seen in fetch responses."""
        assert self.source is not None
        self.metrics.log_end_offsets(self.source.log_end_offsets(list(self.positions)))

    def _oldest_uncommitted(self) -> dict[TopicPartition, int]:
        """The Kafka timestamp of the oldest message read but not committed yet, per
        partition: the first of the batch in flight, else of the batch being read. Called at
        each metrics scrape, from its thread."""
        with self._handover:
            oldest = self.batcher.first_timestamps()
            in_flight = self._in_flight
        if in_flight is not None:
            oldest.update(in_flight.first_timestamps)
        return oldest

    def _dead_letter_rows(self, batch: Batch) -> Iterator[Row]:
        """Makes the batch's dead letters durable first (topic) or writes them with it (table)."""
        if not batch.dead_letters:
            return
        if self.dead_letter_producer is not None:
            # Acknowledged by the broker before the offsets that skip them can commit; sent
            # once even when the batch is retried (a crash before the commit can repeat them).
            unsent = [d for d in batch.dead_letters if _coordinates(d.message) not in self._sent]
            self.dead_letter_producer.send(unsent)
            self._sent.update(_coordinates(d.message) for d in unsent)
            return
        table = self.pipeline.table_set.dead_letter_table
        assert table is not None  # the dead-letter-table policy always has one
        for row in dead_letter_rows(table, batch.dead_letters):
            yield table, row

    def _committed(
        self, batch: Batch, seconds: float, commit_seconds: float, visible_at: float
    ) -> None:
        """`batch` committed at `visible_at` (Unix time), `seconds` after its first message
        and `commit_seconds` after its last."""
        assert self.source is not None
        self.committed_batches += 1
        self.health.set_retrying(None)
        self._in_flight = None
        self._sent.difference_update(_coordinates(d.message) for d in batch.dead_letters)
        if self._isolating and batch.dead_letters and not self.intake.rejecting:
            self._isolating = False
            self.batcher.max_messages = self.settings.batch.max_messages
        for tp, next_offset in batch.next_offsets.items():
            if tp in self.positions:
                self.positions[tp] = next_offset
        self.source.commit_advisory(batch.next_offsets)
        self.metrics.batch_committed(batch, seconds, commit_seconds=commit_seconds, now=visible_at)
        self._refresh_lag()
        offsets = {f"{t}[{p}]": o for (t, p), o in sorted(batch.next_offsets.items())}
        logger.info(
            "committed %d rows from %d messages (%d dead letters) in %.3f s",
            batch.row_count,
            batch.message_count,
            len(batch.dead_letters),
            seconds,
            extra={
                "rows": batch.row_count,
                "rows_by_table": {f"{t.schema}.{t.name}": n for t, n in batch.row_counts.items()},
                "deleted_keys": batch.delete_count,
                "messages": batch.message_count,
                "dead_letters": len(batch.dead_letters),
                "duration_seconds": round(seconds, 4),
                "commit_seconds": round(commit_seconds, 4),
                "topics": sorted({t for t, _ in batch.next_offsets}),
                "next_offsets": offsets,
            },
        )
        for dead in batch.dead_letters:
            message, error = dead.message, dead.error
            DEAD_LETTERS.warning(
                "set aside %s: %s",
                error.coordinates,
                error.reason,
                extra={
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                    "reason": error.code,
                    "table": getattr(error, "table", None),
                    "column": getattr(error, "column", None),
                },
            )


def _coordinates(message: Message) -> tuple[str, int, int]:
    return message.topic, message.partition, message.offset
