"""Settings: one frozen, validated object built once from a TOML file and `SINK_*` variables.

Every problem is reported at once, each naming the dotted setting and how to set it; secrets
are `Secret` values that never print, and `Settings.redacted()` is the effective config to log
once at start.
"""

from __future__ import annotations

import difflib
import enum
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS as POSTGRES_RESERVED_WORDS
from sqlalchemy.engine import URL, make_url

from sink import kinds
from sink.errors import ConfigError
from sink.kinds import Takes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

logger = logging.getLogger(__name__)

ENV_PREFIX = "SINK_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SINK_CONFIG"
REDACTED = "**********"

# Accepted and ignored, with a warning: it kept a batch open while VACUUM held the lock that
# storing offsets on a data table needed; offsets now live in a state table of their own.
RETIRED_VACUUM_SETTING = "yield_to_vacuum_seconds"
# PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1 bytes): refuse them instead.
MAX_IDENTIFIER_BYTES = 63
# Largest n PostgreSQL accepts in VARCHAR(n).
MAX_VARCHAR_LENGTH = 10_485_760
# Largest precision PostgreSQL accepts in NUMERIC(p, s).
MAX_NUMERIC_PRECISION = 1000
# Fractional-second digits PostgreSQL keeps for TIME and TIMESTAMP.
MAX_TIME_PRECISION = 6

_STORED_IN_POSTGRES = "the sink stores positions in PostgreSQL with each batch"
# librdkafka settings that the sink derives from its own fields, or that would break
# exactly-once delivery if set by hand.
_MANAGED_KAFKA_SETTINGS = {
    "bootstrap.servers": "set kafka.bootstrap_servers instead",
    "group.id": "set kafka.group_id instead",
    "auto.offset.reset": "set kafka.start_from instead",
    "enable.auto.commit": _STORED_IN_POSTGRES,
    "enable.auto.offset.store": _STORED_IN_POSTGRES,
    "enable.partition.eof": "the sink does not handle end-of-partition events",
}
# librdkafka settings the sink accepts only with these values, and why.
_SAFE_KAFKA_VALUES = {
    "partition.assignment.strategy": (
        ("cooperative-sticky",),
        "the worker gives up partitions incrementally, once the batch that holds them has "
        'settled; an eager strategy ("range", "roundrobin") revokes every partition at each '
        'rebalance. Leave it unset (cooperative-sticky), or set group.protocol = "consumer"',
    ),
    "isolation.level": (
        ("read_committed",),
        "read_uncommitted would land messages of Kafka transactions that are later aborted",
    ),
}
# Fragments of librdkafka setting names whose values are secrets.
_SECRET_FRAGMENTS = ("password", "secret", "token", "credential", "key.pem", "oauthbearer.config")


class Format(enum.Enum):
    """How a message key or value is decoded."""

    JSON = "json"
    STRING = "string"
    BYTES = "bytes"
    # The Confluent wire format (magic byte 0, a 4-byte schema id, the payload), schemas read
    # from the schema registry ([schema_registry]).
    AVRO = "avro"
    PROTOBUF = "protobuf"
    JSON_SCHEMA = "json-schema"
    # Kafka Connect's JsonConverter with schemas.enable=true: {"schema": ..., "payload": ...}.
    CONNECT_JSON = "connect-json"


# Formats whose schemas come from the schema registry.
REGISTRY_FORMATS = frozenset({Format.AVRO, Format.PROTOBUF, Format.JSON_SCHEMA})
# Formats that decode to objects whose fields a column's source can name (`value.<field>`).
STRUCTURED_FORMATS = frozenset({Format.JSON, Format.CONNECT_JSON, *REGISTRY_FORMATS})
# The formats whose values carry or name their schemas: a table's columns may come from them.
SCHEMA_FORMATS = frozenset({Format.CONNECT_JSON, *REGISTRY_FORMATS})


class StartFrom(enum.Enum):
    """Where to start a partition when PostgreSQL holds no position for it."""

    EARLIEST = "earliest"
    LATEST = "latest"


class OutOfRange(enum.Enum):
    """What to do when a stored offset no longer exists in its partition (retention or
    DeleteRecords removed it, the log was truncated, or the topic was recreated)."""

    FAIL = "fail"  # stop, naming the partition, the stored offset and the log's range
    JUMP = "jump"  # go to the nearest offset that exists, logged as an error and counted


class ErrorPolicy(enum.Enum):
    """What happens to a message that cannot be decoded or mapped."""

    DEAD_LETTER_TOPIC = "dead-letter-topic"
    DEAD_LETTER_TABLE = "dead-letter-table"
    FAIL = "fail"


class LogFormat(enum.Enum):
    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class TombstonePolicy(enum.Enum):
    """What a message without a value does: delete the row with its key, or nothing."""

    DELETE = "delete"
    IGNORE = "ignore"


class Envelope(enum.Enum):
    """What a table's message values wrap their row in."""

    # Debezium's change event: {"before", "after", "source", "op", "ts_ms", ...}.
    DEBEZIUM = "debezium"


class TruncatePolicy(enum.Enum):
    """What a change event that truncated its source table (op "t") does to the table."""

    IGNORE = "ignore"
    TRUNCATE = "truncate"


class SourceKind(enum.Enum):
    """Where a column's value comes from."""

    VALUE = "value"
    KEY = "key"
    TOPIC = "kafka.topic"
    PARTITION = "kafka.partition"
    OFFSET = "kafka.offset"
    TIMESTAMP = "kafka.timestamp"
    RAW_KEY = "kafka.key"
    HEADERS = "kafka.headers"


@dataclass(frozen=True)
class Source:
    """A parsed column source: `value.a.b` is `Source(SourceKind.VALUE, ("a", "b"))`."""

    kind: SourceKind
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.kind.value, *self.path))


_SOURCE_SYNTAX = (
    'use "value", "value.<field>[.<field>...]", "key", "key.<field>", or one of '
    '"kafka.topic", "kafka.partition", "kafka.offset", "kafka.timestamp", "kafka.key", '
    '"kafka.headers"'
)


def parse_source(text: str) -> Source:
    """Parse a column source; raises ValueError with the accepted syntax."""
    parts = text.split(".")
    head = parts[0]
    if head in ("value", "key"):
        if any(not part.strip() for part in parts[1:]):
            raise ValueError(f"empty field name in {text!r}; {_SOURCE_SYNTAX}")
        return Source(SourceKind(head), tuple(parts[1:]))
    if head == "kafka" and len(parts) == 2:
        try:
            return Source(SourceKind(text))
        except ValueError:
            pass
    raise ValueError(f"unknown source {text!r}; {_SOURCE_SYNTAX}")


@dataclass(frozen=True)
class ColumnType:
    """A PostgreSQL column type as declared in the config, e.g. `NUMERIC(12,2)` or `TEXT[]`."""

    name: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    array: bool = False

    def __str__(self) -> str:
        args = [a for a in (self.length, self.precision, self.scale) if a is not None]
        text = self.name + (f"({','.join(map(str, args))})" if args else "")
        return text + ("[]" if self.array else "")


_TYPE_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z][A-Za-z0-9 ]*?)\s*"
    r"(?:\(\s*(?P<a>\d+)\s*(?:,\s*(?P<b>\d+)\s*)?\))?\s*"
    r"(?P<array>(?:\[\s*\]\s*)*)$"
)


def parse_column_type(text: str) -> ColumnType:
    """Parse a PostgreSQL type name; raises ValueError naming what is accepted."""
    match = _TYPE_RE.match(text)
    kind = kinds.configured(" ".join(match["name"].upper().split())) if match else None
    if match is None or kind is None:
        raise ValueError(f"unknown type {text!r}; known types: {kinds.known_types()}")
    if match["array"].count("[") > 1:
        raise ValueError(f"{text!r}: multi-dimensional arrays are not supported; use JSONB")
    a = int(match["a"]) if match["a"] is not None else None
    b = int(match["b"]) if match["b"] is not None else None
    array = bool(match["array"])
    name = kind.name
    if kind.takes is Takes.LENGTH and b is None:
        if a is not None and not 1 <= a <= MAX_VARCHAR_LENGTH:
            raise ValueError(f"{text!r}: {name}(n) needs 1 <= n <= {MAX_VARCHAR_LENGTH}")
        return ColumnType(name, length=a, array=array)
    if kind.takes is Takes.PRECISION_SCALE:
        if a is not None and not 1 <= a <= MAX_NUMERIC_PRECISION:
            raise ValueError(f"{text!r}: {name}(p,s) needs 1 <= p <= {MAX_NUMERIC_PRECISION}")
        if a is not None and b is not None and b > a:
            raise ValueError(f"{text!r}: {name}(p,s) needs 0 <= s <= p")
        return ColumnType(name, precision=a, scale=b if a is not None else None, array=array)
    if kind.takes is Takes.FRACTION_DIGITS and b is None:
        if a is not None and a > MAX_TIME_PRECISION:
            raise ValueError(f"{text!r}: fractional-second precision is at most 6")
        return ColumnType(name, precision=a, array=array)
    if a is not None:
        raise ValueError(f"{text!r}: {name} takes no parameters")
    return ColumnType(name, array=array)


@dataclass(frozen=True)
class Secret:
    """A secret string: `repr` and `str` never show it; `reveal()` does."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED


def is_secret_setting(name: str) -> bool:
    """Whether a librdkafka setting holds a secret (and so is redacted)."""
    lowered = name.lower()
    return any(fragment in lowered for fragment in _SECRET_FRAGMENTS)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str
    group_id: str = "pg-kafka-sink"
    start_from: StartFrom = StartFrom.EARLIEST
    out_of_range: OutOfRange = OutOfRange.FAIL
    # librdkafka settings passed through verbatim; secret ones (by name or read from a
    # settings_files entry) are in `secret_settings`.
    settings: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    secret_settings: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))

    def client_config(self) -> dict[str, str]:
        """The whole librdkafka configuration these settings describe, secrets revealed."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": self.group_id,
            "auto.offset.reset": self.start_from.value,
            **self.librdkafka_settings(),
        }

    def librdkafka_settings(self) -> dict[str, str]:
        """The pass-through librdkafka settings with secrets revealed (bootstrap servers, group
        and start position are the fields above)."""
        merged = dict(self.settings)
        merged.update((name, secret.reveal()) for name, secret in self.secret_settings.items())
        return merged


@dataclass(frozen=True)
class PostgresSettings:
    """`url` never carries the password: it is kept apart, as a `Secret`."""

    url: URL
    password: Secret | None = None
    # "schema.table" (or "table", in the default schema) whose comment holds the offsets;
    # None: derived from kafka.group_id (see sink.tables.state_table).
    state_table: str | None = None

    def engine_url(self) -> URL:
        """The SQLAlchemy URL to connect with, password included (psycopg 3 unless the
        configured URL names another driver). `repr()` of a URL masks the password."""
        if self.password is None:
            return self.url
        return self.url.set(password=self.password.reveal())


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """Where the schemas of `avro`, `protobuf` and `json-schema` topics are read: a registry
    speaking the Confluent API (Confluent Schema Registry, Apicurio's `/apis/ccompat/v7`,
    Redpanda, Karapace), with optional HTTP basic authentication."""

    url: str
    username: str | None = None
    password: Secret | None = None


@dataclass(frozen=True)
class BatchSettings:
    # 50,000: at a high rate, a commit and a new COPY per 10,000 messages left PostgreSQL
    # idle a tenth of the time (see docs/performance.md); at a low rate max_age_seconds
    # closes a batch first, so its latency does not change.
    max_messages: int = 50_000
    max_bytes: int = 16 * 1024 * 1024
    max_age_seconds: float = 1.0


@dataclass(frozen=True)
class HttpSettings:
    # All interfaces: the kubelet probes and Prometheus reach the pod from outside.
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True)
class ShutdownSettings:
    grace_seconds: float = 20.0


@dataclass(frozen=True)
class ErrorSettings:
    policy: ErrorPolicy = ErrorPolicy.FAIL
    dead_letter_topic: str | None = None
    # "schema.table"
    dead_letter_table: str | None = None


@dataclass(frozen=True)
class LogSettings:
    format: LogFormat = LogFormat.AUTO
    level: str = "INFO"


@dataclass(frozen=True)
class ColumnSettings:
    name: str
    type: ColumnType
    source: Source
    nullable: bool = True


@dataclass(frozen=True)
class IndexSettings:
    columns: tuple[str, ...]
    unique: bool = False
    name: str | None = None


@dataclass(frozen=True)
class TableSettings:
    """One `[[tables]]` entry: a target table, the topics feeding it and its columns."""

    schema: str
    name: str
    columns: tuple[ColumnSettings, ...]
    topics: tuple[str, ...] = ()
    # A librdkafka-style subscription regex: starts with "^", matched with re.search.
    topic_pattern: str | None = None
    primary_key: tuple[str, ...] = ()
    tombstones: TombstonePolicy = TombstonePolicy.IGNORE
    value_format: Format = Format.JSON
    key_format: Format = Format.STRING
    indexes: tuple[IndexSettings, ...] = ()
    # Values are change events whose `after` is the row (None: the value is the row).
    envelope: Envelope | None = None
    truncate: TruncatePolicy = TruncatePolicy.IGNORE
    # Columns from the topic's value schemas: the versions of `<topic>-value` they hold
    # (sink.schema_columns); () for columns the config lists.
    schema_versions: tuple[int, ...] = ()
    # Columns from the Kafka Connect schemas its values carry (sink.schema_columns).
    columns_from_messages: bool = False

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class PythonSettings:
    """Tables declared by a Python module instead of `[[tables]]` (see sink.tables)."""

    module: str


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    postgres: PostgresSettings
    tables: tuple[TableSettings, ...] = ()
    python: PythonSettings | None = None
    batch: BatchSettings = BatchSettings()
    http: HttpSettings = HttpSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    errors: ErrorSettings = ErrorSettings()
    log: LogSettings = LogSettings()
    schema_registry: SchemaRegistrySettings | None = None

    def redacted(self) -> dict[str, object]:
        """The effective configuration as plain JSON-able values, secrets masked."""
        return {
            "kafka": {
                "bootstrap_servers": self.kafka.bootstrap_servers,
                "group_id": self.kafka.group_id,
                "start_from": self.kafka.start_from.value,
                "out_of_range": self.kafka.out_of_range.value,
                "settings": {
                    **dict(self.kafka.settings),
                    **dict.fromkeys(self.kafka.secret_settings, REDACTED),
                },
            },
            "postgres": {
                "url": self.postgres.engine_url().render_as_string(hide_password=True),
                "state_table": self.postgres.state_table,
            },
            "batch": _plain(self.batch),
            "http": _plain(self.http),
            "shutdown": _plain(self.shutdown),
            "errors": _plain(self.errors),
            "log": _plain(self.log),
            "tables": [_table_summary(table) for table in self.tables],
            "python": None if self.python is None else {"module": self.python.module},
            "schema_registry": _registry_summary(self.schema_registry),
        }


def _registry_summary(registry: SchemaRegistrySettings | None) -> dict[str, object] | None:
    if registry is None:
        return None
    return {
        "url": registry.url,
        "username": registry.username,
        "password": None if registry.password is None else REDACTED,
    }


def _plain(section: object) -> dict[str, object]:
    return {
        name: value.value if isinstance(value, enum.Enum) else value
        for name, value in vars(section).items()
    }


def _table_summary(table: TableSettings) -> dict[str, object]:
    envelope = {}
    if table.envelope is not None:
        envelope = {"envelope": table.envelope.value, "truncate": table.truncate.value}
    return {
        "table": quoted_name(table.schema, table.name),
        "topics": list(table.topics),
        "topic_pattern": table.topic_pattern,
        "primary_key": list(table.primary_key),
        "tombstones": table.tombstones.value,
        "key_format": table.key_format.value,
        "value_format": table.value_format.value,
        **envelope,
        "columns": {
            c.name: f"{c.type}{'' if c.nullable else ' NOT NULL'} <- {c.source}"
            for c in table.columns
        },
    }


# --- names PostgreSQL reads differently unless quoted ---------------------------------------

# A name PostgreSQL takes as itself without quotes: lower-case ASCII letters, digits, _ and $,
# not first a digit or $ (it folds unquoted ASCII upper case to lower case; other characters
# are taken as they are).
_PLAIN_NAME = re.compile(r"[a-z_\u0080-\U0010ffff][a-z0-9_$\u0080-\U0010ffff]*")


def quoting_reason(name: str) -> str | None:
    """Why `name` must be double-quoted in SQL to mean itself, or None if it need not be."""
    if name.lower() in POSTGRES_RESERVED_WORDS:
        return "is a reserved word"
    if _PLAIN_NAME.fullmatch(name):
        return None
    if name[:1].isdigit() or name.startswith("$"):
        return "starts with a digit or $"
    if _PLAIN_NAME.fullmatch(name.lower()):
        return f"has upper-case letters (unquoted, PostgreSQL reads {name.lower()})"
    return "has characters other than letters, digits, _ and $"


def quoted_name(*parts: str) -> str:
    """A name as it must be written in SQL, each dotted part (schema, table, column) quoted
    when it needs to be: `quoted_name("public", "UX_Orders")` is `public."UX_Orders"`."""
    return ".".join(
        '"' + part.replace('"', '""') + '"' if quoting_reason(part) else part for part in parts
    )


# --- loading -------------------------------------------------------------------------------


def load_settings(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the TOML file (`path`, else `$SINK_CONFIG`, else none), apply `SINK_*` overrides,
    read secret files, and validate. Raises one ConfigError listing every problem, each naming
    the setting and the fix."""
    config_path = path if path is not None else environ.get(CONFIG_ENV)
    raw = _read_toml(Path(config_path)) if config_path else {}
    problems = _Problems()
    _apply_environment(raw, environ, problems)
    settings = _parse_settings(raw, problems)
    problems.raise_if_any()
    _warn_about_names_to_quote(settings)
    return settings


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as file:
            return dict(tomllib.load(file))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found (pass its path, or set {CONFIG_ENV})"
        ) from None
    except OSError as error:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None


class _Problems:
    """Every problem found in the configuration, at most one per setting: a value of the wrong
    type is not reported again by the checks that use it, nor the keys of a section that is
    not a table."""

    def __init__(self) -> None:
        self._found: dict[str, str] = {}

    def add(self, setting: str, message: str) -> None:
        if not any(outer in self._found for outer in _enclosing(setting)):
            self._found[setting] = f"{setting}: {message}"

    def raise_if_any(self) -> None:
        if self._found:
            raise ConfigError(*self._found.values())


def _enclosing(setting: str) -> list[str]:
    """`tables[0].name` is inside `tables`, `tables[0]` and itself."""
    cuts = [match.start() for match in re.finditer(r"[.\[]", setting)]
    return [setting[:cut] for cut in cuts] + [setting]


class _FromEnvironment(str):
    """A value set by a `SINK_*` variable: text by nature, converted by the setting's type
    (a string in the config file where a number, boolean or list belongs is refused)."""

    __slots__ = ()


def _apply_environment(
    raw: dict[str, object], environ: Mapping[str, str], problems: _Problems
) -> None:
    """Overlay `SINK_SECTION__KEY[__SUBKEY]=value` variables onto the parsed file.

    Variables without the `__` delimiter are not settings (except SINK_CONFIG): Kubernetes
    injects `SINK_PORT`, `SINK_SERVICE_HOST`... for a Service named "sink".
    """
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or ENV_DELIMITER not in variable:
            continue
        parts = variable[len(ENV_PREFIX) :].split(ENV_DELIMITER)
        section = parts[0].lower()
        if section == "tables":
            problems.add(
                variable,
                "[[tables]] can only be declared in the config file "
                "(or use [python] module, SINK_PYTHON__MODULE)",
            )
            continue
        if len(parts) > 2 and section == "kafka" and parts[1].lower() in _KAFKA_MAPS:
            keys = [section, parts[1].lower(), _librdkafka_name(ENV_DELIMITER.join(parts[2:]))]
        elif len(parts) == 2:
            keys = [section, parts[1].lower()]
        else:
            keys = []
        if not all(keys) or not keys:
            problems.add(
                variable,
                "not a setting; use SINK_<SECTION>__<KEY>, e.g. SINK_KAFKA__BOOTSTRAP_SERVERS, "
                "or SINK_KAFKA__SETTINGS__<librdkafka.name>",
            )
            continue
        _set_path(raw, keys, _FromEnvironment(environ[variable]), variable, problems)


_KAFKA_MAPS = ("settings", "settings_files")


def _librdkafka_name(name: str) -> str:
    """`sasl.password` stays as is; `SASL_PASSWORD` (for shells that reject dots) becomes
    `sasl.password`."""
    if "." in name or any(ch.islower() for ch in name):
        return name
    return name.lower().replace("_", ".")


def _set_path(
    raw: dict[str, object], keys: list[str], value: str, variable: str, problems: _Problems
) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            dotted = ".".join(keys[: depth + 1])
            problems.add(variable, f"{dotted} is not a table in the config file")
            return
        node = child
    node[keys[-1]] = value


_MISSING = object()
T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


class _Section:
    """Reads one TOML table, remembering which keys were used so unknown ones are reported.

    A value that does not fit is reported to `problems`, and its default (or an empty value)
    stands in for it, so that reading goes on and finds the other problems."""

    def __init__(self, raw: object, path: str, problems: _Problems, *, env: bool = True) -> None:
        self.path = path
        self.problems = problems
        self._env = env
        self._raw: dict[str, object] = {}
        if isinstance(raw, dict):
            self._raw = raw
        else:
            problems.add(path, f"must be a table, got {_show(raw)}")
        self._used: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.add(f"{self.path}.{key}", f"{message}{self.hint(key)}")

    def hint(self, key: str) -> str:
        if not self._env:
            return f" (in {self.path} of the config file)"
        head, _, rest = key.partition(".")
        variable = f"{ENV_PREFIX}{self.path.upper()}{ENV_DELIMITER}{head.upper()}"
        if rest:
            return f" (set {variable}{ENV_DELIMITER}{rest} or [{self.path}.{head}] {rest!r})"
        return f" (set {variable} or [{self.path}] {key})"

    def has(self, key: str) -> bool:
        return key in self._raw

    def get(self, key: str) -> object:
        self._used.add(key)
        return self._raw.get(key, _MISSING)

    def text(self, key: str, default: str | None = None) -> str:
        """The string; when required and missing or not a string, reported, and "" instead."""
        value = self.optional_text(key)
        if value is not None:
            return value
        if default is None:
            self.problem(key, "is required")
            return ""
        return default

    def optional_text(self, key: str) -> str | None:
        value = self.get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, f"must be a non-empty string, got {_show(value)}")
            return None
        return str(value)

    def integer(
        self, key: str, default: int, *, minimum: int = 1, maximum: int | None = None
    ) -> int:
        value = self.get(key)
        if value is _MISSING:
            return default
        number = _as_int(value)
        if number is None or number < minimum or (maximum is not None and number > maximum):
            wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            if maximum is not None:
                wanted = f"an integer from {minimum} to {maximum}"
            self.problem(key, f"must be {wanted}, got {_show(value)}{_unquote(value)}")
            return default
        return number

    def number(self, key: str, default: float, *, zero: bool = False) -> float:
        value = self.get(key)
        if value is _MISSING:
            return default
        number = _as_float(value)
        if number is None or not (number >= 0 if zero else number > 0):
            wanted = "0 or a positive number" if zero else "a positive number"
            self.problem(key, f"must be {wanted} of seconds, got {_show(value)}{_unquote(value)}")
            return default
        return number

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, _FromEnvironment) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        self.problem(key, f"must be true or false, got {_show(value)}{_unquote(value)}")
        return default

    def choice(self, key: str, kind: type[E], default: E) -> E:
        value = self.get(key)
        if value is _MISSING:
            return default
        try:
            return kind(value.lower() if isinstance(value, str) else value)
        except ValueError:
            allowed = " | ".join(repr(member.value) for member in kind)
            self.problem(key, f"must be one of {allowed}, got {_show(value)}")
            return default

    def text_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            fix = f" (write [{value!r}])".replace("'", '"') if isinstance(value, str) else ""
            self.problem(key, f"must be a list of non-empty strings, got {_show(value)}{fix}")
            return ()
        return tuple(value)

    def section(self, key: str) -> _Section:
        value = self.get(key)
        return _Section(
            {} if value is _MISSING else value, f"{self.path}.{key}", self.problems, env=self._env
        )

    def items(self) -> list[tuple[str, object]]:
        self._used.update(self._raw)
        return list(self._raw.items())

    def finish(self) -> None:
        """Reports each key that no read asked for, with the closest known one."""
        known = ", ".join(sorted(self._used))
        for key in sorted(set(self._raw) - self._used):
            close = difflib.get_close_matches(key, sorted(self._used), n=1)
            suggestion = f"; did you mean {close[0]!r}?" if close else ""
            self.problems.add(
                f"{self.path}.{key}",
                f"unknown setting{suggestion} (known in {self.path}: {known})",
            )


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _unquote(value: object) -> str:
    """The fix for a number or boolean written as a string in the config file."""
    if isinstance(value, str) and not isinstance(value, _FromEnvironment):
        return " (a string: write it without quotes)"
    return ""


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, _FromEnvironment):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            return None
    return None


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _FromEnvironment):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


_SECTIONS = (
    "kafka",
    "postgres",
    "batch",
    "http",
    "shutdown",
    "errors",
    "log",
    "tables",
    "python",
    "schema_registry",
)


def _parse_settings(raw: dict[str, object], problems: _Problems) -> Settings:
    for name in sorted(set(raw) - set(_SECTIONS)):
        close = difflib.get_close_matches(name, _SECTIONS, n=1)
        suggestion = f"; did you mean [{close[0]}]?" if close else ""
        problems.add(name, f"unknown section{suggestion} (known: {', '.join(_SECTIONS)})")

    def section(name: str) -> _Section:
        return _Section(raw.get(name, {}), name, problems)

    settings = Settings(
        kafka=_parse_kafka(section("kafka")),
        postgres=_parse_postgres(section("postgres")),
        tables=_parse_tables(raw.get("tables", _MISSING), problems),
        python=_parse_python(raw.get("python", _MISSING), problems),
        batch=_parse_batch(section("batch")),
        http=_parse_http(section("http")),
        shutdown=_parse_shutdown(section("shutdown")),
        errors=_parse_errors(section("errors")),
        log=_parse_log(section("log")),
        schema_registry=_parse_schema_registry(raw.get("schema_registry", _MISSING), problems),
    )
    _check_tables_present(settings, problems)
    _check_schema_registry(settings, problems)
    _check_topics_disjoint(settings.tables, problems)
    _check_dead_letters(settings, problems)
    return settings


def _parse_kafka(section: _Section) -> KafkaSettings:
    bootstrap = section.text("bootstrap_servers")
    group_id = section.text("group_id", "pg-kafka-sink")
    start_from = section.choice("start_from", StartFrom, StartFrom.EARLIEST)
    out_of_range = section.choice("out_of_range", OutOfRange, OutOfRange.FAIL)
    plain: dict[str, str] = {}
    secret: dict[str, Secret] = {}
    for name, value in section.section("settings").items():
        if _is_managed(section, "settings", name):
            continue
        text = _librdkafka_value(section, f"settings.{name}", value)
        if text is None:
            continue
        _check_safe(section, name, text)
        if is_secret_setting(name):
            secret[name] = Secret(text)
        else:
            plain[name] = text
    for name, value in section.section("settings_files").items():
        key = f"settings_files.{name}"
        if _is_managed(section, "settings_files", name):
            continue
        if name in plain or name in secret:
            section.problem(key, "is also in kafka.settings; keep one of the two")
        elif not isinstance(value, str) or not value:
            section.problem(key, f"must be a file path, got {_show(value)}")
        else:
            content = _read_secret_file(section.problems, f"kafka.{key}", value)
            if content is not None:
                secret[name] = Secret(content)
    section.finish()
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        start_from=start_from,
        out_of_range=out_of_range,
        settings=MappingProxyType(plain),
        secret_settings=MappingProxyType(secret),
    )


def _is_managed(section: _Section, table: str, name: str) -> bool:
    if name in _MANAGED_KAFKA_SETTINGS:
        section.problem(
            f"{table}.{name}", f"is managed by the sink: {_MANAGED_KAFKA_SETTINGS[name]}"
        )
        return True
    return False


def _check_safe(section: _Section, name: str, value: str) -> None:
    if name not in _SAFE_KAFKA_VALUES:
        return
    allowed, why = _SAFE_KAFKA_VALUES[name]
    if value.strip().lower() not in allowed:
        section.problem(f"settings.{name}", f"{value!r} is not supported: {why}")


def _librdkafka_value(section: _Section, key: str, value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    section.problem(key, f"must be a string, number or boolean, got {_show(value)}")
    return None


def _read_secret_file(problems: _Problems, setting: str, path: str) -> str | None:
    try:
        # Mounted secrets often end with a newline that is not part of the secret.
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        problems.add(
            setting,
            f"cannot read secret file {path!r}: {error} (mount the secret there, or fix the path)",
        )
        return None


def _parse_postgres(section: _Section) -> PostgresSettings:
    text = section.text("url")
    try:
        url = make_url(text)
    except sa.exc.ArgumentError:
        section.problem("url", "is not a URL; expected postgresql://user@host:5432/database")
        url = URL.create("postgresql")
    backend, _, driver = url.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        section.problem("url", f"must be a postgresql:// URL, got scheme {url.drivername!r}")
    url = url.set(drivername=f"postgresql+{driver or 'psycopg'}")
    passwords: list[tuple[str, str]] = []
    if url.password is not None:
        passwords.append(("postgres.url", str(url.password)))
        url = URL.create(
            url.drivername,
            username=url.username,
            host=url.host,
            port=url.port,
            database=url.database,
            query=url.query,
        )
    if section.has("password"):
        passwords.append(("postgres.password", section.text("password")))
    password_file = section.optional_text("password_file")
    if password_file is not None:
        content = _read_secret_file(section.problems, "postgres.password_file", password_file)
        if content is not None:
            passwords.append(("postgres.password_file", content))
    state_table = section.optional_text("state_table")
    if state_table is not None:
        schema, _, name = state_table.rpartition(".")
        for part in (schema or "public", name):
            problem = _identifier_problem(part)
            if problem:
                section.problem("state_table", f"{problem}; expected schema.table or table")
    section.finish()
    if len(passwords) > 1:
        given = " and ".join(name for name, _ in passwords)
        section.problems.add("postgres.password", f"given in {given}; keep only one")
    return PostgresSettings(
        url=url,
        password=Secret(passwords[0][1]) if passwords else None,
        state_table=state_table,
    )


def _parse_schema_registry(raw: object, problems: _Problems) -> SchemaRegistrySettings | None:
    if raw is _MISSING:
        return None
    section = _Section(raw, "schema_registry", problems)
    url = section.text("url").strip().rstrip("/")
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        section.problem("url", f"must be an http:// or https:// URL, got {url!r}")
    if parsed.username is not None or parsed.password is not None:
        section.problem("url", "must not hold credentials; set username and password_file instead")
    username = section.optional_text("username")
    passwords: list[tuple[str, str]] = []
    if section.has("password"):
        passwords.append(("schema_registry.password", section.text("password")))
    password_file = section.optional_text("password_file")
    if password_file is not None:
        setting = "schema_registry.password_file"
        content = _read_secret_file(problems, setting, password_file)
        if content is not None:
            passwords.append((setting, content))
    section.finish()
    if len(passwords) > 1:
        given = " and ".join(name for name, _ in passwords)
        problems.add("schema_registry.password", f"given in {given}; keep only one")
    if passwords and username is None:
        section.problem("username", "is required with a password (HTTP basic authentication)")
    if username is not None and not passwords:
        section.problem("password_file", "(or password) is required with a username")
    return SchemaRegistrySettings(
        url=url,
        username=username,
        password=Secret(passwords[0][1]) if passwords else None,
    )


def _parse_batch(section: _Section) -> BatchSettings:
    defaults = BatchSettings()
    batch = BatchSettings(
        max_messages=section.integer("max_messages", defaults.max_messages),
        max_bytes=section.integer("max_bytes", defaults.max_bytes),
        max_age_seconds=section.number("max_age_seconds", defaults.max_age_seconds),
    )
    if section.get(RETIRED_VACUUM_SETTING) is not _MISSING:
        logger.warning(
            "batch.%s is ignored: the offsets are stored in a state table of their own, so a "
            "commit never waits for VACUUM on a data table; remove the setting",
            RETIRED_VACUUM_SETTING,
        )
    section.finish()
    return batch


def _parse_http(section: _Section) -> HttpSettings:
    defaults = HttpSettings()
    http = HttpSettings(
        host=section.text("host", defaults.host),
        port=section.integer("port", defaults.port, minimum=0, maximum=65535),
    )
    section.finish()
    return http


def _parse_shutdown(section: _Section) -> ShutdownSettings:
    shutdown = ShutdownSettings(
        grace_seconds=section.number("grace_seconds", ShutdownSettings().grace_seconds)
    )
    section.finish()
    return shutdown


def _parse_errors(section: _Section) -> ErrorSettings:
    policy = section.choice("policy", ErrorPolicy, ErrorPolicy.FAIL)
    topic = section.optional_text("dead_letter_topic")
    table = section.optional_text("dead_letter_table")
    if policy is ErrorPolicy.DEAD_LETTER_TOPIC and topic is None:
        section.problem("dead_letter_topic", 'is required with policy = "dead-letter-topic"')
    if policy is ErrorPolicy.DEAD_LETTER_TABLE and table is None:
        section.problem("dead_letter_table", 'is required with policy = "dead-letter-table"')
    if table is not None:
        schema, _, name = table.rpartition(".")
        for part in (schema or "public", name):
            problem = _identifier_problem(part)
            if problem:
                section.problem("dead_letter_table", f"{problem}; expected schema.table")
        table = f"{schema or 'public'}.{name}"
    section.finish()
    return ErrorSettings(policy=policy, dead_letter_topic=topic, dead_letter_table=table)


def _parse_log(section: _Section) -> LogSettings:
    log_format = section.choice("format", LogFormat, LogFormat.AUTO)
    level = section.text("level", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        section.problem("level", f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    section.finish()
    return LogSettings(format=log_format, level=level)


def _parse_python(raw: object, problems: _Problems) -> PythonSettings | None:
    if raw is _MISSING:
        return None
    section = _Section(raw, "python", problems)
    python = PythonSettings(module=section.text("module"))
    section.finish()
    return python


def _identifier_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        return (
            f"{name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit "
            f"(it would be truncated)"
        )
    if "\x00" in name:
        return f"{name!r} contains a NUL character"
    return None


def _parse_tables(raw: object, problems: _Problems) -> tuple[TableSettings, ...]:
    if raw is _MISSING:
        return ()
    if not isinstance(raw, list):
        problems.add(
            "tables",
            f"must be an array of tables ([[tables]] in the config file), got {_show(raw)}",
        )
        return ()
    return tuple(
        _parse_table(_Section(item, f"tables[{i}]", problems, env=False))
        for i, item in enumerate(raw)
    )


def _parse_table(section: _Section) -> TableSettings:
    schema = _identifier(section, "schema", section.text("schema", "public"))
    name = _identifier(section, "name", section.text("name"))
    topics = section.text_list("topics")
    pattern = section.optional_text("topic_pattern")
    if not topics and pattern is None:
        section.problem("topics", 'is required: list the topics, or set topic_pattern = "^..."')
    if pattern is not None:
        _check_pattern(section, pattern)
    value_format = section.choice("value_format", Format, Format.JSON)
    key_format = section.choice("key_format", Format, Format.STRING)
    primary_key = section.text_list("primary_key")
    columns = _parse_columns(section, primary_key, key_format, value_format)
    if not columns and value_format in SCHEMA_FORMATS and not topics:
        section.problem(
            "topics", "must be listed: without columns, they come from the topic's value schema"
        )
    # Without columns or primary_key, the key schema names the key (sink.schema_columns).
    key_from_schema = (
        not columns
        and not primary_key
        and (key_format in REGISTRY_FORMATS or key_format is value_format is Format.CONNECT_JSON)
    )
    names = [column.name for column in columns if column.name]  # a missing name is reported
    for key_column in primary_key:
        # Without columns (reported) every key column would be reported as unknown too.
        if columns and key_column not in names:
            section.problem("primary_key", f"names {key_column!r}, which is not a column ({names})")
    if len(set(primary_key)) != len(primary_key):
        section.problem("primary_key", f"lists a column twice: {list(primary_key)}")
    keyed = bool(primary_key) or key_from_schema
    default_policy = TombstonePolicy.DELETE if keyed else TombstonePolicy.IGNORE
    tombstones = section.choice("tombstones", TombstonePolicy, default_policy)
    if tombstones is TombstonePolicy.DELETE and not keyed:
        section.problem(
            "tombstones", '"delete" needs a primary_key to delete by; set one, or "ignore"'
        )
    indexes = _parse_indexes(section, names)
    envelope, truncate = _parse_envelope(
        section, f"{schema}.{name}", keyed, key_format, value_format
    )
    section.finish()
    return TableSettings(
        schema=schema,
        name=name,
        columns=columns,
        topics=topics,
        topic_pattern=pattern,
        primary_key=primary_key,
        tombstones=tombstones,
        value_format=value_format,
        key_format=key_format,
        indexes=indexes,
        envelope=envelope,
        truncate=truncate,
    )


def _parse_envelope(
    section: _Section,
    name: str,
    keyed: bool,
    key_format: Format,
    value_format: Format,
) -> tuple[Envelope | None, TruncatePolicy]:
    truncate = section.choice("truncate", TruncatePolicy, TruncatePolicy.IGNORE)
    if not section.has("envelope"):
        if section.has("truncate"):
            section.problem(
                "truncate", f'applies to change events only; set envelope = "debezium" ({name})'
            )
        return None, truncate
    envelope = section.choice("envelope", Envelope, Envelope.DEBEZIUM)
    if not keyed:
        section.problem(
            "envelope",
            f'"{envelope.value}" upserts and deletes {name} by its primary key; set '
            f"primary_key to the key columns of the source table",
        )
    if value_format not in STRUCTURED_FORMATS:
        section.problem(
            "envelope",
            f'"{envelope.value}" reads the change event of a structured value, but '
            f'value_format is "{value_format.value}" ({name}); set value_format = "json" '
            f'(JsonConverter, schemas.enable=false), "connect-json" (schemas.enable=true) or '
            f'"avro"',
        )
    if key_format not in STRUCTURED_FORMATS:
        section.problem(
            "key_format",
            f'is "{key_format.value}", but Debezium keys {name}\'s change events by a struct '
            f'of its key columns; set key_format as value_format ("json", "connect-json" or '
            f'"avro", as the connector\'s key.converter writes it)',
        )
    return envelope, truncate


def _identifier(section: _Section, key: str, name: str) -> str:
    problem = _identifier_problem(name)
    if problem:
        section.problem(key, problem)
    return name


def _check_pattern(section: _Section, pattern: str) -> None:
    if not pattern.startswith("^"):
        section.problem(
            "topic_pattern",
            f"must start with '^' (librdkafka subscribes by regex only then), got {pattern!r}",
        )
    try:
        re.compile(pattern)
    except re.error as error:
        section.problem("topic_pattern", f"is not a valid regex: {error}")


def _parse_columns(
    table: _Section, primary_key: tuple[str, ...], key_format: Format, value_format: Format
) -> tuple[ColumnSettings, ...]:
    raw = table.get("columns")
    if raw in (_MISSING, []) and value_format in SCHEMA_FORMATS:
        return ()  # from the topic's value schemas while the worker runs (sink.schema_columns)
    if not isinstance(raw, list) or not raw:
        table.problem(
            "columns",
            "needs at least one [[tables.columns]] entry with name and type (or, with value_format "
            '"avro", "protobuf", "json-schema" or "connect-json", none: the value schemas give '
            "them)",
        )
        return ()
    columns: list[ColumnSettings] = []
    for i, item in enumerate(raw):
        section = _Section(item, f"{table.path}.columns[{i}]", table.problems, env=False)
        columns.append(_parse_column(section, primary_key, key_format, value_format))
        section.finish()
    seen: set[str] = set()
    for i, column in enumerate(columns):
        if column.name in seen:
            table.problem(f"columns[{i}].name", f"{column.name!r} is declared twice")
        seen.add(column.name)
    return tuple(columns)


# Stand in for a column's type or source that is reported, so that reading goes on.
_REPORTED_TYPE = ColumnType("TEXT")
_REPORTED_SOURCE = Source(SourceKind.VALUE)


def _parse_column(
    section: _Section, primary_key: tuple[str, ...], key_format: Format, value_format: Format
) -> ColumnSettings:
    name = _identifier(section, "name", section.text("name"))
    column_type = _REPORTED_TYPE
    try:
        column_type = parse_column_type(section.text("type"))
    except ValueError as error:
        section.problem("type", str(error))
    source = _REPORTED_SOURCE
    try:
        source = parse_source(section.text("source", f"value.{name}" if name else "value"))
    except ValueError as error:
        section.problem("source", str(error))
    for kind, fmt, setting in (
        (SourceKind.VALUE, value_format, "value_format"),
        (SourceKind.KEY, key_format, "key_format"),
    ):
        if source.kind is kind and source.path and fmt not in STRUCTURED_FORMATS:
            section.problem(
                "source",
                f'{str(source)!r} reads a field, which needs {setting} = "json", '
                f'"connect-json", "avro", "protobuf" or "json-schema" (it is {fmt.value!r}); '
                f"use source = {kind.value!r} for the whole {kind.value}",
            )
    in_key = name in primary_key
    nullable = section.boolean("nullable", not in_key)
    if in_key and nullable:
        section.problem("nullable", "a primary key column cannot be nullable")
    return ColumnSettings(name=name, type=column_type, source=source, nullable=nullable)


def _parse_indexes(table: _Section, names: list[str]) -> tuple[IndexSettings, ...]:
    raw = table.get("indexes")
    if raw is _MISSING:
        return ()
    if not isinstance(raw, list):
        table.problem("indexes", f"must be an array of [[tables.indexes]], got {_show(raw)}")
        return ()
    indexes: list[IndexSettings] = []
    for i, item in enumerate(raw):
        section = _Section(item, f"{table.path}.indexes[{i}]", table.problems, env=False)
        columns = section.text_list("columns")
        if not columns:
            section.problem("columns", "must list at least one column")
        for column in columns:
            # Without columns (reported) every indexed column would be reported too.
            if names and column not in names:
                section.problem("columns", f"names {column!r}, which is not a column ({names})")
        index_name = section.optional_text("name")
        if index_name is not None:
            _identifier(section, "name", index_name)
        indexes.append(
            IndexSettings(columns=columns, unique=section.boolean("unique", False), name=index_name)
        )
        section.finish()
    return tuple(indexes)


def _check_tables_present(settings: Settings, problems: _Problems) -> None:
    if settings.tables and settings.python is not None:
        problems.add(
            "tables", "declare tables either with [[tables]] or with [python] module, not both"
        )
    if not settings.tables and settings.python is None:
        problems.add(
            "tables",
            "no target table; declare at least one [[tables]] in the config file, or "
            "[python] module = ... (SINK_PYTHON__MODULE)",
        )


def _check_schema_registry(settings: Settings, problems: _Problems) -> None:
    if settings.schema_registry is not None:
        return
    for i, table in enumerate(settings.tables):
        formats = {"key_format": table.key_format, "value_format": table.value_format}
        for setting, fmt in formats.items():
            if fmt in REGISTRY_FORMATS:
                problems.add(
                    f"tables[{i}].{setting}",
                    f'"{fmt.value}" reads schemas from a schema registry; '
                    f"set [schema_registry] url (SINK_SCHEMA_REGISTRY__URL)",
                )


def _check_topics_disjoint(tables: tuple[TableSettings, ...], problems: _Problems) -> None:
    owner: dict[str, int] = {}
    for i, table in enumerate(tables):
        for topic in table.topics:
            if topic in owner and owner[topic] != i:
                first = tables[owner[topic]]
                problems.add(
                    f"tables[{i}].topics",
                    f"topic {topic!r} already feeds tables[{owner[topic]}] "
                    f"({quoted_name(first.schema, first.name)}); a topic feeds one table, so "
                    "remove it from one of them",
                )
            owner.setdefault(topic, i)
    qualified = [table.qualified_name for table in tables]
    for i, table in enumerate(tables):
        if table.qualified_name in qualified[:i]:
            problems.add(
                f"tables[{i}]",
                f"table {quoted_name(table.schema, table.name)} is declared twice",
            )


def _check_dead_letters(settings: Settings, problems: _Problems) -> None:
    topic = settings.errors.dead_letter_topic
    if topic is not None:
        for i, table in enumerate(settings.tables):
            pattern = table.topic_pattern
            if topic in table.topics or (pattern is not None and _matches(pattern, topic)):
                problems.add(
                    "errors.dead_letter_topic",
                    f"{topic!r} would be consumed again by tables[{i}] "
                    f"({quoted_name(table.schema, table.name)}); pick a topic outside its "
                    "topics/topic_pattern",
                )
    dead_table = settings.errors.dead_letter_table
    if dead_table is not None and dead_table in {t.qualified_name for t in settings.tables}:
        schema, _, name = dead_table.rpartition(".")
        problems.add(
            "errors.dead_letter_table",
            f"{quoted_name(schema, name)} is also a target table; pick another name",
        )


def _matches(pattern: str, topic: str) -> bool:
    """Whether a subscription regex matches `topic`; an invalid one (reported) matches none."""
    try:
        return re.search(pattern, topic) is not None
    except re.error:
        return False


def _warn_about_names_to_quote(settings: Settings) -> None:
    """Logs each schema, table and column name that PostgreSQL reads differently unless it is
    quoted, once: the sink creates it as written, so SQL written by hand must quote it."""
    named: dict[str, tuple[str, str]] = {}
    for i, table in enumerate(settings.tables):
        named.setdefault(table.schema, (f"tables[{i}].schema", "schema"))
        named.setdefault(table.name, (f"tables[{i}].name", "table"))
        for j, column in enumerate(table.columns):
            named.setdefault(column.name, (f"tables[{i}].columns[{j}].name", "column"))
    for setting, qualified in (
        ("postgres.state_table", settings.postgres.state_table),
        ("errors.dead_letter_table", settings.errors.dead_letter_table),
    ):
        schema, _, name = (qualified or "").rpartition(".")
        for part, what in ((schema, "schema"), (name, "table")):
            if part:
                named.setdefault(part, (setting, what))
    for name, (setting, what) in named.items():
        reason = quoting_reason(name)
        if reason is not None:
            logger.warning(
                "%s: %s name %r %s: it is created as %s and must be quoted in SQL the same way",
                setting,
                what,
                name,
                reason,
                quoted_name(name),
            )
