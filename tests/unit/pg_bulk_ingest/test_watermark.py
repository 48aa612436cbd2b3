"""Parsing and merging the watermark comment (pure)."""

from __future__ import annotations

import pytest

from pg_bulk_ingest import WatermarkError
from pg_bulk_ingest._watermark import parse, watermark, with_watermark


def test_no_comment_means_no_watermark() -> None:
    assert watermark(parse("s.t", None)) is None


def test_the_watermark_is_read_and_replaced_keeping_other_keys() -> None:
    document = parse("s.t", '{"a": 1, "pg-bulk-ingest": {"high-watermark": 5, "b": 2}}')
    assert watermark(document) == 5
    assert with_watermark(document, 6) == {
        "a": 1,
        "pg-bulk-ingest": {"high-watermark": 6, "b": 2},
    }


def test_a_human_comment_is_kept_under_comment() -> None:
    document = parse("s.t", "Orders, one per row")
    assert watermark(document) is None
    assert with_watermark(document, 1)["comment"] == "Orders, one per row"


@pytest.mark.parametrize("comment", ["{", "{} x", '{"pg-bulk-ingest": []}'])
def test_json_of_the_wrong_shape_raises_naming_the_table(comment: str) -> None:
    with pytest.raises(WatermarkError, match=r"s\.t"):
        parse("s.t", comment)
