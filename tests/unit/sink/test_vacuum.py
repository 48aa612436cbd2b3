"""VacuumYield: when a due batch stays open for a session holding the table's lock."""

from __future__ import annotations

from sink.vacuum import RECHECK_SECONDS, VacuumYield


class Holders:
    """Answers `holder()` from a script, counting the lookups."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.lookups = 0

    def __call__(self) -> str | None:
        self.lookups += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_batch_is_committed_when_nobody_holds_the_lock() -> None:
    holders = Holders(None)
    waiting = VacuumYield(30, holders)
    assert not waiting.keep_open(100.0)
    assert waiting.done(100.0) == 0.0
    assert holders.lookups == 1


def test_a_batch_stays_open_while_a_holder_is_there_and_commits_once_it_is_gone() -> None:
    holders = Holders("autovacuum worker (pid 7)", "autovacuum worker (pid 7)", None)
    waiting = VacuumYield(30, holders)
    assert waiting.keep_open(100.0)
    # Looked up again only every RECHECK_SECONDS.
    assert waiting.keep_open(100.0 + RECHECK_SECONDS / 2)
    assert holders.lookups == 1
    assert waiting.keep_open(100.0 + RECHECK_SECONDS)
    assert not waiting.keep_open(100.0 + 2 * RECHECK_SECONDS)
    assert holders.lookups == 3
    assert waiting.done(100.5) == 0.5
    # The next batch starts afresh.
    assert not waiting.keep_open(200.0)
    assert waiting.done(200.0) == 0.0


def test_the_wait_ends_after_the_budget_even_if_the_holder_stays() -> None:
    holders = Holders("client backend (pid 9)")
    waiting = VacuumYield(5, holders)
    assert waiting.keep_open(10.0)
    assert waiting.keep_open(14.9)
    assert not waiting.keep_open(15.0)
    assert waiting.done(15.0) == 5.0


def test_a_zero_budget_never_looks_for_a_holder() -> None:
    holders = Holders("autovacuum worker (pid 7)")
    waiting = VacuumYield(0, holders)
    assert not waiting.keep_open(1.0)
    assert holders.lookups == 0
