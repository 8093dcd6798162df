"""The thin, symmetric bridge between domain events and the generated bindings.

`to_envelope` / `from_envelope` map domain events to official protobuf
envelopes and back; `to_betterproto` / `from_betterproto` move envelopes
between the two bindings through their (identical) wire bytes. Domain code
reaches generated modules only through this module.
"""

from __future__ import annotations

import functools
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from adaptive_pipeline.events.v1 import (
    common_pb2,
    envelope_pb2,
    operational_pb2,
    pipeline_lifecycle_pb2,
    processing_lifecycle_pb2,
    stage_pb2,
)
from google.protobuf import timestamp_pb2

from pipeline_events import domain
from pipeline_events.errors import DecodeError, EncodeError
from pipeline_events.fields import FieldSpec, Kind, field_specs, own_field_specs
from pipeline_events.timestamps import UTC, NanoDatetime
from pipeline_events.upcasting import DEFAULT_UPCASTERS, Upcasters

EventEnvelope = envelope_pb2.EventEnvelope
EventType = envelope_pb2.EventType

_PROTO_MODULES = (
    common_pb2,
    pipeline_lifecycle_pb2,
    processing_lifecycle_pb2,
    stage_pb2,
    operational_pb2,
)
# Domain class name -> official message class; the names are the same on both sides,
# except Rust's Duration, which the schema calls UnsignedDuration.
_MESSAGE_CLASSES: dict[str, Any] = {
    name: getattr(module, name)
    for module in _PROTO_MODULES
    for name in module.DESCRIPTOR.message_types_by_name
}
_MESSAGE_CLASSES["Duration"] = common_pb2.UnsignedDuration

#: Payload oneof case of each event class, e.g. ChunkProcessed -> "chunk_processed".
PAYLOAD_CASES: dict[type[domain.Event], str] = {
    cls: field.name
    for cls, field in zip(
        domain.EVENT_CLASSES,
        EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields,
        strict=True,
    )
}
_R = TypeVar("_R")
_CLASSES_BY_CASE = {case: cls for cls, case in PAYLOAD_CASES.items()}
_EVENT_TYPE_NUMBERS = {cls: number for number, cls in enumerate(domain.EVENT_CLASSES, start=1)}


def event_type_number(event_type: str) -> int:
    """The EventType enum value of a seed event name ("ChunkProcessed" -> 13)."""
    return _EVENT_TYPE_NUMBERS[domain.EVENT_TYPES[event_type]]


def event_type_name(number: int) -> str:
    """The seed event name of an EventType value; `Unknown(N)` for values this schema lacks."""
    if 1 <= number <= len(domain.EVENT_CLASSES):
        return domain.EVENT_CLASSES[number - 1].__name__
    return f"Unknown({number})"


# --- domain -> protobuf ---------------------------------------------------------------------


def _uuid_text(value: uuid.UUID) -> str:
    """Canonical text of a UUID: `str(value)`, about 30% faster (the publish hot path)."""
    text = value.int.to_bytes(16, "big").hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# Pipeline and processing ids repeat on every event of a run, so their text is cached;
# event, chunk and stage ids are new each time and a cache would only add a miss.
_repeated_uuid_text = functools.lru_cache(maxsize=65536)(_uuid_text)
_REPEATING_IDS = frozenset({"processing_id"})


def _set_timestamp(target: timestamp_pb2.Timestamp, value: Any) -> None:
    # Fast path: a NanoDatetime in UTC, as every factory and decoder makes.
    instant = value if type(value) is NanoDatetime and value.tzinfo is UTC else None
    if instant is None:
        instant = NanoDatetime.from_datetime(value)
    target.seconds = instant.epoch_seconds
    target.nanos = instant.nanosecond


# Encoders fill a message in place: setting fields on a message is 2-3x faster
# in upb than building sub-messages and passing them to a constructor.
Filler = Callable[[Any, Any], None]


def _field_filler(spec: FieldSpec) -> Filler:
    """Sets one field of a message from the domain value (never called with None)."""
    name, kind = spec.name, spec.kind
    if kind in (Kind.STR, Kind.U64, Kind.BOOL, Kind.F64, Kind.BYTES, Kind.ENUM):
        return lambda message, value: setattr(message, name, value)
    if kind is Kind.UUID:
        return lambda message, value: setattr(message, name, _uuid_text(value))
    if kind is Kind.TIMESTAMP:
        return lambda message, value: _set_timestamp(getattr(message, name), value)
    if kind is Kind.LIST:
        item = spec.item
        if item.kind in (Kind.PERMISSION, Kind.RECORD):
            fill_item = _value_filler(item)
            return lambda message, values: [
                fill_item(getattr(message, name).add(), value) for value in values
            ]
        return lambda message, values: getattr(message, name).extend(values)
    if kind is Kind.MAP:
        if spec.item.kind is Kind.RECORD:
            fill_value = _value_filler(spec.item)

            def fill_map(message: Any, values: Mapping[str, Any]) -> None:
                entries = getattr(message, name)
                for key, value in values.items():
                    fill_value(entries[key], value)

            return fill_map
        return lambda message, values: getattr(message, name).update(values)
    fill_message = _value_filler(spec)

    def fill_nested(message: Any, value: Any) -> None:
        nested = getattr(message, name)
        nested.SetInParent()  # present even when every field has its default value
        fill_message(nested, value)

    return fill_nested


def _value_filler(spec: FieldSpec) -> Filler:
    """Fills a whole message (a record, duration or permission) from a domain value."""
    if spec.kind is Kind.DURATION:

        def fill_duration(message: Any, value: domain.Duration) -> None:
            message.secs = value.secs
            message.nanos = value.nanos

        return fill_duration
    if spec.kind is Kind.PERMISSION:

        def fill_permission(message: Any, value: domain.Permission) -> None:
            if isinstance(value, domain.CustomPermission):
                message.custom = value.name
            else:
                message.standard = value

        return fill_permission
    return _record_filler(spec.type)


@functools.cache
def _record_filler(cls: type) -> Filler:
    return _message_filler(field_specs(cls))


_PLAIN_KINDS = (Kind.STR, Kind.U64, Kind.BOOL, Kind.F64, Kind.BYTES, Kind.ENUM)


def _message_filler(specs: tuple[FieldSpec, ...]) -> Filler:
    """A fill function compiled for one message, as dataclasses compile `__init__`.

    Straight-line attribute code is about twice as fast as looping over a plan
    of closures, and this is the publish hot path.
    """
    namespace: dict[str, Any] = {
        "_uuid_text": _uuid_text,
        "_repeated_uuid_text": _repeated_uuid_text,
    }
    lines = ["def fill(message, obj):"]
    for spec in specs:
        name = spec.name
        if spec.kind in _PLAIN_KINDS:
            assign = f"message.{name} = value"
        elif spec.kind is Kind.UUID:
            text = "_repeated_uuid_text" if name in _REPEATING_IDS else "_uuid_text"
            assign = f"message.{name} = {text}(value)"
        else:
            namespace[f"_fill_{name}"] = _field_filler(spec)
            assign = f"_fill_{name}(message, value)"
        lines.append(f"    value = obj.{name}")
        if spec.optional or spec.kind not in _PLAIN_KINDS:
            lines.append("    if value is not None:")  # a Rust None: the field stays absent
            lines.append(f"        {assign}")
        else:
            lines.append(f"    {assign}")
    if len(lines) == 1:
        lines.append("    pass")
    exec("\n".join(lines), namespace)
    return namespace["fill"]


@functools.cache
def _payload_filler(cls: type[domain.Event]) -> Filler:
    return _message_filler(own_field_specs(cls))


def to_envelope(
    event: domain.Event,
    *,
    correlation_id: str = "",
    causation_id: str = "",
    metadata: Mapping[str, str] | None = None,
) -> EventEnvelope:
    """The official protobuf envelope of a domain event.

    Raises:
        EncodeError: a value does not fit the schema (e.g. an integer outside u64).
    """
    if isinstance(event, domain.UnknownEvent):
        return EventEnvelope.FromString(event.envelope_bytes)
    cls = type(event)
    try:
        envelope = EventEnvelope(
            event_id=_uuid_text(event.event_id),
            aggregate_id=_repeated_uuid_text(event.pipeline_id),
            event_type=_EVENT_TYPE_NUMBERS[cls],
            schema_version=event.version,
        )
        if correlation_id:
            envelope.correlation_id = correlation_id
        if causation_id:
            envelope.causation_id = causation_id
        if metadata:
            envelope.metadata.update(metadata)
        _set_timestamp(envelope.occurred_at, event.occurred_at)
        payload = getattr(envelope, PAYLOAD_CASES[cls])
        payload.SetInParent()
        _payload_filler(cls)(payload, event)
        return envelope
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        raise EncodeError(f"{cls.__name__}: {error}") from error


# --- protobuf -> domain ---------------------------------------------------------------------
#
# Read models decode every stored event, so this is a hot path too. As on the encode side,
# each message gets a decoder compiled once into straight-line code, and the results are
# exactly those of the generic plan this replaced (tests/test_adapter_decode_speed_equivalence.py
# keeps that plan and compares): the same values, and the same DecodeError field paths and
# messages, the same error of the same field first.

_new_object = object.__new__
_set_uuid_int = uuid.UUID.__dict__["int"].__set__
_set_uuid_is_safe = uuid.UUID.__dict__["is_safe"].__set__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _new_uuid(text: str) -> uuid.UUID:
    """`uuid.UUID(text)`: the same value, or the same ValueError, at under half the cost.

    Canonical text (and anything that is 32 hex digits once its hyphens are gone) is
    read here and the instance filled as `UUID.__init__` ends; what does not parse
    as that goes to `uuid.UUID` itself, whose clean-up and error wording then apply.
    Equivalent because text that `int(..., 16)` reads has no ':' nor braces, which is
    all `UUID.__init__` strips besides hyphens; 32 digits are always below 2**128.
    """
    digits = text.replace("-", "")
    try:
        number = int(digits, 16) if len(digits) == 32 else None
    except ValueError:
        number = None
    if number is None:
        return uuid.UUID(text)
    value = _new_object(uuid.UUID)
    _set_uuid_int(value, number)
    _set_uuid_is_safe(value, _SAFE_UNKNOWN)
    return value


class _UuidCache(dict[str, uuid.UUID]):
    """Parsed ids by text for ids that repeat on many events (pipeline, processing, stage).

    A miss parses and stores (`__missing__`), a hit is a plain dict lookup; a full
    cache is emptied rather than evicted in order, which costs a hit nothing.
    `cache_clear` keeps the name of the lru_cache this replaces (benchmarks call it).
    """

    MAX_SIZE = 16384

    def __missing__(self, text: str) -> uuid.UUID:
        value = _new_uuid(text)
        if len(self) >= self.MAX_SIZE:
            self.clear()
        self[text] = value
        return value

    def cache_clear(self) -> None:
        """Forget every id (for benchmarks that want each id first seen in a pass)."""
        self.clear()


_parse_uuid = _UuidCache()
# Processing and stage ids recur on every event of their run or stage, and a session on
# the runs it starts; event and chunk ids are new on every event: a cache would only miss.
_CACHED_UUID_FIELDS = frozenset({"processing_id", "stage_id", "session_id"})

_MESSAGE_KINDS = (Kind.RECORD, Kind.TIMESTAMP, Kind.DURATION)
_AS_IS_KINDS = (Kind.STR, Kind.U64, Kind.BOOL, Kind.F64)
_from_seconds_nanos = NanoDatetime.from_seconds_nanos


def _enum_converter(enum_type: Any) -> Callable[[Any], Any]:
    """`enum_type(value)`, with a dict lookup for the defined values first."""
    members = {member.value: member for member in enum_type}.get

    def convert(value: Any) -> Any:
        member = members(value)
        # The enum's own call for the rest, so that its ValueError stays the message.
        return enum_type(value) if member is None else member

    return convert


_STANDARD_PERMISSIONS = {member.value: member for member in domain.StandardPermission}.get


def _from_proto_value(spec: FieldSpec) -> Callable[[Any], Any] | None:
    """A converter from a protobuf value to the domain's (None: as is)."""
    kind = spec.kind
    if kind is Kind.UUID:
        return _parse_uuid.__getitem__ if spec.name in _CACHED_UUID_FIELDS else _new_uuid
    if kind is Kind.TIMESTAMP:
        return lambda ts: _from_seconds_nanos(ts.seconds, ts.nanos)
    if kind is Kind.DURATION:
        return lambda d: domain.Duration(secs=d.secs, nanos=d.nanos)
    if kind is Kind.ENUM:
        return _enum_converter(spec.type)
    if kind is Kind.PERMISSION:
        return _permission_from_proto
    if kind is Kind.RECORD:
        return _record_decoder(spec.type)
    if kind is Kind.LIST:
        item = _from_proto_value(spec.item)
        return (lambda xs: tuple([item(x) for x in xs])) if item else tuple
    if kind is Kind.MAP:
        # Sorted by key: protobuf map order is unspecified, and output should be reproducible.
        value = _from_proto_value(spec.item)
        if value is None:
            # Keys are unique, so sorting items never compares values; most maps are empty.
            return lambda m: dict(sorted(m.items())) if m else {}
        return lambda m: {k: value(m[k]) for k in sorted(m)}
    if kind is Kind.BYTES:
        return bytes
    return None


def _permission_from_proto(permission: common_pb2.Permission) -> domain.Permission:
    case = permission.WhichOneof("kind")
    if case == "standard":
        member = _STANDARD_PERMISSIONS(permission.standard)
        # The enum's own call for an undefined value, for its ValueError.
        return domain.StandardPermission(permission.standard) if member is None else member
    if case == "custom":
        return domain.CustomPermission(permission.custom)
    raise ValueError("a permission has neither a standard nor a custom value")


def _nested_error(error: DecodeError, name: str) -> DecodeError:
    """A field's converter failed inside a nested message: the path gains the field."""
    return DecodeError(error.reason, field=f"{name}.{error.field}")


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The `__set__` of the slot that holds field `name`, found along the MRO."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return typing.cast(Callable[[Any, Any], None], vars(klass)[name].__set__)
    raise TypeError(f"{cls.__name__} has no slot {name!r}")  # pragma: no cover


def _field_lines(index: int, spec: FieldSpec, namespace: dict[str, Any]) -> list[str]:
    """Code that sets `v{index}` to the domain value of field `spec` of `message`.

    Mirrors the generic plan this replaced: presence is tested first (absent optional:
    None; absent required message: an error), then the conversion, whose ValueError,
    TypeError or OverflowError becomes a DecodeError naming the field.
    """
    name, var = spec.name, f"v{index}"
    if spec.kind in _AS_IS_KINDS:
        body = [f"{var} = message.{name}"]  # nothing to convert, nothing to fail
    else:
        if spec.kind is Kind.UUID and spec.name in _CACHED_UUID_FIELDS:
            convert = f"_uuids[message.{name}]"
        elif spec.kind is Kind.UUID:
            convert = f"_new_uuid(message.{name})"
        elif spec.kind is Kind.TIMESTAMP:
            convert = f"_from_seconds_nanos(message.{name}.seconds, message.{name}.nanos)"
        elif spec.kind is Kind.LIST and spec.item and spec.item.kind not in _AS_IS_KINDS:
            # Inlined, not the list converter: one call less per item.
            namespace[f"_item{index}"] = _from_proto_value(spec.item)
            convert = f"tuple([_item{index}(item) for item in message.{name}])"
        else:
            namespace[f"_convert{index}"] = _from_proto_value(spec)
            convert = f"_convert{index}(message.{name})"
        body = [
            "try:",
            f"    {var} = {convert}",
            "except DecodeError as error:",
            f"    raise _nested_error(error, {name!r}) from error",
            "except (ValueError, TypeError, OverflowError) as error:",
            f"    raise DecodeError(str(error), field={name!r}) from error",
        ]
    if spec.optional:
        return [
            f"if not message.HasField({name!r}):",  # a Rust None
            f"    {var} = None",
            "else:",
            *("    " + line for line in body),
        ]
    if spec.kind in _MESSAGE_KINDS:
        return [
            f"if not message.HasField({name!r}):",
            f"    raise DecodeError('required message is missing', field={name!r})",
            *body,
        ]
    return body


def _message_decoder(
    cls: type, specs: tuple[FieldSpec, ...], common: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """`decode(message, *common)`: an instance of `cls` from a message's fields `specs`
    and the values of fields `common`, given as arguments (an event's envelope fields).

    Compiled as dataclasses compile `__init__`, since straight-line code is much faster
    than a loop over a plan. The frozen dataclass's slots are filled directly, which is
    what its `__init__` does when every field is given (it is, always), at a fraction
    of the cost; a class that validates in `__post_init__` gets its constructor called.
    """
    namespace: dict[str, Any] = {
        "DecodeError": DecodeError,
        "_nested_error": _nested_error,
        "_new_uuid": _new_uuid,
        "_uuids": _parse_uuid,
        "_from_seconds_nanos": _from_seconds_nanos,
        "_new": _new_object,
        "_cls": cls,
    }
    lines = [f"def decode(message{''.join(', ' + name for name in common)}):"]
    for index, spec in enumerate(specs):
        lines.extend("    " + line for line in _field_lines(index, spec, namespace))
    values = [(name, name) for name in common]
    values += [(spec.name, f"v{index}") for index, spec in enumerate(specs)]
    if hasattr(cls, "__post_init__") or not hasattr(cls, "__slots__"):
        lines.append(f"    return _cls({', '.join(f'{name}={var}' for name, var in values)})")
    else:
        lines.append("    instance = _new(_cls)")
        for name, var in values:
            namespace[f"_set_{name}"] = _slot_setter(cls, name)
            lines.append(f"    _set_{name}(instance, {var})")
        lines.append("    return instance")
    exec("\n".join(lines), namespace)  # the source holds only our own field names
    return typing.cast(Callable[..., Any], namespace["decode"])


@functools.cache
def _record_decoder(cls: type) -> Callable[[Any], Any]:
    return _message_decoder(cls, field_specs(cls))


# Payload case -> (EventType number, decoder of the payload plus the envelope's fields).
_EventDecoder = tuple[int, Callable[..., domain.Event]]
_EVENT_DECODERS: dict[str, _EventDecoder] = {}


def _event_decoder(case: str) -> _EventDecoder:
    """The (number, decoder) of a payload case, compiled on first use."""
    cls = _CLASSES_BY_CASE[case]
    decoder = _message_decoder(cls, own_field_specs(cls), domain.COMMON_FIELDS)
    _EVENT_DECODERS[case] = entry = (_EVENT_TYPE_NUMBERS[cls], decoder)
    return entry


def from_envelope(
    envelope: EventEnvelope, *, upcasters: Upcasters = DEFAULT_UPCASTERS
) -> domain.Event | domain.UnknownEvent:
    """The domain event of an envelope, upcast to the current schema version.

    An envelope whose payload case this schema does not know becomes an
    UnknownEvent that keeps its bytes.

    Raises:
        DecodeError: the envelope breaks the schema (a malformed UUID, an
            unknown enum value, a missing required message...).
    """
    case = envelope.WhichOneof("payload")
    text = envelope.event_id
    try:
        event_id = _new_uuid(text)
    except ValueError as error:
        raise DecodeError(f"not a UUID: {text!r}", field="event_id") from error
    text = envelope.aggregate_id
    try:
        pipeline_id = _parse_uuid[text]
    except ValueError as error:
        raise DecodeError(f"not a UUID: {text!r}", field="aggregate_id") from error
    if not envelope.HasField("occurred_at"):
        raise DecodeError("required timestamp is missing", field="occurred_at")
    timestamp = envelope.occurred_at
    try:
        occurred_at = _from_seconds_nanos(timestamp.seconds, timestamp.nanos)
    except (ValueError, OverflowError) as error:  # outside years 1-9999, or bad nanos
        raise DecodeError(f"not a representable time: {error}", field="occurred_at") from error
    if case is None:
        return domain.UnknownEvent(
            event_id=event_id,
            pipeline_id=pipeline_id,
            occurred_at=occurred_at,
            version=envelope.schema_version,
            type_number=envelope.event_type,
            envelope_bytes=envelope.SerializeToString(),
        )
    number, decode = _EVENT_DECODERS.get(case) or _event_decoder(case)
    if envelope.event_type != number:
        raise DecodeError(
            f"event_type {envelope.event_type} does not match the payload case {case!r}",
            field="event_type",
        )
    envelope = upcasters.upcast(envelope)  # its input itself when nothing is registered
    try:
        return decode(
            getattr(envelope, case), event_id, pipeline_id, occurred_at, envelope.schema_version
        )
    except DecodeError as error:
        raise DecodeError(error.reason, field=f"{case}.{error.field}") from error


# --- records (SecurityContext, ProcessingMetrics...) on their own ---------------------------


def record_to_proto(value: Any, message: Any) -> None:
    """Fill a contract message (e.g. common_pb2.ProcessingMetrics) from a domain record.

    Raises:
        EncodeError: a value does not fit the schema.
    """
    try:
        _record_filler(type(value))(message, value)
    except (ValueError, TypeError, AttributeError, OverflowError) as error:
        raise EncodeError(f"{type(value).__name__}: {error}") from error


def record_from_proto(cls: type[_R], message: Any) -> _R:
    """The domain record of class `cls` in a contract message.

    Raises:
        DecodeError: the message breaks the schema.
    """
    return typing.cast(_R, _record_decoder(cls)(message))


# --- official <-> betterproto ---------------------------------------------------------------


def to_betterproto(envelope: EventEnvelope) -> Any:
    """The betterproto2 dataclass of an official envelope (through the wire bytes)."""
    from adaptive_pipeline_betterproto.adaptive_pipeline.events import v1

    return v1.EventEnvelope.parse(envelope.SerializeToString())


def from_betterproto(envelope: Any) -> EventEnvelope:
    """The official envelope of a betterproto2 dataclass (through the wire bytes)."""
    return EventEnvelope.FromString(bytes(envelope))
