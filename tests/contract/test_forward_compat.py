"""An envelope from a newer schema (a payload case v1 does not know) survives v1 bindings intact."""

from __future__ import annotations

from adaptive_pipeline.events.v1 import envelope_pb2
from adaptive_pipeline_betterproto.adaptive_pipeline.events import v1 as bp

from tests.conftest import VECTORS_DIR

FUTURE_CASE = 117  # the next payload number a v1 reader has never seen
FUTURE_TYPE = 17


def _future_envelope() -> bytes:
    """A valid v1 envelope whose payload is replaced by case 117 and EventType 17."""
    known = envelope_pb2.EventEnvelope.FromString(
        (VECTORS_DIR / "chunk_processed_full.binpb").read_bytes()
    )
    known.ClearField("chunk_processed")
    known.event_type = FUTURE_TYPE  # proto3 enums are open: unknown values are kept
    payload = b"\x0a\x05hello\x10\x2a"  # field 1 "hello", field 2 = 42
    tag = bytes([(FUTURE_CASE << 3 | 2) & 0x7F | 0x80, FUTURE_CASE >> 4])
    return known.SerializeToString(deterministic=True) + tag + bytes([len(payload)]) + payload


def test_official_binding_keeps_an_unknown_payload_case_byte_for_byte() -> None:
    data = _future_envelope()
    envelope = envelope_pb2.EventEnvelope.FromString(data)
    assert envelope.WhichOneof("payload") is None
    assert envelope.event_type == FUTURE_TYPE
    assert envelope.event_id  # the metadata is still readable
    assert envelope.SerializeToString(deterministic=True) == data


def test_betterproto_binding_keeps_an_unknown_payload_case_byte_for_byte() -> None:
    data = _future_envelope()
    envelope = bp.EventEnvelope.parse(data)
    assert envelope.event_id
    assert bytes(envelope) == data
