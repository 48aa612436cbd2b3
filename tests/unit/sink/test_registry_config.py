"""The [schema_registry] section and the registry formats in [[tables]]: loaded from the file
and the environment, secrets kept out of the logged configuration, and errors that name the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sink.config import Format, Source, SourceKind, load_settings
from sink.errors import ConfigError

BASE = """
[kafka]
bootstrap_servers = "broker:9092"
[postgres]
url = "postgresql://sink@db:5432/sink"
[[tables]]
name = "orders"
topics = ["orders"]
primary_key = ["id"]
key_format = "avro"
value_format = "{value_format}"
[[tables.columns]]
name = "id"
type = "BIGINT"
[[tables.columns]]
name = "city"
type = "TEXT"
source = "value.address.city"
"""


def write(tmp_path: Path, registry: str = "", value_format: str = "avro") -> Path:
    path = tmp_path / "sink.toml"
    path.write_text(BASE.format(value_format=value_format) + registry)
    return path


def test_registry_formats_read_fields_and_the_registry_comes_with_its_secret(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "registry-password"
    secret.write_text("s3cret\n")
    path = write(
        tmp_path,
        f'[schema_registry]\nurl = "https://sr.example:8081/"\nusername = "sink"\n'
        f'password_file = "{secret}"\n',
        value_format="protobuf",
    )
    settings = load_settings(path, {})
    (table,) = settings.tables
    assert (table.key_format, table.value_format) == (Format.AVRO, Format.PROTOBUF)
    assert table.columns[1].source == Source(SourceKind.VALUE, ("address", "city"))
    registry = settings.schema_registry
    assert registry is not None
    assert (registry.url, registry.username) == ("https://sr.example:8081", "sink")
    assert registry.password is not None and registry.password.reveal() == "s3cret"
    logged = json.dumps(settings.redacted())
    assert "s3cret" not in logged and "s3cret" not in repr(settings)
    assert settings.redacted()["schema_registry"] == {
        "url": "https://sr.example:8081",
        "username": "sink",
        "password": "**********",
    }


def test_the_registry_url_comes_from_the_environment_as_every_setting(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, value_format="json-schema"),
        {"SINK_SCHEMA_REGISTRY__URL": "http://registry:8080/apis/ccompat/v7"},
    )
    assert settings.schema_registry is not None
    assert settings.schema_registry.url == "http://registry:8080/apis/ccompat/v7"
    assert settings.schema_registry.password is None


def test_a_registry_format_without_a_registry_names_the_setting_to_add(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path), {})
    assert "tables[0].key_format" in str(caught.value)
    assert "SINK_SCHEMA_REGISTRY__URL" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('url = "registry:8081"', "schema_registry.url: must be an http:// or https:// URL"),
        ('url = "http://u:p@registry:8081"', "must not hold credentials"),
        ('url = "http://registry"\nusername = "u"', "schema_registry.password_file"),
        ('url = "http://registry"\npassword = "p"', "schema_registry.username: is required"),
        (
            'url = "http://registry"\nusername = "u"\npassword = "p"\npassword_file = "/dev/null"',
            "keep only one",
        ),
        (
            'url = "http://registry"\nusername = "u"\npassword_file = "/nope"',
            "schema_registry.password_file: cannot read secret file '/nope'",
        ),
        ('url = "http://registry"\nuser = "u"', "unknown setting; did you mean 'username'?"),
    ],
)
def test_a_wrong_registry_section_is_refused_naming_the_setting(
    tmp_path: Path, section: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"[schema_registry]\n{section}\n"), {})
    assert says in str(caught.value)


def test_a_field_source_needs_a_format_with_fields(tmp_path: Path) -> None:
    path = write(tmp_path, '[schema_registry]\nurl = "http://registry"\n', value_format="bytes")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert '"json", "connect-json", "avro", "protobuf" or "json-schema"' in str(caught.value)
