"""Option enums equal the later public library's strings (pure)."""

from __future__ import annotations

import pytest

from pg_bulk_ingest import Delete, HighWatermark, Upsert, Visibility
from pg_bulk_ingest._options import as_option


def test_members_equal_the_upstream_strings() -> None:
    assert HighWatermark.LATEST == "__LATEST__"
    assert HighWatermark.EARLIEST == "__EARLIEST__"
    assert Visibility.AFTER_EACH_BATCH == "__AFTER_EACH_BATCH__"
    assert Delete.OFF == "__OFF__"
    assert Delete.BEFORE_FIRST_BATCH == "__BEFORE_FIRST_BATCH__"
    assert Upsert.IF_PRIMARY_KEY == "__IF_PRIMARY_KEY__"
    assert as_option(Delete, "__BEFORE_FIRST_BATCH__") is Delete.BEFORE_FIRST_BATCH


def test_an_unknown_option_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"Delete\.OFF"):
        as_option(Delete, "nope")
