"""Reading the next batch while the batch in flight commits.

While PostgreSQL merges and commits a batch, the worker's thread only waits: a thread of its
own reads the next messages meanwhile (Python decodes and maps while PostgreSQL writes). The
`ReadAhead` owns that thread and what it read; the worker's thread talks to it through four
calls:

- `start(read)` once a batch is complete and its last rows are on their way to PostgreSQL:
  the thread calls `read(held)` (`held`: the rows it holds so far) until it returns None or
  is told to stop, keeping the rows each call returns;
- `stop()` once that batch has settled (committed or failed): waits for the thread, and
  returns what it raised, if anything;
- `take()`, after `stop()`: the rows read meanwhile, handed over once;
- `wait_settled()`, from the Kafka callbacks that run inside a consume call, so possibly on
  the thread reading ahead: returns once the batch in flight has settled, before a callback
  changes what that batch depends on (the partitions assigned).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .tables import Row


class ReadAhead:
    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._settled = threading.Event()
        self._settled.set()
        self._thread: _Background | None = None

    def start(self, read: Callable[[int], list[Row] | None]) -> None:
        """Reads on a thread of its own until `read` returns None or `stop` is called."""
        assert self._thread is None, "already reading ahead"
        self._settled.clear()

        def run(stop: threading.Event) -> None:
            while not stop.is_set():
                rows = read(len(self._rows))
                if rows is None:
                    return
                self._rows.extend(rows)

        self._thread = _Background(run, "read-ahead")

    def stop(self) -> BaseException | None:
        """The batch in flight has settled: reading comes back to the caller's thread.
        Returns the error that stopped reading ahead, if one did."""
        self._settled.set()
        thread, self._thread = self._thread, None
        return None if thread is None else thread.finish()

    def take(self) -> list[Row]:
        """The rows read ahead (after `stop`), once."""
        rows, self._rows = self._rows, []
        return rows

    def wait_settled(self) -> None:
        self._settled.wait()


class _Background:
    """Runs `target(stop)` on a thread of its own; `finish` asks it to stop and waits."""

    def __init__(self, target: Callable[[threading.Event], None], name: str) -> None:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
        self._thread.start()

    def _run(self, target: Callable[[threading.Event], None]) -> None:
        try:
            target(self._stop)
        except BaseException as exc:  # re-raised on the thread that calls finish
            self._error = exc

    def finish(self) -> BaseException | None:
        """Stops the thread; returns what it raised, if anything."""
        self._stop.set()
        self._thread.join()
        return self._error
