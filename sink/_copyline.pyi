from collections.abc import Callable, Sequence

from pg_bulk_ingest import CopyRow, CopyTuple

# Each column kind of the native line by name, with its number (sink.kinds.Native).
KINDS: dict[str, int]

class Line:
    def __init__(
        self,
        columns: Sequence[tuple[str, int, int, int, bool]],
        row_type: type[CopyRow] | type[CopyTuple],
        fallback: Callable[[bytes | None, bytes | None], CopyRow | CopyTuple | None],
        key_format: int,
        binary: Sequence[int] | None = None,
    ) -> None: ...
    def row(self, key: bytes | None, value: bytes | None) -> CopyRow | CopyTuple | None: ...

def numbers_round_trip(document: bytes, /) -> bool: ...
def holds_float(value: object, /) -> bool: ...

# Each op of an Avro line's program by name, with its number (see sink.avroline).
AVRO_OPS: dict[str, int]

class AvroLine:
    native_rows: int
    def __init__(self, line: Line, key_general: bool) -> None: ...
    def learn(self, schema_id: int, program: tuple[object, ...] | None, /) -> None: ...
    def row(self, key: bytes | None, value: bytes | None) -> CopyRow | CopyTuple | None: ...
