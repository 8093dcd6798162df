"""The compiled proto3 JSON codecs against json_format: the same dicts, messages and errors.

Every input goes through the compiled codec itself (`_json_compiled`, so that a
silent fallback cannot hide a difference) and through json_format:

- encoding: the same dict (keys, key order, value types; floats compared by
  repr), hence the same text, or an error from both;
- decoding: when the compiled decoder returns, json_format accepts the input
  too and builds the same message (deterministic bytes compared); otherwise it
  fell back, and `proto_json.parse_dict` gives json_format's message or a
  DecodeError where json_format rejects the input.

Inputs: the golden vectors; envelopes of every event (hypothesis); random
messages of every contract message type and of a kitchen-sink proto3 type
built here, with what the contract does not use (signed and fixed integers,
float, json_name, int and bool map keys, non-adjacent oneofs, maps of
messages); the JSON of all of those, mutated (hypothesis) towards the edge
cases json_format treats specially; and tables of those edge cases.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
import pytest
from adaptive_pipeline.events.v1 import (
    common_pb2,
    envelope_pb2,
    operational_pb2,
)
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_events import adapter, domain
from pipeline_events.codecs import _json_compiled, cloudevents, proto_json
from pipeline_events.errors import DecodeError, EncodeError
from tests.schema_support import contract_messages
from tests.strategies import events
from tests.vectors_support import MANIFEST, binary_of, json_of

EventEnvelope = envelope_pb2.EventEnvelope

# --- the two checks -------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types and dict key order; floats by repr (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def check_encoding(message: Message) -> None:
    """The compiled encoder gives json_format's dict (and text), or fails where it fails."""
    try:
        expected: dict[str, Any] | None = json_format.MessageToDict(message)
    except Exception:  # any error: ours must fail too
        expected = None
    encode = _json_compiled.encoder(message.DESCRIPTOR)
    assert encode is not None, f"{message.DESCRIPTOR.full_name} is not compiled"
    if expected is None:
        with pytest.raises(_json_compiled.Fallback):
            encode(message)
        with pytest.raises(EncodeError):
            proto_json.message_to_dict(message)
        return
    got = encode(message)  # never a Fallback where json_format succeeds
    assert _same(got, expected), (got, expected)
    assert orjson.dumps(got) == orjson.dumps(expected)
    assert _same(proto_json.message_to_dict(message), expected)


FAST, FALLBACK, REJECTED = "fast", "fallback", "rejected"


def check_decoding(value: Any, cls: type[Message], ignore_unknown_fields: bool = False) -> str:
    """The compiled decoder builds json_format's message or leaves the input to it.

    Returns FAST (decoded by the compiled decoder), FALLBACK (json_format decoded
    it) or REJECTED (json_format rejects it, and so does parse_dict).
    """
    original = copy.deepcopy(value)
    try:
        reference = json_format.ParseDict(copy.deepcopy(value), cls(), ignore_unknown_fields)
        expected: bytes | None = reference.SerializeToString(deterministic=True)
    except Exception:  # any error: the fast path must not accept the input
        expected = None
    decode = _json_compiled.decoder(cls.DESCRIPTOR, ignore_unknown_fields)
    assert decode is not None, f"{cls.DESCRIPTOR.full_name} is not compiled"
    try:
        got: bytes | None = cls(**decode(value)).SerializeToString(deterministic=True)
    except Exception:  # Fallback, or an error left to json_format
        got = None
    assert _same(value, original), "the decoder changed its input"
    if got is not None:
        assert expected is not None, "the fast path accepted what json_format rejects"
        assert got == expected
    if expected is None:
        with pytest.raises(DecodeError):
            proto_json.parse_dict(value, cls, ignore_unknown_fields)
        return REJECTED
    parsed = proto_json.parse_dict(value, cls, ignore_unknown_fields)
    assert parsed.SerializeToString(deterministic=True) == expected
    return FAST if got is not None else FALLBACK


def check_round_trip(message: Message) -> None:
    """Encoding as json_format does; decoding that JSON (as text would carry it) too, and
    on the fast path whenever json_format can read its own output back."""
    check_encoding(message)
    try:
        value = orjson.loads(orjson.dumps(json_format.MessageToDict(message)))
    except Exception:  # no JSON form (a bad Timestamp): nothing to decode
        return
    for ignore in (False, True):
        assert check_decoding(value, type(message), ignore) in (FAST, REJECTED)


# --- the golden vectors and the events ------------------------------------------------------


@pytest.mark.parametrize("vector", MANIFEST, ids=[vector["name"] for vector in MANIFEST])
def test_golden_vectors(vector: dict[str, Any]) -> None:
    # Vectors without JSON hold unknown fields: json_format drops them, and so must we.
    envelope = EventEnvelope.FromString(binary_of(vector))
    check_encoding(envelope)
    if vector["json"] is not None:
        golden = orjson.loads(json_of(vector))
        for ignore in (False, True):
            assert check_decoding(golden, EventEnvelope, ignore) == FAST


@settings(max_examples=300)
@given(
    events(allow_non_finite=True),
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
)
def test_envelopes_of_every_event(event: domain.Event, correlation: str, metadata: dict) -> None:
    envelope = adapter.to_envelope(event, correlation_id=correlation, metadata=metadata)
    check_round_trip(envelope)
    text = proto_json.encode(envelope)
    assert text == orjson.dumps(json_format.MessageToDict(envelope)).decode()
    assert check_decoding(orjson.loads(text), EventEnvelope) == FAST


def test_cloudevents_data_is_json_formats() -> None:
    envelope = EventEnvelope.FromString(binary_of(MANIFEST[0]))
    payload = getattr(envelope, envelope.WhichOneof("payload") or "")
    event = cloudevents.to_structured(envelope)
    assert _same(event["data"], json_format.MessageToDict(payload))
    assert cloudevents.from_structured(event) == envelope


# --- random messages of any type ------------------------------------------------------------

_EDGE_INTS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [value for value in (low, high, 0, 1, -1, 2**53, 2**53 + 1) if low <= value <= high]
    return st.sampled_from(edges) | st.integers(low, high)


def _timestamps() -> st.SearchStrategy[Message]:
    nanos = st.sampled_from([0, 1, 999_999_999, 5_000_000, 123_000, 100]) | st.integers(
        0, 999_999_999
    )
    seconds = st.sampled_from([-62_135_596_800, 253_402_300_799, 0, -1]) | st.integers(
        -62_135_596_800, 253_402_300_799
    )
    valid = st.builds(timestamp_pb2.Timestamp, seconds=seconds, nanos=nanos)
    # Now and then no RFC 3339 form: json_format fails, and so must the encoder.
    invalid = st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.sampled_from([-62_135_596_801, 253_402_300_800, 0]),
        nanos=st.sampled_from([0, -1, 1_000_000_000]),
    )
    return st.one_of(valid, valid, valid, invalid)


def _scalars(field: Any) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in _EDGE_INTS:
        return _integers(*_EDGE_INTS[cpp])
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return st.floats()
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        # float32 values, and doubles the field rounds (or overflows) to float32.
        return st.floats(width=32) | st.floats() | st.sampled_from([3.4028234663852886e38, 1e-45])
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.sampled_from(numbers) | _integers(-(2**31), 2**31 - 1)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=12)
    return st.text(max_size=8)


def _values(field: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values of one element of `field` (a map entry's value, a list item, the value)."""
    if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
        return _scalars(field)
    if field.message_type.full_name == "google.protobuf.Timestamp":
        return _timestamps()
    return messages(field.message_type, depth + 1)


def messages(descriptor: Any, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of any type: each field set or not, at most one case per oneof."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 4:
        return st.just(cls())
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = _scalars(field.message_type.fields_by_name["key"])
            value = _values(field.message_type.fields_by_name["value"], depth)
            strategies[field.name] = st.dictionaries(key, value, max_size=3)
        elif field.is_repeated:
            strategies[field.name] = st.lists(_values(field, depth), max_size=3)
        else:
            strategies[field.name] = _values(field, depth)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        chosen = draw(st.sets(st.sampled_from(sorted(strategies)))) if strategies else set()
        for oneof in descriptor.oneofs:  # keep one case; a synthetic oneof has one field
            cases = sorted(f.name for f in oneof.fields if f.name in chosen)
            chosen -= set(cases[1:])
        return cls(**{name: draw(strategies[name]) for name in sorted(chosen)})

    return build()


CONTRACT = contract_messages()


def test_every_contract_message_type_is_compiled() -> None:
    assert len(CONTRACT) > 40
    for descriptor in CONTRACT:
        assert _json_compiled.encoder(descriptor) is not None, descriptor.full_name
        assert _json_compiled.decoder(descriptor) is not None, descriptor.full_name


@settings(max_examples=400)
@given(st.sampled_from(CONTRACT).flatmap(messages))
def test_random_contract_messages(message: Message) -> None:
    check_round_trip(message)


# --- a kitchen-sink type: what json_format handles that the contract does not use ------------

_T = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int32": _T.TYPE_INT32,
    "int64": _T.TYPE_INT64,
    "uint32": _T.TYPE_UINT32,
    "uint64": _T.TYPE_UINT64,
    "sint32": _T.TYPE_SINT32,
    "sint64": _T.TYPE_SINT64,
    "fixed32": _T.TYPE_FIXED32,
    "fixed64": _T.TYPE_FIXED64,
    "sfixed32": _T.TYPE_SFIXED32,
    "sfixed64": _T.TYPE_SFIXED64,
    "float": _T.TYPE_FLOAT,
    "double": _T.TYPE_DOUBLE,
    "bool": _T.TYPE_BOOL,
    "string": _T.TYPE_STRING,
    "bytes": _T.TYPE_BYTES,
}
_PACKAGE = "pipeline_events_test.json.v1"
_TIMESTAMP_TYPE = ".google.protobuf.Timestamp"


def _kitchen_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="pipeline_events_test/json/v1/kitchen.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    color = file.enum_type.add(name="Color")
    for name, value in [("COLOR_UNSPECIFIED", 0), ("COLOR_RED", 1), ("COLOR_NEGATIVE", -7)]:
        color.value.add(name=name, number=value)
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="a", number=1, type=_T.TYPE_INT32, label=_T.LABEL_OPTIONAL)
    inner.field.add(name="text_value", number=2, type=_T.TYPE_STRING, label=_T.LABEL_OPTIONAL)
    inner.field.add(name="many", number=3, type=_T.TYPE_SINT64, label=_T.LABEL_REPEATED)

    kitchen = file.message_type.add(name="Kitchen")
    number = itertools.count(1)
    synthetic: list[tuple[str, descriptor_pb2.FieldDescriptorProto]] = []

    def add(name: str, kind: Any, *, repeated: bool = False, **extra: Any) -> Any:
        field = kitchen.field.add(
            name=name,
            number=extra.pop("number", None) or next(number),
            label=_T.LABEL_REPEATED if repeated else _T.LABEL_OPTIONAL,
        )
        if kind == "Color":
            field.type, field.type_name = _T.TYPE_ENUM, f".{_PACKAGE}.Color"
        elif kind == "Inner":
            field.type, field.type_name = _T.TYPE_MESSAGE, f".{_PACKAGE}.Inner"
        elif kind == "Timestamp":
            field.type, field.type_name = _T.TYPE_MESSAGE, _TIMESTAMP_TYPE
        else:
            field.type = _TYPES[kind] if isinstance(kind, str) else kind
        for key, value in extra.items():
            setattr(field, key, value)
        return field

    scalar_kinds = [*_TYPES, "Color", "Inner", "Timestamp"]
    for kind in reversed(scalar_kinds):  # declared out of number order
        add(f"v_{kind.lower()}", kind, number=100 + scalar_kinds.index(kind))
    for kind in scalar_kinds:
        add(f"r_{kind.lower()}", kind, repeated=True)
    for kind in ["int64", "float", "Color", "bytes", "bool", "string"]:
        synthetic.append((f"_o_{kind.lower()}", add(f"o_{kind.lower()}", kind)))
    add("renamed_field", "string", json_name="customJson")
    add("snake__case_x1", "uint64")

    # Maps: an entry type per map, as protoc writes them.
    key_kinds = ["string", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32"]
    key_kinds += ["fixed64", "sfixed32", "sfixed64", "bool"]
    value_kinds = ["string", "Inner", "double", "bytes", "Color", "Timestamp", "float", "int64"]
    for index, key_kind in enumerate(key_kinds):
        value_kind = value_kinds[index % len(value_kinds)]
        entry_name = f"M{index}Entry"
        entry = kitchen.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=_TYPES[key_kind], label=_T.LABEL_OPTIONAL)
        item = entry.field.add(name="value", number=2, label=_T.LABEL_OPTIONAL)
        if value_kind == "Inner":
            item.type, item.type_name = _T.TYPE_MESSAGE, f".{_PACKAGE}.Inner"
        elif value_kind == "Timestamp":
            item.type, item.type_name = _T.TYPE_MESSAGE, _TIMESTAMP_TYPE
        elif value_kind == "Color":
            item.type, item.type_name = _T.TYPE_ENUM, f".{_PACKAGE}.Color"
        else:
            item.type = _TYPES[value_kind]
        field = add(f"m{index}", _T.TYPE_MESSAGE, repeated=True)
        field.type_name = f".{_PACKAGE}.Kitchen.{entry_name}"

    # A oneof with a field of another kind between its cases, and one of many message
    # cases (compiled as a table of case functions).
    kitchen.oneof_decl.add(name="choice")
    for name, kind, field_number in [
        ("c_int64", "int64", 200),
        ("c_inner", "Inner", 201),
        ("c_color", "Color", 202),
        ("c_timestamp", "Timestamp", 203),
        ("c_double", "double", 205),
        ("c_bytes", "bytes", 206),
    ]:
        add(name, kind, number=field_number, oneof_index=0)
    add("between", "bool", number=204)
    kitchen.oneof_decl.add(name="many")
    for index in range(5):
        add(f"many_{index}", "Inner", number=300 + index, oneof_index=1)
    add("many_string", "string", number=305, oneof_index=1)
    for name, field in synthetic:  # proto3 `optional`: synthetic oneofs come last
        field.proto3_optional = True
        field.oneof_index = len(kitchen.oneof_decl)
        kitchen.oneof_decl.add(name=name)

    with_duration = file.message_type.add(name="WithDuration")
    with_duration.field.add(
        name="duration",
        number=1,
        type=_T.TYPE_MESSAGE,
        type_name=".google.protobuf.Duration",
        label=_T.LABEL_OPTIONAL,
    )
    return file


def _proto2_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="pipeline_events_test/json/v1/legacy.proto", package=_PACKAGE, syntax="proto2"
    )
    legacy = file.message_type.add(name="Legacy")
    legacy.field.add(name="count", number=1, type=_T.TYPE_INT32, label=_T.LABEL_OPTIONAL)
    return file


def _add_to_pool(file: descriptor_pb2.FileDescriptorProto) -> None:
    # The imports of timestamp_pb2 and duration_pb2 put the dependencies in the pool.
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.Add(file)


_add_to_pool(_kitchen_file())
_add_to_pool(_proto2_file())
_POOL = descriptor_pool.Default()
Kitchen: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Kitchen"))
Inner: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Inner"))
WithDuration: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.WithDuration")
)
Legacy: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Legacy"))


@settings(max_examples=500)
@given(messages(Kitchen.DESCRIPTOR))
def test_random_kitchen_messages(message: Message) -> None:
    check_round_trip(message)


def test_kitchen_json_names_and_order() -> None:
    message = Kitchen(renamed_field="x", snake__case_x1=5, v_string="s", v_int32=1, between=True)
    # Number order (v_int32 is 100, v_string 113), as json_format's ListFields gives them.
    assert list(proto_json.message_to_dict(message)) == list(json_format.MessageToDict(message))
    assert [key for key in proto_json.message_to_dict(message) if key[0] == "v"] == [
        "vInt32",
        "vString",
    ]
    assert proto_json.message_to_dict(message)["customJson"] == "x"
    check_round_trip(message)


def test_a_oneof_case_or_optional_set_to_its_default_is_written() -> None:
    for message in [
        Kitchen(c_int64=0),
        Kitchen(c_inner=Inner()),
        Kitchen(many_3=Inner()),
        Kitchen(many_string=""),
        Kitchen(o_float=0.0, o_color=0, o_bytes=b"", o_bool=False, o_string=""),
        common_pb2.Permission(standard=common_pb2.STANDARD_PERMISSION_UNSPECIFIED),
        EventEnvelope(chunk_processed=operational_pb2.ChunkProcessed()),
    ]:
        check_round_trip(message)
        assert proto_json.message_to_dict(message)  # not {}


def test_types_not_compiled_go_to_json_format() -> None:
    # The well-known types with a JSON form of their own that the schema does not use, and
    # what contains one; proto2; a Timestamp on its own (compiled only as a field).
    for descriptor in [
        WithDuration.DESCRIPTOR,
        any_pb2.Any.DESCRIPTOR,
        struct_pb2.Struct.DESCRIPTOR,
        struct_pb2.Value.DESCRIPTOR,
        wrappers_pb2.Int64Value.DESCRIPTOR,
        field_mask_pb2.FieldMask.DESCRIPTOR,
        Legacy.DESCRIPTOR,
        timestamp_pb2.Timestamp.DESCRIPTOR,
    ]:
        assert _json_compiled.encoder(descriptor) is None, descriptor.full_name
        assert _json_compiled.decoder(descriptor) is None, descriptor.full_name
    assert _json_compiled.encoder(empty_pb2.Empty.DESCRIPTOR) is not None  # a plain message
    message = WithDuration(duration=duration_pb2.Duration(seconds=-3, nanos=-100))
    assert proto_json.message_to_dict(message) == {"duration": "-3.000000100s"}
    parsed = proto_json.parse_dict({"duration": "1.5s"}, WithDuration)
    assert parsed.duration.ToNanoseconds() == 1_500_000_000
    assert proto_json.parse_dict({"count": 3}, Legacy).count == 3
    with pytest.raises(DecodeError):
        proto_json.parse_dict({"duration": "1.5"}, WithDuration)


# --- mutated JSON: the edge cases ----------------------------------------------------------

_ENUM_NAMES = sorted(
    {
        value.name
        for descriptor in [*CONTRACT, Kitchen.DESCRIPTOR]
        for field in descriptor.fields
        if field.enum_type is not None
        for value in field.enum_type.values
    }
)
_KEYS = sorted(
    {
        key
        for d in [*CONTRACT, Kitchen.DESCRIPTOR]
        for f in d.fields
        for key in (f.name, f.json_name)
    }
    | {"unknownField", "[pkg.ext]", "[a.b", "@type", "", "payload", "choice", "1", "true"}
)
TIMESTAMPS: list[Any] = [
    "2025-01-15T10:30:45Z",
    "2025-01-15T10:30:45.1Z",
    "2025-01-15T10:30:45.123Z",
    "2025-01-15T10:30:45.123456Z",
    "2025-01-15T10:30:45.123456789Z",
    "2025-01-15T10:30:45.1234567891Z",  # 10 digits
    "2025-01-15T10:30:45.Z",
    "2025-01-15T10:30:45.999999999Z",
    "2025-01-15T10:30:45.000000001Z",
    "2025-01-15t10:30:45Z",
    "2025-01-15T10:30:45z",
    "2025-01-15T10:30:45+01:00",
    "2025-01-15T10:30:45.5-05:30",
    "2025-01-15T10:30:45",
    "2025-01-15 10:30:45Z",
    "2025-1-5T1:2:3Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "0000-12-31T23:59:59Z",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "2024-02-29T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2025-13-01T00:00:00Z",
    "2025-01-15T24:00:00Z",
    "2025-01-15T23:60:00Z",
    "2025-01-15T23:59:60Z",
    "2025-01-15T10:30:45.12a4Z",
    "2025-01-15T10:30:45.1e5Z",
    "\u0662\u0660\u0662\u0665-01-15T10:30:45Z",
    "2025-01-15T10:30:45.\u0661Z",  # an Arabic-Indic digit
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.5Z",
]
INTEGERS: list[Any] = [0, 1, -1, 7, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32]
INTEGERS += [2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30]
INTEGERS += [1.0, -0.0, 1.5, 1e20, 2.0**63, 2.0**64, float("inf"), float("nan")]
INTEGERS += ["0", "1", "-1", "007", "-0", "+1", " 1", "1 ", "1_0", "1e3", "1.0", "1.5", "0x10"]
INTEGERS += ["\u0663", "18446744073709551615", "18446744073709551616", "-9223372036854775808"]
INTEGERS += ["9223372036854775808", "", "-", "1" * 30, True, False]
FLOATS: list[Any] = [0.0, -0.0, 1.5, 1e308, 5e-324, 3.4028234663852886e38, 3.5e38, -3.5e38, 1e-46]
FLOATS += [float("inf"), float("-inf"), float("nan"), 1, -1, 10**400, 2**1024, True]
FLOATS += ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "INF", "1e400", "-1e400"]
FLOATS += ["1.5", " 1.5", "1_0.5", "1e-400", "0x1p3", "", "abc", "3.5e38", "-nan"]
BYTES: list[Any] = [
    "",
    "AQID",
    "AQIDBA==",
    "AQIDBA",
    "AQIDBA=",
    "AQIDBA===",
    "-_-_",
    "+/+/",
    "-_+/",
]
BYTES += ["A", "AQ", "AQI", "AQ I D", "AQ\nID", "AQ!D", "é", "AQ==AQ==", b"AQID", 5]
OTHER: list[Any] = [None, True, False, {}, [], [None], [1, "2"], {"a": 1}, {"1": "x"}, {"true": 1}]
OTHER += [{"01": 1}, {"-0": 1}, {"": None}, "x", "\ud800", "a\ud83d", "é", "COLOR_RED", "13"]
EDGES: list[Any] = [*TIMESTAMPS, *INTEGERS, *FLOATS, *BYTES, *OTHER, *_ENUM_NAMES]


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=6,
    )


# Copies: a mutation may change a drawn list or dict later, never EDGES itself.
_VALUES = (st.sampled_from(EDGES) | _json_values()).map(copy.deepcopy)


def _containers(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict | list):
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            found += _containers(item)
    return found


def mutate(document: Any, data: st.DataObject) -> None:
    """Change one value, add, drop or rename one key, somewhere in the document."""
    target: Any = data.draw(st.sampled_from(_containers(document)))
    if isinstance(target, list):
        if len(target) > 0 and data.draw(st.booleans()):
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(_VALUES)
        else:
            target.append(data.draw(_VALUES))
        return
    action = data.draw(st.sampled_from(["set", "set", "add", "drop", "rename"]))
    keys = sorted(target, key=repr)
    if action == "add" or not keys:
        target[data.draw(st.sampled_from(_KEYS))] = data.draw(_VALUES)
        return
    key = data.draw(st.sampled_from(keys))
    if action == "set":
        target[key] = data.draw(_VALUES)
    elif action == "drop":
        del target[key]
    else:
        target[data.draw(st.sampled_from(_KEYS))] = target.pop(key)


def _seed_documents() -> list[tuple[type[Message], Any]]:
    seeds: list[tuple[type[Message], Any]] = [
        (EventEnvelope, orjson.loads(json_of(vector))) for vector in MANIFEST if vector["json"]
    ]
    rich = Kitchen(
        v_int64=-5,
        v_float=1.5,
        v_bytes=b"\x00\xff",
        v_color=-7,
        v_inner=Inner(a=1, text_value="t", many=[1, -2]),
        v_timestamp=timestamp_pb2.Timestamp(seconds=1, nanos=1000),
        r_int64=[1, -1],
        r_timestamp=[timestamp_pb2.Timestamp()],
        r_inner=[Inner(a=2)],
        o_int64=0,
        m0={"k": "v"},
        m1={-1: Inner(a=3)},
        m3={7: b"\x01"},
        m4={2**64 - 1: 1},
        m11={True: b"\x01", False: b""},
        c_timestamp=timestamp_pb2.Timestamp(seconds=-1),
        many_2=Inner(),
        renamed_field="r",
    )
    seeds.append((Kitchen, json_format.MessageToDict(rich)))
    seeds.append((Kitchen, json_format.MessageToDict(Kitchen(c_double=float("nan"), between=True))))
    return seeds


SEEDS = _seed_documents()


@settings(max_examples=1500)
@given(st.sampled_from(SEEDS), st.integers(1, 3), st.data())
def test_mutated_json(seed: tuple[type[Message], Any], changes: int, data: st.DataObject) -> None:
    cls, document = seed[0], copy.deepcopy(seed[1])
    for _ in range(changes):
        mutate(document, data)
    for ignore in (False, True):
        check_decoding(document, cls, ignore)


# --- tables of edge cases, each value in one field ------------------------------------------

# Where each edge value goes: (message type, the field's JSON name).
SLOTS: dict[str, tuple[Any, str]] = {
    "timestamp": (EventEnvelope, "occurredAt"),
    "nested timestamp": (Kitchen, "vTimestamp"),
    "uint64": (EventEnvelope, "schemaVersion"),
    "int64": (Kitchen, "vInt64"),
    "int32": (Kitchen, "vInt32"),
    "uint32": (Kitchen, "vUint32"),
    "sint64 in a list": (Inner, "many"),
    "double": (Kitchen, "vDouble"),
    "float": (Kitchen, "vFloat"),
    "bytes": (Kitchen, "vBytes"),
    "enum": (EventEnvelope, "eventType"),
    "string": (EventEnvelope, "eventId"),
    "bool": (Kitchen, "vBool"),
    "message": (Kitchen, "vInner"),
    "map of int32 keys": (Kitchen, "m1"),
    "map of bool keys": (Kitchen, "m11"),
}


def _place(kind: str, value: Any) -> tuple[type[Message], dict[str, Any]]:
    cls, name = SLOTS[kind]
    return cls, {name: [value] if kind == "sint64 in a list" else value}


@pytest.mark.parametrize("kind", sorted(SLOTS))
def test_edge_values_in_every_kind_of_field(kind: str) -> None:
    outcomes = {}
    for value in EDGES:
        cls, document = _place(kind, value)
        for ignore in (False, True):
            outcomes[repr(value), ignore] = check_decoding(document, cls, ignore)
    assert FAST in outcomes.values()


# What the compiled decoder reads itself, and what it leaves to json_format though json_format
# accepts it (the rest json_format rejects). Pinned so that a change is a deliberate one.
PINNED = [
    ("timestamp", "2025-01-15T10:30:45Z", FAST),
    ("timestamp", "2025-01-15T10:30:45.1Z", FAST),
    ("timestamp", "2025-01-15T10:30:45.123456789Z", FAST),
    ("timestamp", "2025-01-15T10:30:45+01:00", FAST),  # through Timestamp.FromJsonString
    ("timestamp", "2025-01-15T10:30:45.Z", FAST),
    ("timestamp", "2025-1-5T1:2:3Z", FAST),  # strptime's leniency, kept
    ("timestamp", "2025-01-15t10:30:45Z", REJECTED),
    ("timestamp", "2025-01-15T10:30:45z", REJECTED),
    ("timestamp", "2025-01-15T10:30:45.1234567891Z", REJECTED),
    ("timestamp", "0001-01-01T00:00:00+01:00", REJECTED),
    ("timestamp", "2025-02-29T00:00:00Z", REJECTED),
    ("timestamp", "2025-01-15T23:59:60Z", REJECTED),
    ("uint64", "18446744073709551615", FAST),
    ("uint64", 7, FAST),
    ("uint64", 7.0, FAST),
    ("uint64", "18446744073709551616", REJECTED),
    ("uint64", -1, REJECTED),
    ("uint64", "+1", FALLBACK),
    ("uint64", "1e3", FALLBACK),
    ("uint64", " 1", REJECTED),  # json_format refuses a space ...
    ("uint64", "\t1", FALLBACK),  # ... but int() takes a tab
    ("uint64", 1.5, REJECTED),
    ("uint64", True, REJECTED),
    ("int64", "-9223372036854775808", FAST),
    ("int64", "9223372036854775808", REJECTED),
    ("double", "NaN", FAST),
    ("double", "-Infinity", FAST),
    ("double", "1e400", FAST),  # json_format reads it as infinity
    ("double", float("nan"), REJECTED),
    ("double", "nan", REJECTED),
    ("double", True, FALLBACK),
    ("double", 10**400, REJECTED),
    ("float", 3.5e38, REJECTED),
    ("float", "3.5e38", FALLBACK),
    ("float", 1e-46, FAST),
    ("bytes", "AQIDBA", FAST),
    ("bytes", "-_-_", FAST),
    ("bytes", "AQ I D", FAST),  # b64decode skips what is not base64, as in json_format
    ("bytes", "A", REJECTED),
    ("enum", "EVENT_TYPE_CHUNK_PROCESSED", FAST),
    ("enum", 99, FAST),
    ("enum", "13", FALLBACK),
    ("enum", "EVENT_TYPE_NOPE", REJECTED),
    ("string", "\ud800", REJECTED),
    ("string", 5, REJECTED),
    ("bool", "true", REJECTED),
    ("message", None, FAST),  # null clears a field: a no-op on a new message
    ("message", "x", REJECTED),
    ("map of int32 keys", {"-5": {}}, FAST),
    ("map of int32 keys", {"05": {}}, FALLBACK),
    ("map of bool keys", {"true": "AQ=="}, FAST),
    ("map of bool keys", {"True": "AQ=="}, REJECTED),
]


@pytest.mark.parametrize(("kind", "value", "outcome"), PINNED)
def test_pinned_edge_cases(kind: str, value: Any, outcome: str) -> None:
    cls, document = _place(kind, value)
    assert check_decoding(document, cls) == outcome


@pytest.mark.parametrize(
    ("document", "outcome"),
    [
        ({"eventId": "a", "event_id": "b"}, FALLBACK),  # one field twice: the last wins
        ({"event_id": "b", "eventId": None}, FALLBACK),  # ... even a null
        ({"event_id": "b"}, FAST),  # a proto name alone: the general decoder
        ({"eventId": None, "chunkProcessed": {}}, FAST),
        ({"chunkProcessed": {}, "stageFailed": {}}, REJECTED),  # two oneof cases
        ({"chunkProcessed": {}, "stageFailed": None}, FALLBACK),
        ({"chunkProcessed": {}, "chunk_processed": {}}, REJECTED),
        ({"unknownField": 1}, REJECTED),
        ({"[a.b]": 1}, REJECTED),  # an extension name, even with ignore_unknown_fields
        ({"metadata": {"k": None}}, REJECTED),
        ({"metadata": {"k": "v"}, "chunkProcessed": {"chunkSequence": None}}, FAST),
    ],
)
def test_keys_nulls_and_oneofs(document: dict[str, Any], outcome: str) -> None:
    assert check_decoding(document, EventEnvelope) == outcome
    check_decoding(document, EventEnvelope, ignore_unknown_fields=True)


def test_unknown_fields_are_skipped_only_when_asked() -> None:
    document = {"eventId": "e", "future": {"x": [1]}, "chunkProcessed": {"later": 1}}
    assert check_decoding(document, EventEnvelope) == REJECTED
    assert check_decoding(document, EventEnvelope, ignore_unknown_fields=True) == FAST
    assert proto_json.from_dict(document, ignore_unknown_fields=True).event_id == "e"


def test_encoding_errors_are_encode_errors() -> None:
    envelope = EventEnvelope(occurred_at=timestamp_pb2.Timestamp(seconds=253_402_300_800))
    check_encoding(envelope)
    with pytest.raises(EncodeError, match="occurred_at"):
        proto_json.encode(envelope)
