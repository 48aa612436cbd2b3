"""The one thing pyproject.toml cannot declare yet without a warning: the C extension, the
native form of the fast path from a JSON message to its COPY line (see sink/copytext.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sink._copyline", ["sink/_copyline.c"], optional=False)])
