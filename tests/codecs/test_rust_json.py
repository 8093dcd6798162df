"""Rust JSON codec: upstream's samples, round trips, lenient and strict reading, fuzzing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_events import domain
from pipeline_events.codecs.rust_json import decode, encode
from pipeline_events.errors import DecodeError, EncodeError
from pipeline_events.fields import FieldSpec, Kind, field_specs
from pipeline_events.timestamps import NanoDatetime
from tests.contract.upstream import ENUMS, EVENT_FIELDS, SUPPORT_FIELDS
from tests.strategies import event_of, events

SAMPLES = Path(__file__).parent / "rust_json_samples"
# Checked against serde_json, chrono and uuid themselves; split on "\n" only: a line holds U+2028.
GOLDEN = SAMPLES.joinpath("golden.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
UPSTREAM_SAMPLES = ["upstream_chunk_processed.json", "upstream_processing_started.json"]
U64_MAX = 2**64 - 1
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compact(text: str) -> str:
    """Drop the whitespace outside strings."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            escaped, in_string = (not escaped and char == "\\"), (escaped or char != '"')
        elif char == '"':
            in_string = True
        elif char in " \t\r\n":
            continue
        out.append(char)
    return "".join(out)


def _golden(event_type: str, index: int = 0) -> dict[str, Any]:
    return json.loads([line for line in GOLDEN if line.startswith(f'{{"{event_type}"')][index])


def _dumps(tree: Any) -> str:
    return json.dumps(tree, ensure_ascii=False, separators=(",", ":"))


# --- Golden strings ------------------------------------------------------------------------


@pytest.mark.parametrize("name", UPSTREAM_SAMPLES)
def test_upstream_samples_decode_and_re_encode_exactly(name: str) -> None:
    text = _compact(SAMPLES.joinpath(name).read_text(encoding="utf-8"))
    event = decode(text)
    assert encode(event) == text
    assert isinstance(event.occurred_at, NanoDatetime)
    assert isinstance(event.pipeline_id, uuid.UUID)


def test_upstream_sample_values() -> None:
    started = decode(_compact(SAMPLES.joinpath(UPSTREAM_SAMPLES[1]).read_text()))
    assert isinstance(started, domain.ProcessingStarted)
    assert started.occurred_at.nanosecond == 123_501_234
    assert started.security_context.permissions == (
        domain.StandardPermission.READ,
        domain.StandardPermission.WRITE,
        domain.StandardPermission.COMPRESS,
        domain.StandardPermission.ENCRYPT,
    )
    assert started.security_context.security_level is domain.SecurityLevel.INTERNAL
    assert started.security_context.metadata == {}


@pytest.mark.parametrize("text", GOLDEN, ids=[f"{i}-{line[2:20]}" for i, line in enumerate(GOLDEN)])
def test_golden_strings_decode_and_re_encode_exactly(text: str) -> None:
    assert encode(decode(text)) == text


def test_golden_values() -> None:
    paused = decode(_dumps(_golden("ProcessingPaused")))
    assert paused.checkpoint_data == bytes([0, 1, 2, 127, 128, 255])
    started = decode(_dumps(_golden("ProcessingStarted")))
    assert started.security_context.permissions[1] == domain.CustomPermission("audit")
    assert started.security_context.security_level is domain.SecurityLevel.TOP_SECRET
    metrics = decode(_dumps(_golden("MetricsUpdated"))).metrics
    assert metrics.processing_duration == domain.Duration(U64_MAX, 999_999_999)
    assert metrics.compression_ratio == 1e16
    assert math.copysign(1, metrics.stage_metrics["compression"].cpu_usage) == -1


def _metrics_event(throughput: Any) -> domain.MetricsUpdated:
    metrics = domain.ProcessingMetrics(throughput_bytes_per_second=throughput)
    ids = {"pipeline_id": uuid.UUID(int=1), "processing_id": uuid.UUID(int=2)}
    return domain.MetricsUpdated(**ids, metrics=metrics)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0.0"), (-0.0, "-0.0"), (100.0, "100.0"), (1e-5, "0.00001"), (1e-6, "1e-6"),
        (1e15, "1000000000000000.0"), (1e16, "1e16"), (-1e16, "-1e16"),
        (1.2345678901234568e17, "1.2345678901234568e17"), (2.5e-10, "2.5e-10"),
        (5e-324, "5e-324"), (699050.6666666666, "699050.6666666666"), (3.4e38, "3.4e38"),
        (1.7976931348623157e308, "1.7976931348623157e308"), (5, "5.0"),
        (math.nan, "null"), (math.inf, "null"), (-math.inf, "null"),
    ],
)  # fmt: skip
def test_floats_are_written_like_serde_json(value: float, text: str) -> None:
    assert f'"throughput_bytes_per_second":{text},' in encode(_metrics_event(value))


def _ryu(value: float) -> str:
    """serde_json's float text (ryu), from Python's shortest round-trip digits."""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    sign = "-" if math.copysign(1, value) < 0 else ""
    if not digits:
        return sign + "0.0"
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if len(digits) <= point <= 16:
        return f"{sign}{digits}{'0' * (point - len(digits))}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    rest = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{point - 1}"


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_like_serde_json(value: float) -> None:
    text = encode(_metrics_event(value))
    assert f'"throughput_bytes_per_second":{_ryu(value)},' in text
    read = decode(text).metrics.throughput_bytes_per_second
    assert math.copysign(1, read) == math.copysign(1, value)


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (NanoDatetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC), "2025-01-15T10:30:45+00:00"),
        (NanoDatetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC, nanosecond=120_000_000), "2025-01-15T10:30:45.120+00:00"),
        (NanoDatetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC, nanosecond=123_456_000), "2025-01-15T10:30:45.123456+00:00"),
        (NanoDatetime(2025, 1, 15, 10, 30, 45, tzinfo=dt.UTC, nanosecond=1), "2025-01-15T10:30:45.000000001+00:00"),
        (dt.datetime(2025, 1, 15, 10, 30, 45, 5, tzinfo=dt.UTC), "2025-01-15T10:30:45.000005+00:00"),
        (dt.datetime(2025, 1, 15, 12, 30, 45, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2025-01-15T10:30:45+00:00"),
        (NanoDatetime(1, 1, 1, tzinfo=dt.UTC), "0001-01-01T00:00:00+00:00"),
    ],
)  # fmt: skip
def test_timestamps_are_written_like_chrono_to_rfc3339(instant: dt.datetime, text: str) -> None:
    event = domain.PipelineDeleted(pipeline_id=uuid.UUID(int=1), occurred_at=instant)
    assert f'"occurred_at":"{text}"' in encode(event)


# --- Round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", domain.EVENT_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_class_round_trips(cls: type[domain.Event], data: st.DataObject) -> None:
    event = data.draw(event_of(cls))
    text = encode(event)
    assert decode(text) == event
    assert decode(text.encode()) == event
    assert encode(decode(text)) == text  # also catches -0.0 turning into 0.0


def _rfc3339(seconds: int, nanos: int) -> str:
    """chrono's to_rfc3339 of an instant (SecondsFormat::AutoSi), independent of the codec."""
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        fraction = f".{nanos // 1000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}{fraction}+00:00"


def _texts() -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def _json_field(spec: FieldSpec, nullable: bool = True) -> st.SearchStrategy[str]:
    """Canonical serde_json text of one field, from the upstream notes rather than the codec."""
    if spec.optional and nullable:
        return st.just("null") | _json_field(spec, nullable=False)
    texts = _texts().map(lambda text: json.dumps(text, ensure_ascii=False))
    kind = spec.kind
    if kind is Kind.UUID:
        return st.uuids().map(lambda value: f'"{value}"')
    if kind is Kind.STR:
        return texts
    if kind is Kind.U64:
        return st.integers(0, U64_MAX).map(str)
    if kind is Kind.BOOL:
        return st.sampled_from(["true", "false"])
    if kind is Kind.F64:
        return st.floats(allow_nan=False, allow_infinity=False).map(_ryu)
    if kind is Kind.BYTES:
        return st.binary(max_size=6).map(lambda data: json.dumps(list(data), separators=(",", ":")))
    if kind is Kind.TIMESTAMP:
        nanos = st.sampled_from([0, 5_000_000, 123_456_000, 999_999_999]) | st.integers(
            0, 10**9 - 1
        )
        instants = st.builds(_rfc3339, st.integers(-62_135_596_800, 253_402_300_799), nanos)
        return instants.map(json.dumps)
    if kind is Kind.DURATION:
        nanos = st.integers(0, 10**9 - 1)
        return st.builds('{{"secs":{},"nanos":{}}}'.format, st.integers(0, U64_MAX), nanos)
    if kind is Kind.ENUM:
        return st.sampled_from(ENUMS[spec.type.__name__]).map(json.dumps)  # type: ignore[union-attr]
    if kind is Kind.PERMISSION:
        standard = st.sampled_from(ENUMS["StandardPermission"]).map(json.dumps)
        return standard | texts.map('{{"Custom":{}}}'.format)
    item = _json_field(spec.item) if spec.item else st.nothing()  # type: ignore[arg-type]
    if kind is Kind.LIST:
        return st.lists(item, max_size=3).map(lambda items: f"[{','.join(items)}]")
    if kind is Kind.MAP:
        entries = st.dictionaries(texts, item, max_size=1)  # one key: serde's order is random
        return entries.map(
            lambda entries: "{" + ",".join(f"{k}:{v}" for k, v in entries.items()) + "}"
        )
    return _json_record(spec.type)  # type: ignore[arg-type]


def _json_record(cls: type) -> st.SearchStrategy[str]:
    if cls in domain.EVENT_CLASSES:
        names = ["event_id", "pipeline_id", *EVENT_FIELDS[cls.__name__], "occurred_at", "version"]
    else:
        names = SUPPORT_FIELDS[cls.__name__]
    specs = {spec.name: spec for spec in field_specs(cls)}
    names = [name.rstrip("?") for name in names]
    members = st.tuples(*(_json_field(specs[name]).map(f'"{name}":{{}}'.format) for name in names))
    return members.map(lambda members: "{" + ",".join(members) + "}")


@pytest.mark.parametrize("cls", domain.EVENT_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_upstream_json_re_encodes_identically(cls: type, data: st.DataObject) -> None:
    text = f'{{"{cls.__name__}":{data.draw(_json_record(cls))}}}'
    assert encode(decode(text)) == text


# --- Lenient reading -----------------------------------------------------------------------


def _walk(tree: Any, change: Any) -> Any:
    """`tree` with `change(key, value)` applied bottom-up to every object member."""
    if isinstance(tree, list):
        return [_walk(item, change) for item in tree]
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            key, value = change(key, _walk(value, change))
            if key is not None:
                out[key] = value
        return out
    return tree


TIMESTAMP_KEYS = {"occurred_at", "created_at"}
UUID_KEYS = {"event_id", "pipeline_id", "processing_id", "chunk_id", "stage_id", "session_id"}
F64_KEYS = {
    "throughput_bytes_per_second",
    "compression_ratio",
    "throughput",
    "success_rate",
    "cpu_usage",
}
STRUCT_MARKERS = {"event_id", "session_id", "bytes_total", "success_rate"}


def _at(keys: set[str], convert: Any) -> Any:
    return lambda key, value: (key, convert(value) if key in keys and value is not None else value)


def _shift(text: str, sign: str, hours: int, minutes: int) -> str:
    """The same instant written with another offset."""
    offset = dt.timedelta(hours=hours, minutes=minutes)
    local = dt.datetime.fromisoformat(text[:19]) + (offset if sign == "+" else -offset)
    return f"{local.year:04d}-{local:%m-%dT%H:%M:%S}{text[19:-6]}{sign}{hours:02d}:{minutes:02d}"


def _add_unknown_field(key: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, dict) and STRUCT_MARKERS & value.keys():
        return key, {**value, "unknown": [{"x": 1e300}]}
    return key, value


def _seq_form(key: str, value: Any) -> tuple[str, Any]:
    if isinstance(value, dict) and (
        STRUCT_MARKERS & value.keys() or value.keys() == {"secs", "nanos"}
    ):
        return key, list(value.values())
    return key, value


def _lenient_forms(text: str) -> dict[str, str]:
    tree = json.loads(text)
    in_range = "0001-01-01" not in text and "9999-12-31" not in text
    forms = {
        "Z": _at(TIMESTAMP_KEYS, lambda t: t[:-6] + "Z"),
        "lowercase t and z": _at(TIMESTAMP_KEYS, lambda t: t[:10] + "t" + t[11:-6] + "z"),
        "space separator": _at(TIMESTAMP_KEYS, lambda t: t[:10] + " " + t[11:]),
        "more than 9 fraction digits": _at(
            TIMESTAMP_KEYS, lambda t: t[:19] + "." + (t[20:-6] + "0" * 9)[:9] + "987+00:00"
        ),
        "uppercase UUIDs": _at(UUID_KEYS, str.upper),
        "simple UUIDs": _at(UUID_KEYS, lambda u: u.replace("-", "")),
        "braced UUIDs": _at(UUID_KEYS, lambda u: "{" + u.upper() + "}"),
        "URN UUIDs": _at(UUID_KEYS, lambda u: "urn:uuid:" + u),
        "missing Options": lambda key, value: (None if value is None else key, value),
        "unit variants as maps": _at({"severity", "security_level"}, lambda name: {name: None}),
        "permissions as maps": _at(
            {"permissions"}, lambda ps: [{p: None} if isinstance(p, str) else p for p in ps]
        ),
        "integral f64 as integers": _at(
            F64_KEYS, lambda x: int(x) if x == int(x) and abs(x) < 2**53 else x
        ),
        "nanos carried into secs": _at(
            {"processing_duration", "processing_time"},
            lambda d: {"secs": d["secs"] - 1, "nanos": d["nanos"] + 10**9} if d["secs"] else d,
        ),
        "structs as sequences": _seq_form,
    }
    if in_range:
        forms["+02:00"] = _at(TIMESTAMP_KEYS, lambda t: _shift(t, "+", 2, 0))
        forms["U+2212 minus"] = _at(TIMESTAMP_KEYS, lambda t: _shift(t, "\u2212", 5, 30))
        forms["-00:00"] = _at(TIMESTAMP_KEYS, lambda t: t[:-6] + "-00:00")
    out = {name: _dumps(_walk(tree, change)) for name, change in forms.items()}
    with_unknown = _walk(tree, _add_unknown_field)
    with_unknown[next(iter(tree))]["also_unknown"] = None
    out["unknown fields"] = _dumps(with_unknown)
    out["pretty-printed"] = json.dumps(tree, indent=2)
    return out


@SETTINGS
@given(events())
def test_lenient_forms_decode_to_the_same_event(event: domain.Event) -> None:
    for name, text in _lenient_forms(encode(event)).items():
        assert decode(text) == event, name


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        ("2025-01-15T10:30:45.123456789Z", "2025-01-15T10:30:45.123456789+00:00"),
        ("2025-01-15T12:30:45+02:00", "2025-01-15T10:30:45+00:00"),
        ("2025-01-15T00:30:45.5-23:59", "2025-01-16T00:29:45.500+00:00"),
        ("2025-01-15T10:30:45.1234567891234+00:00", "2025-01-15T10:30:45.123456789+00:00"),
        ("2016-12-31T23:59:60.5Z", "2017-01-01T00:00:00.500+00:00"),  # a leap second
        ("0000-12-31T23:30:00-01:00", "0001-01-01T00:30:00+00:00"),  # year 0 is valid in chrono
    ],
)
def test_timestamps_are_read_like_chrono_parse_from_rfc3339(
    occurred_at: str, expected: str
) -> None:
    ids = {"event_id": str(uuid.UUID(int=1)), "pipeline_id": str(uuid.UUID(int=2))}
    payload = {**ids, "occurred_at": occurred_at, "version": 1}
    assert f'"occurred_at":"{expected}"' in encode(decode(_dumps({"PipelineDeleted": payload})))


def test_negative_zero_is_a_float_as_in_serde_json() -> None:
    text = _dumps(_golden("MetricsUpdated")).replace("699050.6666666666", "-0")
    assert '"throughput_bytes_per_second":-0.0,' in encode(decode(text))
    assert '"throughput_bytes_per_second":-0.0,' in encode(decode(text.encode()))
    with pytest.raises(DecodeError) as caught:
        decode(text.replace('"error_count":0', '"error_count":-0', 1))
    assert caught.value.field == "MetricsUpdated.metrics.error_count"


@pytest.mark.parametrize("ignored", ["1e400", "1" + "0" * 5000, '"\\ud800"', "[" * 200 + "]" * 200])
def test_unknown_fields_are_skipped_unchecked_as_in_serde_json(ignored: str) -> None:
    text = _dumps(_golden("ProcessingResumed"))
    assert decode(text[:-2] + ',"unknown":' + ignored + "}}") == decode(text)


# --- Strict reading ------------------------------------------------------------------------


def _set(path: list[Any], value: Any) -> Any:
    def change(tree: dict[str, Any]) -> None:
        for step in path[:-1]:
            tree = tree[step]
        if value is _DELETE:
            del tree[path[-1]]
        else:
            tree[path[-1]] = value

    return change


_DELETE = object()
STARTED = ["ProcessingStarted"]
CONTEXT = [*STARTED, "security_context"]
METRICS = ["MetricsUpdated", "metrics"]
DURATION = [*METRICS, "processing_duration"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set([*STARTED, "input_path"], _DELETE), "ProcessingStarted.input_path"),
        (_set([*CONTEXT, "session_id"], _DELETE), "ProcessingStarted.security_context.session_id"),
        (_set([*STARTED, "input_path"], None), "ProcessingStarted.input_path"),
        (_set([*STARTED, "occurred_at"], "2025-01-15T10:30:45"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "2025-01-15T10:30:45+0200"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "2025-01-15T10:30:45+24:00"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "2025-02-30T10:30:45Z"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "2025-01-15T24:00:00Z"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "2025-01-15T10:30:45.Z"), "ProcessingStarted.occurred_at"),
        (_set([*STARTED, "occurred_at"], "9999-12-31T23:30:00-01:00"), "ProcessingStarted.occurred_at"),
        (_set([*CONTEXT, "created_at"], 1736937045), "ProcessingStarted.security_context.created_at"),
        (_set([*STARTED, "file_size"], "1"), "ProcessingStarted.file_size"),
        (_set([*STARTED, "file_size"], -1), "ProcessingStarted.file_size"),
        (_set([*STARTED, "file_size"], 2**64), "ProcessingStarted.file_size"),
        (_set([*STARTED, "file_size"], 1.0), "ProcessingStarted.file_size"),
        (_set([*STARTED, "file_size"], True), "ProcessingStarted.file_size"),
        (_set([*STARTED, "processing_id"], "5f0c9a4e2b7d4c1e8a3f6d9e0b1c2a3"), "ProcessingStarted.processing_id"),
        (_set([*STARTED, "processing_id"], "URN:UUID:5f0c9a4e-2b7d-4c1e-8a3f-6d9e0b1c2a34"), "ProcessingStarted.processing_id"),
        (_set([*STARTED, "processing_id"], "{5f0c9a4e2b7d4c1e8a3f6d9e0b1c2a34}"), "ProcessingStarted.processing_id"),
        (_set([*STARTED, "processing_id"], " 5f0c9a4e-2b7d-4c1e-8a3f-6d9e0b1c2a3"), "ProcessingStarted.processing_id"),
        (_set([*CONTEXT, "permissions", 2], "Sudo"), "ProcessingStarted.security_context.permissions[2]"),
        (_set([*CONTEXT, "permissions", 2], "read"), "ProcessingStarted.security_context.permissions[2]"),
        (_set([*CONTEXT, "permissions", 2], "Custom"), "ProcessingStarted.security_context.permissions[2]"),
        (_set([*CONTEXT, "permissions", 1, "Custom"], 5), "ProcessingStarted.security_context.permissions[1].Custom"),
        (_set([*CONTEXT, "permissions", 0], {"Admin": 1}), "ProcessingStarted.security_context.permissions[0]"),
        (_set([*CONTEXT, "permissions", 0], {"Admin": None, "Read": None}), "ProcessingStarted.security_context.permissions[0]"),
        (_set([*CONTEXT, "permissions"], "Read"), "ProcessingStarted.security_context.permissions"),
        (_set([*CONTEXT, "security_level"], "Ultra"), "ProcessingStarted.security_context.security_level"),
        (_set([*CONTEXT, "integrity_required"], 1), "ProcessingStarted.security_context.integrity_required"),
        (_set([*CONTEXT, "metadata", "team"], 1), 'ProcessingStarted.security_context.metadata["team"]'),
        (_set([*CONTEXT, "user_id"], "\ud800"), "ProcessingStarted.security_context.user_id"),
        (_set(STARTED, 5), "ProcessingStarted"),
        (_set(STARTED, ["too", "short"]), "ProcessingStarted"),
        (_set([*DURATION, "nanos"], 2**32), "MetricsUpdated.metrics.processing_duration.nanos"),
        (_set([*DURATION, "nanos"], 10**9), "MetricsUpdated.metrics.processing_duration"),
        (_set([*DURATION, "extra"], 0), "MetricsUpdated.metrics.processing_duration"),
        (_set([*DURATION, "secs"], _DELETE), "MetricsUpdated.metrics.processing_duration"),
        (_set(DURATION, [1, 2, 3]), "MetricsUpdated.metrics.processing_duration"),
        (_set([*METRICS, "throughput_bytes_per_second"], "1.5"), "MetricsUpdated.metrics.throughput_bytes_per_second"),
        (_set([*METRICS, "stage_metrics", "compression", "throughput"], None), 'MetricsUpdated.metrics.stage_metrics["compression"].throughput'),
        (_set([*METRICS, "stage_metrics", "compression", "processing_time"], None), 'MetricsUpdated.metrics.stage_metrics["compression"].processing_time'),
        (_set(["ProcessingPaused", "checkpoint_data"], [1, 256]), "ProcessingPaused.checkpoint_data[1]"),
        (_set(["ProcessingPaused", "checkpoint_data"], [True]), "ProcessingPaused.checkpoint_data[0]"),
        (_set(["ProcessingPaused", "checkpoint_data"], "AAEC"), "ProcessingPaused.checkpoint_data"),
        (_set(["SecurityViolation", "severity"], "high"), "SecurityViolation.severity"),
        (_set(["PipelineUpdated", "changes", 1], None), "PipelineUpdated.changes[1]"),
    ],
)  # fmt: skip
def test_each_strict_rule_names_the_field(change: Any, field: str) -> None:
    name = field.split(".")[0].split("[")[0]
    tree = _golden(name)
    change(tree)
    with pytest.raises(DecodeError) as caught:
        decode(json.dumps(tree))  # ASCII-only: a lone surrogate becomes the escape `\ud800`
    assert caught.value.field == field


def test_raw_numbers_serde_json_rejects() -> None:
    text = _dumps(_golden("ProcessingStarted"))
    for number in ("1e2", "1.0", "-0", "18446744073709551616", "1e400"):
        with pytest.raises(DecodeError) as caught:
            decode(text.replace('"file_size":0', f'"file_size":{number}'))
        assert caught.value.field == "ProcessingStarted.file_size", number


@pytest.mark.parametrize(
    "text",
    [
        "", "null", "[]", '"ChunkProcessed"', "{}", '{"Unknown":{}}', '{"chunkProcessed":{}}',
        '{"ProcessingResumed":{},"PipelineDeleted":{}}', '{"ProcessingResumed":{}} x', "\ufeff{}",
        '{"ProcessingResumed":NaN}', "[" * 2000 + "]" * 2000, b"\xff", b"\xef\xbb\xbf{}",
    ],
)  # fmt: skip
def test_documents_that_are_no_event(text: str | bytes) -> None:
    with pytest.raises(DecodeError):
        decode(text)


def test_wrong_input_types_are_decode_errors() -> None:
    for value in (None, 5, 10**12, object(), ["{}"]):
        with pytest.raises(DecodeError):
            decode(value)  # type: ignore[arg-type]


# --- Encode errors -------------------------------------------------------------------------


def _chunk(**changes: Any) -> domain.ChunkProcessed:
    event = decode(_compact(SAMPLES.joinpath(UPSTREAM_SAMPLES[0]).read_text()))
    return dataclasses.replace(event, **changes)  # type: ignore[return-value]


def _started(**context: Any) -> domain.ProcessingStarted:
    event = decode(_dumps(_golden("ProcessingStarted")))
    security_context = dataclasses.replace(event.security_context, **context)  # type: ignore[attr-defined]
    return dataclasses.replace(event, security_context=security_context)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_chunk(chunk_sequence=-1), "ChunkProcessed.chunk_sequence"),
        (_chunk(chunk_size=2**64), "ChunkProcessed.chunk_size"),
        (_chunk(version=True), "ChunkProcessed.version"),
        (_chunk(processing_time_ms=1.0), "ChunkProcessed.processing_time_ms"),
        (_chunk(stage_name="a\ud800"), "ChunkProcessed.stage_name"),
        (_chunk(stage_name=b"bytes"), "ChunkProcessed.stage_name"),
        (_chunk(chunk_id=str(uuid.UUID(int=1))), "ChunkProcessed.chunk_id"),
        (_chunk(occurred_at=dt.datetime(2025, 1, 15)), "ChunkProcessed.occurred_at"),
        (_chunk(occurred_at=dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))), "ChunkProcessed.occurred_at"),
        (_started(permissions=(domain.StandardPermission.READ, "Write")), "ProcessingStarted.security_context.permissions[1]"),
        (_started(permissions=(domain.CustomPermission(5),)), "ProcessingStarted.security_context.permissions[0]"),  # type: ignore[arg-type]
        (_started(security_level=3), "ProcessingStarted.security_context.security_level"),
        (_started(metadata={"k": None}), 'ProcessingStarted.security_context.metadata["k"]'),
        (_started(metadata={"\ud800": "v"}), 'ProcessingStarted.security_context.metadata["\ud800"]'),
        (_metrics_event(True), "MetricsUpdated.metrics.throughput_bytes_per_second"),
        (_metrics_event(10**400), "MetricsUpdated.metrics.throughput_bytes_per_second"),
        (dataclasses.replace(_metrics_event(1.0), metrics=domain.ProcessingMetrics(processing_duration=domain.Duration(1, 10**9))), "MetricsUpdated.metrics.processing_duration"),
        (dataclasses.replace(_metrics_event(1.0), metrics=domain.ProcessingMetrics(processing_duration=domain.Duration(-1, 0))), "MetricsUpdated.metrics.processing_duration"),
        (dataclasses.replace(_metrics_event(1.0), metrics=None), "MetricsUpdated.metrics"),
    ],
)  # fmt: skip
def test_encode_errors_name_the_field(event: domain.Event, field: str) -> None:
    with pytest.raises(EncodeError) as caught:
        encode(event)
    assert str(caught.value).startswith(f"{field}: ")


def test_only_the_16_events_encode() -> None:
    ids = {"event_id": uuid.UUID(int=1), "pipeline_id": uuid.UUID(int=2)}
    unknown = domain.UnknownEvent(
        **ids, occurred_at=NanoDatetime.now(), version=1, type_number=99, envelope_bytes=b""
    )
    for value in (unknown, object(), domain.SecurityContext()):
        with pytest.raises(EncodeError):
            encode(value)  # type: ignore[arg-type]


# --- Fuzzing -------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _decodes_or_fails_cleanly(text: str | bytes) -> None:
    try:
        event = decode(text)
    except DecodeError:
        return
    assert decode(encode(event)) == event


@SETTINGS
@given(
    st.binary(max_size=200)
    | st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=200)
)
def test_arbitrary_input_only_raises_decode_error(text: str | bytes) -> None:
    _decodes_or_fails_cleanly(text)


@SETTINGS
@given(JSON_VALUES, st.sampled_from([cls.__name__ for cls in domain.EVENT_CLASSES]))
def test_arbitrary_json_only_raises_decode_error(value: Any, name: str) -> None:
    for document in (value, {name: value}, {name: {"event_id": value}}):
        _decodes_or_fails_cleanly(json.dumps(document))


@SETTINGS
@given(
    st.from_regex(r'\{"(ChunkProcessed|ProcessingPaused)":[\[{][-"\w:,.{}\[\] \\]*', fullmatch=True)
)
def test_json_like_text_only_raises_decode_error(text: str) -> None:
    _decodes_or_fails_cleanly(text)


def _mutate(tree: Any, data: st.DataObject) -> Any:
    """Drop a key, or replace a value with one of another type, somewhere in `tree`."""
    if isinstance(tree, dict) and tree:
        key = data.draw(st.sampled_from(sorted(tree)))
        action = data.draw(st.sampled_from(["drop", "replace", "descend"]))
        if action == "drop":
            return {k: v for k, v in tree.items() if k != key}
        return {
            **tree,
            key: data.draw(JSON_VALUES) if action == "replace" else _mutate(tree[key], data),
        }
    if isinstance(tree, list) and tree:
        index = data.draw(st.integers(0, len(tree) - 1))
        return [*tree[:index], _mutate(tree[index], data), *tree[index + 1 :]]
    return data.draw(JSON_VALUES)


@SETTINGS
@given(events(), st.data())
def test_mutated_events_only_raise_decode_error(event: domain.Event, data: st.DataObject) -> None:
    tree = json.loads(encode(event))
    for _ in range(data.draw(st.integers(1, 3))):
        tree = _mutate(tree, data)
    _decodes_or_fails_cleanly(json.dumps(tree))
