"""Ingest benchmark: raw COPY ceiling vs our `ingest` vs the public pg-bulk-ingest 0.1.3.

    python -m tests.benchmarks.ingest_bench [--rows 500000] [--repeat 3] [--json out.json]

Runs are interleaved (ceiling, ours, ours with binary COPY for every table, public; append,
upsert first load, upsert re-load) so that load from other processes on the machine hits all
of them alike; with a baseline (`python -m tests.benchmarks --baseline REV`), the ingest core of
that revision's tree runs in the same rounds as `ours@<commit>`. `limit` times the server alone:
the rows pre-encoded as COPY text and binary, and the e2e section's events likewise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pg_bulk_ingest import HighWatermark, _binary, ingest
from pg_bulk_ingest._encode import row_encoder
from pg_bulk_ingest._schema import wanted_table
from sink.config import BatchSettings
from tests.benchmarks.ingest_rows import event_rows
from tests.events import events

HERE = Path(__file__).parent
CACHE = HERE.parents[1] / ".cache" / "bench-pgbi013"
# 0.1.3 imports psycopg2 even when driven through psycopg (3), which the benchmark uses.
PUBLIC_REQUIREMENTS = [
    "pg-bulk-ingest==0.1.3",
    "psycopg[binary]>=3.1",
    "psycopg2-binary>=2.9",
    "sqlalchemy>=2",
]
BATCH_ROWS = 10_000
# The rows of one of the sink's transactions at its default batch limits.
SINK_BATCH_ROWS = BatchSettings().max_messages
MEMORY_ROWS = 2_000_000
# Bytes per write of the pre-encoded COPY data in the limit runs (as the ingest core writes).
LIMIT_CHUNK_BYTES = 128 * 1024
LIMIT_ROUNDS = 5


def events_table(schema: str, keyed: bool) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.BIGINT, primary_key=keyed),
        sa.Column("key", sa.VARCHAR(64)),
        sa.Column("at", sa.TIMESTAMP(timezone=True)),
        sa.Column("amount", sa.NUMERIC(12, 2)),
        sa.Column("status", sa.VARCHAR(16)),
        sa.Column("payload", pg.JSONB),
        sa.Column("tags", pg.ARRAY(sa.TEXT)),
        schema=schema,
    )
    return metadata, table


def public_python() -> Path:
    """The interpreter of a virtual environment holding the public library, made once."""
    python = CACHE / "venv" / "bin" / "python"
    installed = CACHE / "requirements.txt"
    wanted = "\n".join(PUBLIC_REQUIREMENTS)
    if not installed.exists() or installed.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", str(CACHE / "venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PUBLIC_REQUIREMENTS], check=True
        )
        installed.write_text(wanted)
    shutil.copy(HERE / "ingest_rows.py", CACHE / "ingest_rows.py")
    shutil.copy(HERE / "ingest_public_runner.py", CACHE / "runner.py")
    return python


class Bench:
    def __init__(self, url: str, rows: int, before: Path | None = None) -> None:
        self.url = url
        self.before = before  # another revision's tree, whose ingest core runs as ours@...
        self.engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        self.rows = rows
        self.data = list(event_rows(rows))

    def schema(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        return name

    def drop(self, schema: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')

    def raw_copy(self, schema: str) -> float:
        _, table = events_table(schema, keyed=False)
        spec = wanted_table(table)
        encode = row_encoder(spec.types)
        chunks = [
            "".join(encode(row) for row in self.data[start : start + BATCH_ROWS])
            for start in range(0, self.rows, BATCH_ROWS)
        ]
        columns = ", ".join(f'"{c.name}" {c.type}' for c in spec.spec.columns)
        with psycopg.connect(self.url) as conn:
            conn.execute(f'CREATE TABLE "{schema}".events ({columns})')
            conn.commit()
            started = time.perf_counter()
            for chunk in chunks:
                with conn.cursor().copy(f'COPY "{schema}".events FROM STDIN') as copy:
                    copy.write(chunk)
                conn.commit()
            return time.perf_counter() - started

    def ours(self, schema: str, keyed: bool, all_binary: bool = False) -> float:
        """Seconds for `ingest`; `all_binary` sends the event rows (NUMERIC, JSONB, an array)
        as binary COPY too, which ingest otherwise sends as text for being cheaper so."""
        metadata, table = events_table(schema, keyed)

        def batches(_: Any) -> Iterator[Any]:
            for start in range(0, self.rows, BATCH_ROWS):
                yield start, None, ((table, row) for row in self.data[start : start + BATCH_ROWS])

        dearer = _binary.DEARER_IN_BINARY
        _binary.DEARER_IN_BINARY = frozenset() if all_binary else dearer
        try:
            with self.engine.connect() as conn:
                started = time.perf_counter()
                ingest(conn, metadata, batches, high_watermark=HighWatermark.EARLIEST)
                return time.perf_counter() - started
        finally:
            _binary.DEARER_IN_BINARY = dearer

    def public(self, schema: str, keyed: bool) -> float:
        return self._runner(public_python(), schema, keyed, os.environ)

    def ours_before(self, schema: str, keyed: bool) -> float:
        """Seconds for `ingest` of the baseline tree: this interpreter, that tree's package."""
        assert self.before is not None
        environ = {**os.environ, "PYTHONPATH": str(self.before)}
        return self._runner(Path(sys.executable), schema, keyed, environ)

    def _runner(self, python: Path, schema: str, keyed: bool, environ: Any) -> float:
        url = self.url.replace("postgresql://", "postgresql+psycopg://")
        out = subprocess.run(
            [
                str(python),
                str(CACHE / "runner.py"),
                url,
                schema,
                "1" if keyed else "0",
                str(self.rows),
                str(BATCH_ROWS),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=CACHE,
            env=environ,
        )
        return float(out.stdout.strip().splitlines()[-1])

    def scenario(self, impl: str, scenario: str) -> float:
        """Seconds for one run; the re-load times the second of two loads of the same rows."""
        schema = self.schema()
        try:
            keyed = scenario != "append"
            if impl == "raw COPY":
                return self.raw_copy(schema)
            if impl == "public 0.1.3":
                run = self.public
            elif impl.startswith("ours@"):
                run = self.ours_before
            else:
                run = partial(self.ours, all_binary=impl == ALL_BINARY)
            if scenario == "upsert re-load":
                run(schema, keyed)
            return run(schema, keyed)
        finally:
            self.drop(schema)


def _columns_sql(schema: str) -> str:
    _, table = events_table(schema, keyed=False)
    return ", ".join(f'"{c.name}" {c.type}' for c in wanted_table(table).spec.columns)


# The e2e section's JSON events as the sink's table holds them, made by PostgreSQL's own casts
# from each event's JSON: the rows the sink writes, without the sink's code.
_EVENT_ROWS = """
    SELECT (v->>'id')::bigint, v->>'key', (v->>'ts')::timestamptz, (v->>'amount')::numeric(12,2),
           v->>'status', v->'payload', ARRAY(SELECT jsonb_array_elements_text(v->'tags'))
    FROM {raw}"""


def _copied_out(conn: psycopg.Connection[Any], table: str) -> dict[str, bytes]:
    """The table's rows as PostgreSQL writes them: as COPY text and as binary COPY."""
    payloads = {}
    for name, options in (("text", ""), ("binary", " (FORMAT binary)")):
        with conn.cursor().copy(f"COPY {table} TO STDOUT{options}") as copy:
            payloads[name] = b"".join(bytes(block) for block in copy)
    return payloads


def _limit_payloads(
    url: str, schema: str, rows: list[tuple[Any, ...]]
) -> tuple[dict[str, bytes], list[bytes]]:
    """Per row set and format ("ingest text", "events binary", ...): the ingest section's rows
    and as many of the e2e section's events, loaded once into a table each, then read back
    with `COPY ... TO STDOUT`; and the events in binary again, SINK_BATCH_ROWS to a payload."""
    _, table = events_table(schema, keyed=False)
    encode = row_encoder(wanted_table(table).types)
    columns = _columns_sql(schema)
    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE TABLE "{schema}".source ({columns})')
        with conn.cursor().copy(f'COPY "{schema}".source FROM STDIN') as copy:
            copy.write("".join(encode(row) for row in rows))
        conn.execute(f'CREATE TABLE "{schema}".raw_events (v jsonb)')
        with conn.cursor().copy(f'COPY "{schema}".raw_events (v) FROM STDIN') as copy:
            for _, value in events(len(rows)):
                copy.write_row((value.decode(),))
        raw = f'"{schema}".raw_events'
        conn.execute(f'CREATE TABLE "{schema}".event_rows ({columns})')
        conn.execute(f'INSERT INTO "{schema}".event_rows {_EVENT_ROWS.format(raw=raw)}')
        payloads = {}
        for rows_name, source in (("ingest", "source"), ("events", "event_rows")):
            for name, payload in _copied_out(conn, f'"{schema}".{source}').items():
                payloads[f"{rows_name} {name}"] = payload
        batches = []
        for start in range(0, len(rows), SINK_BATCH_ROWS):
            end = start + SINK_BATCH_ROWS
            query = f'(SELECT * FROM "{schema}".event_rows WHERE id >= {start} AND id < {end})'
            batches.append(_copied_out(conn, query)["binary"])
        conn.rollback()
    return payloads, batches


def _batched_load(url: str, schema: str, batches: list[bytes]) -> float:
    """Seconds to COPY the batches into a fresh table, each in a transaction of its own that
    then stores a watermark as the sink does: locks a table without columns, reads its
    comment and writes it."""
    columns = _columns_sql(schema)
    name = f"load_{uuid.uuid4().hex[:8]}"
    state = f'"{schema}"."{name}_state"'
    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE TABLE "{schema}"."{name}" ({columns})')
        conn.execute(f"CREATE TABLE {state} ()")
        conn.commit()
        started = time.perf_counter()
        for number, payload in enumerate(batches):
            sql = f'COPY "{schema}"."{name}" FROM STDIN (FORMAT binary)'
            with conn.cursor().copy(sql) as copy:
                for start in range(0, len(payload), LIMIT_CHUNK_BYTES):
                    copy.write(payload[start : start + LIMIT_CHUNK_BYTES])
            conn.execute(f"LOCK TABLE {state} IN SHARE UPDATE EXCLUSIVE MODE")
            conn.execute(f"SELECT obj_description('{state}'::regclass, 'pg_class')")
            conn.execute(f"COMMENT ON TABLE {state} IS '{{\"batch\": {number}}}'")
            conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(f'DROP TABLE "{schema}"."{name}", {state}')
        conn.commit()
    return elapsed


def _limit_load(url: str, schema: str, payload: bytes, binary: bool) -> float:
    """Seconds to COPY the payload into a fresh table, in writes of LIMIT_CHUNK_BYTES."""
    columns = _columns_sql(schema)
    name = f"load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url) as conn:
        conn.execute(f'CREATE TABLE "{schema}"."{name}" ({columns})')
        conn.commit()
        options = " (FORMAT binary)" if binary else ""
        started = time.perf_counter()
        with conn.cursor().copy(f'COPY "{schema}"."{name}" FROM STDIN{options}') as copy:
            for start in range(0, len(payload), LIMIT_CHUNK_BYTES):
                copy.write(payload[start : start + LIMIT_CHUNK_BYTES])
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(f'DROP TABLE "{schema}"."{name}"')
        conn.commit()
    return elapsed


# The limit section's rows in the suite's table, by row set and format.
LIMIT_SYSTEMS = {
    "ingest text": "raw COPY text",
    "ingest binary": "raw COPY binary",
    "events text": "raw COPY text, events",
    "events binary": "raw COPY binary, events",
    "events batched": f"raw COPY binary, events, {SINK_BATCH_ROWS:,}-row transactions",
}


def limit(rows: int, rounds: int = LIMIT_ROUNDS) -> list[dict[str, Any]]:
    """The server's side alone: the same rows, pre-encoded once by PostgreSQL as COPY text and
    as binary COPY, loaded into fresh tables, text and binary alternating, `rounds` times.
    Two row sets: the ingest section's rows (what the ingest core's targets compare with) and
    the e2e section's events as the sink's table holds them (what the sink's do); and those
    events again in SINK_BATCH_ROWS-row transactions (the sink's default batch) that store a
    watermark, as the sink writes them: what batching costs the server."""
    url = os.environ["SINK_TEST_DATABASE_URL"]
    bench = Bench(url, rows)
    schema = bench.schema()
    try:
        payloads, batches = _limit_payloads(url, schema, bench.data)
        seconds: dict[str, list[float]] = {name: [] for name in LIMIT_SYSTEMS}
        for number in range(rounds):
            order = list(LIMIT_SYSTEMS) if number % 2 == 0 else list(reversed(LIMIT_SYSTEMS))
            for name in order:
                if name == "events batched":
                    seconds[name].append(_batched_load(url, schema, batches))
                else:
                    binary = name.endswith("binary")
                    seconds[name].append(_limit_load(url, schema, payloads[name], binary))
                rate = rows / seconds[name][-1]
                print(f"# limit round {number + 1} {name:13} {rate:>9,.0f} rows/s", file=sys.stderr)
    finally:
        bench.drop(schema)
    results: list[dict[str, Any]] = []
    rates = {name: summary(times, rows)[0] for name, times in seconds.items()}
    for name, times in seconds.items():
        median, low, high = summary(times, rows)
        note = f"min-max {low:,.0f}..{high:,.0f} rows/s"
        if name in payloads:
            note = f"{len(payloads[name]) / rows:.0f} B/row; {note}"
        else:
            note += f"; /one COPY {rates[name] / rates['events binary']:.2f}x"
        if name.endswith("binary"):
            text = name.replace("binary", "text")
            note += f"; binary/text {rates[name] / rates[text]:.2f}x"
        results.append(
            {
                "implementation": LIMIT_SYSTEMS[name],
                "scenario": "limit",
                "rows": rows,
                "batch_rows": SINK_BATCH_ROWS if name == "events batched" else rows,
                "seconds": statistics.median(times),
                "rows_per_s": median,
                "note": f"{note} over {rounds}",
            }
        )
    return results


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_run(url: str, rows: int) -> None:
    """Streams `rows` rows through one ingest call; prints the peak RSS in MiB (child mode)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    metadata, table = events_table(schema, keyed=True)

    def batches(_: Any) -> Iterator[Any]:
        source = event_rows(rows)
        for start in range(0, rows, BATCH_ROWS):
            yield start, None, ((table, next(source)) for _ in range(min(BATCH_ROWS, rows - start)))

    before = peak_rss_mib()
    with engine.connect() as conn:
        ingest(conn, metadata, batches)
    after = peak_rss_mib()
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    print(json.dumps({"rows": rows, "rss_before_mib": before, "peak_rss_mib": after}))


def summary(seconds: list[float], rows: int) -> tuple[float, float, float]:
    rates = [rows / s for s in seconds]
    return statistics.median(rates), min(rates), max(rates)


ALL_BINARY = "ours, all binary"
RUNS = (
    ("raw COPY", "append"),
    ("ours", "append"),
    (ALL_BINARY, "append"),
    ("public 0.1.3", "append"),
    ("ours", "upsert first load"),
    (ALL_BINARY, "upsert first load"),
    ("public 0.1.3", "upsert first load"),
    ("ours", "upsert re-load"),
    (ALL_BINARY, "upsert re-load"),
    ("public 0.1.3", "upsert re-load"),
)


def measure(
    url: str, rows: int, repeat: int, before: tuple[str, Path] | None = None
) -> dict[tuple[str, str], list[float]]:
    """Seconds per (implementation, scenario), the repetitions interleaved; `before` (a label
    such as `@1a2b3c4d5` and a tree) adds that tree's ingest core as `ours@...`."""
    public_python()
    bench = Bench(url, rows, before[1] if before else None)
    runs = RUNS
    if before is not None:
        scenarios = ("append", "upsert first load", "upsert re-load")
        runs += tuple((f"ours{before[0]}", scenario) for scenario in scenarios)
    seconds: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for repetition in range(repeat):
        for impl, scenario in runs:
            seconds[impl, scenario].append(bench.scenario(impl, scenario))
            print(
                f"# rep {repetition + 1} {impl:13} {scenario:18} "
                f"{rows / seconds[impl, scenario][-1]:>9,.0f} rows/s",
                file=sys.stderr,
            )
    return seconds


def run(rows: int, repeat: int, before: tuple[str, Path] | None = None) -> list[dict[str, Any]]:
    """The benchmark as rows for the suite's table (`python -m tests.benchmarks`)."""
    url = os.environ["SINK_TEST_DATABASE_URL"]
    results = []
    for (impl, scenario), times in measure(url, rows, repeat, before).items():
        median, low, high = summary(times, rows)
        results.append(
            {
                "implementation": impl,
                "scenario": scenario,
                "rows": rows,
                "batch_rows": BATCH_ROWS,
                "seconds": statistics.median(times),
                "rows_per_s": median,
                "note": f"min-max {low:,.0f}..{high:,.0f} rows/s over {repeat}",
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--memory-rows", type=int, default=MEMORY_ROWS)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--limit", action="store_true", help="only the server-side text vs binary COPY runs"
    )
    args = parser.parse_args()
    url = os.environ["SINK_TEST_DATABASE_URL"]
    if args.memory_child:
        memory_run(url, args.memory_rows)
        return
    if args.limit:
        for row in limit(args.rows, max(args.repeat, LIMIT_ROUNDS)):
            print(f"{row['implementation']:16} {row['rows_per_s']:>10,.0f} rows/s  {row['note']}")
        return

    seconds = measure(url, args.rows, args.repeat)
    results = {f"{i} / {s}": summary(t, args.rows) for (i, s), t in seconds.items()}
    print(
        f"\n{args.rows:,} rows, {BATCH_ROWS:,}-row batches, {args.repeat} interleaved repetitions"
    )
    print(f"{'scenario':20} {'implementation':17} {'median rows/s':>14} {'min-max rows/s':>22}")
    for impl, scenario in RUNS:
        median, low, high = results[f"{impl} / {scenario}"]
        print(f"{scenario:20} {impl:17} {median:>14,.0f} {f'{low:,.0f}..{high:,.0f}':>22}")

    def ratio(a: str, b: str) -> float:
        return results[a][0] / results[b][0]

    ratios = {
        "append: ours / public": ratio("ours / append", "public 0.1.3 / append"),
        "append: ours / raw COPY": ratio("ours / append", "raw COPY / append"),
        "append: ours, all binary / raw COPY": ratio(f"{ALL_BINARY} / append", "raw COPY / append"),
        "upsert first load: ours / public": ratio(
            "ours / upsert first load", "public 0.1.3 / upsert first load"
        ),
        "upsert re-load: ours / public": ratio(
            "ours / upsert re-load", "public 0.1.3 / upsert re-load"
        ),
    }
    for name, value in ratios.items():
        print(f"{name:34} {value:5.2f}x")

    memory = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.ingest_bench",
            "--memory-child",
            "--memory-rows",
            str(args.memory_rows),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE.parents[1],
    )
    peak = json.loads(memory.stdout.strip().splitlines()[-1])
    print(
        f"memory: {peak['rows']:,} rows streamed through one ingest call (upsert): "
        f"RSS {peak['rss_before_mib']:.0f} MiB before, {peak['peak_rss_mib']:.0f} MiB peak"
    )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "ratios": ratios, "memory": peak}))


if __name__ == "__main__":
    main()
