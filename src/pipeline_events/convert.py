"""Line-by-line conversion between the codecs (the `pipeline-events convert` command).

Every format is one event per line: JSON for `rust-json`, `proto-json` and
`cloudevents-json`, one base64-encoded envelope for `binary`. Conversion goes
through the envelope, so envelope metadata (correlation, causation, metadata
map) carries over between the formats that have it; `rust-json` has none and
drops it, as upstream's own serialization does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

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


READERS: dict[str, Callable[[bytes], EventEnvelope]] = {
    "rust-json": _read_rust_json,
    "proto-json": proto_json.decode,
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
