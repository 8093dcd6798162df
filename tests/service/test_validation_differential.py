"""The fast validation pass is exactly protovalidate, and validate_publish answers as before.

service/rules.py compiles the schema's protovalidate rules into Python; the service trusts
its "valid" and asks protovalidate otherwise. So two things must hold, and are checked here
on fuzzed messages (hypothesis) and on the golden vectors:

1. `rules.is_valid(m)` is True exactly when protovalidate finds no violation in `m`: for
   publish requests built from arbitrary valid events (tests/strategies.py), then broken by
   a schema-blind mutator that sets any field, at any depth, to values chosen to sit on and
   around every kind of limit (empty and over-long text in code points and bytes, UUIDs off
   by a character, numbers and timestamps at their bounds, unknown enum values, unset
   messages and oneofs, repeated fields and maps grown past their sizes, duplicates...),
   and for every other message type of the schema the same way.
2. `validate_publish` raises exactly the RpcError (status, message, BadRequest details) the
   full pass raises, and accepts exactly what it accepts, with the envelope bytes mutated
   as well (unknown fields, map entries holding unknown fields, nesting near the limit,
   payload cases from a newer schema, sizes around the limit, checks on one aggregate
   twice). The full pass is the code that ran before the fast path existed, with the
   nesting probe built the old way.

And the compiler compiles every rule the descriptors hold (counted, not sampled), and
refuses, rather than skips, a rule it does not know.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import protovalidate
import pytest
from adaptive_pipeline.events.v1 import (
    envelope_pb2,
    service_pb2,
)
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_events import adapter
from pipeline_events.service import rules, validation
from pipeline_events.service.errors import RpcError, bad_request
from pipeline_events.service.wire import field_bytes
from pipeline_events.store.base import varint
from tests import strategies
from tests.schema_support import contract_messages
from tests.vectors_support import MANIFEST, binary_of, messages_in

PACKAGE = "adaptive_pipeline.events.v1."
EXAMPLES = settings(
    max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def protovalidate_passes(message: Message) -> bool:
    return not protovalidate.collect_violations(message)


# --- values on and around every limit ----------------------------------------------------

_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
UUIDS = [
    _UUID,
    _UUID.upper(),
    "00000000-0000-0000-0000-000000000000",
    "FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF",
    _UUID[:-1],  # 35 characters
    _UUID + "0",  # 37
    _UUID.replace("-", ""),
    _UUID[:8] + _UUID[9] + "-" + _UUID[10:],  # a hyphen one place off
    "{" + _UUID + "}",
    "urn:uuid:" + _UUID,
    _UUID[:-1] + "g",
    _UUID[:-1] + "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, not a hex digit
    _UUID[:-1] + "\uff10",  # FULLWIDTH DIGIT ZERO
    _UUID[:-1] + "\u00e9",
    _UUID + "\n",
    " " + _UUID[1:],
    "-" * 36,
    "0" * 36,
    _UUID.replace("-", "_"),
    _UUID.replace("-", "\x00"),
]
_LENGTHS = [0, 1, 63, 64, 65, 4095, 4096, 4097, 65535, 65536, 65537]
TEXTS = (
    [""]
    + ["x" * n for n in _LENGTHS]
    + ["é" * n for n in (64, 65, 4096, 4097)]  # 2 bytes a code point: limits count these
    + ["\U0001f600" * n for n in (64, 65, 4096, 4097)]  # 4 bytes each
    + ["compression", "$reserved", "k", " ", "\x00", "ABC", "é"]
)
UINT32 = [0, 1, 5, 6, 8, 999, 1000, 1001, 9999, 10000, 10001, 999_999_999, 10**9, 2**31, 2**32 - 1]
UINT64 = [0, 1, 2, 10000, 10001, 2**63 - 1, 2**63, 2**64 - 1]
INT32 = [-(2**31), -1_000_000_001, -(10**9), -999_999_999, -1, 0, 1, 999_999_999, 10**9, 2**31 - 1]
_FIRST, _LAST = -62_135_596_800, 253_402_300_799  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z
INT64 = (
    [-(2**63), -1, 0, 1, 2**63 - 1]
    + [_FIRST + d for d in (-3, -2, -1, 0, 1, 2, 3, 4)]
    + [_LAST + d for d in (-4, -3, -2, -1, 0, 1, 2, 3)]
)
DOUBLES = [0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), 5e-324]
BYTES = [b"", b"x", b"\xff" * 64, b"x" * 1_048_576, b"x" * 1_048_577]
COUNTS = [1, 2, 3, 5, 6, 8, 9, 63, 64, 65, 255, 256, 257, 999, 1000, 1001, 1024, 1025]


def enum_values(field: FieldDescriptor) -> list[int]:
    numbers = sorted(field.enum_type.values_by_number)
    return sorted({0, 1, numbers[-1], numbers[-1] + 1, 99, -1, 2**31 - 1, -(2**31)})


def scalar(field: FieldDescriptor, rnd: random.Random) -> Any:
    """A value for a scalar field: on or around one of the limits its type can have."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rnd.choice(
            [rnd.choice(TEXTS), rnd.choice(UUIDS), str(uuid.UUID(int=rnd.getrandbits(128)))]
        )
    if t == FieldDescriptor.TYPE_BYTES:
        return rnd.choice(BYTES)
    if t == FieldDescriptor.TYPE_ENUM:
        return rnd.choice(enum_values(field))
    if t == FieldDescriptor.TYPE_BOOL:
        return rnd.random() < 0.5
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rnd.choice(DOUBLES)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return rnd.choice(UINT32)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return rnd.choice(UINT64)
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return rnd.choice(INT32)
    return rnd.choice(INT64)


def is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def is_real_oneof(oneof: Any) -> bool:
    return len(oneof.fields) > 1 or oneof.name != "_" + oneof.fields[0].name


def new_item(items: Any, rnd: random.Random) -> Message:
    """A new element of a repeated message field: empty, or a copy of one already there."""
    item = items.add()
    if len(items) > 1 and rnd.random() < 0.7:
        item.CopyFrom(items[rnd.randrange(len(items) - 1)])
    return item


def mutate(message: Message, rnd: random.Random, depth: int = 0) -> None:
    """Set one field, somewhere in or below `message`, to a value chosen near a limit.

    Schema-blind: it goes by field types, never by the rules, so that it tests what the
    rules mean rather than restating the compiler. Choices are uniform (a seeded Random
    drawn by hypothesis), so that every field is reached as often as its neighbours.
    """
    descriptor = message.DESCRIPTOR
    oneofs = [o for o in descriptor.oneofs if is_real_oneof(o)]
    if oneofs and rnd.random() < 0.08:
        message.ClearField(rnd.choice(oneofs).name)
        return
    if not descriptor.fields:  # google.protobuf.Empty
        return
    field = rnd.choice(list(descriptor.fields))
    name = field.name
    deeper = depth < 4
    if is_map(field):
        entries = getattr(message, name)
        key_field, value_field = field.message_type.fields
        choice = rnd.randrange(4)
        if choice == 0:
            message.ClearField(name)
            return
        count = rnd.choice(COUNTS) if choice == 1 else 1
        for index in range(count):
            key = scalar(key_field, rnd) if index == 0 else f"key{index}"
            if value_field.message_type is None:
                entries[key] = scalar(value_field, rnd) if index == 0 else "value"
            elif index == 0 and deeper:
                mutate(entries[key], rnd, depth + 1)
            elif len(entries) > 1:  # a copy of an entry already there
                entries[key].CopyFrom(next(iter(entries.values())))
            else:
                entries[key].SetInParent()
        return
    if field.is_repeated:
        items = getattr(message, name)
        choice = rnd.randrange(4)
        if choice == 0:
            message.ClearField(name)
        elif field.message_type is not None:
            if choice == 1 and deeper:
                mutate(rnd.choice(items) if items else items.add(), rnd, depth + 1)
            else:
                for _ in range(rnd.choice(COUNTS) if choice == 2 else 1):
                    new_item(items, rnd)
        else:
            value = scalar(field, rnd)
            items.extend([value] * (rnd.choice(COUNTS) if choice == 2 else 1))
            if choice == 3:  # distinct values too
                items.extend(scalar(field, rnd) for _ in range(rnd.choice(COUNTS)))
        return
    if field.message_type is not None:
        choice = rnd.randrange(5)
        if choice == 0:
            message.ClearField(name)
        elif choice == 1 or not deeper:
            getattr(message, name).SetInParent()
        else:
            mutate(getattr(message, name), rnd, depth + 1)
        return
    if field.has_presence and rnd.random() < 0.15:
        message.ClearField(name)
        return
    setattr(message, name, scalar(field, rnd))


def mutated(message: Message, data: st.DataObject, most: int) -> Message:
    """`message` after up to `most` mutations (drawn by hypothesis)."""
    rnd = random.Random(data.draw(st.integers(0, 2**64 - 1), label="seed"))
    for _ in range(rnd.randrange(most + 1)):
        mutate(message, rnd)
    return message


# --- publish requests --------------------------------------------------------------------


def _envelope(event: Any, correlation: str, metadata: dict[str, str]) -> envelope_pb2.EventEnvelope:
    envelope = adapter.to_envelope(event, correlation_id=correlation, metadata=metadata)
    envelope.schema_version = max(envelope.schema_version, 1)  # the domain allows version 0
    return envelope


def envelopes() -> st.SearchStrategy[envelope_pb2.EventEnvelope]:
    """Valid envelopes of any event type, some with metadata and correlation ids."""
    text = st.text(string.printable, max_size=12)
    return st.builds(
        _envelope,
        strategies.events(),
        text,
        st.dictionaries(text.filter(bool), text, max_size=3),
    )


def expected_revision(aggregates: list[str], rnd: random.Random) -> service_pb2.ExpectedRevision:
    """A check on one of `aggregates` (in either case), possibly without its oneof set."""
    aggregate = rnd.choice(aggregates)
    check = service_pb2.ExpectedRevision(
        aggregate_id=aggregate.upper() if rnd.random() < 0.3 else aggregate
    )
    case = rnd.randrange(5)
    if case == 4:
        check.revision = rnd.choice(UINT64)
    elif case:
        getattr(check, ("any", "no_stream", "stream_exists")[case - 1]).SetInParent()
    return check


def nested_groups(depth: int) -> bytes:
    """Unknown field 52 as `depth` groups, one inside the other."""
    return b"\xa3\x03" * depth + b"\xa4\x03" * depth


_ENTRY_WITH_UNKNOWN = b"\x0a\x01k\x12\x01v\x18\x01"  # a map entry holding field 3


def raw_mutation(envelope: envelope_pb2.EventEnvelope, rnd: random.Random) -> bytes:
    """The envelope's bytes, possibly with what only bytes can carry."""
    choice = rnd.randrange(8)
    if choice == 0:  # a payload case from a newer schema: unknown type and field 117
        envelope.ClearField("payload")
        envelope.event_type = rnd.choice([17, 16, 0, 99])
        return envelope.SerializeToString() + rnd.choice([b"\xaa\x07\x00", b""])
    body = envelope.SerializeToString()
    if choice == 1:
        return body + b"\x90\x03\x01"  # unknown varint field 50
    if choice == 2:
        return body + nested_groups(rnd.choice([1, 29, 30, 31, 32, 33, 40, 95]))
    if choice == 3:  # a metadata entry the parser cannot read as one
        return body + b"\x42" + varint(len(_ENTRY_WITH_UNKNOWN)) + _ENTRY_WITH_UNKNOWN
    if choice == 4:  # the same number as a map, another wire type
        return body + b"\x40\x01"
    return body


def publish_bytes(
    envelopes: list[bytes], checks: list[service_pb2.ExpectedRevision], stream: bool
) -> bytes:
    """A PublishRequest (or PublishStreamRequest, batch 7) built from the envelopes' bytes."""
    events_tag, checks_tag = (b"\x12", b"\x1a") if stream else (b"\x0a", b"\x12")
    parts = [b"\x08\x07"] if stream else []
    parts += [events_tag + varint(len(e)) + e for e in envelopes]
    for check in checks:
        body = check.SerializeToString()
        parts.append(checks_tag + varint(len(body)) + body)
    return b"".join(parts)


def old_probe(envelopes: list[bytes]) -> bytes:
    """The nesting probe as validation.py built it before (wrapped by concatenation)."""
    data = b"".join(b"\x12" + varint(len(e)) + e for e in envelopes)
    for _ in range(68):
        data = b"\x0a" + varint(len(data)) + data
    return data


def outcome(call: Callable[[], None]) -> bytes | None:
    """None if the call accepted; else the RpcError's whole google.rpc.Status, serialized."""
    try:
        call()
    except RpcError as error:
        return error.status.SerializeToString(deterministic=True)
    return None


def full_pass(request: Message, sent: list[bytes], max_event_bytes: int) -> None:
    """validate_publish as it was: the full pass only, with the old nesting probe."""
    with mock.patch.object(validation, "_probe", old_probe):
        violations = validation._publish_violations(request, sent, max_event_bytes)
    if violations:
        raise bad_request(violations)


def assert_publish_as_before(data: bytes, stream: bool, max_event_bytes: int) -> bool:
    """Check request bytes `data` both ways; whether it was accepted (False if it does not
    parse, as the server would not have called validation)."""
    kind = service_pb2.PublishStreamRequest if stream else service_pb2.PublishRequest
    try:
        request = kind.FromString(data)
    except DecodeError:
        return False
    sent = field_bytes(data, 2 if stream else 1)
    assert rules.is_valid(request) == protovalidate_passes(request)
    before = outcome(lambda: full_pass(request, sent, max_event_bytes))
    assert outcome(lambda: validation.validate_publish(request, sent, max_event_bytes)) == before
    return before is None


@st.composite
def publish_requests(draw: st.DrawFn) -> tuple[bytes, bool, int]:
    """(request bytes, is it a PublishStreamRequest, max_event_bytes): valid events, mutated
    (0-3 times in all) and their bytes perhaps too, and checks on their aggregates."""
    events = draw(st.lists(envelopes(), min_size=1, max_size=4))
    rnd = random.Random(draw(st.integers(0, 2**64 - 1), label="seed"))
    for _ in range(rnd.choice([0, 0, 1, 1, 1, 2, 3])):
        mutate(rnd.choice(events), rnd)
    sent = [raw_mutation(e, rnd) if rnd.random() < 0.25 else e.SerializeToString() for e in events]
    aggregates = [e.aggregate_id for e in events] + [_UUID, "not a uuid"]
    checks = [expected_revision(aggregates, rnd) for _ in range(rnd.choice([0, 0, 1, 2, 3]))]
    if checks and rnd.random() < 0.2:
        mutate(rnd.choice(checks), rnd)
    max_event_bytes = rnd.choice([1 << 20, 1 << 20, 2000, 400, 250])
    stream = rnd.random() < 0.5
    return publish_bytes(sent, checks, stream), stream, max_event_bytes


@EXAMPLES
@given(publish_requests())
def test_publish_requests_are_judged_as_before(case: tuple[bytes, bool, int]) -> None:
    data, stream, max_event_bytes = case
    assert_publish_as_before(data, stream, max_event_bytes)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(envelopes(), min_size=1, max_size=5))
def test_valid_requests_take_the_fast_pass(events: list[envelope_pb2.EventEnvelope]) -> None:
    # Unmutated events are valid: the fast pass must vouch for them (else it saves nothing).
    data = publish_bytes([e.SerializeToString() for e in events], [], stream=False)
    request = service_pb2.PublishRequest.FromString(data)
    assert rules.is_valid(request) and protovalidate_passes(request)
    assert validation._certainly_valid(request, field_bytes(data, 1), 1 << 20)


@pytest.mark.parametrize("vector", MANIFEST, ids=lambda v: v["name"])
def test_golden_vectors_are_judged_as_before(vector: dict[str, Any]) -> None:
    envelope = binary_of(vector)
    for max_event_bytes in (1 << 20, len(envelope), len(envelope) - 1):
        for stream in (False, True):
            assert_publish_as_before(publish_bytes([envelope], [], stream), stream, max_event_bytes)
            assert_publish_as_before(
                publish_bytes([envelope, envelope], [], stream), stream, max_event_bytes
            )


def _chunk_bytes() -> bytes:
    return envelope_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        aggregate_id=_UUID,
        event_type=envelope_pb2.EVENT_TYPE_CHUNK_PROCESSED,
        schema_version=1,
        occurred_at={"seconds": 1, "nanos": 2},
        chunk_processed={"processing_id": _UUID, "chunk_id": _UUID},
    ).SerializeToString()


@pytest.mark.parametrize("count", [0, 1, 10000, 10001])
def test_the_number_of_events_and_checks_is_judged_as_before(count: int) -> None:
    chunk = _chunk_bytes()
    for stream in (False, True):
        accepted = assert_publish_as_before(
            publish_bytes([chunk] * count, [], stream), stream, 1 << 20
        )
        assert accepted == (1 <= count <= 10000)
        checks = [
            service_pb2.ExpectedRevision(aggregate_id=str(uuid.uuid4()), revision=1)
            for _ in range(count)
        ]
        assert_publish_as_before(publish_bytes([chunk], checks, stream), stream, 1 << 20)


def test_the_nesting_probe_is_built_as_before() -> None:
    for sizes in ([], [0], [1, 127, 128], [16383, 16384, 2**21], [300] * 500):
        envelopes = [b"x" * size for size in sizes]
        assert validation._probe(envelopes) == old_probe(envelopes)


# --- every other message of the schema ---------------------------------------------------


@EXAMPLES
@given(envelopes(), st.data())
def test_each_message_of_an_event_is_judged_as_protovalidate_does(
    envelope: envelope_pb2.EventEnvelope, data: st.DataObject
) -> None:
    # Every type an event holds, as the root of its own validation, from a valid value.
    inner = list(messages_in(envelope))
    message = inner[data.draw(st.integers(0, len(inner) - 1))]
    assert rules.is_valid(message) and protovalidate_passes(message)
    mutated(message, data, most=3)
    assert rules.is_valid(message) == protovalidate_passes(message)


#: A valid value of each request type other than the publish ones.
REQUESTS = {
    "ReadAggregateRequest": lambda: service_pb2.ReadAggregateRequest(aggregate_id=_UUID, limit=10),
    "SubscribeRequest": lambda: service_pb2.SubscribeRequest(
        after_position=3,
        filter=service_pb2.EventFilter(
            event_types=[1, 99], categories=[1], aggregate_ids=[_UUID], processing_ids=[_UUID]
        ),
    ),
    "GetPipelineStateRequest": lambda: service_pb2.GetPipelineStateRequest(pipeline_id=_UUID),
    "GetProcessingStateRequest": lambda: service_pb2.GetProcessingStateRequest(processing_id=_UUID),
    "ListProcessingRunsRequest": lambda: service_pb2.ListProcessingRunsRequest(
        pipeline_id=_UUID, statuses=[1, 2], page_size=1000, page_token="x" * 64
    ),
    "ExpectedRevision": lambda: service_pb2.ExpectedRevision(aggregate_id=_UUID, revision=1),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_other_requests_are_judged_as_protovalidate_does(name: str, data: st.DataObject) -> None:
    message = REQUESTS[name]()
    assert rules.is_valid(message) and protovalidate_passes(message)
    mutated(message, data, most=3)
    assert rules.is_valid(message) == protovalidate_passes(message)


@pytest.mark.parametrize("descriptor", contract_messages(), ids=lambda d: d.name)
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_type_is_judged_as_protovalidate_does(
    descriptor: Descriptor, data: st.DataObject
) -> None:
    # From an empty value: every type of the schema compiles and agrees, state.proto's too.
    message = mutated(message_factory.GetMessageClass(descriptor)(), data, most=6)
    assert rules.is_valid(message) == protovalidate_passes(message)


# --- every field of valid messages, one value at a time -------------------------------

Step = tuple[str, Any]  # (field name, None | item index | map key)


def message_paths(message: Message, path: tuple[Step, ...] = ()) -> Iterator[tuple[Step, ...]]:
    """The path to the message and to every message set in it."""
    yield path
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if is_map(field):
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key in value:
                    yield from message_paths(value[key], (*path, (field.name, key)))
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from message_paths(item, (*path, (field.name, index)))
        else:
            yield from message_paths(value, (*path, (field.name, None)))


def follow(message: Message, path: tuple[Step, ...]) -> Message:
    for name, where in path:
        message = getattr(message, name) if where is None else getattr(message, name)[where]
    return message


def edits(field: FieldDescriptor) -> Iterator[Callable[[Message], None]]:
    """Every single-field change tried on `field` (of the message the edit is given)."""
    name = field.name

    def clear(message: Message) -> None:
        message.ClearField(name)

    def assign(value: Any) -> Callable[[Message], None]:
        return lambda message: setattr(message, name, value)

    yield clear
    rnd = random.Random(field.full_name)
    if is_map(field):
        key_field, value_field = field.message_type.fields
        keys = [scalar(key_field, rnd) for _ in range(3)] + TEXTS

        def entry(key: Any, value: Any = None) -> Callable[[Message], None]:
            def add(message: Message) -> None:
                entries = getattr(message, name)
                if value_field.message_type is None:
                    entries[key] = value if value is not None else "v"
                elif entries and value is None:
                    entries[key].CopyFrom(next(iter(entries.values())))
                else:
                    entries[key].SetInParent()

            return add

        def grow(count: int) -> Callable[[Message], None]:
            def add(message: Message) -> None:
                for index in range(count):
                    entry(f"k{index}")(message)

            return add

        yield from (entry(key) for key in keys)
        if value_field.message_type is None:
            yield from (entry("k", value) for value in TEXTS)
        else:
            yield entry("k", "empty")
        yield from (grow(count) for count in COUNTS)
    elif field.is_repeated:

        def extend(values: Callable[[Message], list[Any]]) -> Callable[[Message], None]:
            return lambda message: getattr(message, name).extend(values(message))

        def copies(count: int) -> Callable[[Message], None]:
            def add(message: Message) -> None:
                items = getattr(message, name)
                for _ in range(count):
                    item = items.add()
                    if len(items) > 1:
                        item.CopyFrom(items[0])

            return add

        if field.message_type is None:
            pool = sorted(
                {repr(v): v for v in (scalar(field, rnd) for _ in range(60))}.values(), key=repr
            )
            yield from (extend(lambda _, v=value: [v]) for value in pool)
            first = pool[0]
            yield from (
                extend(lambda m, c=count: [(list(getattr(m, name)) or [first])[0]] * c)
                for count in COUNTS
            )
            yield from (
                extend(lambda _, c=count: list(range(1, c + 1)))
                for count in COUNTS
                if field.type == field.TYPE_ENUM
            )
        else:
            yield from (copies(count) for count in COUNTS)
    elif field.message_type is not None:
        yield lambda message: getattr(message, name).SetInParent()
        if field.message_type.full_name == "google.protobuf.Timestamp":
            for seconds in INT64:
                for nanos in INT32:
                    yield lambda message, s=seconds, n=nanos: (
                        setattr(getattr(message, name), "seconds", s),
                        setattr(getattr(message, name), "nanos", n),
                    )
    else:
        values = {repr(v): v for v in (scalar(field, rnd) for _ in range(200))}
        yield from (assign(value) for value in values.values())


#: Valid messages to start from: a full envelope of each event type, and each request type.
ROOTS = [
    envelope_pb2.EventEnvelope.FromString(binary_of(v))
    for v in MANIFEST
    if v["name"].endswith("_full")
]
ROOTS += [build() for build in REQUESTS.values()] + [
    kind(
        events=ROOTS[:2],
        expected_revisions=[service_pb2.ExpectedRevision(aggregate_id=_UUID, no_stream={})],
    )
    for kind in (service_pb2.PublishRequest, service_pb2.PublishStreamRequest)
]


def test_every_field_of_valid_messages_is_judged_as_protovalidate_does() -> None:
    # Deterministic and exhaustive where hypothesis samples: every field of every message in
    # the roots takes, one at a time, each value near a limit (envelopes and requests are
    # published too); and every rule id of the schema must have been the only violation at
    # least once (else the test would prove little).
    alone: set[str] = set()
    tried = 0
    for root in ROOTS:
        assert rules.is_valid(root) and protovalidate_passes(root)
        saved = root.SerializeToString()
        for path in list(message_paths(root)):
            for field in follow(root, path).DESCRIPTOR.fields:
                for edit in edits(field):
                    message = type(root).FromString(saved)
                    try:
                        edit(follow(message, path))
                    except (ValueError, TypeError):  # a value the field's type cannot hold
                        continue
                    violations = protovalidate.collect_violations(message)
                    assert rules.is_valid(message) == (not violations), (path, field.name, message)
                    if len({v.proto.rule_id for v in violations}) == 1:
                        alone.add(violations[0].proto.rule_id)
                    tried += 1
                    if isinstance(message, envelope_pb2.EventEnvelope):  # and published
                        stream = tried % 2 == 1
                        data = publish_bytes([message.SerializeToString()], [], stream)
                        assert_publish_as_before(data, stream, 1 << 20)
                    elif isinstance(
                        message, service_pb2.PublishStreamRequest | service_pb2.PublishRequest
                    ):
                        stream = isinstance(message, service_pb2.PublishStreamRequest)
                        assert_publish_as_before(message.SerializeToString(), stream, 1 << 20)
    print(f"{tried:,} single-field changes; rule ids broken alone: {sorted(alone)}")
    assert tried > 10_000
    assert alone >= {
        "bytes.max_len",
        "enum.defined_only",
        "enum.not_in",
        "map.max_pairs",
        "repeated.max_items",
        "repeated.min_items",
        "repeated.unique",
        "required",
        "string.max_len",
        "string.min_len",
        "string.uuid",
        "string.uuid_empty",
        "timestamp.gte_lte",
        "uint32.lt",
        "uint32.lte",
        "uint64.gte",
    }, alone


# --- every rule compiled, and nothing else ----------------------------------------------


def declared_rules() -> set[tuple[str, str]]:
    """(owner, rule path) of every rule in the schema's descriptors, read independently of
    the compiler: each leaf of each `buf.validate` field, oneof and message option."""
    found: set[tuple[str, str]] = set()

    def leaves(owner: str, rules_message: Message, prefix: str = "") -> None:
        for field, value in rules_message.ListFields():
            if (
                field.message_type is not None
                and field.message_type.full_name.startswith("buf.validate.")
                and not field.is_repeated
            ):
                leaves(owner, value, f"{prefix}{field.name}.")
            else:
                found.add((owner, prefix + field.name))

    for descriptor in contract_messages():
        for owner, extension in (
            [(descriptor, validate_pb2.message)]
            + [(o, validate_pb2.oneof) for o in descriptor.oneofs]
            + [(f, validate_pb2.field) for f in descriptor.fields]
        ):
            options = owner.GetOptions()
            if options.HasExtension(extension):
                leaves(owner.full_name, options.Extensions[extension])
    return found


def test_every_rule_of_the_schema_is_compiled() -> None:
    for descriptor in contract_messages():
        rules.checker(descriptor)
    declared = declared_rules()
    compiled = {rule for rule in rules.compiled_rules() if rule[0].startswith(PACKAGE)}
    assert compiled == declared
    kinds = {path for _, path in declared}
    # The kinds rules.py documents; a new kind must be compiled (and listed there) first.
    assert kinds == {
        "bytes.max_len",
        "enum.defined_only",
        "enum.not_in",
        "ignore",
        "map.keys.string.max_len",
        "map.keys.string.min_len",
        "map.max_pairs",
        "map.values.string.max_len",
        "repeated.items.enum.defined_only",
        "repeated.items.enum.not_in",
        "repeated.items.string.max_len",
        "repeated.items.string.uuid",
        "repeated.items.uint32.lte",
        "repeated.max_items",
        "repeated.min_items",
        "repeated.unique",
        "required",
        "string.max_len",
        "string.min_len",
        "string.uuid",
        "timestamp.gte",
        "timestamp.lte",
        "uint32.lt",
        "uint32.lte",
        "uint64.gte",
    }
    assert len(declared) > 100


# A private file of messages each carrying one rule the compiler must refuse.
_FILE = "pipeline_events/tests/unsupported_rules.proto"
_T = descriptor_pb2.FieldDescriptorProto


def _refused_types() -> dict[str, Descriptor]:
    pool = descriptor_pool.Default()
    file = descriptor_pb2.FileDescriptorProto(
        name=_FILE,
        package="pipeline_events.tests",
        syntax="proto3",
        dependency=[validate_pb2.DESCRIPTOR.name],
    )

    def add(name: str, kind: int, set_rules: Callable[[Any], None], repeated: bool = False) -> None:
        message = file.message_type.add(name=name)
        field = message.field.add(
            name="value",
            number=1,
            type=kind,
            label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
        )
        set_rules(field.options.Extensions[validate_pb2.field])

    add("Prefix", _T.TYPE_STRING, lambda r: setattr(r.string, "prefix", "x"))
    add("MaxBytes", _T.TYPE_STRING, lambda r: setattr(r.string, "max_bytes", 8))
    add("Pattern", _T.TYPE_STRING, lambda r: setattr(r.string, "pattern", "^x$"))
    add("Int32", _T.TYPE_INT32, lambda r: setattr(r.int32, "gt", 0))
    add("WrongKind", _T.TYPE_UINT64, lambda r: setattr(r.string, "max_len", 1))
    add("Cel", _T.TYPE_STRING, lambda r: r.cel.add(id="x", expression="this != ''"))
    add("Always", _T.TYPE_STRING, lambda r: setattr(r, "ignore", validate_pb2.IGNORE_ALWAYS))
    add("RequiredScalar", _T.TYPE_STRING, lambda r: setattr(r, "required", True))
    add("RepeatedOnScalar", _T.TYPE_STRING, lambda r: setattr(r.repeated, "min_items", 1))
    add("UniqueDoubles", _T.TYPE_DOUBLE, lambda r: setattr(r.repeated, "unique", True), True)
    add(
        "Inverted",
        _T.TYPE_UINT32,
        lambda r: (setattr(r.uint32, "gte", 5), setattr(r.uint32, "lt", 2)),
    )
    add("NewerRule", _T.TYPE_STRING, lambda r: r.MergeFromString(b"\xb8\x3e\x01"))  # field 999
    add("NewerStringRule", _T.TYPE_STRING, lambda r: r.string.MergeFromString(b"\xb8\x3e\x01"))
    message = file.message_type.add(name="MessageCel")
    message.field.add(name="value", number=1, type=_T.TYPE_STRING, label=_T.LABEL_OPTIONAL)
    message.options.Extensions[validate_pb2.message].cel.add(id="x", expression="true")
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        pool.Add(file)
    return {
        m.name: pool.FindMessageTypeByName(f"pipeline_events.tests.{m.name}")
        for m in file.message_type
    }


@pytest.mark.parametrize("name", sorted(_refused_types()))
def test_a_rule_the_compiler_does_not_know_is_refused(name: str) -> None:
    with pytest.raises(rules.UnsupportedRule):
        rules.checker(_refused_types()[name])
