"""The golden vectors' manifest, and the byte checks the tests that read it share.

The manifest's "conventions" define a vector: "binary" is its input, "canonical_binary" (when
present, else "binary") the bytes every runtime must re-encode it to. Where protobuf-python
(upb) is confirmed to write other bytes, the vector's "known_differences" pin it, and
`assert_official_reencoding` expects exactly what upb writes instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf.message import Message

from tests.conftest import VECTORS_DIR
from tools.make_vectors import (
    canonical_bytes,
    canonical_map_order,
    map_key,
    read_records,
    write_records,
)

DOCUMENT: dict[str, Any] = json.loads((VECTORS_DIR / "manifest.json").read_text())
MANIFEST: list[dict[str, Any]] = DOCUMENT["vectors"]

#: The protobuf-python differences `assert_official_reencoding` knows how to expect.
UPB_DIFFERENCES = {"python-upb-map-order", "python-upb-map-entry-unknown"}


def read_vector_file(name: str) -> bytes:
    return (VECTORS_DIR / name).read_bytes()


def binary_of(vector: dict[str, Any]) -> bytes:
    """The vector's input bytes (possibly non-canonical)."""
    return read_vector_file(vector["binary"])


def canonical_of(vector: dict[str, Any]) -> bytes:
    """The vector's canonical bytes."""
    return read_vector_file(vector.get("canonical_binary") or vector["binary"])


def json_of(vector: dict[str, Any]) -> str:
    """The vector's canonical proto3 JSON (only for a vector whose "json" is not null)."""
    return (VECTORS_DIR / vector["json"]).read_text()


def messages_in(message: Message) -> Iterator[Message]:
    """The message and every message in it (map values and repeated ones too)."""
    yield message
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                for item in value.values():
                    yield from messages_in(item)
        elif field.is_repeated:
            for item in value:
                yield from messages_in(item)
        else:
            yield from messages_in(value)


def pinned(vector: dict[str, Any], runtime: str, check: str) -> set[str]:
    """The ids of the differences the manifest lists for `runtime` on `check` of `vector`."""
    return {
        difference["id"]
        for difference in vector.get("known_differences", [])
        if difference["runtime"].split()[0] == runtime and check in difference["checks"]
    }


def upb_keeps_odd_entries(vector: dict[str, Any]) -> tuple[bytes, set[bytes]]:
    """What upb writes for an envelope whose metadata entry holds an unknown field (pinned
    python-upb-map-entry-unknown): the other entries in the map, and that entry, bytes
    unchanged, as an unknown field after the known fields. Also the keys the map loses."""
    odd = [
        record
        for record in read_records(binary_of(vector))
        if record[0] == 8 and any(number not in (1, 2) for number, _, _ in read_records(record[2]))
    ]
    keys = {map_key(record[2]) for record in odd}
    kept = [
        record
        for record in read_records(canonical_of(vector))
        if not (record[0] == 8 and map_key(record[2]) in keys)
    ]
    return write_records(kept + odd), keys


def without_unknown_fields(data: bytes) -> bytes:
    """The canonical bytes of the envelope `data` with its unknown fields, at any depth, gone."""
    envelope = envelope_pb2.EventEnvelope.FromString(data)
    envelope.DiscardUnknownFields()
    return canonical_bytes(envelope)


def assert_official_reencoding(
    vector: dict[str, Any], check: str, encoded: bytes, *, unknown_fields_kept: bool = True
) -> None:
    """`encoded`, protobuf-python's deterministic bytes of `vector` decoded by `check`
    ("binary" or "json"), are its canonical bytes, or exactly what upb writes instead where
    the manifest pins a protobuf-python difference (a pin that stops happening fails).

    `unknown_fields_kept=False`: `encoded` went through something that keeps no unknown
    fields (a domain event, a JSON form); expect the same bytes with those fields gone.
    """

    def expected(data: bytes) -> bytes:
        return data if unknown_fields_kept else without_unknown_fields(data)

    canonical = expected(canonical_of(vector))
    differences = pinned(vector, "protobuf-python", check)
    assert differences <= UPB_DIFFERENCES, differences
    if "python-upb-map-entry-unknown" in differences:
        assert encoded == expected(upb_keeps_odd_entries(vector)[0]) != canonical
    elif "python-upb-map-order" in differences:
        assert encoded != canonical  # a key after the longer keys it begins ("" last) ...
        assert canonical_map_order(encoded) == canonical  # ... and nothing else differs
    else:
        assert encoded == canonical
