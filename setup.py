"""The one thing pyproject.toml cannot declare yet without a warning: the C extension, the
native form of the fast path from a JSON message to its COPY line (see sink/copytext.py).

It is optional: without a C compiler the package installs with the pure-Python path (slower;
the worker says so once when it starts)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sink._copyline",
            ["sink/_copyline.c"],
            depends=["sink/_avroline.h"],
            optional=True,
        )
    ]
)
