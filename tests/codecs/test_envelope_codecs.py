"""Binary, proto3 JSON and CloudEvents codecs: round trips over all events, and fuzzing."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_events import adapter, domain
from pipeline_events.codecs import binary, cloudevents, proto_json
from pipeline_events.errors import DecodeError, EncodeError, PipelineEventsError
from tests.conftest import VECTORS_DIR
from tests.strategies import events
from tests.vectors_support import MANIFEST, assert_official_reencoding, binary_of

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _envelope(event: domain.Event):
    return adapter.to_envelope(
        event, correlation_id="corr", causation_id="cause", metadata={"é": "ü"}
    )


@settings(max_examples=200)
@given(events())
def test_every_codec_round_trips_every_event(event: domain.Event) -> None:
    envelope = _envelope(event)
    assert binary.decode(binary.encode(envelope)) == envelope
    assert proto_json.decode(proto_json.encode(envelope)) == envelope
    assert cloudevents.decode_structured(cloudevents.encode_structured(envelope)) == envelope
    structured_binary = cloudevents.encode_structured(envelope, binary_data=True)
    assert cloudevents.decode_structured(structured_binary) == envelope
    for json_data in (False, True):
        headers, body = cloudevents.to_binary(envelope, json_data=json_data)
        assert all(value.isascii() for value in headers.values())
        assert cloudevents.from_binary(headers, body) == envelope
    assert adapter.from_envelope(binary.decode(binary.encode(envelope))) == event


def test_proto_json_matches_the_golden_json() -> None:
    envelope = binary.decode((VECTORS_DIR / "processing_started_full.binpb").read_bytes())
    golden = json.loads((VECTORS_DIR / "processing_started_full.json").read_text())
    assert json.loads(proto_json.encode(envelope)) == golden
    assert proto_json.decode(json.dumps(golden)) == envelope


def test_cloudevent_attributes_follow_the_documented_mapping() -> None:
    envelope = binary.decode((VECTORS_DIR / "chunk_processed_ts_nanos.binpb").read_bytes())
    event = cloudevents.to_structured(envelope, source="urn:test")
    assert event["specversion"] == "1.0"
    assert event["id"] == envelope.event_id
    assert event["subject"] == envelope.aggregate_id
    assert event["type"] == "adaptive_pipeline.events.v1.ChunkProcessed"
    assert event["source"] == "urn:test"
    assert event["time"] == "2025-01-15T10:30:45.123456789Z"
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["chunkSequence"] == "7"
    assert event["correlationid"] == envelope.correlation_id
    assert "data_base64" not in event
    headers, _ = cloudevents.to_binary(envelope)
    assert headers["ce-type"] == event["type"]
    assert headers["content-type"] == "application/protobuf"


def test_binary_mode_headers_are_case_insensitive_and_percent_decoded() -> None:
    envelope = binary.decode((VECTORS_DIR / "pipeline_created_non_ascii.binpb").read_bytes())
    headers, body = cloudevents.to_binary(envelope)
    assert "%C3%AF" in headers["ce-pipelinemetadata"]
    shouted = {name.upper(): value for name, value in headers.items()}
    assert cloudevents.from_binary(shouted, body) == envelope


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e.update(type="com.example.Other"), "type"),
        (lambda e: e.update(data={"chunkSequence": "minus one"}), "data"),
        (lambda e: e.update(datacontenttype="text/xml"), "datacontenttype"),
        (lambda e: e.update(data_base64="***"), "data_base64"),
    ],
)
def test_cloudevents_errors_name_the_attribute(change, field: str) -> None:
    envelope = binary.decode((VECTORS_DIR / "chunk_processed_full.binpb").read_bytes())
    event = cloudevents.to_structured(envelope)
    change(event)
    with pytest.raises(DecodeError) as raised:
        cloudevents.from_structured(event)
    assert raised.value.field == field


def test_an_unknown_payload_case_has_no_cloudevents_type() -> None:
    envelope = binary.decode((VECTORS_DIR / "chunk_processed_full.binpb").read_bytes())
    envelope.ClearField("chunk_processed")
    with pytest.raises(EncodeError):
        cloudevents.to_structured(envelope)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_binary_decoders_raise_only_package_errors(data: bytes) -> None:
    for decode in (
        binary.decode,
        proto_json.decode,
        cloudevents.decode_structured,
        lambda d: cloudevents.from_binary(
            {"ce-type": "adaptive_pipeline.events.v1.StageFailed"}, d
        ),
    ):
        with contextlib.suppress(PipelineEventsError):
            decode(data)
    with contextlib.suppress(PipelineEventsError):
        adapter.from_envelope(binary.decode(data))


@settings(max_examples=300)
@given(JSON_VALUES)
def test_json_decoders_raise_only_package_errors(value: object) -> None:
    for decode in (proto_json.from_dict, cloudevents.from_structured):
        with contextlib.suppress(PipelineEventsError):
            decode(value)


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(set(VECTORS_DIR.glob("*.json")) - {VECTORS_DIR / "manifest.json"})),
    st.text(max_size=8),
    JSON_VALUES,
)
def test_mutated_golden_json_raises_only_package_errors(path, key: str, value: object) -> None:
    document = json.loads(path.read_text())
    target = document[
        next(k for k in document if isinstance(document[k], dict) and k != "metadata")
    ]
    target[key or "processingId"] = value
    for decode in (proto_json.from_dict, lambda d: cloudevents.from_structured({**d, "type": "x"})):
        with contextlib.suppress(PipelineEventsError):
            adapter.from_envelope(decode(document))


@pytest.mark.parametrize("vector", MANIFEST, ids=[vector["name"] for vector in MANIFEST])
def test_binary_reencodes_golden_bytes_exactly(vector: dict[str, Any]) -> None:
    # Each vector's input, canonical or not, re-encodes to its canonical bytes; where the
    # manifest pins protobuf-python (upb) writing other bytes, to exactly those.
    encoded = binary.encode(binary.decode(binary_of(vector)))
    assert_official_reencoding(vector, "binary", encoded)
