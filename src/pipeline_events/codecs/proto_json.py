"""Canonical proto3 JSON of an envelope (camelCase names, 64-bit integers as strings).

Results are exactly json_format's (MessageToDict, ParseDict: the same dict,
the same message), computed by codecs compiled once per message type
(`_json_compiled`) instead of interpreting the descriptor on every call.
json_format still does any call the compiled codec is not certain of, and
produces every error. `message_to_dict` and `parse_dict` do the same for any
message type.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from pipeline_events.codecs import _json_compiled
from pipeline_events.errors import DecodeError, EncodeError

EventEnvelope = envelope_pb2.EventEnvelope
M = TypeVar("M", bound=Message)

# What json_format raises on input it rejects: OverflowError for a huge number in a double
# field; SystemError from upb's name lookups for a key or enum name with a lone surrogate.
_PARSE_ERRORS = (
    json_format.ParseError,
    ValueError,
    TypeError,
    RecursionError,
    OverflowError,
    SystemError,
)
# Looked up directly on the hot paths; a miss (KeyError), a type that is not compiled
# (None, so a TypeError) or a Fallback all take the slow path, which compiles on first use.
_ENCODERS = _json_compiled.ENCODERS
_DECODERS = _json_compiled.DECODERS


def message_to_dict(message: Message) -> dict[str, Any]:
    """Any message as proto3 JSON: `json_format.MessageToDict(message)`, faster.

    Raises:
        EncodeError: a value proto3 JSON cannot carry (a time outside years 1-9999).
    """
    try:
        return _ENCODERS[message.DESCRIPTOR](message)  # type: ignore[misc]
    except Exception:  # the slow path decides
        return _message_to_dict(message)


def _message_to_dict(message: Message) -> dict[str, Any]:
    encode = _json_compiled.encoder(message.DESCRIPTOR)
    if encode is not None:
        try:
            return encode(message)
        except Exception:  # Fallback, or anything unforeseen: json_format decides
            pass
    try:
        return json_format.MessageToDict(message)
    except (json_format.SerializeToJsonError, ValueError) as error:
        raise EncodeError(str(error)) from error


def parse_dict(value: Any, message_class: type[M], ignore_unknown_fields: bool = False) -> M:
    """A message of `message_class` from proto3 JSON: `json_format.ParseDict`, faster.

    Raises:
        DecodeError: the value is not valid proto3 JSON of that message type.
    """
    try:
        decode = _DECODERS[message_class.DESCRIPTOR, ignore_unknown_fields]
        return message_class(**decode(value))  # type: ignore[misc]
    except Exception:  # the slow path decides
        return _parse_dict(value, message_class, ignore_unknown_fields)


def _parse_dict(value: Any, message_class: type[M], ignore_unknown_fields: bool) -> M:
    decode = _json_compiled.decoder(message_class.DESCRIPTOR, ignore_unknown_fields)
    if decode is not None and type(value) is dict:
        try:
            return message_class(**decode(value))
        except Exception:  # Fallback, or anything unforeseen: json_format decides
            pass
    try:
        return json_format.ParseDict(
            value, message_class(), ignore_unknown_fields=ignore_unknown_fields
        )
    except _PARSE_ERRORS as error:
        raise DecodeError(str(error)) from error


def to_dict(envelope: EventEnvelope) -> dict[str, Any]:
    """The envelope as a canonical proto3 JSON object.

    Raises:
        EncodeError: a value proto3 JSON cannot carry (a time outside years 1-9999).
    """
    return message_to_dict(envelope)


def from_dict(value: Any, *, ignore_unknown_fields: bool = False) -> EventEnvelope:
    """Parse a canonical proto3 JSON object.

    Unknown fields are an error by default (as in every official runtime): JSON
    cannot carry them through, unlike the binary form.

    Raises:
        DecodeError: the value is not a valid EventEnvelope in proto3 JSON.
    """
    if not isinstance(value, dict):
        raise DecodeError(f"expected a JSON object, got {type(value).__name__}")
    return parse_dict(value, EventEnvelope, ignore_unknown_fields)


def encode(envelope: EventEnvelope) -> str:
    """Compact proto3 JSON on one line."""
    try:  # message_to_dict, one call less on the hottest path
        value = _ENCODERS[envelope.DESCRIPTOR](envelope)  # type: ignore[misc]
    except Exception:  # the slow path decides
        value = _message_to_dict(envelope)
    return orjson.dumps(value).decode()


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
