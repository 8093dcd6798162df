"""CloudEvents 1.0: structured JSON mode and binary-mode attribute headers, both ways.

Mapping (the same in both modes):
- `id` = event id, `source` = the producer (default `urn:adaptive-pipeline`),
  `type` = `adaptive_pipeline.events.v1.<EventName>`, `subject` = aggregate
  (pipeline) id, `time` = occurred-at in RFC 3339 with nanoseconds;
- `data` is the event's payload message only: proto3 JSON
  (`datacontenttype: application/json`) or protobuf bytes
  (`application/protobuf`; `data_base64` in structured mode);
- the rest of the envelope travels in extension attributes: `schemaversion`,
  `correlationid`, `causationid` (omitted when empty) and `pipelinemetadata`
  (the metadata map as compact JSON, omitted when empty).
So an envelope survives a round trip through either mode unchanged.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Mapping
from typing import Any

import orjson
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import message, timestamp_pb2

from pipeline_events.codecs import proto_json
from pipeline_events.errors import DecodeError, EncodeError

EventEnvelope = envelope_pb2.EventEnvelope
SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "urn:adaptive-pipeline"
TYPE_PREFIX = "adaptive_pipeline.events.v1."
JSON = "application/json"
PROTOBUF = "application/protobuf"

_PAYLOAD = EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"]
# CloudEvents type suffix ("ChunkProcessed") <-> payload oneof field.
_FIELD_BY_NAME = {field.message_type.name: field for field in _PAYLOAD.fields}
# The HTTP binding percent-encodes space, '"', '%' and everything outside printable ASCII.
_HEADER_SAFE = "!#$&'()*+,/:;<=>?@[\\]^_`{|}~"
_REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "schemaversion")


def _attributes(envelope: EventEnvelope, source: str) -> dict[str, str]:
    case = envelope.WhichOneof("payload")
    if case is None:
        raise EncodeError("an envelope with an unknown payload case has no CloudEvents type")
    try:
        time = envelope.occurred_at.ToJsonString()
    except ValueError as error:  # outside years 1-9999, or bad nanos: no RFC 3339 form
        raise EncodeError(f"occurred_at: {error}") from error
    attributes = {
        "specversion": SPEC_VERSION,
        "id": envelope.event_id,
        "source": source,
        "type": TYPE_PREFIX + EventEnvelope.DESCRIPTOR.fields_by_name[case].message_type.name,
        "subject": envelope.aggregate_id,
        "time": time,
        "schemaversion": str(envelope.schema_version),
    }
    if envelope.correlation_id:
        attributes["correlationid"] = envelope.correlation_id
    if envelope.causation_id:
        attributes["causationid"] = envelope.causation_id
    if envelope.metadata:
        attributes["pipelinemetadata"] = orjson.dumps(
            dict(envelope.metadata), option=orjson.OPT_SORT_KEYS
        ).decode()
    return attributes


def _envelope(attributes: Mapping[str, Any], payload: message.Message | None) -> EventEnvelope:
    """Rebuild an envelope from CloudEvents attributes and its decoded payload."""
    for name in _REQUIRED:
        if not isinstance(attributes.get(name), str):
            raise DecodeError("missing or not a string", field=name)
    if attributes["specversion"] != SPEC_VERSION:
        raise DecodeError(f"unsupported version {attributes['specversion']!r}", field="specversion")
    field = _payload_field(attributes["type"])
    occurred_at = timestamp_pb2.Timestamp()
    try:
        occurred_at.FromJsonString(attributes["time"])
        version = int(attributes["schemaversion"])
        metadata = orjson.loads(attributes.get("pipelinemetadata", "{}"))
        envelope = EventEnvelope(
            event_id=attributes["id"],
            aggregate_id=attributes["subject"],
            event_type=field.number - 100,
            occurred_at=occurred_at,
            schema_version=version,
            correlation_id=attributes.get("correlationid", ""),
            causation_id=attributes.get("causationid", ""),
            metadata=metadata,
        )
    except (ValueError, TypeError, orjson.JSONDecodeError) as error:
        raise DecodeError(f"bad CloudEvents attribute: {error}") from error
    getattr(envelope, field.name).CopyFrom(payload or field.message_type._concrete_class())
    return envelope


def _payload_field(event_type: str) -> Any:
    name = event_type.removeprefix(TYPE_PREFIX)
    if name == event_type or name not in _FIELD_BY_NAME:
        raise DecodeError(f"not an adaptive pipeline event type: {event_type!r}", field="type")
    return _FIELD_BY_NAME[name]


def _parse_payload(event_type: str, content_type: str, data: Any) -> message.Message:
    payload_class = _payload_field(event_type).message_type._concrete_class
    if content_type not in (PROTOBUF, JSON):
        raise DecodeError(f"unsupported content type {content_type!r}", field="datacontenttype")
    try:
        if content_type == JSON:
            return proto_json.parse_dict(data, payload_class)
        payload = payload_class()
        payload.MergeFromString(data)
    except (message.DecodeError, TypeError, ValueError) as error:  # parse_dict: a ValueError
        raise DecodeError(f"bad {content_type} data: {error}", field="data") from error
    return payload


def _payload_of(envelope: EventEnvelope) -> message.Message:
    return getattr(envelope, envelope.WhichOneof("payload"))


# --- structured mode ------------------------------------------------------------------------


def to_structured(
    envelope: EventEnvelope, *, source: str = DEFAULT_SOURCE, binary_data: bool = False
) -> dict[str, Any]:
    """The structured-mode CloudEvent (a JSON object) of an envelope.

    Args:
        source: the `source` attribute (the producer's URI reference).
        binary_data: carry the payload as protobuf in `data_base64` instead of JSON `data`.
    """
    event: dict[str, Any] = _attributes(envelope, source)
    if binary_data:
        event["datacontenttype"] = PROTOBUF
        event["data_base64"] = base64.b64encode(_payload_of(envelope).SerializeToString()).decode()
    else:
        event["datacontenttype"] = JSON
        event["data"] = proto_json.message_to_dict(_payload_of(envelope))
    return event


def from_structured(event: Any) -> EventEnvelope:
    """The envelope of a structured-mode CloudEvent (a parsed JSON object).

    Raises:
        DecodeError: not a CloudEvent of this contract, naming the attribute.
    """
    if not isinstance(event, dict):
        raise DecodeError(f"expected a JSON object, got {type(event).__name__}")
    content_type = event.get("datacontenttype", JSON)
    if "data_base64" in event:
        try:
            data: Any = base64.b64decode(event["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise DecodeError(f"not base64: {error}", field="data_base64") from error
        content_type = event.get("datacontenttype", PROTOBUF)
    else:
        data = event.get("data", {})
    if not isinstance(event.get("type"), str):
        raise DecodeError("missing or not a string", field="type")
    if not isinstance(content_type, str):
        raise DecodeError("not a string", field="datacontenttype")
    return _envelope(event, _parse_payload(event["type"], content_type, data))


def encode_structured(envelope: EventEnvelope, **options: Any) -> str:
    """Structured-mode CloudEvent as compact JSON text (`application/cloudevents+json`)."""
    return orjson.dumps(to_structured(envelope, **options)).decode()


def decode_structured(text: str | bytes) -> EventEnvelope:
    """Parse structured-mode CloudEvent JSON text.

    Raises:
        DecodeError: not JSON, or not a CloudEvent of this contract.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise DecodeError(f"not JSON: {error}") from error
    return from_structured(value)


# --- binary mode ----------------------------------------------------------------------------


def to_binary(
    envelope: EventEnvelope, *, source: str = DEFAULT_SOURCE, json_data: bool = False
) -> tuple[dict[str, str], bytes]:
    """Binary-mode headers (`ce-*`, `content-type`) and body of an envelope.

    Header values are percent-encoded as the HTTP binding asks for text
    outside printable ASCII. The body is the payload as protobuf, or as
    proto3 JSON with `json_data`.
    """
    payload = _payload_of(envelope)
    headers = {
        f"ce-{name}": urllib.parse.quote(value, safe=_HEADER_SAFE)
        for name, value in _attributes(envelope, source).items()
    }
    if json_data:
        headers["content-type"] = JSON
        return headers, orjson.dumps(proto_json.message_to_dict(payload))
    headers["content-type"] = PROTOBUF
    return headers, payload.SerializeToString()


def from_binary(headers: Mapping[str, str], body: bytes) -> EventEnvelope:
    """The envelope of a binary-mode CloudEvent (header names are case-insensitive).

    Raises:
        DecodeError: a missing attribute, an unknown type or a body that does not parse.
    """
    attributes: dict[str, str] = {}
    content_type = PROTOBUF
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-"):
            attributes[lower[3:]] = urllib.parse.unquote(value)
        elif lower == "content-type":
            content_type = value.split(";")[0].strip()
    if not isinstance(attributes.get("type"), str):
        raise DecodeError("missing", field="ce-type")
    if content_type == JSON:
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise DecodeError(f"not JSON: {error}", field="data") from error
    else:
        data = body
    return _envelope(attributes, _parse_payload(attributes["type"], content_type, data))
