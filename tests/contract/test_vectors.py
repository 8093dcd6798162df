"""Golden vectors: both Python bindings re-encode each one, from binary and from JSON, to its
canonical bytes, and decode it to the same values.

The manifest's "conventions" define the check: decode "binary", re-encode deterministically
and compare bytes with the canonical bytes ("canonical_binary" when present, else "binary");
the same from "json" when it is not null. A difference confirmed in a runtime is listed in the
vector's "known_differences"; for the two Python bindings it is pinned here: the test computes
the bytes that binding writes instead, and fails if they stop being what it writes.
"""

from __future__ import annotations

import json
import math
import struct
from collections import defaultdict
from typing import Any

import protovalidate
import pytest
from adaptive_pipeline.events.v1 import common_pb2, envelope_pb2
from adaptive_pipeline_betterproto.adaptive_pipeline.events import v1 as bp
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from tests.conftest import VECTORS_DIR
from tests.vectors_support import DOCUMENT, MANIFEST
from tests.vectors_support import binary_of as _binary
from tests.vectors_support import canonical_of as _canonical
from tests.vectors_support import json_of as _json
from tests.vectors_support import messages_in as _messages
from tests.vectors_support import pinned as _pinned
from tests.vectors_support import read_vector_file as _file
from tests.vectors_support import upb_keeps_odd_entries as _upb_keeps_odd_entries
from tools.make_vectors import canonical_map_order

IDS = [vector["name"] for vector in MANIFEST]
WITH_JSON = [vector for vector in MANIFEST if vector["json"] is not None]
WITHOUT_JSON = [vector for vector in MANIFEST if vector["json"] is None]
# Every (vector, check) pair: "binary" for all, "json" for those with a JSON form.
CHECKS = [pytest.param(v, "binary", id=f"{v['name']}-binary") for v in MANIFEST] + [
    pytest.param(v, "json", id=f"{v['name']}-json") for v in WITH_JSON
]

#: Vectors that cannot satisfy one schema rule: that rule (field path, rule id), and why.
VALIDATION_EXEMPT = {
    "unknown_event_type_future_payload": (
        ("payload", "required"),
        "a payload case from a newer schema: v1 sees no payload, an EventType it does not "
        "define and an unknown field in the payload range 100-999, the one case in which the "
        "server waives the required payload (README: forward compatibility)",
    ),
}


# --- The manifest ----------------------------------------------------------------------


def test_the_manifest_states_its_conventions() -> None:
    text = " ".join(DOCUMENT["conventions"])
    for term in ('"canonical_binary"', "re-encode deterministically", '"known_differences"'):
        assert term in text
    runtimes = {entry["runtime"].split()[0] for entry in DOCUMENT["runtime_differences"]}
    assert {"betterproto2", "protobuf-es"} <= runtimes


def test_every_file_is_a_vector_and_every_vector_has_its_files() -> None:
    named = {"manifest.json"}
    for vector in MANIFEST:
        for key in ("binary", "canonical_binary", "json"):
            if vector.get(key) is not None:
                assert (VECTORS_DIR / vector[key]).is_file(), vector[key]
                named.add(vector[key])
        if "canonical_binary" in vector:  # a second file only for a non-canonical input
            assert _binary(vector) != _canonical(vector), vector["name"]
    assert {path.name for path in VECTORS_DIR.iterdir()} == named
    assert len(IDS) == len(set(IDS))


def test_the_first_34_vectors_keep_their_form_and_order() -> None:
    for vector in MANIFEST[:34]:
        assert list(vector) == ["name", "event_type", "binary", "json"]
    assert IDS[0] == "pipeline_created_full" and IDS[33] == "chunk_processed_ts_epoch"
    assert all("notes" in vector for vector in MANIFEST[34:])


def test_a_known_difference_reads_the_same_wherever_it_is_listed() -> None:
    seen: dict[str, dict[str, Any]] = {}
    for vector in MANIFEST:
        for difference in vector.get("known_differences", []):
            assert list(difference) == ["id", "runtime", "checks", "difference"]
            assert difference["checks"] and set(difference["checks"]) <= {"binary", "json"}
            assert seen.setdefault(difference["id"], difference) == difference


@pytest.mark.parametrize("vector", WITHOUT_JSON, ids=[v["name"] for v in WITHOUT_JSON])
def test_json_is_null_only_for_what_json_cannot_carry(vector: dict[str, Any]) -> None:
    message = envelope_pb2.EventEnvelope.FromString(_canonical(vector))
    assert any(len(UnknownFieldSet(m)) for m in _messages(message))
    again = json_format.Parse(json_format.MessageToJson(message), envelope_pb2.EventEnvelope())
    assert again.SerializeToString(deterministic=True) != _canonical(vector)


# --- The official bindings --------------------------------------------------------------


def _decode(vector: dict[str, Any], check: str) -> envelope_pb2.EventEnvelope:
    if check == "binary":
        return envelope_pb2.EventEnvelope.FromString(_binary(vector))
    return json_format.Parse(_json(vector), envelope_pb2.EventEnvelope())


@pytest.mark.parametrize(("vector", "check"), CHECKS)
def test_official_binding_reencodes_to_the_canonical_bytes(
    vector: dict[str, Any], check: str
) -> None:
    message = _decode(vector, check)
    encoded = message.SerializeToString(deterministic=True)
    canonical = _canonical(vector)
    pinned = _pinned(vector, "protobuf-python", check)
    assert pinned <= {"python-upb-map-order", "python-upb-map-entry-unknown"}
    if "python-upb-map-entry-unknown" in pinned:
        expected, lost = _upb_keeps_odd_entries(vector)
        assert encoded == expected != canonical
        assert not lost & {key.encode() for key in message.metadata}
    elif "python-upb-map-order" in pinned:
        assert encoded != canonical  # a key after the longer keys it begins ("" last) ...
        assert canonical_map_order(encoded) == canonical  # ... and nothing else differs
    else:
        assert encoded == canonical


@pytest.mark.parametrize("vector", WITH_JSON, ids=[v["name"] for v in WITH_JSON])
def test_official_binding_writes_the_vectors_json(vector: dict[str, Any]) -> None:
    from_canonical = envelope_pb2.EventEnvelope.FromString(_canonical(vector))
    from_json = json_format.Parse(_json(vector), envelope_pb2.EventEnvelope())
    assert from_canonical == from_json
    assert json.loads(json_format.MessageToJson(from_canonical)) == json.loads(_json(vector))


@pytest.mark.parametrize("vector", MANIFEST, ids=IDS)
def test_event_type_and_payload_case_are_the_manifests(vector: dict[str, Any]) -> None:
    message = envelope_pb2.EventEnvelope.FromString(_canonical(vector))
    want = vector["event_type"]
    if isinstance(want, int):  # a value this schema does not define: no payload it knows
        assert want not in envelope_pb2.EventType.values()
        assert message.event_type == want
        assert message.WhichOneof("payload") is None
    else:
        assert envelope_pb2.EventType.Name(message.event_type) == want
        assert message.WhichOneof("payload") == want.removeprefix("EVENT_TYPE_").lower()


# --- betterproto2 -------------------------------------------------------------------------


def _without_plain_negative_zero(message: Message) -> Message:
    """The message with -0.0 in implicit-presence doubles cleared to the default, everywhere."""
    for inner in _messages(message):
        for field, value in inner.ListFields():
            plain = field.type == field.TYPE_DOUBLE and not field.has_presence
            if plain and not field.is_repeated and value == 0.0 and math.copysign(1.0, value) < 0:
                inner.ClearField(field.name)
    return message


def _betterproto_writes(vector: dict[str, Any], check: str) -> bytes:
    """The canonical bytes, or those betterproto2 writes where the manifest pins a difference."""
    pinned = _pinned(vector, "betterproto2", check)
    assert pinned <= {"betterproto2-negative-zero"}
    if not pinned:
        return _canonical(vector)
    message = _without_plain_negative_zero(
        envelope_pb2.EventEnvelope.FromString(_canonical(vector))
    )
    expected = canonical_map_order(message.SerializeToString(deterministic=True))
    assert expected != _canonical(vector)  # the vector has a plain -0.0 to lose
    return expected


@pytest.mark.parametrize(("vector", "check"), CHECKS)
def test_betterproto_binding_reencodes_to_the_canonical_bytes(
    vector: dict[str, Any], check: str
) -> None:
    if check == "binary":
        message = bp.EventEnvelope.parse(_binary(vector))
    else:
        message = bp.EventEnvelope.from_json(_json(vector))
    expected = _betterproto_writes(vector, check)
    # betterproto2 writes map entries in the order it read them (the manifest's
    # runtime_differences): sorted by the canonical rule, nothing else may differ.
    assert canonical_map_order(bytes(message)) == expected
    # Same values field by field, via the canonical JSON of each binding.
    official = envelope_pb2.EventEnvelope.FromString(expected)
    assert message.to_dict() == json_format.MessageToDict(official)


# --- Schema rules and coverage ----------------------------------------------------------------


@pytest.mark.parametrize("vector", MANIFEST, ids=IDS)
def test_every_vector_satisfies_the_schema_validation_rules(vector: dict[str, Any]) -> None:
    for data in {_binary(vector), _canonical(vector)}:
        message = envelope_pb2.EventEnvelope.FromString(data)
        if vector["name"] not in VALIDATION_EXEMPT:
            protovalidate.validate(message)
            continue
        rule, _reason = VALIDATION_EXEMPT[vector["name"]]
        with pytest.raises(protovalidate.ValidationError) as error:
            protovalidate.validate(message)
        broken = [
            (".".join(e.field_name for e in v.proto.field.elements), v.proto.rule_id)
            for v in error.value.violations
        ]
        assert broken == [rule]
        # Exactly the server's waiver: no payload, an undefined EventType, a field in 100-999.
        assert message.WhichOneof("payload") is None
        assert message.event_type not in envelope_pb2.EventType.values()
        assert any(100 <= f.field_number <= 999 for f in UnknownFieldSet(message))


def test_every_enum_value_has_a_vector() -> None:
    seen: dict[str, set[int]] = defaultdict(set)
    for vector in MANIFEST:
        for message in _messages(envelope_pb2.EventEnvelope.FromString(_canonical(vector))):
            for field, value in message.ListFields():
                if field.enum_type is not None:
                    seen[field.enum_type.full_name].add(value)
    enums = [
        envelope_pb2.EventType,
        common_pb2.SecurityLevel,
        common_pb2.StandardPermission,
        common_pb2.SecurityViolationSeverity,
    ]
    for enum in enums:
        defined = set(enum.values()) - {0}  # 0 is UNSPECIFIED: never sent, refused by the rules
        assert defined <= seen[enum.DESCRIPTOR.full_name], enum.DESCRIPTOR.full_name
    event_types = seen[envelope_pb2.EventType.DESCRIPTOR.full_name]
    assert event_types - set(envelope_pb2.EventType.values())  # an undefined value too


def _payload(name: str) -> Any:
    envelope = envelope_pb2.EventEnvelope.FromString((VECTORS_DIR / f"{name}.binpb").read_bytes())
    return getattr(envelope, envelope.WhichOneof("payload"))


def test_absent_and_empty_optionals_stay_distinct() -> None:
    assert not _payload("processing_paused_no_checkpoint").HasField("checkpoint_data")
    empty = _payload("processing_paused_empty_checkpoint")
    assert empty.HasField("checkpoint_data") and empty.checkpoint_data == b""
    assert not _payload("pipeline_created_absent_optionals").HasField("created_by")
    assert _payload("pipeline_created_empty_strings").HasField("created_by")
    metrics = _payload("metrics_updated_full").metrics
    assert metrics.HasField("compression_ratio") and metrics.compression_ratio == 0.0
    assert metrics.stage_metrics["compression"].HasField("memory_usage")
    assert not metrics.stage_metrics["encryption"].HasField("memory_usage")


def test_negative_zero_and_nan_keep_their_bits() -> None:
    metrics = _payload("metrics_updated_negative_zero").metrics
    stage = metrics.stage_metrics["compression"]
    doubles = [metrics.throughput_bytes_per_second, metrics.compression_ratio]
    doubles += [stage.throughput, stage.success_rate, stage.cpu_usage]
    assert all(value == 0.0 and math.copysign(1.0, value) < 0 for value in doubles)
    canonical_nan = struct.pack("<d", float("nan"))
    assert canonical_nan == bytes.fromhex("000000000000f87f")
    assert _file("metrics_updated_nan.binpb").count(canonical_nan) == 5
