"""Health: plain values the run loop updates, served with the metrics over HTTP.

`/livez` says the loop turns (it never touches PostgreSQL or Kafka, so an outage of either
does not restart every pod); `/readyz` says the worker has joined its group and the database
answers; `/metrics` is the Prometheus text format.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

import sqlalchemy as sa

from .errors import ConfigError
from .metrics import CONTENT_TYPE

logger = logging.getLogger(__name__)

# A loop silent for longer than librdkafka's default max.poll.interval.ms (300 s) has been
# evicted from its group already; any shorter limit would restart workers in the middle of a
# legitimately long batch (a first batch that rebuilds a large table). Pass the configured
# max.poll.interval.ms instead when it is set.
LIVENESS_TIMEOUT_SECONDS = 300.0
# Readiness probes (every 10 s per pod) reuse a database ping this recent, so that probes
# and scrapes never add up to a load on PostgreSQL.
PING_CACHE_SECONDS = 5.0
# How often the server thread checks for stop(): how long stop() may take.
_STOP_POLL_SECONDS = 0.05

Ping = Callable[[], None]


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: whether it passes, and a one-line reason for humans."""

    ok: bool
    reason: str


class Health:
    """What the probes read: set by the run loop with plain values, read by HTTP threads."""

    def __init__(
        self,
        ping: Ping,
        *,
        stale_after_seconds: float = LIVENESS_TIMEOUT_SECONDS,
        ping_cache_seconds: float = PING_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self.stale_after_seconds = stale_after_seconds
        self.ping_cache_seconds = ping_cache_seconds
        self._clock = clock
        self._heartbeat = clock()
        self._joined = False
        self._partitions = 0
        self._waiting = 0
        self._waiting_reason: str | None = None
        self._kafka_down: str | None = None
        self._retrying: str | None = None
        self._ping_lock = threading.Lock()
        self._pinged_at: float | None = None
        self._ping_error: str | None = None

    # --- written by the run loop ---------------------------------------------------------

    def beat(self) -> None:
        """The loop is alive: call on every loop turn (each consume call), and while waiting
        outside the group."""
        self._heartbeat = self._clock()

    def set_joined(self, joined: bool) -> None:
        """True on every assignment (even an empty one); False when the partitions are lost
        and when leaving the group."""
        self._joined = joined

    def set_partitions(self, count: int) -> None:
        """How many partitions are assigned (0: an idle member, still ready)."""
        self._partitions = count

    def set_waiting(self, count: int, reason: str | None) -> None:
        """How many assigned partitions wait, paused, for their stored offsets, and why."""
        self._waiting, self._waiting_reason = count, reason

    def set_kafka_down(self, reason: str | None) -> None:
        """Why no broker can be reached (every one is down), or None once one is."""
        self._kafka_down = reason

    def set_retrying(self, reason: str | None) -> None:
        """Why the batch is being retried after a transient failure (a broker, schema registry
        or dead-letter topic outage), or None once a batch commits again."""
        self._retrying = reason

    # --- read by the probes --------------------------------------------------------------

    def livez(self) -> Verdict:
        silent = self._clock() - self._heartbeat
        if silent > self.stale_after_seconds:
            return Verdict(
                False,
                f"run loop silent for {silent:.0f} s (limit {self.stale_after_seconds:.0f} s)",
            )
        return Verdict(True, f"run loop turned {silent:.1f} s ago")

    def readyz(self) -> Verdict:
        if self._kafka_down is not None:
            return Verdict(False, f"Kafka unreachable: {self._kafka_down}")
        if not self._joined:
            return Verdict(False, "not a member of the consumer group yet")
        error = self._database_error()
        if error is not None:
            return Verdict(False, f"database unreachable: {error}")
        if self._retrying is not None:
            return Verdict(False, f"batches fail and are retried: {self._retrying}")
        if self._waiting:
            return Verdict(
                False,
                f"{self._waiting} assigned partition(s) wait for their stored offsets "
                f"({self._waiting_reason or 'looking them up'})",
            )
        count = self._partitions
        work = f"{count} partition(s) assigned" if count else "idle, no partitions assigned"
        return Verdict(True, f"joined, database reachable, {work}")

    def database_reachable(self) -> bool:
        """Whether PostgreSQL answers (the last ping, pinging again once it is stale)."""
        return self._database_error() is None

    def _database_error(self) -> str | None:
        """The last ping's error (None: it succeeded), pinging again once it is stale."""
        with self._ping_lock:
            now = self._clock()
            if self._pinged_at is None or now - self._pinged_at >= self.ping_cache_seconds:
                try:
                    self._ping()
                    self._ping_error = None
                except Exception as exc:  # any failure makes the pod unready, none crashes it
                    self._ping_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                self._pinged_at = self._clock()
            return self._ping_error


def database_ping(engine: sa.engine.Engine) -> Ping:
    """A ping for `Health`: `SELECT 1` on a pooled connection of `engine`."""

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return ping


class Renders(Protocol):
    def render(self) -> str: ...


class HealthServer:
    """GET /livez, /readyz and /metrics, served from a daemon thread."""

    def __init__(self, host: str, port: int, health: Health, metrics: Renders) -> None:
        handler = _handler(health, metrics)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve /livez, /readyz and /metrics on {host}:{port}: {exc.strerror} "
                "(another process, perhaps a second worker on this host, holds it); set "
                "http.port (SINK_HTTP__PORT) to a free port, or 0 to pick one"
            ) from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when constructed with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(_STOP_POLL_SECONDS,),
            name="health-http",
            daemon=True,
        )
        self._thread.start()
        logger.info("serving /livez, /readyz and /metrics on port %d", self.port)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _handler(health: Health, metrics: Renders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/livez":
                self._verdict(health.livez())
            elif path == "/readyz":
                self._verdict(health.readyz())
            elif path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE)
            else:
                self._send(404, "not found: try /livez, /readyz or /metrics\n")

        def _verdict(self, verdict: Verdict) -> None:
            status = 200 if verdict.ok else 503
            self._send(status, f"{'ok' if verdict.ok else 'failing'}: {verdict.reason}\n")

        def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler
