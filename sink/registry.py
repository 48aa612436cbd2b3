"""Schema registry: a key or value in the Confluent wire format (magic byte 0, a 4-byte big-endian
schema id, then Avro, Protobuf or JSON Schema JSON) read into the Python values mapping takes.

Schemas are fetched once per id and kept: an id never changes meaning in a registry.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import timezone
from functools import partial
from typing import Any, Protocol

import fastavro
import jsonschema
import orjson
import referencing
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError
from google.protobuf import (
    any_pb2,
    api_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    message_factory,
    source_context_pb2,
    struct_pb2,
    timestamp_pb2,
    type_pb2,
    wrappers_pb2,
)
from google.protobuf import json_format as protobuf_json
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message as ProtobufMessage

from sink.config import Format, SchemaRegistrySettings
from sink.debezium import SEMANTIC_TYPES
from sink.errors import (
    BadPayload,
    Mismatch,
    SchemaChangedError,
    SchemaRegistryRefusedError,
    SchemaRegistryUnavailableError,
    SinkError,
)
from sink.exactjson import exact_loads, numbers_round_trip

try:  # the registry client's HTTP library: httpx2 on Python 3.10+, httpx before
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - Python 3.9
    from httpx import TransportError  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

UTC = timezone.utc
MAGIC_BYTE = 0
# Magic byte and schema id.
HEADER_BYTES = 5
# The registry's error code for an id it does not hold (HTTP 404 with any other code is a wrong
# URL: a path that is not the registry's API).
SCHEMA_NOT_FOUND = 40403
# Its codes for a subject, or a version of it, that it does not hold.
SUBJECT_NOT_FOUND, VERSION_NOT_FOUND = 40401, 40402
# Seconds an HTTP request to the registry may take; a slower one is an outage, retried with the
# batch (the client's own retries are kept short so the worker's loop stays responsive).
REQUEST_TIMEOUT_SECONDS = 10
CLIENT_RETRIES = 2
CLIENT_RETRY_WAIT_MS = 200
CLIENT_RETRY_MAX_WAIT_MS = 1000
_RETRIABLE_STATUS = frozenset({408, 429})
_SCHEMA_TYPES = {Format.AVRO: "AVRO", Format.PROTOBUF: "PROTOBUF", Format.JSON_SCHEMA: "JSON"}
_TYPE_NAMES = {"AVRO": "an Avro", "PROTOBUF": "a Protobuf", "JSON": "a JSON Schema"}
# Files a Protobuf schema may import without a reference: the well-known types, each after
# the files it imports.
_WELL_KNOWN_FILES = (
    any_pb2,
    source_context_pb2,
    type_pb2,
    api_pb2,
    descriptor_pb2,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
_WELL_KNOWN_NAMES = frozenset(module.DESCRIPTOR.name for module in _WELL_KNOWN_FILES)

Reader = Callable[[memoryview], object]


class RegistryClient(Protocol):
    """What the sink asks of a registry client (confluent-kafka's SchemaRegistryClient)."""

    def get_schema(
        self, schema_id: int, subject_name: str | None = None, fmt: str | None = None
    ) -> Any: ...

    def get_version(
        self, subject_name: str, version: Any, deleted: bool = False, fmt: str | None = None
    ) -> Any: ...

    def get_versions(self, subject_name: str) -> list[int]: ...


def registry_client(settings: SchemaRegistrySettings) -> SchemaRegistryClient:
    conf: dict[str, object] = {
        "url": settings.url,
        "timeout": REQUEST_TIMEOUT_SECONDS,
        "max.retries": CLIENT_RETRIES,
        "retries.wait.ms": CLIENT_RETRY_WAIT_MS,
        "retries.max.wait.ms": CLIENT_RETRY_MAX_WAIT_MS,
    }
    if settings.username is not None and settings.password is not None:
        conf["basic.auth.user.info"] = f"{settings.username}:{settings.password.reveal()}"
    return SchemaRegistryClient(conf)


class SchemaDecoders:
    """Reads wire-format keys and values, one reader per (format, schema id), built on first
    sight of the id and kept. Safe to share between the worker's threads.

    `changes` holds, for each topic whose table takes its columns from its schemas, what a value
    schema holds that the table does not (sink.schema_columns.changes): the first value of each
    schema id on such a topic is checked, and SchemaChangedError raised while the table lacks
    something."""

    def __init__(
        self,
        client: RegistryClient,
        url: str,
        changes: Mapping[str, Callable[[Any], str | None]] | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._readers: dict[tuple[Format, int], Reader] = {}
        # The Avro schemas read so far, by id, as fastavro parsed them (for sink.avroline).
        self._avro_schemas: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._changes = dict(changes or {})
        # The schema ids whose values each such topic's table holds.
        self._held: dict[str, set[int]] = {topic: set() for topic in self._changes}

    @classmethod
    def from_settings(
        cls,
        settings: SchemaRegistrySettings,
        changes: Mapping[str, Callable[[Any], str | None]] | None = None,
    ) -> SchemaDecoders:
        return cls(registry_client(settings), settings.url, changes)

    def read(self, part: str, fmt: Format, data: bytes, topic: str = "") -> object:
        """The decoded key or value (`part`) of a message of `topic`; raises BadPayload for
        bytes that do not read, SchemaRegistryUnavailableError while the registry cannot
        answer, SchemaChangedError for a value whose table lacks what its schema holds."""
        if len(data) < HEADER_BYTES or data[0] != MAGIC_BYTE:
            raise BadPayload(_not_wire_format(part, fmt, data), "magic-byte")
        schema_id = int.from_bytes(data[1:HEADER_BYTES], "big")
        reader = self._readers.get((fmt, schema_id))
        if reader is None:
            reader = self._reader(part, fmt, schema_id)
        held = self._held.get(topic) if part == "value" else None
        if held is not None and schema_id not in held:
            self._check(topic, fmt, schema_id)
        try:
            return reader(memoryview(data)[HEADER_BYTES:])
        except BadPayload as error:
            raise BadPayload(
                f"{part} (schema id {schema_id}): {error.reason}", error.code
            ) from None

    def avro_schema(self, schema_id: int) -> Any:
        """The Avro schema of an id read so far, as fastavro parsed it; None for another."""
        return self._avro_schemas.get(schema_id)

    def _check(self, topic: str, fmt: Format, schema_id: int) -> None:
        """Raises SchemaChangedError unless the topic's table holds values of this schema."""
        with self._lock:
            schema = self._fetch("value", fmt, schema_id)
        change = self._changes[topic](self._parsed_schema(fmt, schema_id, schema))
        if change is not None:
            raise SchemaChangedError(topic, schema_id, change)
        self._held[topic].add(schema_id)

    def versions(self, subject: str, fmt: Format) -> list[tuple[int, Any]]:
        """Every version registered under `subject`, oldest first, each with its schema parsed
        as the readers parse it (Avro: fastavro's form; Protobuf: its file's descriptor; JSON
        Schema: the document); [] when the registry holds no such subject."""
        return [(number, self._version(subject, fmt, number)) for number in self.numbers(subject)]

    def numbers(self, subject: str) -> list[int]:
        """The version numbers registered under `subject` now."""
        numbers = self._ask(
            self._client.get_versions,
            f"the versions of {subject}",
            subject,
            missing=(SUBJECT_NOT_FOUND,),
        )
        return sorted(numbers or ())

    def _version(self, subject: str, fmt: Format, version: int) -> Any:
        wanted = "serialized" if fmt is Format.PROTOBUF else None
        registered = self._ask(
            partial(self._client.get_version, fmt=wanted),
            f"version {version} of {subject}",
            subject,
            version,
            missing=(SUBJECT_NOT_FOUND, VERSION_NOT_FOUND),
        )
        if registered is None:  # deleted since the list was read
            raise SchemaRegistryUnavailableError(
                f"the schema registry at {self._url} listed version {version} of {subject}, "
                f"then no longer held it"
            )
        schema, schema_id = registered.schema, registered.schema_id
        found = schema.schema_type or "AVRO"
        if found != _SCHEMA_TYPES[fmt]:
            raise SchemaRegistryRefusedError(
                f"{subject} holds {_TYPE_NAMES.get(found, found)} schema, but its format is "
                f'"{fmt.value}"; fix the table\'s key_format or value_format'
            )
        return self._parsed_schema(fmt, schema_id, schema)

    def _parsed_schema(self, fmt: Format, schema_id: int, schema: Any) -> Any:
        """The schema alone as `versions` gives it (a JSON Schema without its references)."""
        parsed = self._parsed(fmt, schema_id, schema)
        return parsed[0] if fmt is Format.JSON_SCHEMA else parsed

    def _reader(self, part: str, fmt: Format, schema_id: int) -> Reader:
        with self._lock:  # one fetch per id, also when both threads meet it at once
            reader = self._readers.get((fmt, schema_id))
            if reader is None:
                schema = self._fetch(part, fmt, schema_id)
                reader = self._build(fmt, schema_id, schema)
                self._readers[(fmt, schema_id)] = reader
                logger.info("schema id %d (%s) read from %s", schema_id, fmt.value, self._url)
            return reader

    def _fetch(self, part: str, fmt: Format, schema_id: int) -> Any:
        # Protobuf schemas as a serialized FileDescriptorProto (base64), which needs no .proto
        # parser; registries that store .proto text convert it when asked so.
        wanted = "serialized" if fmt is Format.PROTOBUF else None
        get_schema = partial(self._client.get_schema, fmt=wanted)
        schema = self._ask(get_schema, f"schema id {schema_id}", schema_id)
        if schema is None:
            raise BadPayload(self._unknown(part, schema_id), "unknown-schema")
        found = schema.schema_type or "AVRO"
        if found != _SCHEMA_TYPES[fmt]:
            raise BadPayload(
                f"{part} names schema id {schema_id}, {_TYPE_NAMES.get(found, found)} schema, "
                f"but its format is "
                f'"{fmt.value}"; fix the producer or the table\'s {part}_format',
                "schema-type",
            )
        return schema

    def _ask(
        self,
        call: Callable[..., Any],
        what: str,
        *args: Any,
        missing: tuple[int, ...] = (SCHEMA_NOT_FOUND,),
    ) -> Any:
        """The registry's answer to `call(*args)`; None where it answers that it does not hold
        what was asked (`missing`: its error codes meaning so)."""
        try:
            return call(*args)
        except SchemaRegistryError as error:
            status = error.http_status_code
            if status == 404 and error.error_code in missing:
                return None
            if status >= 500 or status in _RETRIABLE_STATUS:
                raise SchemaRegistryUnavailableError(
                    f"the schema registry at {self._url} failed (HTTP {status}: "
                    f"{error.error_message}) fetching {what}"
                ) from error
            raise SchemaRegistryRefusedError(self._refused(status, error.error_message)) from error
        except TransportError as error:
            raise SchemaRegistryUnavailableError(
                f"the schema registry at {self._url} is unreachable ({type(error).__name__}: "
                f"{error}) fetching {what}"
            ) from error
        except ValueError as error:  # a 2xx whose body is not JSON: not a registry's API
            raise SchemaRegistryRefusedError(
                f"the schema registry at {self._url} answered {what} with something that is not "
                f"the registry's JSON ({error}); schema_registry.url is not the registry's API "
                f"(Apicurio Registry serves it at /apis/ccompat/v7)"
            ) from error

    def _refused(self, status: int, message: str) -> str:
        if status in (401, 403):
            remedy = "check schema_registry.username and password(_file)"
        elif status == 404:
            remedy = (
                "schema_registry.url is not the registry's API (Apicurio Registry serves it "
                "at /apis/ccompat/v7)"
            )
        else:
            remedy = "see the registry's log"
        return f"the schema registry at {self._url} refused (HTTP {status}: {message}); {remedy}"

    def _unknown(self, part: str, schema_id: int) -> str:
        return (
            f"{part} names schema id {schema_id}, which the schema registry at {self._url} does "
            f"not hold; the producer wrote to another registry, or the schema was deleted"
        )

    def _build(self, fmt: Format, schema_id: int, schema: Any) -> Reader:
        parsed = self._parsed(fmt, schema_id, schema)
        try:
            if fmt is Format.AVRO:
                reader = _avro_reader(parsed)
                self._avro_schemas[schema_id] = parsed
                return reader
            if fmt is Format.PROTOBUF:
                return _protobuf_reader(parsed)
            return _json_schema_reader(*parsed)
        except Exception as error:  # whatever the parser refuses: the schema is at fault
            raise self._unreadable(fmt, schema_id, error) from error

    def _parsed(self, fmt: Format, schema_id: int, schema: Any) -> Any:
        """The schema as its format's library reads it, references resolved: fastavro's form,
        a Protobuf file descriptor, or a JSON Schema document with its references."""
        try:
            if fmt is Format.AVRO:
                return self._avro_schema(schema)
            if fmt is Format.PROTOBUF:
                return self._protobuf_file(schema_id, schema)
            return self._json_schema(schema)
        except (SinkError, BadPayload):
            raise
        except Exception as error:  # whatever the parser refuses: the schema is at fault
            raise self._unreadable(fmt, schema_id, error) from error

    def _unreadable(self, fmt: Format, schema_id: int, error: Exception) -> SinkError:
        return SchemaRegistryRefusedError(
            f"schema id {schema_id} from the schema registry at {self._url} cannot be read "
            f"as {fmt.value}: {type(error).__name__}: {error}"
        )

    # --- references: schemas that name others by subject and version --------------------

    def _referenced(self, schema: Any, fmt: str | None = None) -> list[tuple[str, Any]]:
        """Every schema `schema` references, depth first (dependencies before dependents)."""
        found: list[tuple[str, Any]] = []
        for reference in schema.references or ():
            registered = self._ask(
                partial(self._client.get_version, fmt=fmt),
                f"{reference.subject} version {reference.version}",
                reference.subject,
                reference.version,
            )
            if registered is None:
                raise SchemaRegistryRefusedError(
                    f"the schema registry at {self._url} does not hold {reference.subject} "
                    f"version {reference.version}, which a schema references as {reference.name}"
                )
            found.extend(self._referenced(registered.schema, fmt))
            found.append((reference.name, registered.schema))
        return found

    def _avro_schema(self, schema: Any) -> Any:
        named: dict[str, Any] = {}
        for _, referenced in self._referenced(schema):
            fastavro.parse_schema(json.loads(referenced.schema_str), named_schemas=named)
        return fastavro.parse_schema(json.loads(schema.schema_str), named_schemas=named)

    def _protobuf_file(self, schema_id: int, schema: Any) -> FileDescriptor:
        pool = descriptor_pool.DescriptorPool()
        for module in _WELL_KNOWN_FILES:
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
        for name, referenced in self._referenced(schema, "serialized"):
            if name not in _WELL_KNOWN_NAMES:
                pool.Add(_file_proto(name, referenced.schema_str, self._url))
        return pool.Add(_file_proto(f"schema id {schema_id}", schema.schema_str, self._url))

    def _json_schema(self, schema: Any) -> tuple[Any, referencing.Registry[Any]]:
        resources = [
            (name, referencing.Resource.from_contents(json.loads(referenced.schema_str)))
            for name, referenced in self._referenced(schema)
        ]
        return json.loads(schema.schema_str), referencing.Registry().with_resources(resources)


def _describe(error: Exception) -> str:
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _not_wire_format(part: str, fmt: Format, data: bytes) -> str:
    if not data:
        found = "it is empty"
    elif len(data) < HEADER_BYTES:
        found = f"it is {len(data)} bytes, shorter than the 5-byte header"
    else:
        found = f"its first byte is {data[0]:#04x}"
    return (
        f"{part} is not in the schema registry's wire format (magic byte 0, then a 4-byte "
        f'schema id): {found}; {part}_format is "{fmt.value}": fix the producer\'s serializer, '
        f"or the table's {part}_format"
    )


# --- Avro -------------------------------------------------------------------------------------


def _avro_reader(schema: Any) -> Reader:
    """fastavro's reading: decimal as Decimal, timestamp-* as aware UTC datetimes, local
    timestamps naive, date, time, uuid as UUID, a union as its branch's value; then Debezium's
    semantic types (`connect.name`) as `sink.debezium.SEMANTIC_TYPES` reads them."""
    reader = fastavro.schemaless_reader
    semantics = _semantics(schema, schema.get("__named_schemas") or {}, frozenset())

    def read(payload: memoryview) -> object:
        stream = io.BytesIO(payload)
        try:
            value = reader(stream, schema, None)
        except Exception as error:  # fastavro raises whatever the bytes lead it to
            raise BadPayload(
                f"does not read as Avro with its schema ({_describe(error)})",
                "not-avro",
            ) from None
        if stream.tell() != len(payload):
            raise BadPayload(
                f"{len(payload) - stream.tell()} bytes are left after the Avro value its schema "
                f"reads; it was written with another schema",
                "not-avro",
            )
        if semantics is None:
            return value
        try:
            return semantics(value)
        except Mismatch as error:
            raise BadPayload(
                f"does not hold what its Avro schema's connect.name says: {error}",
                "schema-mismatch",
            ) from None

    return read


def has_semantics(schema: Any) -> bool:
    """Whether an Avro schema (as fastavro parses it) holds a type carrying a Debezium semantic
    type, whose values the reader converts."""
    return _semantics(schema, schema.get("__named_schemas") or {}, frozenset()) is not None


_Convert = Callable[[Any], object]
# Avro's own types: nothing in them names a semantic type.
_AVRO_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string", "enum", "fixed"}
)


def _semantics(schema: Any, named: Mapping[str, Any], seen: frozenset[str]) -> _Convert | None:
    """What converts the values of an Avro schema (as fastavro parses it) whose types carry a
    Debezium semantic type; None where none does, so that other values take no extra step.
    `seen` holds the records being compiled: a recursive reference is left as it reads."""
    if isinstance(schema, str):
        known = schema not in seen and schema not in _AVRO_PRIMITIVES and schema in named
        return _semantics(named[schema], named, seen) if known else None
    if isinstance(schema, list):  # a union: only a nullable one tells its branch by the value
        branches = [branch for branch in schema if branch != "null"]
        inner = _semantics(branches[0], named, seen) if len(branches) == 1 else None
        return None if inner is None else partial(_unless_null, inner)
    if not isinstance(schema, dict):
        return None
    semantic = SEMANTIC_TYPES.get(schema.get("connect.name", ""))
    if semantic is not None and "logicalType" not in schema:  # else fastavro read it already
        return semantic
    return _complex_semantics(schema, named, seen)


def _complex_semantics(
    schema: dict[str, Any], named: Mapping[str, Any], seen: frozenset[str]
) -> _Convert | None:
    kind = schema.get("type")
    convert: _Convert | None = None
    if kind == "record":
        inside = seen | {schema.get("name", "")}
        fields = [
            (field["name"], found)
            for field in schema.get("fields") or ()
            if (found := _semantics(field["type"], named, inside)) is not None
        ]
        convert = partial(_record, tuple(fields)) if fields else None
    elif kind == "array":
        items = _semantics(schema.get("items"), named, seen)
        convert = None if items is None else partial(_items, items)
    elif kind == "map":
        values = _semantics(schema.get("values"), named, seen)
        convert = None if values is None else partial(_values, values)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind in named):
        convert = _semantics(kind, named, seen)
    return convert


def _unless_null(convert: _Convert, value: Any) -> object:
    return None if value is None else convert(value)


def _record(fields: tuple[tuple[str, _Convert], ...], value: Any) -> object:
    converted = dict(value)
    for name, convert in fields:
        converted[name] = convert(converted[name])
    return converted


def _items(convert: _Convert, value: Any) -> object:
    return [convert(item) for item in value]


def _values(convert: _Convert, value: Any) -> object:
    return {key: convert(item) for key, item in value.items()}


# --- Protobuf ---------------------------------------------------------------------------------


def _file_proto(name: str, text: str, url: str) -> descriptor_pb2.FileDescriptorProto:
    try:
        serialized = base64.standard_b64decode(text.encode("ascii"))
        proto = descriptor_pb2.FileDescriptorProto()
        proto.ParseFromString(serialized)
    except (binascii.Error, UnicodeEncodeError, ProtobufDecodeError, ValueError):
        raise SchemaRegistryRefusedError(
            f"the Protobuf schema {name} from the schema registry at {url} is .proto source "
            f"text; the sink reads Protobuf schemas in their serialized form, which Confluent "
            f"Schema Registry gives (?format=serialized) and serializers register"
        ) from None
    return proto


def _read_varint(payload: memoryview, at: int) -> tuple[int, int]:
    """A zigzag varint (as the wire format writes message indexes) and the position after it."""
    shift = result = 0
    while True:
        if at >= len(payload) or shift > 63:
            raise BadPayload("its Protobuf message indexes are cut short", "not-protobuf")
        byte = payload[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7


def _protobuf_reader(file: FileDescriptor) -> Reader:
    classes: dict[tuple[int, ...], type[ProtobufMessage]] = {}

    def message_class(indexes: tuple[int, ...]) -> type[ProtobufMessage]:
        found = classes.get(indexes)
        if found is None:
            descriptor = _message_descriptor(file, indexes)
            found = classes[indexes] = message_factory.GetMessageClass(descriptor)
        return found

    def read(payload: memoryview) -> object:
        count, at = _read_varint(payload, 0)
        indexes: list[int] = []
        for _ in range(count):
            index, at = _read_varint(payload, at)
            indexes.append(index)
        message = message_class(tuple(indexes or [0]))()
        try:
            message.ParseFromString(payload[at:].tobytes())
        except ProtobufDecodeError as error:
            raise BadPayload(
                f"does not read as Protobuf message {message.DESCRIPTOR.full_name} ({error})",
                "not-protobuf",
            ) from None
        return _message_value(message)

    return read


def _message_descriptor(file: FileDescriptor, indexes: tuple[int, ...]) -> Descriptor:
    types = list(file.message_types_by_name.values())
    descriptor: Descriptor | None = None
    for index in indexes:
        if not 0 <= index < len(types):
            raise BadPayload(
                f"its message indexes {list(indexes)} name no message of the schema",
                "not-protobuf",
            )
        descriptor = types[index]
        types = list(descriptor.nested_types)
    assert descriptor is not None
    return descriptor


def _message_value(message: ProtobufMessage) -> dict[str, object]:
    """A message as a dict by field name: fields that track presence and are unset are left
    out (a NULL column), others take their value or proto3's default; enums by name, bytes as
    bytes, 64-bit integers as int, Timestamp as an aware UTC datetime, Duration as a timedelta,
    wrappers as their value, Struct/Value/ListValue as JSON values."""
    out: dict[str, object] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        out[field.name] = _field_value(field, getattr(message, field.name))
    return out


def _field_value(field: FieldDescriptor, value: Any) -> object:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _single_value(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_single_value(field, item) for item in value]
    return _single_value(field, value)


def _single_value(field: FieldDescriptor, value: Any) -> object:
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return value if known is None else known.name
    if field.type not in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return value
    name = field.message_type.full_name
    well_known = _WELL_KNOWN_VALUES.get(name)
    if well_known is not None:
        return well_known(value)
    if name.startswith("google.protobuf.") and name.endswith("Value"):  # the wrappers
        return value.value
    return _message_value(value)


_WELL_KNOWN_VALUES: Mapping[str, Callable[[Any], object]] = {
    "google.protobuf.Timestamp": lambda v: v.ToDatetime(tzinfo=UTC),
    "google.protobuf.Duration": lambda v: v.ToTimedelta(),
    "google.protobuf.Struct": protobuf_json.MessageToDict,
    "google.protobuf.Value": protobuf_json.MessageToDict,
    "google.protobuf.ListValue": protobuf_json.MessageToDict,
}


# --- JSON Schema ------------------------------------------------------------------------------


def _json_schema_reader(schema: Any, references: referencing.Registry[Any]) -> Reader:
    """The payload as JSON, numbers exact (see `_json_value`), checked against its schema."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, registry=references)

    def read(payload: memoryview) -> object:
        value = _json_value(payload.tobytes())
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(step) for step in error.absolute_path) or "the top level"
            raise BadPayload(
                f"does not match its JSON Schema at {where}: {error.message}", "schema-mismatch"
            )
        return value

    return read


def _json_value(data: bytes) -> object:
    """JSON with every number as written: where a float would not keep a number's digits it
    is read again with Decimal (as the `json` format does for NUMERIC, JSON and text columns)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadPayload(f"is not JSON: {error}", "not-json") from None
    if not numbers_round_trip(data):
        try:
            value = exact_loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as error:
            raise BadPayload(f"its numbers cannot be read exactly: {error}", "not-exact") from None
    return value
