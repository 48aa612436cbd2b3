"""SQL text building: every identifier quoted, every literal escaped."""

from __future__ import annotations

from collections.abc import Iterable


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def idents(names: Iterable[str]) -> str:
    return ", ".join(ident(name) for name in names)


def literal(text: str) -> str:
    """A string literal valid whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
