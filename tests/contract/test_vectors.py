"""Golden vectors: both Python bindings decode them to equal values and re-encode the same bytes."""

from __future__ import annotations

import json
from typing import Any

import protovalidate
import pytest
from adaptive_pipeline.events.v1 import envelope_pb2
from adaptive_pipeline_betterproto.adaptive_pipeline.events import v1 as bp
from google.protobuf import json_format

from tests.conftest import VECTORS_DIR

MANIFEST: list[dict[str, Any]] = json.loads((VECTORS_DIR / "manifest.json").read_text())["vectors"]
IDS = [vector["name"] for vector in MANIFEST]


def _load(vector: dict[str, Any]) -> tuple[bytes, str]:
    return (VECTORS_DIR / vector["binary"]).read_bytes(), (VECTORS_DIR / vector["json"]).read_text()


@pytest.mark.parametrize("vector", MANIFEST, ids=IDS)
def test_official_binding_decodes_binary_and_json_to_equal_values(vector: dict[str, Any]) -> None:
    binary, text = _load(vector)
    from_binary = envelope_pb2.EventEnvelope.FromString(binary)
    from_json = json_format.Parse(text, envelope_pb2.EventEnvelope())
    assert from_binary == from_json
    assert envelope_pb2.EventType.Name(from_binary.event_type) == vector["event_type"]
    assert from_binary.SerializeToString(deterministic=True) == binary
    assert json.loads(json_format.MessageToJson(from_binary)) == json.loads(text)


@pytest.mark.parametrize("vector", MANIFEST, ids=IDS)
def test_betterproto_binding_decodes_to_the_same_values(vector: dict[str, Any]) -> None:
    binary, text = _load(vector)
    message = bp.EventEnvelope.parse(binary)
    assert bytes(message) == binary
    assert message == bp.EventEnvelope.from_json(text)
    official = envelope_pb2.EventEnvelope.FromString(binary)
    # Same values field by field, via the canonical JSON of each binding.
    assert message.to_dict() == json_format.MessageToDict(official)


@pytest.mark.parametrize("vector", MANIFEST, ids=IDS)
def test_every_vector_satisfies_the_schema_validation_rules(vector: dict[str, Any]) -> None:
    binary, _ = _load(vector)
    protovalidate.validate(envelope_pb2.EventEnvelope.FromString(binary))


def test_absent_and_empty_optionals_stay_distinct() -> None:
    def payload(name: str) -> Any:
        binary = (VECTORS_DIR / f"{name}.binpb").read_bytes()
        envelope = envelope_pb2.EventEnvelope.FromString(binary)
        return getattr(envelope, envelope.WhichOneof("payload"))

    assert not payload("processing_paused_no_checkpoint").HasField("checkpoint_data")
    empty = payload("processing_paused_empty_checkpoint")
    assert empty.HasField("checkpoint_data") and empty.checkpoint_data == b""
    assert not payload("pipeline_created_absent_optionals").HasField("created_by")
    assert payload("pipeline_created_empty_strings").HasField("created_by")
    metrics = payload("metrics_updated_full").metrics
    assert metrics.HasField("compression_ratio") and metrics.compression_ratio == 0.0
    assert metrics.stage_metrics["compression"].HasField("memory_usage")
    assert not metrics.stage_metrics["encryption"].HasField("memory_usage")
