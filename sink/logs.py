"""Log output: JSON lines for containers and collectors, readable lines on a terminal."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed with `extra=` and is emitted too.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """A line for a terminal: time, level, logger, message, then the `extra=` fields as
    key=value (JSON values), so that both formats carry the same fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [
            f"{key}={orjson.dumps(value, default=str).decode()}"
            for key, value in vars(record).items()
            if key not in _STANDARD
        ]
        return " ".join([line, *fields]) if fields else line


def configure(level: str, fmt: str) -> None:
    """`fmt` is "json", "text" or "auto" (JSON unless stderr is a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:  # a level the settings will refuse, naming it; until then INFO
        root.setLevel(logging.INFO)
    # The registry client's HTTP library logs each request at INFO: the sink says what it
    # fetched itself (sink.registry); the library's warnings still show, and at DEBUG all.
    quiet = logging.NOTSET if root.level <= logging.DEBUG else max(logging.WARNING, root.level)
    for library in _CHATTY:
        logging.getLogger(library).setLevel(quiet)


_CHATTY = ("httpx", "httpx2", "httpcore")


# What makes two lines of librdkafka "the same" line: their text with the numbers masked
# (addresses, ports, durations, broker ids).
_NUMBERS = re.compile(r"\d+")
# How long a line is folded after it was logged, and how many distinct lines are remembered.
FOLD_WINDOW_SECONDS = 60.0
_FOLD_MEMORY = 512


class FoldRepeats(logging.Filter):
    """Passes a line the first time it is seen in a window; the repeats are counted instead,
    and the next line like it after the window says how many were folded. librdkafka repeats
    a failed connection's line several times a second per broker."""

    def __init__(
        self,
        window: float = FOLD_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._window = window
        self._clock = clock
        self._seen: dict[tuple[int, str], list[float]] = {}  # key -> [logged at, folded]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._window:
                seen[1] += 1
                return False
            if len(self._seen) >= _FOLD_MEMORY:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.getMessage()} (and {int(seen[1])} more like it in the "
                f"{now - seen[0]:.0f} s before)"
            )
            record.args = ()
            record.folded = int(seen[1])
        return True


_LIBRDKAFKA = logging.getLogger("sink.librdkafka")
_LIBRDKAFKA.addFilter(FoldRepeats())


def librdkafka_logger() -> logging.Logger:
    """The logger every Kafka client of the sink hands librdkafka's lines to, folded."""
    return _LIBRDKAFKA


class RateLimit(logging.Filter):
    """Passes at most `limit` lines per window; the first line after a window in which some
    were held back says how many."""

    def __init__(
        self,
        limit: int,
        window: float = FOLD_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._limit, self._window, self._clock = limit, window, clock
        self._started = clock()
        self._passed = self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            if now - self._started >= self._window:
                held, self._started, self._passed, self._held = self._held, now, 0, 0
                if held:
                    record.msg = (
                        f"{record.getMessage()} (and {held} more like it not logged in the "
                        f"{self._window:.0f} s before)"
                    )
                    record.args = ()
            if self._passed >= self._limit:
                self._held += 1
                return False
            self._passed += 1
        return True


# Dead letters: one WARNING line each, at most this many a minute.
DEAD_LETTER_LINES_PER_MINUTE = 20
DEAD_LETTERS = logging.getLogger("sink.deadletters")
DEAD_LETTERS.addFilter(RateLimit(DEAD_LETTER_LINES_PER_MINUTE))
