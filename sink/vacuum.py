"""Yielding to VACUUM: a due batch stays open while another session holds the table's lock.

Each commit writes the offsets with `COMMENT ON TABLE`, which takes a SHARE UPDATE EXCLUSIVE
lock, as do autovacuum, VACUUM, ANALYZE and CREATE INDEX CONCURRENTLY. A commit that meets one
of them waits; after PostgreSQL's `deadlock_timeout` it cancels an autovacuum, which then starts
over at its next turn and, on a large table fed without pause, may never finish. So while such
a holder is there, the batch is not committed yet: it keeps streaming, for up to a budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

# How often the holder is looked for again while a batch is kept open.
RECHECK_SECONDS = 0.2


class VacuumYield:
    """Decides, each time the open batch is due, whether to keep it open a while longer.

    `holder()` names the session holding a lock the commit would wait for, or gives None.
    """

    def __init__(self, budget_seconds: float, holder: Callable[[], str | None]) -> None:
        self.budget_seconds = budget_seconds
        self._holder = holder
        self._since: float | None = None
        self._checked = 0.0

    def keep_open(self, now: float) -> bool:
        """Whether the due batch stays open at `now` (a monotonic time)."""
        if self.budget_seconds <= 0:
            return False
        if self._since is None:
            holder = self._holder()
            if holder is None:
                return False
            logger.info(
                "%s holds the lock a commit needs; the batch stays open for up to %.0f s",
                holder,
                self.budget_seconds,
            )
            self._since = self._checked = now
            return True
        if now - self._since >= self.budget_seconds:
            logger.warning(
                "a lock holder is still there after %.0f s; committing (PostgreSQL cancels an "
                "autovacuum once deadlock_timeout has passed)",
                self.budget_seconds,
            )
            return False
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            return self._holder() is not None
        return True

    def done(self, now: float) -> float:
        """Ends the batch's wait; returns the seconds it was kept open past due."""
        since, self._since = self._since, None
        return 0.0 if since is None else now - since
