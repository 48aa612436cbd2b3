"""Benchmarks, run by `make bench` (`python -m tests.benchmarks`), never as timed tests in CI."""
