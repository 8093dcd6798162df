"""Request validation: the schema's protovalidate rules plus envelope consistency.

Forward compatibility: an envelope whose payload case this server does not
know arrives with an unset oneof and unknown fields. Its "required oneof"
violation is waived so that it can be stored and relayed intact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import protovalidate
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
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


def _has_unknown_payload(envelope: envelope_pb2.EventEnvelope) -> bool:
    return envelope.WhichOneof("payload") is None and len(UnknownFieldSet(envelope)) > 0


def _waived(path: str, rule_id: str, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> bool:
    """The required-oneof rule of an envelope carrying a payload case from a newer schema."""
    if rule_id != "required" or not path.endswith(".payload") or not path.startswith("events["):
        return False
    index = int(path[len("events[") : path.index("]")])
    return _has_unknown_payload(envelopes[index])


def envelope_violations(envelopes: Sequence[envelope_pb2.EventEnvelope]) -> list[tuple[str, str]]:
    """Consistency rules protovalidate cannot express: the EventType matches the payload."""
    violations = []
    for index, envelope in enumerate(envelopes):
        case = envelope.WhichOneof("payload")
        if case is not None and envelope.event_type != _PAYLOAD_NUMBERS[case] - 100:
            violations.append(
                (f"events[{index}].event_type", f"does not match the payload case {case}")
            )
    return violations


def validate_publish(
    request: service_pb2.PublishRequest | service_pb2.PublishStreamRequest,
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
    violations += envelope_violations(request.events)
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
