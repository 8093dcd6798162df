"""`pipeline-events convert`, run as users run it: the installed console script."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import sys
from pathlib import Path

from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import json_format

from pipeline_events.convert import convert_lines
from tests.conftest import VECTORS_DIR

CLI = str(Path(sys.executable).parent / "pipeline-events")
BINARY_LINES = [
    base64.b64encode(path.read_bytes()).decode() for path in sorted(VECTORS_DIR.glob("*.binpb"))
]


def _convert(source: str, target: str, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "convert", "--from", source, "--to", target, *extra],
        input=text, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_a_chain_through_every_envelope_format_gives_back_the_same_bytes() -> None:
    text = "\n".join(BINARY_LINES) + "\n"
    for source, target in [
        ("binary", "proto-json"),
        ("proto-json", "cloudevents-json"),
        ("cloudevents-json", "binary"),
    ]:
        result = _convert(source, target, text)
        assert result.returncode == 0, result.stderr
        text = result.stdout
    assert text.splitlines() == BINARY_LINES


def test_rust_json_lines_convert_to_the_same_event_and_back() -> None:
    result = _convert("binary", "rust-json", "\n".join(BINARY_LINES))
    assert result.returncode == 0, result.stderr
    rust_lines = result.stdout.splitlines()
    assert len(rust_lines) == len(BINARY_LINES)
    assert all(line.startswith('{"') and '"version":' in line for line in rust_lines)
    again = _convert("rust-json", "rust-json", result.stdout)
    # Upstream writes infinity as null and cannot read it back; nor can we, precisely.
    (bad,) = [
        n for n, line in enumerate(rust_lines, 1) if '"throughput_bytes_per_second":null' in line
    ]
    assert again.returncode == 1
    assert again.stderr == (
        f"line {bad}: MetricsUpdated.metrics.throughput_bytes_per_second: "
        "invalid type: null, expected f64\n"
    )
    assert again.stdout.splitlines() == rust_lines[: bad - 1] + rust_lines[bad:]


def test_a_bad_line_is_reported_skipped_and_fails_the_run() -> None:
    lines = [*BINARY_LINES[:2], "not base64 at all!", *BINARY_LINES[2:4]]
    result = _convert("binary", "proto-json", "\n".join(lines))
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 4
    assert result.stderr.startswith("line 3: ")
    assert result.stderr.count("\n") == 1


def test_files_in_and_out_with_a_progress_bar_on_stderr(tmp_path: Path) -> None:
    source = tmp_path / "events.b64"
    source.write_text("\n".join(BINARY_LINES) + "\n")
    target = tmp_path / "events.jsonl"
    result = _convert("binary", "cloudevents-json", "", "--input", str(source), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert len(target.read_text().splitlines()) == len(BINARY_LINES)
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
    recorded = [_recorded_line(line, n) for n, line in enumerate(BINARY_LINES, start=1)]
    result = _convert("proto-json", "binary", "\n".join(recorded))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == BINARY_LINES


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
