"""The C row encoder of binary COPY (pg_bulk_ingest/_binrow.c); see `_binary.native_row_encoder`."""

from collections.abc import Sequence
from typing import Any, Callable

class RowEncoder:
    def __init__(
        self,
        columns: Sequence[tuple[Any, ...]],
        copy_row: type,
        copy_tuple: type,
        not_binary: type[BaseException],
        decimal: type,
        dumps: Callable[[Any], bytes],
    ) -> None: ...
    def __call__(self, row: Sequence[Any], /) -> bytes: ...
