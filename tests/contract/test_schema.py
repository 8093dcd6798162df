"""Meta-tests that keep the schema honest: oneof/EventType mirror, upstream fields, numbers, comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adaptive_pipeline.events.v1 import common_pb2, envelope_pb2, service_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from pipeline_events.schema import PACKAGE, descriptor_set
from tests.conftest import VECTORS_DIR
from tests.contract.upstream import ENUMS, EVENT_FIELDS, SUPPORT_FIELDS

ENVELOPE = envelope_pb2.EventEnvelope.DESCRIPTOR
PAYLOAD = ENVELOPE.oneofs_by_name["payload"]
LEDGER = Path(__file__).with_name("field_numbers.json")
FILE_FIELD_MESSAGE_TYPE, FILE_FIELD_ENUM_TYPE, FILE_FIELD_SERVICE = 4, 5, 6
MESSAGE_FIELD_FIELD, SERVICE_FIELD_METHOD = 2, 2


def _enum_value_name(enum: str, variant: str) -> str:
    snake = "".join("_" + c if c.isupper() else c for c in variant).lstrip("_").upper()
    prefix = "".join("_" + c if c.isupper() else c for c in enum).lstrip("_").upper()
    return f"{prefix}_{snake}"


def test_every_payload_case_has_the_event_type_of_number_minus_100() -> None:
    cases = {field.name: field.number for field in PAYLOAD.fields}
    types = {v.name: v.number for v in envelope_pb2.EventType.DESCRIPTOR.values if v.number}
    assert len(cases) == 16
    assert types == {f"EVENT_TYPE_{name.upper()}": number - 100 for name, number in cases.items()}


def test_payload_cases_are_the_seed_events_in_order() -> None:
    assert [field.message_type.name for field in PAYLOAD.fields] == list(EVENT_FIELDS)


def test_envelope_common_fields_are_not_repeated_in_payloads() -> None:
    common = {"event_id", "pipeline_id", "aggregate_id", "occurred_at", "version"}
    for field in PAYLOAD.fields:
        assert common.isdisjoint(field.message_type.fields_by_name), field.name


@pytest.mark.parametrize("message_name, upstream", [*EVENT_FIELDS.items(), *SUPPORT_FIELDS.items()])
def test_messages_carry_every_upstream_field_with_option_as_presence(
    message_name: str, upstream: list[str]
) -> None:
    message: Descriptor = common_pb2.DESCRIPTOR.pool.FindMessageTypeByName(
        f"{PACKAGE}.{message_name}"
    )
    assert [f.name for f in message.fields] == [name.rstrip("?") for name in upstream]
    for name in upstream:
        field = message.fields_by_name[name.rstrip("?")]
        is_option = name.endswith("?")
        if field.type == FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            # Message fields always have presence; a non-Option one must be required.
            rules = field.GetOptions().ListFields()
            assert is_option != any("required: true" in str(value) for _, value in rules), name
        else:
            assert field.has_presence == is_option, name


@pytest.mark.parametrize("enum_name, variants", ENUMS.items())
def test_enums_mirror_upstream_variants_after_unspecified(
    enum_name: str, variants: list[str]
) -> None:
    enum = common_pb2.DESCRIPTOR.enum_types_by_name[enum_name]
    expected = [_enum_value_name(enum_name, "Unspecified")]
    expected += [_enum_value_name(enum_name, v) for v in variants]
    if enum_name == "StandardPermission":
        expected = [f"STANDARD_PERMISSION_{v.upper()}" for v in ["Unspecified", *variants]]
    assert [v.name for v in enum.values] == expected
    assert [v.number for v in enum.values] == list(range(len(variants) + 1))


def test_every_event_type_has_a_full_golden_vector() -> None:
    manifest = json.loads((VECTORS_DIR / "manifest.json").read_text())
    names = {vector["name"] for vector in manifest["vectors"]}
    assert {f"{field.name}_full" for field in PAYLOAD.fields} <= names
    event_types = [vector["event_type"] for vector in manifest["vectors"]]
    # A name covers a defined type; a number is a value this schema does not define (an
    # unknown payload case), which covers nothing.
    covered = {value for value in event_types if isinstance(value, str)}
    assert covered == {v.name for v in envelope_pb2.EventType.DESCRIPTOR.values if v.number}
    numbers = {value for value in event_types if not isinstance(value, str)}
    assert all(type(number) is int for number in numbers), numbers
    assert not numbers & set(envelope_pb2.EventType.values())


def _current_numbers() -> dict[str, dict[str, str]]:
    from tools.field_ledger import current_numbers

    return current_numbers()


def _reserved(full_name: str) -> list[range]:
    """Reserved numbers of a message or enum (enum reserved ranges are inclusive)."""
    pool = common_pb2.DESCRIPTOR.pool
    try:
        message = descriptor_pb2.DescriptorProto()
        pool.FindMessageTypeByName(full_name).CopyToProto(message)
        return [range(r.start, r.end) for r in message.reserved_range]
    except KeyError:
        enum = descriptor_pb2.EnumDescriptorProto()
        pool.FindEnumTypeByName(full_name).CopyToProto(enum)
        return [range(r.start, r.end + 1) for r in enum.reserved_range]


def test_no_field_or_enum_number_is_ever_reused() -> None:
    ledger: dict[str, dict[str, str]] = json.loads(LEDGER.read_text())
    current = _current_numbers()
    for type_name, entries in current.items():
        unrecorded = set(entries) - set(ledger.get(type_name, {}))
        assert not unrecorded, f"run tools/field_ledger.py to record {type_name} {unrecorded}"
    for type_name, recorded in ledger.items():
        now = current.get(type_name, {})
        for number, identity in recorded.items():
            if number in now:
                assert now[number] == identity, f"{type_name} #{number} reused"
            else:
                reserved = _reserved(type_name)
                assert any(int(number) in r for r in reserved), (
                    f"{type_name} #{number} ({identity}) was removed without `reserved`"
                )


def _leading_comments() -> dict[tuple[str, ...], str]:
    """Leading comments by (file, kind, name...) for our messages, enums and RPCs."""
    comments: dict[tuple[str, ...], str] = {}
    for file in descriptor_set().file:
        if file.package != PACKAGE:
            continue
        by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for i, message in enumerate(file.message_type):
            comments[(file.name, "message", message.name)] = by_path.get(
                (FILE_FIELD_MESSAGE_TYPE, i), ""
            )
        for i, enum in enumerate(file.enum_type):
            comments[(file.name, "enum", enum.name)] = by_path.get((FILE_FIELD_ENUM_TYPE, i), "")
        for s, service in enumerate(file.service):
            comments[(file.name, "service", service.name)] = by_path.get(
                (FILE_FIELD_SERVICE, s), ""
            )
            for m, method in enumerate(service.method):
                comments[(file.name, "rpc", method.name)] = by_path.get(
                    (FILE_FIELD_SERVICE, s, SERVICE_FIELD_METHOD, m), ""
                )
    return comments


def test_every_message_enum_service_and_rpc_is_documented() -> None:
    comments = _leading_comments()
    assert len(comments) > 50
    undocumented = [key for key, text in comments.items() if not text.strip()]
    assert undocumented == []


def test_event_fields_are_documented() -> None:
    """Every field of every event and shared type carries a comment for other languages."""
    for file in descriptor_set().file:
        if file.package != PACKAGE or file.name.endswith(("service.proto", "state.proto")):
            continue
        by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for i, message in enumerate(file.message_type):
            for j, field in enumerate(message.field):
                if field.number > 100 and message.name == "EventEnvelope":
                    continue  # payload cases are named after their documented messages
                path = (FILE_FIELD_MESSAGE_TYPE, i, MESSAGE_FIELD_FIELD, j)
                assert by_path.get(path, "").strip(), f"{message.name}.{field.name}"


def test_service_rpcs_have_their_own_request_and_response() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["EventService"]
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
