"""The library documentation's example, run unchanged but for the engine URL and schema."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import sqlalchemy_url

DOCS = Path(__file__).parents[3] / "docs" / "pg_bulk_ingest.md"


def example_source() -> str:
    text = DOCS.read_text()
    return re.search(r"<!-- example -->\n```python\n(.*?)```", text, re.DOTALL)[1]  # type: ignore[index]


def test_the_readme_example_runs_and_ingests_its_rows(
    database_url: str, driver: str, schema: str, query: object
) -> None:
    source = example_source()
    source = source.replace(
        "postgresql+psycopg://postgres@127.0.0.1:5432/", sqlalchemy_url(database_url, driver)
    )
    source = source.replace('"my_schema"', repr(schema))
    source = source.replace(
        "engine = sa.create_engine(", "engine = sa.create_engine(future=True, url="
    )
    namespace: dict[str, object] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    namespace["engine"].dispose()  # type: ignore[attr-defined]
    engine = sa.create_engine(sqlalchemy_url(database_url, driver), future=True)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT id, value FROM "{schema}".my_table ORDER BY id')
        assert [tuple(r) for r in rows] == [
            (3, "a"),
            (4, "b"),
            (5, "c"),
            (6, "d"),
            (7, "e"),
            (8, "f"),
        ]
    engine.dispose()
