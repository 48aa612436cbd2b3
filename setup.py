"""The one thing pyproject.toml cannot declare yet without a warning: the C extensions, the
native form of the fast path from a JSON or Avro message to its COPY line (see sink/copytext.py
and sink/avroline.py) and the ingest core's binary COPY row encoder (see
pg_bulk_ingest/_binary.py).

Both are optional: without a C compiler the package installs with the pure-Python paths
(slower; the worker says so once when it starts, and the ingest core writes NUMERIC, JSONB and
arrays as text)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sink._copyline",
            ["sink/_copyline.c"],
            depends=["sink/_avroline.h", "pg_bulk_ingest/_pgsend.h"],
            optional=True,
        ),
        Extension(
            "pg_bulk_ingest._binrow",
            ["pg_bulk_ingest/_binrow.c"],
            depends=["pg_bulk_ingest/_pgsend.h"],
            optional=True,
        ),
    ]
)
