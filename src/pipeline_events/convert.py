"""Line-by-line conversion between the codecs (the `pipeline-events convert` command).

Every format is one event per line: JSON for `rust-json`, `proto-json` and
`cloudevents-json`, one base64-encoded envelope for `binary`. Conversion goes
through the envelope, so envelope metadata (correlation, causation, metadata
map) carries over between the formats that have it; `rust-json` has none and
drops it, as upstream's own serialization does.

`proto-json` input may also be a RecordedEvent in proto3 JSON (an object with an
`envelope` key, as `tail --json` and `history --json` write): its envelope is taken
and its positions, which belong to the store it came from, are dropped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import sys
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TextIO

import orjson
from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import adapter, domain
from pipeline_events.codecs import binary, cloudevents, proto_json, rust_json
from pipeline_events.errors import DecodeError, EncodeError

EventEnvelope = envelope_pb2.EventEnvelope


def _read_rust_json(line: bytes) -> EventEnvelope:
    return adapter.to_envelope(rust_json.decode(line))


def _write_rust_json(envelope: EventEnvelope) -> str:
    event = adapter.from_envelope(envelope)
    if isinstance(event, domain.UnknownEvent):
        raise EncodeError(f"{event.event_type} has no Rust JSON form in this schema version")
    return rust_json.encode(event)


def _read_binary(line: bytes) -> EventEnvelope:
    try:
        data = base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise DecodeError(f"not base64: {error}") from error
    return binary.decode(data)


def _write_binary(envelope: EventEnvelope) -> str:
    return base64.b64encode(binary.encode(envelope)).decode()


def _read_proto_json(line: bytes) -> EventEnvelope:
    """A bare EventEnvelope, or the envelope of a RecordedEvent (positions dropped)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise DecodeError(f"not JSON: {error}") from error
    if isinstance(value, dict) and "envelope" in value:
        return _recorded_envelope(value)
    return proto_json.from_dict(value)


def _recorded_envelope(value: dict[str, object]) -> EventEnvelope:
    # Parsed whole, so that a misspelt field is an error here too.
    try:
        recorded = proto_json.parse_dict(value, envelope_pb2.RecordedEvent)
    except DecodeError as error:
        raise DecodeError(f"not a RecordedEvent: {error}") from error
    return recorded.envelope


READERS: dict[str, Callable[[bytes], EventEnvelope]] = {
    "rust-json": _read_rust_json,
    "proto-json": _read_proto_json,
    "cloudevents-json": cloudevents.decode_structured,
    "binary": _read_binary,
}
WRITERS: dict[str, Callable[[EventEnvelope], str]] = {
    "rust-json": _write_rust_json,
    "proto-json": proto_json.encode,
    "cloudevents-json": cloudevents.encode_structured,
    "binary": _write_binary,
}
FORMATS = tuple(READERS)


@dataclass(frozen=True, slots=True)
class Converted:
    """The outcome of one input line: its output text, or why it failed."""

    line: int
    output: str | None = None
    error: str | None = None


def convert_lines(lines: Iterable[bytes], source: str, target: str) -> Iterator[Converted]:
    """Convert each non-blank line; a failing line yields its error and conversion goes on."""
    read, write = READERS[source], WRITERS[target]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield Converted(number, output=write(read(line)))
        except (DecodeError, EncodeError) as error:
            yield Converted(number, error=str(error))


# --- the command -----------------------------------------------------------------------


def run_convert(args: argparse.Namespace) -> int:
    """`convert`: stream lines from input to output; 1 if any line failed."""
    with _open_input(args.input) as source, _open_output(args.output) as sink:
        return _convert_stream(source, sink, args)


def _convert_stream(source: BinaryIO, sink: TextIO, args: argparse.Namespace) -> int:
    failed = 0
    # Closed on the way out, so that the progress bar ends before an error is printed.
    with contextlib.closing(
        _lines_with_progress(source, show=args.output not in (None, "-"))
    ) as lines:
        for result in convert_lines(lines, args.source, args.target):
            if result.error is not None:
                failed += 1
                print(f"line {result.line}: {result.error}", file=sys.stderr)
            else:
                sink.write(result.output + "\n")
    return 1 if failed else 0


@contextlib.contextmanager
def _open_input(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as handle:
            yield handle


@contextlib.contextmanager
def _open_output(path: str | None) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            yield handle


def _lines_with_progress(source: BinaryIO, show: bool) -> Generator[bytes, None, None]:
    """The input's lines, advancing a progress bar on stderr by bytes read."""
    if not show:
        yield from source
        return
    from rich.console import Console
    from rich.progress import Progress

    try:
        total: int | None = os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError):
        total = None
    with Progress(console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("converting", total=total)
        for line in source:
            progress.advance(task, len(line))
            yield line
