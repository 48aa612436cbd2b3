"""Settings: loading from file and environment, secrets, and errors that name the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sink.config import (
    ColumnType,
    ErrorPolicy,
    Format,
    LogFormat,
    Secret,
    Source,
    SourceKind,
    StartFrom,
    TombstonePolicy,
    load_settings,
    parse_column_type,
    parse_source,
    quoted_name,
)
from sink.errors import ConfigError

EXAMPLE = Path(__file__).parents[3] / "sink" / "example.toml"

MINIMAL = """
[kafka]
bootstrap_servers = "broker:9092"
[postgres]
url = "postgresql://sink@db:5432/sink"
[[tables]]
name = "events"
topics = ["events"]
primary_key = ["id"]
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "body"
type = "JSONB"
source = "value"
"""


def write(tmp_path: Path, text: str, name: str = "sink.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str = MINIMAL, **environ: str):  # type: ignore[no-untyped-def]
    return load_settings(write(tmp_path, text), environ)


def test_the_example_config_loads_with_every_section() -> None:
    settings = load_settings(EXAMPLE, {})
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.kafka.start_from is StartFrom.EARLIEST
    assert settings.errors.policy is ErrorPolicy.DEAD_LETTER_TOPIC
    assert settings.log.format is LogFormat.AUTO
    (table,) = settings.tables
    assert table.qualified_name == "public.events"
    assert table.primary_key == ("id",)
    assert table.tombstones is TombstonePolicy.DELETE
    assert [c.name for c in table.columns][:2] == ["id", "occurred_at"]
    assert table.columns[3].type == ColumnType("NUMERIC", precision=12, scale=2)
    assert table.columns[6].source == Source(SourceKind.OFFSET)
    assert table.indexes[0].columns == ("occurred_at",)


def test_defaults_apply_to_a_minimal_config(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.kafka.group_id == "pg-kafka-sink"
    assert settings.batch.max_messages == 50_000
    assert settings.batch.max_bytes == 16 * 1024 * 1024
    assert settings.batch.max_age_seconds == 1.0
    assert settings.postgres.state_table is None
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 8080)
    assert settings.shutdown.grace_seconds == 20
    assert settings.errors.policy is ErrorPolicy.FAIL
    table = settings.tables[0]
    assert table.schema == "public"
    assert (table.key_format, table.value_format) == (Format.STRING, Format.JSON)
    assert table.columns[0].source == Source(SourceKind.VALUE, ("id",))
    assert table.columns[0].nullable is False
    assert table.columns[1].nullable is True


def test_environment_overrides_the_file_with_typed_values(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        SINK_KAFKA__BOOTSTRAP_SERVERS="other:9092",
        SINK_BATCH__MAX_MESSAGES="500",
        SINK_BATCH__MAX_AGE_SECONDS="0.25",
        SINK_POSTGRES__STATE_TABLE="ops.offsets",
        SINK_KAFKA__START_FROM="latest",
        SINK_HTTP__PORT="9000",
    )
    assert settings.kafka.bootstrap_servers == "other:9092"
    assert settings.batch.max_messages == 500
    assert settings.batch.max_age_seconds == 0.25
    assert settings.postgres.state_table == "ops.offsets"
    assert settings.kafka.start_from is StartFrom.LATEST
    assert settings.http.port == 9000


def test_config_path_comes_from_sink_config_when_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    settings = load_settings(None, {"SINK_CONFIG": str(path)})
    assert settings.tables[0].name == "events"


def test_a_config_can_come_from_the_environment_alone() -> None:
    settings = load_settings(
        None,
        {
            "SINK_KAFKA__BOOTSTRAP_SERVERS": "broker:9092",
            "SINK_POSTGRES__URL": "postgresql://sink@db/sink",
            "SINK_PYTHON__MODULE": "mypkg.tables",
        },
    )
    assert settings.python is not None
    assert settings.python.module == "mypkg.tables"


def test_variables_without_the_delimiter_are_not_settings(tmp_path: Path) -> None:
    # Kubernetes injects these for a Service named "sink"; they must not break the worker.
    settings = load(tmp_path, SINK_PORT="tcp://10.0.0.1:8080", SINK_SERVICE_HOST="10.0.0.1")
    assert settings.http.port == 8080


def test_librdkafka_settings_pass_through_verbatim_from_file_and_environment(
    tmp_path: Path,
) -> None:
    text = MINIMAL.replace(
        "[postgres]",
        '[kafka.settings]\n"security.protocol" = "SASL_SSL"\n"fetch.wait.max.ms" = 50\n'
        '"enable.idempotence" = true\n[postgres]',
    )
    settings = load(
        tmp_path,
        text,
        **{"SINK_KAFKA__SETTINGS__client.id": "c1", "SINK_KAFKA__SETTINGS__SASL_USERNAME": "u"},
    )
    assert dict(settings.kafka.settings) == {
        "security.protocol": "SASL_SSL",
        "fetch.wait.max.ms": "50",
        "enable.idempotence": "true",
        "client.id": "c1",
        "sasl.username": "u",
    }
    config = settings.kafka.client_config()
    assert config["bootstrap.servers"] == "broker:9092"
    assert config["group.id"] == "pg-kafka-sink"
    assert config["auto.offset.reset"] == "earliest"


def test_secrets_come_from_mounted_files_without_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("s3cr3t\n")
    db_secret = tmp_path / "db-password"
    db_secret.write_text("p@ss/word\n")
    settings = load(
        tmp_path,
        SINK_KAFKA__SETTINGS_FILES__SASL_PASSWORD=str(secret),
        SINK_POSTGRES__PASSWORD_FILE=str(db_secret),
    )
    assert settings.kafka.librdkafka_settings() == {"sasl.password": "s3cr3t"}
    url = settings.postgres.engine_url()
    assert url.password == "p@ss/word"
    assert url.drivername == "postgresql+psycopg"


def test_a_password_in_the_url_is_kept_apart_as_a_secret(tmp_path: Path) -> None:
    settings = load(tmp_path, SINK_POSTGRES__URL="postgresql+psycopg2://sink:pw@db/sink")
    assert settings.postgres.url.password is None
    assert settings.postgres.engine_url().password == "pw"
    assert settings.postgres.engine_url().drivername == "postgresql+psycopg2"


def test_secrets_never_show_in_repr_or_the_redacted_config(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        SINK_POSTGRES__PASSWORD="db-secret-1",
        **{
            "SINK_KAFKA__SETTINGS__sasl.password": "kafka-secret-2",
            "SINK_KAFKA__SETTINGS__sasl.oauthbearer.client.secret": "kafka-secret-3",
        },
    )
    shown = repr(settings) + str(settings.redacted())
    for secret in ("db-secret-1", "kafka-secret-2", "kafka-secret-3"):
        assert secret not in shown
    redacted = settings.redacted()
    assert redacted["kafka"]["settings"]["sasl.password"] == "**********"  # type: ignore[index]
    assert redacted["postgres"] == {
        "url": "postgresql+psycopg://sink:***@db:5432/sink",
        "state_table": None,
    }
    assert str(Secret("x")) == "**********"


def test_redacted_config_summarises_tables(tmp_path: Path) -> None:
    tables = load(tmp_path).redacted()["tables"]
    assert tables == [
        {
            "table": "public.events",
            "topics": ["events"],
            "topic_pattern": None,
            "primary_key": ["id"],
            "tombstones": "delete",
            "key_format": "string",
            "value_format": "json",
            "columns": {"id": "BIGINT NOT NULL <- value.id", "body": "JSONB <- value"},
        }
    ]


def test_the_example_message_for_a_bad_number_names_field_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, SINK_BATCH__MAX_MESSAGES="abc")
    assert str(caught.value) == (
        "batch.max_messages: must be a positive integer, got 'abc' "
        "(set SINK_BATCH__MAX_MESSAGES or [batch] max_messages)"
    )


def replace(old: str, new: str) -> str:
    assert old in MINIMAL
    return MINIMAL.replace(old, new)


COLUMN = '[[tables.columns]]\nname = "id"\ntype = "BIGINT"'


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        (MINIMAL, {"SINK_BATCH__MAX_MESSAGES": "0"}, "batch.max_messages: must be a positive"),
        (MINIMAL, {"SINK_BATCH__MAX_BYTES": "1.5"}, "batch.max_bytes: must be a positive"),
        (MINIMAL, {"SINK_BATCH__MAX_AGE_SECONDS": "-1"}, "batch.max_age_seconds: must be a pos"),
        (
            MINIMAL,
            {"SINK_POSTGRES__STATE_TABLE": "ops." + "x" * 64},
            "postgres.state_table: " + repr("x" * 64) + " is longer than PostgreSQL's 63-byte",
        ),
        (MINIMAL, {"SINK_HTTP__PORT": "70000"}, "http.port: must be an integer from 0 to 65535"),
        (
            MINIMAL,
            {"SINK_KAFKA__SETTINGS__PARTITION_ASSIGNMENT_STRATEGY": "range"},
            "kafka.settings.partition.assignment.strategy: 'range' is not supported: the worker",
        ),
        (
            MINIMAL,
            {"SINK_KAFKA__SETTINGS__ISOLATION_LEVEL": "read_uncommitted"},
            "kafka.settings.isolation.level: 'read_uncommitted' is not supported: "
            "read_uncommitted would land messages of Kafka transactions that are later aborted",
        ),
        (MINIMAL, {"SINK_SHUTDOWN__GRACE_SECONDS": "soon"}, "shutdown.grace_seconds: must be"),
        (MINIMAL, {"SINK_KAFKA__START_FROM": "middle"}, "kafka.start_from: must be one of"),
        (MINIMAL, {"SINK_LOG__LEVEL": "LOUD"}, "log.level: must be DEBUG"),
        (MINIMAL, {"SINK_LOG__FORMAT": "xml"}, "log.format: must be one of"),
        (
            MINIMAL,
            {"SINK_ERRORS__POLICY": "dead-letter-topic"},
            "errors.dead_letter_topic: is required with policy",
        ),
        (
            MINIMAL,
            {"SINK_ERRORS__POLICY": "dead-letter-table"},
            "errors.dead_letter_table: is required with policy",
        ),
        (
            MINIMAL,
            {
                "SINK_ERRORS__POLICY": "dead-letter-topic",
                "SINK_ERRORS__DEAD_LETTER_TOPIC": "events",
            },
            "errors.dead_letter_topic: 'events' would be consumed again by tables[0]",
        ),
        (
            MINIMAL,
            {"SINK_ERRORS__DEAD_LETTER_TABLE": "public.events"},
            "errors.dead_letter_table: public.events is also a target table",
        ),
        (MINIMAL, {"SINK_BATCH__MAX_MESAGES": "5"}, "batch.max_mesages: unknown setting; did you"),
        (MINIMAL, {"SINK_TABLES__0__NAME": "x"}, "SINK_TABLES__0__NAME: [[tables]] can only be"),
        (MINIMAL, {"SINK_BATCH__MAX__X": "5"}, "SINK_BATCH__MAX__X: not a setting"),
        (MINIMAL, {"SINK_KAFKA__SETTINGS__group.id": "g"}, "kafka.settings.group.id: is managed"),
        (
            MINIMAL,
            {"SINK_KAFKA__SETTINGS__enable.auto.commit": "true"},
            "kafka.settings.enable.auto.commit: is managed by the sink",
        ),
        (
            MINIMAL,
            {"SINK_KAFKA__SETTINGS_FILES__sasl.password": "/nonexistent/secret"},
            "kafka.settings_files.sasl.password: cannot read secret file '/nonexistent/secret'",
        ),
        (
            MINIMAL,
            {"SINK_POSTGRES__PASSWORD_FILE": "/nonexistent/pw"},
            "postgres.password_file: cannot read secret file",
        ),
        (MINIMAL, {"SINK_POSTGRES__URL": "mysql://a@b/c"}, "postgres.url: must be a postgresql://"),
        (MINIMAL, {"SINK_POSTGRES__URL": "not a url"}, "postgres.url: is not a URL"),
        (
            MINIMAL,
            {"SINK_POSTGRES__URL": "postgresql://a:x@b/c", "SINK_POSTGRES__PASSWORD": "y"},
            "postgres.password: given in postgres.url and postgres.password; keep only one",
        ),
        (
            replace('bootstrap_servers = "broker:9092"', ""),
            {},
            "kafka.bootstrap_servers: is required (set SINK_KAFKA__BOOTSTRAP_SERVERS or "
            "[kafka] bootstrap_servers)",
        ),
        (replace("[postgres]", "[kafak]\nx = 1\n[postgres]"), {}, "kafak: unknown section; did"),
        (replace('url = "', 'uri = "x"\nurl = "'), {}, "postgres.uri: unknown setting; did you"),
        (replace('type = "BIGINT"', 'type = "BIGNUM"'), {}, "tables[0].columns[0].type: unknown"),
        (
            MINIMAL + '[[tables.columns]]\nname = "c"\ntype = "TEXT[][]"\n',
            {},
            "tables[0].columns[2].type: 'TEXT[][]': multi-dimensional arrays",
        ),
        (
            MINIMAL + '[[tables.columns]]\nname = "c"\ntype = "VARCHAR(0)"\n',
            {},
            "tables[0].columns[2].type: 'VARCHAR(0)': VARCHAR(n) needs 1 <= n",
        ),
        (
            MINIMAL + '[[tables.columns]]\nname = "c"\ntype = "NUMERIC(2,5)"\n',
            {},
            "tables[0].columns[2].type: 'NUMERIC(2,5)': NUMERIC(p,s) needs 0 <= s <= p",
        ),
        (
            MINIMAL + '[[tables.columns]]\nname = "c"\ntype = "TEXT(4)"\n',
            {},
            "tables[0].columns[2].type: 'TEXT(4)': TEXT takes no parameters",
        ),
        (
            replace('source = "value"', 'source = "payload.x"'),
            {},
            "tables[0].columns[1].source: unknown source 'payload.x'",
        ),
        (
            replace('source = "value"', 'source = "value..x"'),
            {},
            "tables[0].columns[1].source: empty field name",
        ),
        (
            replace('source = "value"', 'source = "kafka.lag"'),
            {},
            "tables[0].columns[1].source: unknown source 'kafka.lag'",
        ),
        (
            replace('topics = ["events"]', 'value_format = "string"\ntopics = ["events"]'),
            {},
            "tables[0].columns[0].source: 'value.id' reads a field, which needs value_format",
        ),
        (replace('topics = ["events"]', ""), {}, "tables[0].topics: is required"),
        (
            replace('topics = ["events"]', 'topic_pattern = "events.*"'),
            {},
            "tables[0].topic_pattern: must start with '^'",
        ),
        (
            replace('topics = ["events"]', 'topic_pattern = "^events(["'),
            {},
            "tables[0].topic_pattern: is not a valid regex",
        ),
        (replace('topics = ["events"]', "topics = [1]"), {}, "tables[0].topics: must be a list"),
        (
            replace('primary_key = ["id"]', 'primary_key = ["uid"]'),
            {},
            "tables[0].primary_key: names 'uid', which is not a column",
        ),
        (
            replace('primary_key = ["id"]', 'tombstones = "delete"'),
            {},
            'tables[0].tombstones: "delete" needs a primary_key',
        ),
        (
            replace('type = "BIGINT"', 'type = "BIGINT"\nnullable = true'),
            {},
            "tables[0].columns[0].nullable: a primary key column cannot be nullable",
        ),
        (
            replace('type = "BIGINT"', 'type = "BIGINT"\nnulable = true'),
            {},
            "tables[0].columns[0].nulable: unknown setting; did you mean 'nullable'?",
        ),
        (
            replace('name = "events"', f'name = "{"e" * 64}"'),
            {},
            "tables[0].name: 'eeee",
        ),
        (
            MINIMAL + COLUMN + "\n",
            {},
            "tables[0].columns[2].name: 'id' is declared twice",
        ),
        (
            MINIMAL + '[[tables.indexes]]\ncolumns = ["ts"]\n',
            {},
            "tables[0].indexes[0].columns: names 'ts', which is not a column",
        ),
        (
            MINIMAL.split("[[tables.columns]]", maxsplit=1)[0].replace('primary_key = ["id"]', ""),
            {},
            "tables[0].columns: needs at least one",
        ),
        (
            MINIMAL + '[[tables]]\nname = "other"\ntopics = ["events"]\n' + COLUMN + "\n",
            {},
            "tables[1].topics: topic 'events' already feeds tables[0] (public.events)",
        ),
        (
            MINIMAL + '[[tables]]\nname = "events"\ntopics = ["x"]\n' + COLUMN + "\n",
            {},
            "tables[1]: table public.events is declared twice",
        ),
        (MINIMAL.split("[[tables]]", maxsplit=1)[0], {}, "tables: no target table"),
        (MINIMAL + '[python]\nmodule = "m"\n', {}, "tables: declare tables either with"),
    ],
)
def test_each_invalid_setting_is_refused_naming_it(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ)
    assert expected in str(caught.value)


def test_a_missing_config_file_says_how_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found .*SINK_CONFIG"):
        load_settings(tmp_path / "absent.toml", {})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_settings(write(tmp_path, "[kafka\n"), {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bigint", "BIGINT"),
        ("int8", "BIGINT"),
        ("INT", "INTEGER"),
        ("smallint", "SMALLINT"),
        ("varchar(20)", "VARCHAR(20)"),
        ("character varying (20)", "VARCHAR(20)"),
        ("VARCHAR", "VARCHAR"),
        ("numeric(12, 2)", "NUMERIC(12,2)"),
        ("decimal(5)", "NUMERIC(5)"),
        ("NUMERIC", "NUMERIC"),
        ("double precision", "DOUBLE PRECISION"),
        ("float8", "DOUBLE PRECISION"),
        ("timestamp with time zone", "TIMESTAMPTZ"),
        ("timestamptz(3)", "TIMESTAMPTZ(3)"),
        ("TIMESTAMP", "TIMESTAMP"),
        ("text[]", "TEXT[]"),
        ("BIGINT []", "BIGINT[]"),
        ("jsonb", "JSONB"),
        ("uuid", "UUID"),
        ("bytea", "BYTEA"),
        ("interval", "INTERVAL"),
        ("bool", "BOOLEAN"),
    ],
)
def test_postgresql_type_names_parse(text: str, expected: str) -> None:
    assert str(parse_column_type(text)) == expected


@pytest.mark.parametrize("text", ["", "STRING", "VARCHAR(a)", "TIMESTAMP(9)", "INT[", "SERIAL"])
def test_unknown_or_malformed_types_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"type|precision|VARCHAR"):
        parse_column_type(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value", Source(SourceKind.VALUE)),
        ("value.a.b", Source(SourceKind.VALUE, ("a", "b"))),
        ("key", Source(SourceKind.KEY)),
        ("key.id", Source(SourceKind.KEY, ("id",))),
        ("kafka.topic", Source(SourceKind.TOPIC)),
        ("kafka.headers", Source(SourceKind.HEADERS)),
        ("kafka.key", Source(SourceKind.RAW_KEY)),
    ],
)
def test_sources_parse(text: str, expected: Source) -> None:
    assert parse_source(text) == expected
    assert str(expected) == text


def test_the_retired_vacuum_setting_is_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load(tmp_path, SINK_BATCH__YIELD_TO_VACUUM_SECONDS="5")
    assert "batch.yield_to_vacuum_seconds is ignored" in caplog.text


def test_every_problem_is_reported_at_once_each_once(tmp_path: Path) -> None:
    text = replace('url = "', 'uri = "x"\nurl = "').replace(
        'type = "BIGINT"', 'type = "BIGNUM"\nnulable = false'
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text + "[http]\nprt = 5\n", SINK_BATCH__MAX_MESSAGES="abc")
    message = str(caught.value)
    expected = [
        "postgres.uri: unknown setting; did you mean 'url'?",
        "tables[0].columns[0].type: unknown type 'BIGNUM'",
        "tables[0].columns[0].nulable: unknown setting; did you mean 'nullable'?",
        "batch.max_messages: must be a positive integer, got 'abc' "
        "(set SINK_BATCH__MAX_MESSAGES or [batch] max_messages)",
        "http.prt: unknown setting; did you mean 'port'?",
    ]
    for problem in expected:
        assert message.count(problem) == 1, message
    assert len(message.splitlines()) == len(expected) + 1  # a heading, then one line each
    assert len(caught.value.problems) == len(expected)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("[postgres]", '[http]\nport = "18481"\n[postgres]', "http.port: must be an integer"),
        (
            'topics = ["events"]',
            'topics = "events"',
            "tables[0].topics: must be a list of non-empty strings, got 'events'",
        ),
        (
            'primary_key = ["id"]',
            'primary_key = "id"',
            "tables[0].primary_key: must be a list of non-empty strings, got 'id'",
        ),
        (
            'type = "BIGINT"',
            'type = "BIGINT"\nnullable = "false"',
            "tables[0].columns[0].nullable: must be true or false, got 'false'",
        ),
        (
            "[postgres]",
            '[batch]\nmax_age_seconds = "0.5"\n[postgres]',
            "batch.max_age_seconds: must be a positive number",
        ),
    ],
)
def test_a_string_where_the_file_needs_a_number_boolean_or_list_is_refused(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, replace(old, new))
    assert expected in str(caught.value)


def test_environment_values_are_strings_converted_by_the_settings_type(tmp_path: Path) -> None:
    settings = load(tmp_path, SINK_HTTP__PORT="18481", SINK_BATCH__MAX_AGE_SECONDS="0.5")
    assert (settings.http.port, settings.batch.max_age_seconds) == (18481, 0.5)
    with pytest.raises(ConfigError, match=r"http\.port: must be an integer"):
        load(tmp_path, replace("[postgres]", '[http]\nport = "18481"\n[postgres]'))


def test_names_that_need_quoting_are_accepted_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        replace('name = "events"', 'schema = "Sales"\nname = "UX_Orders"').replace(
            'name = "body"', 'name = "order"'
        )
        + '[[tables]]\nschema = "Sales"\nname = "plain"\ntopics = ["b"]\n'
        + '[[tables.columns]]\nname = "Say \\"hi\\""\ntype = "TEXT"\n'
    )
    with caplog.at_level("WARNING", logger="sink.config"):
        settings = load(tmp_path, text)
    assert [t.name for t in settings.tables] == ["UX_Orders", "plain"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4, warnings  # Sales (once, though two tables use it), and 3 names
    for shown in ('"Sales"', '"UX_Orders"', '"order"', '"Say ""hi"""'):
        (warning,) = [w for w in warnings if f"created as {shown}" in w]
        assert "must be quoted in SQL" in warning
    assert not [w for w in warnings if "plain" in w or "'id'" in w]


def test_errors_that_name_a_table_write_it_as_postgresql_needs(tmp_path: Path) -> None:
    text = replace('name = "events"', 'name = "UX_Orders"') + (
        '[[tables]]\nname = "other"\ntopics = ["events"]\n' + COLUMN + "\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert 'already feeds tables[0] (public."UX_Orders")' in str(caught.value)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("public", "events"), "public.events"),
        (("public", "UX_Orders"), 'public."UX_Orders"'),
        (("Sales", "t_1$"), '"Sales".t_1$'),
        (("order",), '"order"'),
        (("1st",), '"1st"'),
        (("my table",), '"my table"'),
        (('say "hi"',), '"say ""hi"""'),
        (("café",), "café"),
    ],
)
def test_names_are_quoted_only_where_postgresql_needs_it(
    parts: tuple[str, ...], expected: str
) -> None:
    assert quoted_name(*parts) == expected
