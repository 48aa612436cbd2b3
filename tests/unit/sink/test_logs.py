"""librdkafka's repeated lines are folded: the first passes, the repeats are counted."""

from __future__ import annotations

import logging

from sink.logs import FoldRepeats, RateLimit, TextFormatter


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("sink.librdkafka", level, "", 0, message, (), None)


def test_a_line_repeated_within_the_window_passes_once_then_says_how_many_were_folded() -> None:
    now = [0.0]
    fold = FoldRepeats(window=60, clock=lambda: now[0])
    line = "FAIL [rdkafka#consumer-1]: 127.0.0.1:1/bootstrap: Connect failed (after {}ms)"
    passed = []
    for step in range(1000):  # 20 lines a second for 50 s, their numbers changing
        now[0] = step * 0.05
        passed.append(fold.filter(record(line.format(step))))
    assert passed.count(True) == 1
    now[0] = 61.0
    later = record(line.format(7))
    assert fold.filter(later)
    assert later.getMessage().endswith("(and 999 more like it in the 61 s before)")
    assert later.folded == 999  # type: ignore[attr-defined]


def test_different_lines_and_levels_are_not_folded_together() -> None:
    fold = FoldRepeats(window=60, clock=lambda: 0.0)
    assert fold.filter(record("broker down"))
    assert fold.filter(record("broker down", logging.WARNING))
    assert fold.filter(record("topic missing"))
    assert not fold.filter(record("broker down"))


def test_at_most_the_limit_passes_per_window_and_the_next_says_how_many_were_held() -> None:
    now = [0.0]
    limit = RateLimit(3, window=60, clock=lambda: now[0])
    passed = [limit.filter(record(f"set aside t[0]@{i}: bad")) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    now[0] = 60.0
    later = record("set aside t[0]@10: bad")
    assert limit.filter(later)
    assert later.getMessage().endswith("(and 7 more like it not logged in the 60 s before)")


def test_text_lines_carry_the_extra_fields_as_json_values() -> None:
    line = record("committed 3 rows", logging.INFO)
    line.rows = 3
    line.next_offsets = {"t[0]": 12}
    text = TextFormatter().format(line)
    assert text.endswith('committed 3 rows rows=3 next_offsets={"t[0]":12}')
