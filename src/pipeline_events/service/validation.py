"""Request validation: the schema's protovalidate rules, envelope consistency and the limits
that keep every accepted event readable.

Forward compatibility: an envelope whose payload case this server does not
know arrives with an unset oneof, an EventType value this schema does not
define, and an unknown field in the payload range (100-999). Only then is
its "required oneof" violation waived, so that it can be stored and relayed
intact.

Accepted means readable: an envelope is refused unless every reader can take
it back. Its size is bounded (`max_event_bytes`, well under the message
limit), and so is its nesting (MAX_NESTING levels of messages and groups,
unknown ones included), far below the 100 levels that protobuf parsers in
Python, C++ and Java allow a whole message; a response wraps an envelope in
three more.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import protovalidate
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from pipeline_events.service.errors import RpcError, bad_request

_PAYLOAD_NUMBERS = {
    field.name: field.number
    for field in envelope_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}


def field_path(violation: Any) -> str:
    """A violation's field path in the usual `events[3].metadata["k"]` form."""
    parts: list[str] = []
    for element in violation.proto.field.elements:
        text = element.field_name
        subscript = getattr(element, "subscript", None)
        if subscript is not None:
            value = subscript.value
            text += f"[{value}]" if subscript.field == "index" else f'["{value}"]'
        parts.append(text)
    return ".".join(parts)


#: Levels of messages and groups an envelope may nest, itself included.
MAX_NESTING = 32
_KNOWN_TYPES = frozenset(envelope_pb2.EventType.values()) - {0}
_PAYLOAD_RANGE = range(100, 1000)
_GROUP = 3  # the wire type of a (deprecated) group, which parsers recurse into


def _has_unknown_payload(envelope: envelope_pb2.EventEnvelope) -> bool:
    """Whether the envelope carries a payload case from a newer schema (see module doc)."""
    return (
        envelope.WhichOneof("payload") is None
        and envelope.event_type not in _KNOWN_TYPES
        and any(f.field_number in _PAYLOAD_RANGE for f in UnknownFieldSet(envelope))
    )


def nesting_depth(message: Message, limit: int = MAX_NESTING) -> int:
    """Levels of messages and groups in `message`, itself included, unknown groups too.

    Stops counting once past `limit` (the answer is then limit + 1): an attacker's
    nesting costs no more than the limit to measure.
    """
    return _depth(message, limit + 1)


def _depth(message: Message, budget: int) -> int:
    deepest = 0
    for name, kind in _message_fields(message.DESCRIPTOR):
        if kind is _SINGLE:
            if message.HasField(name):
                deepest = max(deepest, _depth(getattr(message, name), budget - 1))
        elif kind is _REPEATED:
            for item in getattr(message, name):
                deepest = max(deepest, _depth(item, budget - 1))
        elif kind is _MESSAGE_MAP:  # the entry, then its value message
            for item in getattr(message, name).values():
                deepest = max(deepest, 1 + _depth(item, budget - 2))
        elif getattr(message, name):  # a map of scalars: its entries are one level
            deepest = max(deepest, 1)
        if deepest >= budget:
            return budget
    unknown = UnknownFieldSet(message)
    if len(unknown):
        deepest = max(deepest, _group_depth(unknown, budget - 1))
    return 1 + deepest


_SINGLE, _REPEATED, _MESSAGE_MAP, _SCALAR_MAP = "single", "repeated", "message map", "scalar map"


@functools.cache
def _message_fields(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    """The fields of a message type that hold messages, and how (walked by `_depth`)."""
    fields = []
    for field in descriptor.fields:
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            fields.append((field.name, _MESSAGE_MAP if value.message_type else _SCALAR_MAP))
        else:
            fields.append((field.name, _REPEATED if field.is_repeated else _SINGLE))
    return tuple(fields)


def _group_depth(fields: UnknownFieldSet, budget: int) -> int:
    deepest = 0
    for field in fields:
        if field.wire_type == _GROUP:
            deepest = max(deepest, 1 + _group_depth(field.data, budget - 1))
            if deepest >= budget:
                return budget
    return deepest


def _timestamp_violations(path: str, seconds: int, nanos: int) -> list[tuple[str, str]]:
    """The nanos rule the schema cannot state (its years 0001-9999 rule covers the seconds)."""
    if not 0 <= nanos <= 999_999_999:
        return [(path + ".nanos", "must be 0 to 999,999,999")]
    return []


def _waived(path: str, rule_id: str, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> bool:
    """The required-oneof rule of an envelope carrying a payload case from a newer schema."""
    if rule_id != "required" or not path.endswith(".payload") or not path.startswith("events["):
        return False
    index = int(path[len("events[") : path.index("]")])
    return _has_unknown_payload(envelopes[index])


def envelope_violations(
    envelopes: Sequence[envelope_pb2.EventEnvelope], max_event_bytes: int | None = None
) -> list[tuple[str, str]]:
    """Rules protovalidate cannot express: the EventType matches the payload, timestamp
    nanos are in range, and the envelope is within the size and nesting limits."""
    violations = []
    for index, envelope in enumerate(envelopes):
        path = f"events[{index}]"
        case = envelope.WhichOneof("payload")
        if case is not None and envelope.event_type != _PAYLOAD_NUMBERS[case] - 100:
            violations.append((f"{path}.event_type", f"does not match the payload case {case}"))
        stamp = envelope.occurred_at
        violations += _timestamp_violations(f"{path}.occurred_at", stamp.seconds, stamp.nanos)
        if case == "processing_started":  # the only other Timestamp an event carries
            stamp = envelope.processing_started.security_context.created_at
            violations += _timestamp_violations(
                f"{path}.processing_started.security_context.created_at", stamp.seconds, stamp.nanos
            )
        if max_event_bytes is not None and (size := envelope.ByteSize()) > max_event_bytes:
            violations.append(
                (
                    path,
                    f"the event is {size:,} bytes; this server takes at most {max_event_bytes:,}",
                )
            )
        elif nesting_depth(envelope) > MAX_NESTING:
            violations.append(
                (path, f"nests messages or groups more than {MAX_NESTING} levels deep")
            )
    return violations


def validate_publish(
    request: service_pb2.PublishRequest | service_pb2.PublishStreamRequest,
    max_event_bytes: int | None = None,
) -> None:
    """Raise an INVALID_ARGUMENT RpcError listing every violation of a publish request."""
    violations: list[tuple[str, str]] = []
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as error:
        for violation in error.violations:
            path = field_path(violation)
            if not _waived(path, violation.proto.rule_id, request.events):
                violations.append((path, violation.proto.message))
    violations += envelope_violations(request.events, max_event_bytes)
    seen: set[str] = set()
    for index, expected in enumerate(request.expected_revisions):
        key = expected.aggregate_id.lower()
        if key in seen:
            violations.append(
                (
                    f"expected_revisions[{index}].aggregate_id",
                    "a second check for the same aggregate",
                )
            )
        seen.add(key)
    if violations:
        raise bad_request(violations)


def validate(request: Any) -> None:
    """Raise an INVALID_ARGUMENT RpcError if the request breaks its schema rules."""
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as error:
        raise bad_request([(field_path(v), v.proto.message) for v in error.violations]) from error


__all__ = ["RpcError", "validate", "validate_publish"]
