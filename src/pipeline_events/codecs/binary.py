"""Binary protobuf: an envelope's wire bytes."""

from __future__ import annotations

from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import message

from pipeline_events.errors import DecodeError

EventEnvelope = envelope_pb2.EventEnvelope


def encode(envelope: EventEnvelope) -> bytes:
    """The envelope's wire bytes, deterministic: equal envelopes give equal bytes.

    Fields come in number order and map entries sorted by key, so a retried
    publish of the same event produces the same bytes (idempotency compares them).
    """
    return envelope.SerializeToString(deterministic=True)


def decode(data: bytes) -> EventEnvelope:
    """Parse an envelope; fields this schema does not know are kept as unknown fields.

    Raises:
        DecodeError: the bytes are not a well-formed EventEnvelope.
    """
    try:
        return EventEnvelope.FromString(data)
    except (message.DecodeError, TypeError) as error:
        raise DecodeError(f"not a protobuf EventEnvelope: {error}") from error
