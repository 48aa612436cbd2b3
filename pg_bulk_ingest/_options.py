"""The option enums of `ingest`; values are the later public library's strings."""

from __future__ import annotations

import enum
from typing import Any, TypeVar


class HighWatermark(str, enum.Enum):
    LATEST = "__LATEST__"
    EARLIEST = "__EARLIEST__"


class Visibility(str, enum.Enum):
    AFTER_EACH_BATCH = "__AFTER_EACH_BATCH__"


class Delete(str, enum.Enum):
    OFF = "__OFF__"
    ALL = "__ALL__"
    BEFORE_FIRST_BATCH = "__BEFORE_FIRST_BATCH__"


class Upsert(str, enum.Enum):
    OFF = "__OFF__"
    IF_PRIMARY_KEY = "__IF_PRIMARY_KEY__"


_E = TypeVar("_E", bound=enum.Enum)


def as_option(enum_type: type[_E], value: Any) -> _E:
    """The enum member for `value`, given as a member or as its upstream string."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(f"{enum_type.__name__}.{m.name}" for m in enum_type)
        raise ValueError(f"{value!r} is not one of {allowed}") from None
