"""Reading the next batch while the batch in flight commits.

While PostgreSQL merges and commits a batch, the worker's thread only waits: a thread of its
own reads the next messages meanwhile (Python decodes and maps while PostgreSQL writes). The
`ReadAhead` owns that thread and what it read; the worker's thread talks to it through five
calls:

- `start(read)` once a batch is complete and its last rows are on their way to PostgreSQL:
  the thread calls `read(held)` (`held`: the rows it holds so far) until it returns None or
  is told to stop, keeping the rows each call returns;
- `stop()` once that batch has settled (committed or failed): waits until the thread has
  stopped reading, and returns what it raised, if anything;
- `take()`, after `stop()`: the rows read meanwhile, handed over once;
- `wait_settled()`, from the Kafka callbacks that run inside a consume call, so possibly on
  the thread reading ahead: returns once the batch in flight has settled, before a callback
  changes what that batch depends on (the partitions assigned);
- `close()` when the worker ends: the thread exits.

The thread is made at the first `start` and serves every batch after it: starting a thread
per batch made the worker's thread wait for the new one to run, at every batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .tables import Row

Read = Callable[[int], "list[Row] | None"]


class ReadAhead:
    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._settled = threading.Event()
        self._settled.set()
        self._lock = threading.Lock()
        # Guarded by `_lock`, with `_changed` told of each change: the read asked for (None:
        # none), whether to stop it, whether it has ended, and what it raised.
        self._changed = threading.Condition(self._lock)
        self._read: Read | None = None
        self._stopping = False
        self._reading = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self, read: Read) -> None:
        """Reads on the thread until `read` returns None or `stop` is called."""
        with self._lock:
            assert not self._reading, "already reading ahead"
            self._settled.clear()
            self._read, self._reading, self._stopping, self._error = read, True, False, None
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="read-ahead", daemon=True)
                self._thread.start()
            else:
                self._changed.notify_all()

    def stop(self) -> BaseException | None:
        """The batch in flight has settled: reading comes back to the caller's thread.
        Returns the error that stopped reading ahead, if one did."""
        self._settled.set()
        with self._lock:
            self._stopping = True
            while self._reading:
                self._changed.wait()
            error, self._error = self._error, None
            return error

    def take(self) -> list[Row]:
        """The rows read ahead (after `stop`), once."""
        rows, self._rows = self._rows, []
        return rows

    def wait_settled(self) -> None:
        self._settled.wait()

    def close(self) -> None:
        """Stops reading, and the thread exits (a later `start` makes another)."""
        self.stop()
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._closed = False

    def _serve(self) -> None:
        while True:
            with self._lock:
                while self._read is None and not self._closed:
                    self._changed.wait()
                read, self._read = self._read, None
            if read is None:
                return  # closed
            error = None
            try:
                self._read_until_done(read)
            except BaseException as exc:  # re-raised on the thread that calls stop
                error = exc
            with self._lock:
                self._error, self._reading = error, False
                self._changed.notify_all()

    def _read_until_done(self, read: Read) -> None:
        while not self._stopping:
            rows = read(len(self._rows))
            if rows is None:
                return
            self._rows.extend(rows)
