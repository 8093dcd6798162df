"""The adapter: domain events <-> official envelopes <-> betterproto, and its errors."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf.message import Message
from hypothesis import given, settings

from pipeline_events import adapter, domain
from pipeline_events.errors import DecodeError
from tests.conftest import VECTORS_DIR
from tests.strategies import events
from tests.vectors_support import MANIFEST, assert_official_reencoding, binary_of


def _vector(name: str) -> envelope_pb2.EventEnvelope:
    return envelope_pb2.EventEnvelope.FromString((VECTORS_DIR / f"{name}.binpb").read_bytes())


@pytest.mark.parametrize("vector", MANIFEST, ids=[v["name"] for v in MANIFEST])
def test_every_golden_vector_survives_the_domain_round_trip(vector: dict[str, Any]) -> None:
    envelope = envelope_pb2.EventEnvelope.FromString(binary_of(vector))
    event = adapter.from_envelope(envelope)
    # A number in the manifest is an EventType this schema does not define: no known payload.
    assert isinstance(event, domain.UnknownEvent) == isinstance(vector["event_type"], int)
    assert event.event_type == adapter.event_type_name(envelope.event_type)
    assert event.occurred_at.nanosecond == envelope.occurred_at.nanos
    back = adapter.to_envelope(
        event,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        metadata=envelope.metadata,
    )
    encoded = back.SerializeToString(deterministic=True)
    if isinstance(event, domain.UnknownEvent):  # keeps the envelope's bytes, unknown fields too
        assert back == envelope
        assert_official_reencoding(vector, "binary", encoded)
    else:  # a domain event keeps every known field, and no unknown one
        known = envelope_pb2.EventEnvelope()
        known.CopyFrom(envelope)
        known.DiscardUnknownFields()
        assert back == known
        assert_official_reencoding(vector, "binary", encoded, unknown_fields_kept=False)


def _is_plain_double(field) -> bool:
    return field.type == field.TYPE_DOUBLE and not field.has_presence and not field.is_repeated


def _without_negative_zero(message: Message) -> Message:
    """The message with -0.0 in implicit-presence doubles turned into 0.0, recursively."""
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                    for item in value.values():
                        _without_negative_zero(item)
            elif field.is_repeated:
                for item in value:
                    _without_negative_zero(item)
            else:
                _without_negative_zero(value)
        elif _is_plain_double(field) and value == 0.0 and math.copysign(1.0, value) < 0:
            setattr(message, field.name, 0.0)
    return message


@settings(max_examples=300)
@given(events())
def test_any_domain_event_round_trips_through_both_bindings(event: domain.Event) -> None:
    envelope = adapter.to_envelope(event, correlation_id="c-1", metadata={"k": "v"})
    assert adapter.from_envelope(envelope) == event
    through_betterproto = adapter.from_betterproto(adapter.to_betterproto(envelope))
    # betterproto2 0.10 treats -0.0 as the default of a plain double and drops it;
    # that sign is the only thing it may lose.
    assert through_betterproto == _without_negative_zero(envelope)


def test_event_type_names_and_numbers_mirror_each_other() -> None:
    assert adapter.event_type_number("ChunkProcessed") == 13
    assert adapter.event_type_name(13) == "ChunkProcessed"
    assert adapter.event_type_name(99) == "Unknown(99)"
    assert [adapter.event_type_name(n) for n in range(1, 17)] == list(domain.EVENT_TYPES)


def test_unknown_payload_case_becomes_an_unknown_event_that_keeps_its_bytes() -> None:
    envelope = _vector("chunk_processed_full")
    envelope.ClearField("chunk_processed")
    envelope.event_type = 17
    data = envelope.SerializeToString(deterministic=True) + b"\xaa\x07\x02\x08\x01"  # case 117
    event = adapter.from_envelope(envelope_pb2.EventEnvelope.FromString(data))
    assert isinstance(event, domain.UnknownEvent)
    assert isinstance(event, domain.DomainEvent)
    assert event.event_type == "Unknown(17)"
    assert event.aggregate_id == uuid.UUID(envelope.aggregate_id)
    assert adapter.to_envelope(event).SerializeToString(deterministic=True) == data


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: setattr(e, "event_id", "not-a-uuid"), "event_id"),
        (lambda e: setattr(e, "aggregate_id", ""), "aggregate_id"),
        (lambda e: e.ClearField("occurred_at"), "occurred_at"),
        (lambda e: setattr(e, "event_type", 1), "event_type"),
        (
            lambda e: setattr(e.processing_started, "processing_id", "x"),
            "processing_started.processing_id",
        ),
        (
            lambda e: e.processing_started.ClearField("security_context"),
            "processing_started.security_context",
        ),
        (
            lambda e: e.processing_started.security_context.ClearField("created_at"),
            "processing_started.security_context.created_at",
        ),
        (
            lambda e: setattr(e.processing_started.security_context, "security_level", 42),
            "processing_started.security_context.security_level",
        ),
        (
            lambda e: e.processing_started.security_context.permissions.add(),
            "processing_started.security_context.permissions",
        ),
    ],
)
def test_a_malformed_envelope_raises_decode_error_naming_the_field(mutate, field: str) -> None:
    envelope = _vector("processing_started_full")
    mutate(envelope)
    with pytest.raises(DecodeError) as raised:
        adapter.from_envelope(envelope)
    assert raised.value.field == field
