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


@functools.lru_cache(maxsize=65536)
def _parse_uuid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


_MESSAGE_KINDS = (Kind.RECORD, Kind.TIMESTAMP, Kind.DURATION)


def _from_proto_value(spec: FieldSpec) -> Callable[[Any], Any] | None:
    """A converter from a protobuf value to the domain's (None: as is)."""
    kind = spec.kind
    if kind is Kind.UUID:
        return _parse_uuid
    if kind is Kind.TIMESTAMP:
        return lambda ts: NanoDatetime.from_seconds_nanos(ts.seconds, ts.nanos)
    if kind is Kind.DURATION:
        return lambda d: domain.Duration(secs=d.secs, nanos=d.nanos)
    if kind is Kind.ENUM:
        return spec.type
    if kind is Kind.PERMISSION:
        return _permission_from_proto
    if kind is Kind.RECORD:
        return _record_decoder(spec.type)
    if kind is Kind.LIST:
        item = _from_proto_value(spec.item)
        return (lambda xs: tuple(item(x) for x in xs)) if item else tuple
    if kind is Kind.MAP:
        # Sorted by key: protobuf map order is unspecified, and output should be reproducible.
        value = _from_proto_value(spec.item) or (lambda v: v)
        return lambda m: {k: value(m[k]) for k in sorted(m)}
    if kind is Kind.BYTES:
        return bytes
    return None


def _permission_from_proto(permission: common_pb2.Permission) -> domain.Permission:
    case = permission.WhichOneof("kind")
    if case == "custom":
        return domain.CustomPermission(permission.custom)
    if case is None:
        raise ValueError("a permission has neither a standard nor a custom value")
    return domain.StandardPermission(permission.standard)


@functools.cache
def _record_decoder(cls: type) -> Callable[[Any], Any]:
    return _message_decoder(cls, field_specs(cls))


def _message_decoder(cls: type, specs: tuple[FieldSpec, ...]) -> Callable[[Any], Any]:
    """Decodes a message into `cls(**fields)`; DecodeError names the failing field."""
    plan = [
        (spec.name, _from_proto_value(spec), spec.optional, spec.kind in _MESSAGE_KINDS)
        for spec in specs
    ]

    def decode(message: Any) -> Any:
        kwargs = {}
        for name, convert, optional, is_message in plan:
            if (optional or is_message) and not message.HasField(name):
                if not optional:
                    raise DecodeError("required message is missing", field=name)
                kwargs[name] = None
                continue
            value = getattr(message, name)
            try:
                kwargs[name] = convert(value) if convert else value
            except DecodeError as error:
                raise DecodeError(error.reason, field=f"{name}.{error.field}") from error
            except (ValueError, TypeError, OverflowError) as error:
                raise DecodeError(str(error), field=name) from error
        return cls(**kwargs)

    return decode


@functools.cache
def _payload_decoder(cls: type[domain.Event]) -> Callable[[Any], dict[str, Any]]:
    return _message_decoder(dict, own_field_specs(cls))


def _envelope_uuid(envelope: EventEnvelope, name: str) -> uuid.UUID:
    text = getattr(envelope, name)
    try:
        return _parse_uuid(text)
    except ValueError as error:
        raise DecodeError(f"not a UUID: {text!r}", field=name) from error


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
    event_id = _envelope_uuid(envelope, "event_id")
    pipeline_id = _envelope_uuid(envelope, "aggregate_id")
    if not envelope.HasField("occurred_at"):
        raise DecodeError("required timestamp is missing", field="occurred_at")
    try:
        occurred_at = NanoDatetime.from_seconds_nanos(
            envelope.occurred_at.seconds, envelope.occurred_at.nanos
        )
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
    cls = _CLASSES_BY_CASE[case]
    if envelope.event_type != event_type_number(cls.__name__):
        raise DecodeError(
            f"event_type {envelope.event_type} does not match the payload case {case!r}",
            field="event_type",
        )
    envelope = upcasters.upcast(envelope)
    try:
        own = _payload_decoder(cls)(getattr(envelope, case))
    except DecodeError as error:
        raise DecodeError(error.reason, field=f"{case}.{error.field}") from error
    return cls(
        event_id=event_id,
        pipeline_id=pipeline_id,
        occurred_at=occurred_at,
        version=envelope.schema_version,
        **own,
    )


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
