"""The compiled `adapter.from_envelope` against the generic decoder it replaced.

The adapter's decode path was rewritten for speed (compiled per-message decoders, a
cheaper UUID construction, cached ids, a minute cache for timestamps). This file keeps
a private copy of the old path, built only on public APIs and `uuid.UUID` itself, and
checks that both give the very same results over fuzzed envelopes: equal events of the
same types down to every UUID, NanoDatetime and float, or the same DecodeError (field
path and message) for broken input: bad UUIDs, out-of-range times and nanos, unknown
enum values, missing messages, empty permissions, mismatched event types.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from adaptive_pipeline.events.v1 import common_pb2, envelope_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_events import adapter, domain
from pipeline_events.errors import DecodeError
from pipeline_events.fields import FieldSpec, Kind, field_specs, own_field_specs
from pipeline_events.timestamps import UTC, NanoDatetime
from pipeline_events.upcasting import DEFAULT_UPCASTERS, Upcasters
from tests.strategies import events

# --- the reference: the decode path as it was before the rewrite -----------------------------

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _ref_timestamp(seconds: int, nanos: int) -> NanoDatetime:
    """NanoDatetime.from_seconds_nanos before its minute cache, verbatim."""
    if not 0 <= nanos < 1_000_000_000:
        raise ValueError(f"nanos must be in 0..999999999, not {nanos}")
    whole = _EPOCH + dt.timedelta(seconds=seconds)
    value = dt.datetime.__new__(
        NanoDatetime, whole.year, whole.month, whole.day, whole.hour, whole.minute,
        whole.second, nanos // 1000, UTC,
    )  # fmt: skip
    value._nanosecond = nanos
    value._seconds = seconds
    return value


_MESSAGE_KINDS = (Kind.RECORD, Kind.TIMESTAMP, Kind.DURATION)


def _ref_value(spec: FieldSpec) -> Callable[[Any], Any] | None:
    kind = spec.kind
    if kind is Kind.UUID:
        return uuid.UUID
    if kind is Kind.TIMESTAMP:
        return lambda ts: _ref_timestamp(ts.seconds, ts.nanos)
    if kind is Kind.DURATION:
        return lambda d: domain.Duration(secs=d.secs, nanos=d.nanos)
    if kind is Kind.ENUM:
        return spec.type
    if kind is Kind.PERMISSION:
        return _ref_permission
    if kind is Kind.RECORD:
        record = spec.type
        return lambda message: _ref_message(record, field_specs(record), message)
    if kind is Kind.LIST:
        item = _ref_value(spec.item)
        return (lambda xs: tuple(item(x) for x in xs)) if item else tuple
    if kind is Kind.MAP:
        value = _ref_value(spec.item) or (lambda v: v)
        return lambda m: {k: value(m[k]) for k in sorted(m)}
    if kind is Kind.BYTES:
        return bytes
    return None


def _ref_permission(permission: common_pb2.Permission) -> domain.Permission:
    case = permission.WhichOneof("kind")
    if case == "custom":
        return domain.CustomPermission(permission.custom)
    if case is None:
        raise ValueError("a permission has neither a standard nor a custom value")
    return domain.StandardPermission(permission.standard)


def _ref_message(cls: Any, specs: tuple[FieldSpec, ...], message: Any) -> Any:
    kwargs = {}
    for spec in specs:
        name, convert = spec.name, _ref_value(spec)
        if (spec.optional or spec.kind in _MESSAGE_KINDS) and not message.HasField(name):
            if not spec.optional:
                raise DecodeError("required message is missing", field=name)
            kwargs[name] = None
            continue
        value = getattr(message, name)
        try:
            kwargs[name] = convert(value) if convert else value
        except DecodeError as error:
            raise DecodeError(error.reason, field=f"{name}.{error.field}") from error
        except (ValueError, TypeError, OverflowError) as error:
            raise DecodeError(str(error), field=name) from error
    return cls(**kwargs)


def _ref_uuid(envelope: envelope_pb2.EventEnvelope, name: str) -> uuid.UUID:
    text = getattr(envelope, name)
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise DecodeError(f"not a UUID: {text!r}", field=name) from error


_CLASSES_BY_CASE = {case: cls for cls, case in adapter.PAYLOAD_CASES.items()}


def reference_from_envelope(
    envelope: envelope_pb2.EventEnvelope, *, upcasters: Upcasters = DEFAULT_UPCASTERS
) -> Any:
    """adapter.from_envelope as it was before the compiled decoders."""
    case = envelope.WhichOneof("payload")
    event_id = _ref_uuid(envelope, "event_id")
    pipeline_id = _ref_uuid(envelope, "aggregate_id")
    if not envelope.HasField("occurred_at"):
        raise DecodeError("required timestamp is missing", field="occurred_at")
    try:
        occurred_at = _ref_timestamp(envelope.occurred_at.seconds, envelope.occurred_at.nanos)
    except (ValueError, OverflowError) as error:
        raise DecodeError(f"not a representable time: {error}", field="occurred_at") from error
    if case is None:
        return domain.UnknownEvent(
            event_id=event_id,
            pipeline_id=pipeline_id,
            occurred_at=occurred_at,
            version=envelope.schema_version,
            type_number=envelope.event_type,
            envelope_bytes=envelope.SerializeToString(),
        )
    cls = _CLASSES_BY_CASE[case]
    if envelope.event_type != adapter.event_type_number(cls.__name__):
        raise DecodeError(
            f"event_type {envelope.event_type} does not match the payload case {case!r}",
            field="event_type",
        )
    envelope = upcasters.upcast(envelope)
    try:
        own = _ref_message(dict, own_field_specs(cls), getattr(envelope, case))
    except DecodeError as error:
        raise DecodeError(error.reason, field=f"{case}.{error.field}") from error
    return cls(
        event_id=event_id,
        pipeline_id=pipeline_id,
        occurred_at=occurred_at,
        version=envelope.schema_version,
        **own,
    )


# --- strict comparison -----------------------------------------------------------------------


def assert_same(new: Any, old: Any, path: str = "") -> None:
    """`new` and `old` are equal values of identical types, all the way down.

    Stricter than `==`: float bits (so NaN equals NaN here, and -0.0 differs from 0.0),
    enum identity, dict key order and NanoDatetime nanoseconds are compared too.
    """
    assert type(new) is type(old), f"{path}: {type(new)} != {type(old)}"
    if isinstance(old, NanoDatetime):
        assert new.nanosecond == old.nanosecond, path
        assert new.epoch_seconds == old.epoch_seconds, path
        assert new.tzinfo is old.tzinfo is UTC, path
        assert new.timetuple() == old.timetuple(), path
        assert new.microsecond == old.microsecond, path
    elif isinstance(old, uuid.UUID):
        assert (new.int, str(new), new.is_safe) == (old.int, str(old), old.is_safe), path
    elif isinstance(old, float):
        assert struct.pack("<d", new) == struct.pack("<d", old), path  # -0.0 and NaN too
    elif isinstance(old, enum.Enum):
        assert new is old, path
    elif isinstance(old, tuple):
        assert len(new) == len(old), path
        for index, (a, b) in enumerate(zip(new, old, strict=True)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(old, dict):
        assert list(new) == list(old), path  # the same (sorted) key order
        for key in old:
            assert_same(new[key], old[key], f"{path}[{key!r}]")
    elif dataclasses.is_dataclass(old):
        for field in dataclasses.fields(old):
            name = field.name
            assert_same(getattr(new, name), getattr(old, name), f"{path}.{name}")
    else:
        assert new == old, path


def assert_decodes_alike(
    envelope: envelope_pb2.EventEnvelope, upcasters: Upcasters = DEFAULT_UPCASTERS
) -> None:
    """New and reference decoders agree: the same event, or the same DecodeError."""
    original = envelope.SerializeToString()
    try:
        expected = reference_from_envelope(envelope, upcasters=upcasters)
    except DecodeError as error:
        with pytest.raises(DecodeError) as raised:
            adapter.from_envelope(envelope, upcasters=upcasters)
        assert type(raised.value) is type(error)
        assert (raised.value.field, raised.value.reason) == (error.field, error.reason)
        assert str(raised.value) == str(error)
    else:
        assert_same(adapter.from_envelope(envelope, upcasters=upcasters), expected)
    assert envelope.SerializeToString() == original  # decoding never modifies its input


# --- fuzzed envelopes ------------------------------------------------------------------------


def _fields_of(message: Message, predicate: Callable[[FieldDescriptor], bool]) -> list[Any]:
    """(message, field) of every set or settable singular field that `predicate` picks,
    in `message` and in the sub-messages it holds (repeated and map values included)."""
    found = []
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            if field.type == field.TYPE_MESSAGE:
                container = getattr(message, field.name)
                items = (
                    container.values()
                    if field.message_type.GetOptions().map_entry
                    else list(container)
                )
                for item in items:
                    if isinstance(item, Message):
                        found += _fields_of(item, predicate)
            continue
        if predicate(field):
            found.append((message, field))
        if field.type == field.TYPE_MESSAGE and message.HasField(field.name):
            found += _fields_of(getattr(message, field.name), predicate)
    return found


def _is_uuid_text(field: FieldDescriptor) -> bool:
    return field.type == field.TYPE_STRING and (
        field.name.endswith("_id") or field.name == "event_id"
    )


def _is_timestamp(field: FieldDescriptor) -> bool:
    return field.type == field.TYPE_MESSAGE and field.message_type.full_name.endswith("Timestamp")


#: Text that uuid.UUID may or may not accept: canonical, other layouts, near misses.
uuid_texts = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.uuids().map(lambda u: str(u)[:-1]),
    st.uuids().map(lambda u: "0x" + u.hex[2:]),
    st.uuids().map(lambda u: "+" + u.hex[1:]),
    st.uuids().map(lambda u: " " + u.hex[1:]),
    st.uuids().map(lambda u: u.hex[:4] + "_" + u.hex[5:]),
    st.uuids().map(lambda u: u.hex[:16] + "--" + u.hex[16:]),
    st.uuids().map(lambda u: "urn:" + u.hex[4:] + "----"),
    st.uuids().map(lambda u: "\u0663" + u.hex[1:]),  # int() reads Unicode digits
    st.text(alphabet="0123456789abcdefABCDEFxg-{}_: +urnid", max_size=46),
    st.text(max_size=40),
)
#: Text that uuid.UUID rejects, each way it words the rejection.
bad_uuid_texts = st.one_of(
    st.uuids().map(lambda u: str(u)[:-1]),  # badly formed
    st.uuids().map(lambda u: "g" + str(u)[1:]),  # invalid literal for int()
    st.uuids().map(lambda u: "{" + u.hex[1:] + "-"),
    st.text(max_size=40).filter(lambda t: len(t.replace("-", "")) != 32),
)


@st.composite
def fuzzed_envelopes(draw: st.DrawFn, *, in_payload: bool = False) -> envelope_pb2.EventEnvelope:
    """The envelope of any valid event, then perhaps broken in a few places (with
    `in_payload`, only in its payload, where most of the decoding is)."""
    envelope = adapter.to_envelope(draw(events(allow_non_finite=True)))
    kinds = ["uuid", "time", "enum", "clear", "permission"]
    if not in_payload:
        kinds += ["event_type", "payload"]
    for _ in range(draw(st.integers(1 if in_payload else 0, 3))):
        mutation = draw(st.sampled_from(kinds))
        # Mostly inside the payload, where the compiled decoders are: the envelope's own
        # fields are few, and would otherwise fail most examples before the payload.
        case = envelope.WhichOneof("payload")
        in_root = case and (in_payload or draw(st.integers(0, 3)))
        root = getattr(envelope, case) if in_root else envelope
        if mutation == "uuid":
            targets = _fields_of(root, _is_uuid_text)
            if targets:
                message, field = draw(st.sampled_from(targets))
                texts = bad_uuid_texts if in_payload and draw(st.booleans()) else uuid_texts
                setattr(message, field.name, draw(texts))
        elif mutation == "time":
            targets = _fields_of(root, _is_timestamp)
            if not targets:
                continue
            message, field = draw(st.sampled_from(targets))
            timestamp = getattr(message, field.name)
            timestamp.seconds = draw(
                st.integers(-62_135_596_800 - 5, -62_135_596_800 + 5)
                | st.integers(253_402_300_799 - 5, 253_402_300_799 + 5)
                | st.integers(-(2**63), 2**63 - 1)
                | st.integers(-1000, 1000)
            )
            timestamp.nanos = draw(
                st.integers(0, 999_999_999)
                | st.sampled_from([-1, 1_000_000_000])
                | st.integers(-(2**31), 2**31 - 1)
            )
        elif mutation == "enum":
            targets = _fields_of(root, lambda f: f.type == f.TYPE_ENUM)
            if targets:
                message, field = draw(st.sampled_from(targets))
                setattr(message, field.name, draw(st.integers(-3, 12)))
        elif mutation == "clear":
            targets = _fields_of(root, lambda f: f.type == f.TYPE_MESSAGE)
            if targets:
                message, field = draw(st.sampled_from(targets))
                message.ClearField(field.name)
        elif mutation == "event_type":
            envelope.event_type = draw(st.integers(0, 20))
        elif mutation == "permission":
            targets = _fields_of(envelope, lambda f: f.name == "security_context")
            for message, field in targets:
                if message.HasField(field.name):
                    getattr(message, field.name).permissions.add()
        else:
            envelope.ClearField(envelope.WhichOneof("payload") or "event_id")
    return envelope


_SETTINGS = settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(fuzzed_envelopes())
def test_fuzzed_envelopes_decode_as_with_the_reference(
    envelope: envelope_pb2.EventEnvelope,
) -> None:
    assert_decodes_alike(envelope)


@_SETTINGS
@given(fuzzed_envelopes(in_payload=True))
def test_fuzzed_payloads_decode_as_with_the_reference(
    envelope: envelope_pb2.EventEnvelope,
) -> None:
    assert_decodes_alike(envelope)


@_SETTINGS
@given(fuzzed_envelopes())
def test_a_second_decode_is_the_same_as_a_first(envelope: envelope_pb2.EventEnvelope) -> None:
    # The id and minute caches are warm the second time; nothing may change.
    adapter._parse_uuid.cache_clear()
    assert_decodes_alike(envelope)
    assert_decodes_alike(envelope)


@settings(max_examples=2000)
@given(uuid_texts | bad_uuid_texts)
def test_uuid_parsing_matches_uuid_module(text: str) -> None:
    try:
        expected = uuid.UUID(text)
    except ValueError as error:
        with pytest.raises(ValueError) as raised:
            adapter._new_uuid(text)
        assert str(raised.value) == str(error)
        with pytest.raises(ValueError):
            adapter._parse_uuid[text]
        assert text not in adapter._parse_uuid
    else:
        assert_same(adapter._new_uuid(text), expected)
        assert_same(adapter._parse_uuid[text], expected)


@settings(max_examples=2000)
@given(
    st.integers(-62_135_596_800 - 120, -62_135_596_800 + 120)
    | st.integers(253_402_300_799 - 120, 253_402_300_799 + 120)
    | st.integers(-(2**70), 2**70)
    | st.integers(-(10**6), 10**6)
    | st.floats(-1e12, 1e12),
    st.integers(0, 999_999_999) | st.integers(-(2**40), 2**40),
)
def test_timestamps_match_the_uncached_computation(seconds: Any, nanos: int) -> None:
    try:
        expected = _ref_timestamp(seconds, nanos)
    except (ValueError, OverflowError, TypeError) as error:
        with pytest.raises(type(error)) as raised:
            NanoDatetime.from_seconds_nanos(seconds, nanos)
        assert str(raised.value) == str(error)
    else:
        for _ in range(2):  # a cache miss, then a hit
            value = NanoDatetime.from_seconds_nanos(seconds, nanos)
            assert_same(value, expected)
            assert value._seconds == expected._seconds == seconds


def test_registered_upcasters_still_run() -> None:
    upcasters = Upcasters()

    @upcasters.register("chunk_processed", 1)
    def upcast_v1_v2(envelope: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
        envelope.chunk_processed.stage_name += " (v2)"
        return envelope

    event = domain.ChunkProcessed.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 1, 2, "zip", 3)
    envelope = adapter.to_envelope(event)
    assert_decodes_alike(envelope, upcasters)
    decoded = adapter.from_envelope(envelope, upcasters=upcasters)
    assert (decoded.stage_name, decoded.version) == ("zip (v2)", 2)


def test_record_from_proto_matches_the_reference() -> None:
    context = domain.SecurityContext(
        user_id="alice",
        permissions=(domain.StandardPermission.ADMIN, domain.CustomPermission("audit")),
        metadata={"b": "2", "a": "1"},
    )
    message = common_pb2.SecurityContext()
    adapter.record_to_proto(context, message)
    expected = _ref_message(domain.SecurityContext, field_specs(domain.SecurityContext), message)
    assert_same(adapter.record_from_proto(domain.SecurityContext, message), expected)
