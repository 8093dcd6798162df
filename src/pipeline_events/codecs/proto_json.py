"""Canonical proto3 JSON of an envelope (camelCase names, 64-bit integers as strings)."""

from __future__ import annotations

from typing import Any

import orjson
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import json_format

from pipeline_events.errors import DecodeError, EncodeError

EventEnvelope = envelope_pb2.EventEnvelope


def to_dict(envelope: EventEnvelope) -> dict[str, Any]:
    """The envelope as a canonical proto3 JSON object.

    Raises:
        EncodeError: a value proto3 JSON cannot carry (a time outside years 1-9999).
    """
    try:
        return json_format.MessageToDict(envelope)
    except (json_format.SerializeToJsonError, ValueError) as error:
        raise EncodeError(str(error)) from error


def from_dict(value: Any, *, ignore_unknown_fields: bool = False) -> EventEnvelope:
    """Parse a canonical proto3 JSON object.

    Unknown fields are an error by default (as in every official runtime): JSON
    cannot carry them through, unlike the binary form.

    Raises:
        DecodeError: the value is not a valid EventEnvelope in proto3 JSON.
    """
    if not isinstance(value, dict):
        raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    try:
        return json_format.ParseDict(
            value, EventEnvelope(), ignore_unknown_fields=ignore_unknown_fields
        )
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise DecodeError(str(error)) from error


def encode(envelope: EventEnvelope) -> str:
    """Compact proto3 JSON on one line."""
    return orjson.dumps(to_dict(envelope)).decode()


def decode(text: str | bytes, *, ignore_unknown_fields: bool = False) -> EventEnvelope:
    """Parse proto3 JSON text.

    Raises:
        DecodeError: the text is not JSON, or not an EventEnvelope.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise DecodeError(f"not JSON: {error}") from error
    return from_dict(value, ignore_unknown_fields=ignore_unknown_fields)
