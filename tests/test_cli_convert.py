"""`pipeline-events convert`, run as users run it: the installed console script."""

from __future__ import annotations

import base64
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import json_format

from pipeline_events.convert import convert_lines
from tests.vectors_support import (
    MANIFEST,
    assert_official_reencoding,
    binary_of,
    canonical_of,
    json_of,
    messages_in,
    without_unknown_fields,
)

CLI = str(Path(sys.executable).parent / "pipeline-events")


def _line(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: Every vector's input bytes (canonical or not), one line each, in the manifest's order.
BINARY_LINES = [_line(binary_of(vector)) for vector in MANIFEST]
#: The vectors whose EventType this schema defines (a name in the manifest; a number is an
#: unknown payload case, which has no Rust JSON or CloudEvents form), and the input lines of
#: the others.
KNOWN_TYPE = [vector for vector in MANIFEST if isinstance(vector["event_type"], str)]
UNKNOWN_TYPE_LINES = [
    n for n, vector in enumerate(MANIFEST, start=1) if not isinstance(vector["event_type"], str)
]
#: The vectors with a JSON form: JSON formats carry no unknown fields.
WITH_JSON = [vector for vector in MANIFEST if vector["json"] is not None]


def _has_a_non_finite_plain_double(vector: dict[str, Any]) -> bool:
    """A NaN or infinity in a double without presence (a plain f64 upstream)."""
    envelope = envelope_pb2.EventEnvelope.FromString(canonical_of(vector))
    return any(
        field.type == field.TYPE_DOUBLE
        and not field.has_presence
        and not field.is_repeated
        and not math.isfinite(value)
        for message in messages_in(envelope)
        for field, value in message.ListFields()
    )


def _convert(source: str, target: str, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "convert", "--from", source, "--to", target, *extra],
        input=text, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_chain_through_every_envelope_format_gives_back_the_same_bytes() -> None:
    # Every vector goes in. CloudEvents refuses an unknown payload case; every other vector
    # comes back as its canonical bytes, but for the unknown fields of one without a JSON
    # form, which JSON cannot carry (those alone are lost).
    no_cloudevents_type = "".join(
        f"line {n}: an envelope with an unknown payload case has no CloudEvents type\n"
        for n in UNKNOWN_TYPE_LINES
    )
    text = "\n".join(BINARY_LINES) + "\n"
    for source, target, refused in [
        ("binary", "proto-json", ""),
        ("proto-json", "cloudevents-json", no_cloudevents_type),
        ("cloudevents-json", "binary", ""),
    ]:
        result = _convert(source, target, text)
        assert (result.returncode, result.stderr) == (1 if refused else 0, refused)
        text = result.stdout
    lines = text.splitlines()
    assert len(lines) == len(KNOWN_TYPE)
    for vector, line in zip(KNOWN_TYPE, lines, strict=True):
        canonical = canonical_of(vector)
        has_unknown_fields = without_unknown_fields(canonical) != canonical
        assert has_unknown_fields == (vector["json"] is None), vector["name"]
        encoded = base64.b64decode(line)
        assert_official_reencoding(vector, "binary", encoded, unknown_fields_kept=False)


def test_rust_json_lines_convert_to_the_same_event_and_back() -> None:
    result = _convert("binary", "rust-json", "\n".join(BINARY_LINES))
    # An EventType this schema does not define has no Rust JSON form: that line is refused.
    assert result.returncode == 1
    assert result.stderr == "".join(
        f"line {n}: Unknown({MANIFEST[n - 1]['event_type']}) has no Rust JSON form "
        "in this schema version\n"
        for n in UNKNOWN_TYPE_LINES
    )
    rust_lines = result.stdout.splitlines()
    assert len(rust_lines) == len(KNOWN_TYPE)
    assert all(line.startswith('{"') and '"version":' in line for line in rust_lines)
    again = _convert("rust-json", "rust-json", result.stdout)
    # Upstream writes a NaN or an infinity as null and cannot read it back into a plain f64;
    # nor can we, precisely. Each such vector fails first at throughput_bytes_per_second.
    bad = [n for n, vector in enumerate(KNOWN_TYPE, 1) if _has_a_non_finite_plain_double(vector)]
    assert bad == [
        n for n, line in enumerate(rust_lines, 1) if '"throughput_bytes_per_second":null' in line
    ]
    assert again.returncode == 1
    assert again.stderr == "".join(
        f"line {n}: MetricsUpdated.metrics.throughput_bytes_per_second: "
        "invalid type: null, expected f64\n"
        for n in bad
    )
    assert again.stdout.splitlines() == [
        line for n, line in enumerate(rust_lines, 1) if n not in bad
    ]


def test_a_bad_line_is_reported_skipped_and_fails_the_run() -> None:
    lines = [*BINARY_LINES[:2], "not base64 at all!", *BINARY_LINES[2:4]]
    result = _convert("binary", "proto-json", "\n".join(lines))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr.startswith("line 3: ")
    assert result.stderr.count("\n") == 1


def test_files_in_and_out_with_a_progress_bar_on_stderr(tmp_path: Path) -> None:
    # The vectors CloudEvents JSON can carry: a known payload case, no unknown fields.
    lines = [_line(binary_of(vector)) for vector in WITH_JSON]
    assert all(isinstance(vector["event_type"], str) for vector in WITH_JSON)
    source = tmp_path / "events.b64"
    source.write_text("\n".join(lines) + "\n")
    target = tmp_path / "events.jsonl"
    result = _convert("binary", "cloudevents-json", "", "--input", str(source), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert len(target.read_text().splitlines()) == len(lines)
    assert "converting" in result.stderr
    assert result.stdout == ""


def test_conversion_streams_instead_of_reading_everything_first() -> None:
    endless = itertools.cycle(line.encode() for line in BINARY_LINES)
    first = list(itertools.islice(convert_lines(endless, "binary", "proto-json"), 100))
    assert [result.line for result in first] == list(range(1, 101))
    assert all(result.error is None for result in first)


def _recorded_line(binary_line: str, position: int) -> str:
    """A RecordedEvent in proto3 JSON, as `tail --json` writes it."""
    recorded = envelope_pb2.RecordedEvent(global_position=position, revision=1)
    recorded.envelope.ParseFromString(base64.b64decode(binary_line))
    recorded.recorded_at.FromNanoseconds(1_700_000_000_123_456_789)
    return json.dumps(json_format.MessageToDict(recorded))


def test_proto_json_input_may_be_recorded_events_whose_envelopes_are_taken() -> None:
    # The vectors with a JSON form, each as its canonical proto3 JSON (the vector's "json")
    # inside a RecordedEvent; each comes back as its canonical bytes (the manifest's "json"
    # check, with protobuf-python's pinned differences).
    recorded = [
        _recorded_line(_line(canonical_of(vector)), n) for n, vector in enumerate(WITH_JSON, 1)
    ]
    for vector, line in zip(WITH_JSON, recorded, strict=True):
        assert json.loads(line)["envelope"] == json.loads(json_of(vector)), vector["name"]
    result = _convert("proto-json", "binary", "\n".join(recorded))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(WITH_JSON)
    for vector, line in zip(WITH_JSON, lines, strict=True):
        assert_official_reencoding(vector, "json", base64.b64decode(line))


def test_a_recorded_event_with_a_misspelt_field_is_a_bad_line() -> None:
    line = json.loads(_recorded_line(BINARY_LINES[0], 7))
    line["globalPostion"] = line.pop("globalPosition")
    result = _convert("proto-json", "binary", json.dumps(line))
    assert result.returncode == 1
    assert result.stderr.startswith("line 1: not a RecordedEvent: ")
    assert "globalPostion" in result.stderr


def test_an_output_that_cannot_be_written_is_one_line_and_status_1() -> None:
    result = _convert("binary", "proto-json", "\n".join(BINARY_LINES), "-o", "/dev/full")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "pipeline-events convert: No space left on device"
    assert "Traceback" not in result.stderr
