"""Upcasters: a synthetic newer version of ChunkProcessed, applied on read."""

from __future__ import annotations

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import adapter, domain
from pipeline_events.upcasting import UpcastError, Upcasters
from tests.conftest import VECTORS_DIR


def _chunk_v1() -> envelope_pb2.EventEnvelope:
    data = (VECTORS_DIR / "chunk_processed_full.binpb").read_bytes()
    envelope = envelope_pb2.EventEnvelope.FromString(data)
    envelope.chunk_processed.chunk_size = 4  # v1 (synthetic): chunk sizes were in KiB
    envelope.chunk_processed.stage_name = "Compression"
    return envelope


def _registry() -> Upcasters:
    upcasters = Upcasters()

    @upcasters.register("chunk_processed", from_version=1)
    def upcast_v1_v2(envelope: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
        envelope.chunk_processed.chunk_size *= 1024  # v2: bytes
        return envelope

    @upcasters.register("chunk_processed", from_version=2)
    def upcast_v2_v3(envelope: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
        envelope.chunk_processed.stage_name = envelope.chunk_processed.stage_name.lower()
        return envelope

    return upcasters


def test_readers_see_the_current_version_of_an_old_event() -> None:
    original = _chunk_v1()
    event = adapter.from_envelope(original, upcasters=_registry())
    assert isinstance(event, domain.ChunkProcessed)
    assert (event.version, event.chunk_size, event.stage_name) == (3, 4096, "compression")
    assert original.schema_version == 1 and original.chunk_processed.chunk_size == 4


def test_a_current_event_and_other_types_pass_untouched() -> None:
    upcasters = _registry()
    assert upcasters.current_version("chunk_processed") == 3
    assert upcasters.current_version("stage_started") == 1
    current = _chunk_v1()
    current.schema_version = 3
    assert upcasters.upcast(current) is current
    assert adapter.from_envelope(current, upcasters=upcasters).chunk_size == 4


def test_without_upcasters_the_stored_version_is_what_readers_see() -> None:
    event = adapter.from_envelope(_chunk_v1())
    assert (event.version, event.chunk_size) == (1, 4)


def test_registration_errors_and_failing_upcasters_are_precise() -> None:
    upcasters = _registry()
    with pytest.raises(ValueError, match="already registered"):
        upcasters.register("chunk_processed", from_version=1)(lambda e: e)
    with pytest.raises(ValueError, match="no payload case"):
        upcasters.register("chunk_exploded", from_version=1)
    broken = Upcasters()
    broken.register("chunk_processed", from_version=1)(lambda e: 1 / 0)
    with pytest.raises(UpcastError, match="chunk_processed v1"):
        broken.upcast(_chunk_v1())
