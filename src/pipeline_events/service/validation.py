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
three more. Nesting is measured by the parser itself: the envelopes are
parsed again inside 68 levels of a wrapper (`too_deep`), which sees what a
reader will see, unknown groups in map entries included.

Cost: protovalidate takes ~10-17 µs an event through Python, and the envelope checks
below ~3-5 more. So a publish request first takes a fast pass that can only answer
"certainly valid" (`_certainly_valid`, ~3-6 µs an event): the schema's rules compiled into
plain Python by service/rules.py, with the envelope checks compiled into the same walk
(`_PUBLISH_STRICTNESS`), then the size and nesting limits and the expected revisions. Any
other answer sends the request through the full pass (`_publish_violations`, the code
that validated every request before), which words the violations: what a client is told
never comes from the fast pass (tests/service/test_validation_differential.py holds the
two to the same verdicts and the same details).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import protovalidate
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from pipeline_events.service import rules
from pipeline_events.service.errors import RpcError, bad_request
from pipeline_events.store.base import varint

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


def _has_unknown_payload(envelope: envelope_pb2.EventEnvelope) -> bool:
    """Whether the envelope carries a payload case from a newer schema (see module doc)."""
    return (
        envelope.WhichOneof("payload") is None
        and envelope.event_type not in _KNOWN_TYPES
        and any(f.field_number in _PAYLOAD_RANGE for f in UnknownFieldSet(envelope))
    )


def _probe_type() -> type[Message]:
    """A message type that nests itself (`inner`, field 1) and holds envelopes (field 2).

    Built at run time in a private package, outside the contract: it exists only to
    parse envelopes with part of the parser's depth budget already spent.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="pipeline_events/internal/nesting_probe.proto",
        package="pipeline_events.internal",
        syntax="proto3",
        dependency=[envelope_pb2.DESCRIPTOR.name],
    )
    probe = file.message_type.add(name="NestingProbe")
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    probe.field.add(
        name="inner", number=1, type=message, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        type_name=".pipeline_events.internal.NestingProbe",
    )  # fmt: skip
    probe.field.add(
        name="envelopes", number=2, type=message, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type_name="." + envelope_pb2.EventEnvelope.DESCRIPTOR.full_name,
    )  # fmt: skip
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pipeline_events.internal.NestingProbe")
    )


_PROBE = _probe_type()
# Python's parser (upb) allows 100 levels; after these wrappers an envelope has
# MAX_NESTING left, itself included (measured: tests/service/test_limits.py).
_PROBE_WRAPPERS = 68
_WRAPPER_TAG = b"\x0a"  # NestingProbe.inner
_ENVELOPE_TAG = b"\x12"  # NestingProbe.envelopes


def _probe(envelopes: Sequence[bytes]) -> bytes:
    """The envelopes as NestingProbe.envelopes, inside _PROBE_WRAPPERS levels of `inner`.

    The wrappers' length prefixes are computed from the inside out and joined in front, so
    the envelopes are copied once (wrapping by concatenation copied them 68 times: ~0.25 µs
    an event). The bytes are the same as before, so the parser's verdict is too.
    """
    # No cheaper bound lets the parse be skipped. From the bytes alone: each level below the
    # envelope costs at least 2 bytes (tag and length, or start and end group), which only
    # rules out envelopes under 62 bytes, and ours are 200-600. From the parsed message: known
    # fields nest at most 6 levels, so only unknown groups can go deeper, but proving there
    # are none takes an UnknownFieldSet of every message in the tree (~0.1-0.2 µs each),
    # more than this parse (~0.2 µs an event), which also measures what readers will see.
    parts = []
    for envelope in envelopes:
        parts += (_ENVELOPE_TAG, varint(len(envelope)), envelope)
    size = sum(map(len, parts))
    headers = []
    for _ in range(_PROBE_WRAPPERS):
        header = _WRAPPER_TAG + varint(size)
        headers.append(header)
        size += len(header)
    headers.reverse()  # the outermost first
    return b"".join(headers + parts)


def _parses_nested(envelopes: Sequence[bytes]) -> bool:
    """Whether the envelopes parse with only MAX_NESTING levels of depth left."""
    try:
        _PROBE.FromString(_probe(envelopes))
    except Exception:  # DecodeError: the depth limit (the bytes themselves parsed before)
        return False
    return True


def too_deep(envelopes: Sequence[bytes]) -> list[int]:
    """Indexes of the envelopes that nest messages and groups, known or unknown (in map
    entries too), more than MAX_NESTING levels deep. One parse when none does."""
    if _parses_nested(envelopes):
        return []
    return [index for index, envelope in enumerate(envelopes) if not _parses_nested([envelope])]


def hidden_map_entries(message: Message) -> list[str]:
    """Paths of map fields with an entry the parser could not read as one (an unknown field
    inside the entry): upb keeps such an entry whole as an unknown field of the message, so
    validation never sees its key, and other runtimes (protobuf-es) fail to decode it."""
    found = []
    numbers = _map_numbers(message.DESCRIPTOR)
    if numbers:
        for field in UnknownFieldSet(message):
            if field.field_number in numbers:
                found.append(numbers[field.field_number])
    for name, repeated in _toward_maps(message.DESCRIPTOR):
        if repeated:
            for index, item in enumerate(getattr(message, name)):
                found += [f"{name}[{index}].{path}" for path in hidden_map_entries(item)]
        elif message.HasField(name):
            found += [f"{name}.{path}" for path in hidden_map_entries(getattr(message, name))]
    return found


@functools.cache
def _map_numbers(descriptor: Descriptor) -> dict[int, str]:
    """Field number -> name of a message type's map fields."""
    return {
        field.number: field.name
        for field in descriptor.fields
        if field.message_type is not None and field.message_type.GetOptions().map_entry
    }


@functools.cache
def _toward_maps(
    descriptor: Descriptor, seen: frozenset[str] = frozenset()
) -> tuple[tuple[str, bool], ...]:
    """The message fields (name, repeated) below which some message type has a map field.

    Map values are not followed: no map value type of this schema holds a map."""
    seen = seen | {descriptor.full_name}
    toward = []
    for field in descriptor.fields:
        target = field.message_type
        if target is None or target.GetOptions().map_entry or target.full_name in seen:
            continue
        if _map_numbers(target) or _toward_maps(target, seen):
            toward.append((field.name, field.is_repeated))
    return tuple(toward)


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
    envelopes: Sequence[envelope_pb2.EventEnvelope],
    sent: Sequence[bytes],
    max_event_bytes: int,
) -> list[tuple[str, str]]:
    """Rules protovalidate cannot express: the EventType matches the payload, timestamp
    nanos are in range, every map entry is one, and each envelope (`sent`: its bytes as
    received) is within the size and nesting limits."""
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
        for hidden in hidden_map_entries(envelope):
            violations.append(
                (
                    f"{path}.{hidden}",
                    "a map entry holds a field that is neither its key nor its value",
                )
            )
        if len(sent[index]) > max_event_bytes:
            size = len(sent[index])
            violations.append(
                (
                    path,
                    f"the event is {size:,} bytes; this server takes at most {max_event_bytes:,}",
                )
            )
    for index in too_deep(sent):
        violations.append(
            (f"events[{index}]", f"nests messages or groups more than {MAX_NESTING} levels deep")
        )
    return violations


def validate_publish(
    request: service_pb2.PublishRequest | service_pb2.PublishStreamRequest,
    sent: Sequence[bytes],
    max_event_bytes: int,
) -> None:
    """Raise an INVALID_ARGUMENT RpcError listing every violation of a publish request.

    Args:
        request: the parsed request.
        sent: each envelope's bytes as received (see service/wire.py).
        max_event_bytes: the largest envelope accepted.
    """
    try:
        if _certainly_valid(request, sent, max_event_bytes):
            return
    except Exception:  # never the fast pass's to fail a request: the full pass judges it
        pass
    violations = _publish_violations(request, sent, max_event_bytes)
    if violations:
        raise bad_request(violations)


#: What the fast pass asks of a publish request besides its schema rules: what
#: envelope_violations checks of each envelope (its EventType mirrors its payload case, and
#: Timestamp nanos and map entries are whole), so that the envelopes need no second walk.
#: Stricter, never laxer: an envelope with a newer payload case fails it (the full pass judges).
_PUBLISH_STRICTNESS = rules.Strictness(
    timestamp_nanos=True,
    whole_map_entries=True,
    mirrored_oneofs=(
        (
            envelope_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].full_name,
            "event_type",
            tuple((case, number - 100) for case, number in _PAYLOAD_NUMBERS.items()),
        ),
    ),
)
# Compiled at import, so that a rule the compiler cannot translate stops the service (and
# every test) rather than being skipped.
_PUBLISH_CHECKS = {
    message.DESCRIPTOR.full_name: rules.checker(message.DESCRIPTOR, _PUBLISH_STRICTNESS)
    for message in (service_pb2.PublishRequest, service_pb2.PublishStreamRequest)
}


def _certainly_valid(
    request: service_pb2.PublishRequest | service_pb2.PublishStreamRequest,
    sent: Sequence[bytes],
    max_event_bytes: int,
) -> bool:
    """Whether `_publish_violations` would certainly be empty (a few µs an event, where it
    takes ~12-20). False means "not sure", never a verdict.

    Each of its checks implies the absence of one kind of violation there: the compiled
    check, protovalidate's (rules.py) and the envelopes' own but for size and nesting, which
    follow; then no two expected revisions for one aggregate.
    """
    checks = request.expected_revisions
    return (
        _PUBLISH_CHECKS[request.DESCRIPTOR.full_name](request)
        and max(map(len, sent), default=0) <= max_event_bytes
        and _parses_nested(sent)
        and (len(checks) < 2 or len({c.aggregate_id.lower() for c in checks}) == len(checks))
    )


def _publish_violations(
    request: service_pb2.PublishRequest | service_pb2.PublishStreamRequest,
    sent: Sequence[bytes],
    max_event_bytes: int,
) -> list[tuple[str, str]]:
    """Every violation of a publish request, as (field path, description), in the order the
    client is told them: protovalidate's (less the waived ones), the envelopes', then the
    expected revisions'."""
    violations: list[tuple[str, str]] = []
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as error:
        for violation in error.violations:
            path = field_path(violation)
            if not _waived(path, violation.proto.rule_id, request.events):
                violations.append((path, violation.proto.message))
    violations += envelope_violations(request.events, sent, max_event_bytes)
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
    return violations


def validate(request: Any) -> None:
    """Raise an INVALID_ARGUMENT RpcError if the request breaks its schema rules.

    The compiled rules (`rules.is_valid`, proved to judge as protovalidate does) pass a
    valid request in a few microseconds; protovalidate itself words the refusals.
    """
    try:
        if rules.is_valid(request):
            return
    except Exception:  # never the fast pass's to fail a request: protovalidate judges it
        pass
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as error:
        raise bad_request([(field_path(v), v.proto.message) for v in error.violations]) from error


__all__ = ["RpcError", "validate", "validate_publish"]
