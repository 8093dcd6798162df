"""Write the golden vectors under tests/vectors/v1 (run once per schema version; never casually).

Each vector is an EventEnvelope as binary (`.binpb`) and canonical proto3 JSON
(`.json`), listed in manifest.json, whose "conventions" say what the files
mean and what every consumer checks. The first 34 are canonical binary; the
later ones (NEW_VECTORS) add what runtimes disagree on, some with a
non-canonical input (`binary`) beside the canonical bytes (`canonical_binary`),
and some with no JSON form (unknown fields). The values are fixed so the files
are reproducible; a change to them is a change to the contract and must be
reviewed as one. Existing vectors are never changed: new ones are appended.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "generated" / "python"))

from adaptive_pipeline.events.v1 import envelope_pb2  # noqa: E402
from google.protobuf import descriptor, json_format  # noqa: E402

OUT = ROOT / "tests" / "vectors" / "v1"
U64_MAX = str(2**64 - 1)

PIPELINE_ID = "01945e7b-8ba3-d938-5f1b-e752169601a1"  # ULID bits: version nibble is arbitrary
PROCESSING_ID = "5f0c9a4e-2b7d-4c1e-8a3f-6d9e0b1c2a34"
STAGE_ID = "2c5ea4c0-4067-41b3-9a5e-0d7d4f1ba9e2"
CHUNK_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
SESSION_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

STAGE_METRICS_FULL = {
    "stageName": "compression",
    "bytesProcessed": "1048576",
    "processingTime": {"secs": "12", "nanos": 345000000},
    "throughput": 87381.33333333333,
    "errorCount": "1",
    "successRate": 0.99,
    "memoryUsage": "0",  # present and zero: distinct from absent
    "cpuUsage": 0.0,
}

METRICS_FULL = {
    "bytesProcessed": "1048576",
    "bytesTotal": "2097152",
    "chunksProcessed": "16",
    "chunksTotal": "32",
    "startTimeRfc3339": "2025-01-15T10:30:45.123456789+00:00",
    "endTimeRfc3339": "2025-01-15T10:31:02+00:00",
    "processingDuration": {"secs": "17", "nanos": 876543211},
    "throughputBytesPerSecond": 699050.6666666666,
    "compressionRatio": 0.0,  # present and zero
    "errorCount": "1",
    "warningCount": "3",
    "inputFileSizeBytes": "2097152",
    "outputFileSizeBytes": "524288",
    "inputFileChecksum": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "outputFileChecksum": "",
    "stageMetrics": {
        "compression": STAGE_METRICS_FULL,
        "encryption": {"stageName": "encryption", "processingTime": {"secs": "0", "nanos": 0}},
    },
}

SECURITY_CONTEXT_FULL = {
    "userId": "alice@example.org",
    "sessionId": SESSION_ID,
    "permissions": [
        {"standard": name}
        for name in (
            "STANDARD_PERMISSION_READ",
            "STANDARD_PERMISSION_WRITE",
            "STANDARD_PERMISSION_EXECUTE",
            "STANDARD_PERMISSION_ADMIN",
            "STANDARD_PERMISSION_ENCRYPT",
            "STANDARD_PERMISSION_DECRYPT",
            "STANDARD_PERMISSION_COMPRESS",
            "STANDARD_PERMISSION_DECOMPRESS",
        )
    ]
    + [{"custom": "audit"}, {"custom": ""}],
    "encryptionKeyId": "kms://keys/2025-01",
    "integrityRequired": True,
    "auditEnabled": True,
    "securityLevel": "SECURITY_LEVEL_TOP_SECRET",
    # JSON map objects list their keys in the order given here (see json_text): this one
    # reproduces the committed processing_started_full.json.
    "metadata": {"ticket": "OPS-1234", "department": "finance"},
    "createdAt": "2025-01-15T10:30:45.123456789Z",
}

# One fully populated payload per event: every field set, optionals present.
FULL_PAYLOADS: dict[str, dict[str, Any]] = {
    "pipeline_created": {"pipelineName": "sales-ingest", "stageCount": "5", "createdBy": "alice"},
    "pipeline_updated": {
        "changes": ["added stage encryption", "chunk size 1 MiB -> 4 MiB"],
        "updatedBy": "bob",
    },
    "pipeline_deleted": {"deletedBy": "carol"},
    "processing_started": {
        "processingId": PROCESSING_ID,
        "inputPath": "/data/in/sales_q1_2024.csv",
        "outputPath": "/data/out/sales_q1_2024.adapipe",
        "fileSize": "1048576",
        "securityContext": SECURITY_CONTEXT_FULL,
    },
    "processing_completed": {
        "processingId": PROCESSING_ID,
        "metrics": METRICS_FULL,
        "outputSize": "524288",
    },
    "processing_failed": {
        "processingId": PROCESSING_ID,
        "errorMessage": "checksum mismatch in chunk 7",
        "errorCode": "E_INTEGRITY",
        "stageName": "output_checksum",
        "partialMetrics": METRICS_FULL,
    },
    "processing_paused": {
        "processingId": PROCESSING_ID,
        "reason": "operator request",
        "checkpointData": "AAEC/w==",
    },  # bytes 00 01 02 ff
    "processing_resumed": {"processingId": PROCESSING_ID, "resumedFromCheckpoint": True},
    "processing_cancelled": {
        "processingId": PROCESSING_ID,
        "reason": "superseded",
        "cancelledBy": "dave",
    },
    "stage_started": {
        "processingId": PROCESSING_ID,
        "stageId": STAGE_ID,
        "stageName": "compression",
        "stageType": "compression",
    },
    "stage_completed": {
        "processingId": PROCESSING_ID,
        "stageId": STAGE_ID,
        "stageName": "compression",
        "processingTimeMs": "1234",
        "bytesProcessed": "1048576",
    },
    "stage_failed": {
        "processingId": PROCESSING_ID,
        "stageId": STAGE_ID,
        "stageName": "encryption",
        "errorMessage": "key not found",
        "errorCode": "E_KEY",
    },
    "chunk_processed": {
        "processingId": PROCESSING_ID,
        "chunkId": CHUNK_ID,
        "chunkSequence": "7",
        "chunkSize": "1048576",
        "stageName": "compression",
        "processingTimeMs": "12",
    },
    "metrics_updated": {"processingId": PROCESSING_ID, "metrics": METRICS_FULL},
    "security_violation": {
        "processingId": PROCESSING_ID,
        "violationType": "unauthorized_access",
        "description": "write attempted without Write permission",
        "severity": "SECURITY_VIOLATION_SEVERITY_CRITICAL",
        "userId": "mallory",
        "sourceIp": "2001:db8::7",
    },
    "resource_exhausted": {
        "processingId": PROCESSING_ID,
        "resourceType": "memory",
        "currentUsage": "8589934592",
        "limit": "8589934592",
        "actionTaken": "throttled",
    },
}

# Edge cases: (name, payload case, payload, envelope overrides).
EDGE_CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "pipeline_created_absent_optionals",
        "pipeline_created",
        {"pipelineName": "p", "stageCount": "2"},
        {},
    ),
    (
        "pipeline_created_empty_strings",
        "pipeline_created",
        {"pipelineName": "", "createdBy": ""},
        {},
    ),  # present-but-empty created_by
    (
        "pipeline_created_non_ascii",
        "pipeline_created",
        {"pipelineName": "データ処理 — Ünïcödé ✓ 🚀", "stageCount": "3", "createdBy": "Zoë"},
        {"metadata": {"note": "naïve café", "emoji": "🦀"}},
    ),
    ("pipeline_updated_empty_changes", "pipeline_updated", {}, {}),
    ("pipeline_deleted_absent_optionals", "pipeline_deleted", {}, {}),
    (
        "processing_failed_absent_optionals",
        "processing_failed",
        {"processingId": PROCESSING_ID, "errorMessage": "", "errorCode": ""},
        {},
    ),
    (
        "processing_paused_no_checkpoint",
        "processing_paused",
        {"processingId": PROCESSING_ID, "reason": "maintenance"},
        {},
    ),
    (
        "processing_paused_empty_checkpoint",
        "processing_paused",
        {"processingId": PROCESSING_ID, "reason": "maintenance", "checkpointData": ""},
        {},
    ),
    (
        "processing_started_minimal_context",
        "processing_started",
        {
            "processingId": PROCESSING_ID,
            "inputPath": "",
            "outputPath": "",
            "securityContext": {
                "sessionId": SESSION_ID,
                "securityLevel": "SECURITY_LEVEL_PUBLIC",
                "createdAt": "1970-01-01T00:00:00Z",
            },
        },
        {},
    ),
    (
        "security_violation_absent_optionals",
        "security_violation",
        {
            "violationType": "unauthenticated",
            "description": "no token",
            "severity": "SECURITY_VIOLATION_SEVERITY_LOW",
        },
        {},
    ),
    (
        "chunk_processed_u64_max",
        "chunk_processed",
        {
            "processingId": PROCESSING_ID,
            "chunkId": CHUNK_ID,
            "chunkSequence": U64_MAX,
            "chunkSize": U64_MAX,
            "stageName": "checksum",
            "processingTimeMs": U64_MAX,
        },
        {"schemaVersion": U64_MAX},
    ),
    (
        "resource_exhausted_u64_max",
        "resource_exhausted",
        {
            "processingId": PROCESSING_ID,
            "resourceType": "disk",
            "currentUsage": U64_MAX,
            "limit": U64_MAX,
            "actionTaken": "aborted",
        },
        {},
    ),
    (
        "metrics_updated_extreme_values",
        "metrics_updated",
        {
            "processingId": PROCESSING_ID,
            "metrics": {
                "bytesProcessed": U64_MAX,
                "throughputBytesPerSecond": "Infinity",
                "compressionRatio": 5e-324,
                "processingDuration": {"secs": U64_MAX, "nanos": 999999999},
                "stageMetrics": {
                    "": {
                        "processingTime": {"secs": U64_MAX, "nanos": 999999999},
                        "throughput": 1.2345678901234568e17,
                        "cpuUsage": -1e-6,
                    }
                },
            },
        },
        {},
    ),
    (
        "chunk_processed_ts_seconds",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        {"occurredAt": "2025-01-15T10:30:45Z"},
    ),
    (
        "chunk_processed_ts_millis",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        {"occurredAt": "2025-01-15T10:30:45.123Z"},
    ),
    (
        "chunk_processed_ts_micros",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        {"occurredAt": "2025-01-15T10:30:45.123456Z"},
    ),
    (
        "chunk_processed_ts_nanos",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        {"occurredAt": "2025-01-15T10:30:45.123456789Z"},
    ),
    (
        "chunk_processed_ts_epoch",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        {"occurredAt": "1970-01-01T00:00:00Z", "correlationId": "", "causationId": ""},
    ),
]


def envelope_dict(
    index: int, case: str, payload: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """A full envelope in proto JSON form; ids are derived from the index."""
    envelope: dict[str, Any] = {
        "eventId": f"3b1e2c4d-5f6a-4b7c-8d9e-{index:012x}",
        "aggregateId": PIPELINE_ID,
        "eventType": "EVENT_TYPE_" + case.upper(),
        "occurredAt": "2025-01-15T10:30:45.123501234Z",
        "schemaVersion": "1",
        "correlationId": "c0ffee00-0000-4000-8000-000000000001",
        "causationId": "3b1e2c4d-5f6a-4b7c-8d9e-000000000000",
        "metadata": {"producer": "adaptive-pipeline/2.0.0", "host": "worker-1"},
        _camel(case): payload,
    }
    envelope.update(overrides)
    return envelope


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


# --- The wire format, record by record ---------------------------------------
# The vectors after the first 34 need bytes no serializer writes (entries out of
# order, defaults spelled out, unknown fields): they are made by editing the
# records of the canonical bytes. The same tools give the canonical map order,
# which tests/contract/test_vectors.py uses on runtimes that write another one.

VARINT, I64, LEN, I32 = 0, 1, 2, 5
#: One field on the wire: (field number, wire type, body). The body of a LEN
#: record is its content; of the others, the value's own bytes (a varint as
#: written, so an overlong one stays overlong).
Record = tuple[int, int, bytes]
#: Edits one message's records: (its descriptor, its path of field names from
#: the envelope, e.g. ("processing_started", "security_context"), its records).
Edit = Callable[[descriptor.Descriptor, tuple[str, ...], list[Record]], list[Record]]
ENVELOPE = envelope_pb2.EventEnvelope.DESCRIPTOR


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def read_records(data: bytes) -> list[Record]:
    """The records of one message, in wire order (groups are not used by these vectors)."""
    records = []
    at = 0
    while at < len(data):
        tag, at = _read_varint(data, at)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == VARINT:
            end = _read_varint(data, at)[1]
        elif wire_type == I64:
            end = at + 8
        elif wire_type == I32:
            end = at + 4
        elif wire_type == LEN:
            size, at = _read_varint(data, at)
            end = at + size
        else:
            raise ValueError(f"field {number}: wire type {wire_type} is not used by these vectors")
        if end > len(data):
            raise ValueError(f"field {number}: truncated")
        records.append((number, wire_type, data[at:end]))
        at = end
    return records


def write_records(records: list[Record]) -> bytes:
    out = bytearray()
    for number, wire_type, body in records:
        out += varint(number << 3 | wire_type)
        if wire_type == LEN:
            out += varint(len(body))
        out += body
    return bytes(out)


def rewrite(
    message: descriptor.Descriptor, data: bytes, edit: Edit, path: tuple[str, ...] = ()
) -> bytes:
    """`data` with `edit` applied to every message in it, innermost first. Known message fields
    (map entries and their message values too: path `...stage_metrics.value`) are visited."""
    records = []
    for number, wire_type, body in read_records(data):
        known = message.fields_by_number.get(number)
        if known is not None and known.type == known.TYPE_MESSAGE and wire_type == LEN:
            body = rewrite(known.message_type, body, edit, (*path, known.name))
        records.append((number, wire_type, body))
    return write_records(edit(message, path, records))


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    return field.type == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def map_key(entry: bytes) -> bytes:
    """The key of a map entry's bytes (absent: the empty string; repeated: the last)."""
    key = b""
    for number, _, body in read_records(entry):
        if number == 1:
            key = body
    return key


def _sort_map_entries(
    message: descriptor.Descriptor, path: tuple[str, ...], records: list[Record]
) -> list[Record]:
    out = list(records)
    for field in message.fields:
        if not _is_map(field):
            continue
        if field.message_type.fields_by_number[1].type != field.TYPE_STRING:
            raise ValueError(f"{field.full_name}: only string map keys have a canonical order here")
        slots = [
            i for i, (number, wire, _) in enumerate(out) if number == field.number and wire == LEN
        ]
        entries = sorted((out[i] for i in slots), key=lambda entry: map_key(entry[2]))
        for i, entry in zip(slots, entries, strict=True):
            out[i] = entry
    return out


def canonical_map_order(data: bytes, message: descriptor.Descriptor = ENVELOPE) -> bytes:
    """`data` with the entries of every map, at any depth, in canonical order: by key, string
    keys compared as UTF-8 bytes ("" first, a key before the longer keys it begins). Only
    map entries move, among their own places; every other byte stays."""
    return rewrite(message, data, _sort_map_entries)


def canonical_bytes(envelope: envelope_pb2.EventEnvelope) -> bytes:
    """The canonical bytes of a message: the official deterministic serialization, whose
    map order (upb's) differs from the canonical one only around keys that begin others."""
    return canonical_map_order(envelope.SerializeToString(deterministic=True))


def varint_record(number: int, value: int) -> Record:
    return (number, VARINT, varint(value))


def text_record(number: int, value: str | bytes) -> Record:
    return (number, LEN, value.encode() if isinstance(value, str) else value)


def at(path: str, change: Callable[[list[Record]], list[Record]]) -> Edit:
    """An edit of the messages at `path` ("" is the envelope; "a.b" its field a's field b)."""
    wanted = tuple(path.split(".")) if path else ()

    def edit(
        message: descriptor.Descriptor, here: tuple[str, ...], records: list[Record]
    ) -> list[Record]:
        return change(records) if here == wanted else records

    return edit


def each(*edits: Edit) -> Edit:
    def edit(
        message: descriptor.Descriptor, here: tuple[str, ...], records: list[Record]
    ) -> list[Record]:
        for one in edits:
            records = one(message, here, records)
        return records

    return edit


def append(*extra: Record) -> Callable[[list[Record]], list[Record]]:
    return lambda records: [*records, *extra]


def spell_out(*defaults: Record) -> Callable[[list[Record]], list[Record]]:
    """Write each of `defaults` (an explicit default value) where its field is absent, in
    field-number order."""

    def change(records: list[Record]) -> list[Record]:
        present = {number for number, _, _ in records}
        added = [record for record in defaults if record[0] not in present]
        return sorted([*records, *added], key=lambda record: record[0])

    return change


def reverse_entries(number: int) -> Callable[[list[Record]], list[Record]]:
    """Map field `number`'s entries in reverse order, in their own places."""

    def change(records: list[Record]) -> list[Record]:
        slots = [i for i, record in enumerate(records) if record[0] == number]
        out = list(records)
        for i, j in zip(slots, reversed(slots), strict=True):
            out[i] = records[j]
        return out

    return change


def drop_empty_key_and_value(records: list[Record]) -> list[Record]:
    """A map<string, string> entry as prost writes it: an empty key or value is left out."""
    return [record for record in records if record[2] != b""]


def _entry(key: str, value: str) -> Record:
    return (8, LEN, write_records([text_record(1, key), text_record(2, value)]))


def interleave_metadata(records: list[Record]) -> list[Record]:
    """The envelope's metadata entries scattered among its fields, the fields out of number
    order (payload first), and an earlier, stale entry for a key that a later one replaces."""
    entries = {
        map_key(body).decode(): (number, wire, body)
        for number, wire, body in records
        if number == 8
    }
    fields = {number: record for record in records if (number := record[0]) != 8}
    return [
        fields[113],
        entries["zone"],
        fields[1],
        _entry("host", "stale-host"),  # replaced below: the last entry for a key wins
        fields[2],
        entries["producer"],
        fields[3],
        fields[4],
        entries["attempt"],
        fields[5],
        fields[6],
        fields[7],
        entries["host"],
    ]


def move_before(number: int, anchor: int) -> Callable[[list[Record]], list[Record]]:
    """The record of field `number` moved just before the first record of field `anchor`."""

    def change(records: list[Record]) -> list[Record]:
        moved = [record for record in records if record[0] == number]
        rest = [record for record in records if record[0] != number]
        at_anchor = next(i for i, record in enumerate(rest) if record[0] == anchor)
        return [*rest[:at_anchor], *moved, *rest[at_anchor:]]

    return change


def unknown_in_first_permission(records: list[Record]) -> list[Record]:
    """An unknown varint field 3 = 7 in the first Permission (field 3) of a SecurityContext."""
    out = list(records)
    first = next(i for i, record in enumerate(out) if record[0] == 3)
    number, wire, body = out[first]
    out[first] = (number, wire, body + write_records([varint_record(3, 7)]))
    return out


# --- The vectors that cover what runtimes disagree on ----------------------------

#: Differences confirmed in a runtime, by id. A vector lists the ids it triggers
#: ("checks": which of the two manifest checks fails there).
KNOWN_DIFFERENCES: dict[str, dict[str, Any]] = {
    "python-upb-map-order": {
        "runtime": "protobuf-python 7.36.2 (upb)",
        "checks": ["binary", "json"],
        "difference": "SerializeToString(deterministic=True) writes a string map key after every "
        'longer key it begins ("" last, "trace-id" before "trace"); other keys are in UTF-8 '
        "byte order. Sorting its map entries by the canonical rule gives the canonical bytes.",
    },
    "python-upb-map-entry-unknown": {
        "runtime": "protobuf-python 7.36.2 (upb)",
        "checks": ["binary"],
        "difference": "a map entry holding an unknown field is not put in the map: the whole entry "
        "is kept as an unknown field of the enclosing message (so the map, and protovalidate, do "
        "not see its key) and re-encoded, unknown field included, after the known fields.",
    },
    "betterproto2-negative-zero": {
        "runtime": "betterproto2 0.10",
        "checks": ["binary", "json"],
        "difference": "-0.0 in a plain (non-optional) double is taken for the default and not "
        "written; -0.0 in an optional double is kept.",
    },
    "protobuf-es-map-entry-unknown": {
        "runtime": "protobuf-es 2.13.0",
        "checks": ["binary"],
        "difference": "fromBinary cannot read a map entry holding an unknown field: its map-entry "
        "reader does not skip fields other than the key and value, misreads the rest of the "
        "entry and throws.",
    },
    "protobuf-go-json-nan": {
        "runtime": "protobuf-go 1.28.1 (protojson)",
        "checks": ["json"],
        "difference": 'protojson reads "NaN" as math.NaN(), 0x7FF8000000000001, not the canonical '
        "quiet NaN 0x7FF8000000000000, so every NaN double differs in its last bit; the binary "
        "check keeps the bits and passes.",
    },
    "protobuf-java-utf16-key-order": {
        "runtime": "protobuf-java 3.21.12",
        "checks": ["binary", "json"],
        "difference": "deterministic serialization sorts string map keys as Java Strings, by UTF-16 "
        "code units: a key with a character above U+FFFF (a surrogate pair, 0xD800-0xDFFF) sorts "
        'before one with a character in U+E000-U+FFFF, the reverse of UTF-8 byte order ("🦀" '
        'U+1F980 before "ﬁ" U+FB01).',
    },
    "protobuf-java-json-negative-zero": {
        "runtime": "protobuf-java 3.21.12 (JsonFormat)",
        "checks": ["json"],
        "difference": "JsonFormat.parser() reads -0.0 as +0.0 (it parses doubles through "
        "BigDecimal): plain doubles are then omitted, optional ones written as 0.0.",
    },
    "prost-map-entry-defaults": {
        "runtime": "prost 0.11.6",
        "checks": ["binary", "json"],
        "difference": "map entries leave out an empty key or value (an entry with both empty is "
        "zero bytes long); it reads every form back to the same map.",
    },
    "prost-negative-zero": {
        "runtime": "prost 0.11.6",
        "checks": ["binary", "json"],
        "difference": "-0.0 in a plain (non-optional) double is not written (`!= 0.0` is false for "
        "it); -0.0 in an optional double is kept.",
    },
    "prost-unknown-fields": {
        "runtime": "prost 0.11.6",
        "checks": ["binary"],
        "difference": "unknown fields are dropped when decoding, so they are not re-encoded.",
    },
}

#: Differences of a runtime as a whole: how its checks normalise what it writes.
RUNTIME_DIFFERENCES: list[dict[str, str]] = [
    {
        "runtime": "betterproto2 0.10",
        "difference": "no deterministic serialization: map entries are written in the order they "
        "were decoded or inserted (from JSON, the JSON object's order).",
        "handling": "its checks sort the map entries of what it writes by the canonical rule "
        "(nothing else moves) before comparing bytes.",
    },
    {
        "runtime": "protobuf-es 2.13.0",
        "difference": "no deterministic serialization: map entries are written in the JS object's "
        'order, integer-like keys ("2", "10") first in numeric order, then the others in '
        "insertion order. Writing JSON, JSON.stringify turns -0.0 into 0.",
        "handling": "tests/node/check_vectors.mjs sorts the map entries of what it writes by the "
        "canonical rule before comparing bytes.",
    },
    {
        "runtime": "prost 0.11.6",
        "difference": "maps generated as HashMap have no order at all (btree_map gives UTF-8 byte "
        "order); empty map keys and values are left out, plain -0.0 is dropped and unknown "
        "fields are lost (the ids prost-*, listed on the vectors after the first 34; of those "
        '34, metrics_updated_extreme_values differs too: its stage_metrics key is "").',
        "handling": "a Rust consumer generates maps as BTreeMap and pins the prost-* differences.",
    },
]

CONVENTIONS = [
    'Each vector is one adaptive_pipeline.events.v1.EventEnvelope. "binary" names its input '
    "bytes. They may be non-canonical (map entries out of key order or among other fields, a "
    "map entry without its key or value, a default value or an overlong varint written out, "
    "unknown fields before known ones, an unknown field inside a map entry); then "
    '"canonical_binary" names a second file with the canonical bytes of the same envelope, '
    'which every runtime must re-encode to. Without "canonical_binary", "binary" is itself '
    "canonical.",
    "Canonical bytes: known fields in field-number order, each once, varints in their shortest "
    "form; implicit-presence fields left out when they hold their default (-0.0 is not the "
    "default: it is written); optional fields and oneof cases written whenever set; every map "
    "entry written with both its key (field 1) and its value (field 2), even when empty; a "
    "map's entries together, sorted by key, string keys compared as unsigned UTF-8 bytes (a "
    'key before every longer key it begins, so "" first); an unknown field inside a map entry '
    "dropped; all other unknown fields kept byte for byte after the known fields of their "
    "message, in the order read; NaN as the quiet NaN 0x7FF8000000000000. protobuf-go's "
    "deterministic serialization writes exactly these bytes.",
    '"json" names the canonical proto3 JSON of the same envelope (protobuf-python\'s '
    'MessageToJson: lowerCamelCase names, enum names, 64-bit integers as strings, "NaN", '
    '"Infinity", "-Infinity"; JSON map objects in no particular order), or is null when the '
    "envelope has no JSON form: unknown fields cannot be carried in JSON.",
    '"event_type" is the envelope\'s EventType: its name, or its number (a JSON number) for a '
    "value this schema does not define.",
    'The check every consumer makes: decode "binary", re-encode deterministically, compare the '
    'bytes with the canonical bytes; if "json" is not null, decode it, re-encode '
    "deterministically, compare with the same canonical bytes. Compare bytes, not messages: "
    "NaN != NaN under most runtimes' equality, and -0.0 == 0.0.",
    '"notes" (optional) says what a vector exercises. "known_differences" (optional) lists '
    'differences confirmed in a runtime on this vector: {"id", "runtime", "checks": which '
    'of "binary" and "json" fail, "difference"}. A consumer on that runtime pins the '
    "failure as expected, and fails if it stops happening, rather than skipping the vector.",
    '"runtime_differences" lists differences of a runtime as a whole (a serializer with no '
    "canonical map order) and how its checks normalise its output before comparing.",
    "The vectors are never regenerated casually: tools/make_vectors.py writes every file byte "
    "for byte, and new vectors are appended after the existing ones.",
]


@dataclass(frozen=True)
class Vector:
    """One vector after the first 34: an envelope and how its files differ from plain ones."""

    name: str
    case: str | None  # the payload case; None: no payload this schema knows
    payload: dict[str, Any]
    notes: str
    overrides: dict[str, Any] | None = None
    unknown: Edit | None = None  # adds unknown fields to the canonical bytes: no JSON form
    non_canonical: Edit | None = None  # makes the input bytes from the canonical ones
    known_differences: tuple[str, ...] = ()


def _with_security(**changes: Any) -> dict[str, Any]:
    context = {**SECURITY_CONTEXT_FULL, **changes}
    return {**FULL_PAYLOADS["processing_started"], "securityContext": context}


_METADATA = {"producer": "adaptive-pipeline/2.0.0", "host": "worker-1"}
_EMPTY_MAP_PAYLOAD = _with_security(metadata={"": "", "department": "finance", "ticket": ""})
_EMPTY_MAP_METADATA = {"metadata": {**_METADATA, "trace-id": ""}}
_STAGE_DEFAULTS_METRICS = {
    "bytesProcessed": "4096",
    "stageMetrics": {
        "": {"processingTime": {}},
        "checksum": {"stageName": "checksum", "bytesProcessed": "4096", "processingTime": {}},
    },
}
_SEVERITY_PAYLOAD = FULL_PAYLOADS["security_violation"]
_NEGATIVE_ZERO_STAGE = {
    "stageName": "compression",
    "processingTime": {},
    "throughput": -0.0,
    "successRate": -0.0,
    "cpuUsage": -0.0,
}

NEW_VECTORS: list[Vector] = [
    Vector(
        "processing_started_empty_map_keys_and_values",
        "processing_started",
        _EMPTY_MAP_PAYLOAD,
        "Empty map keys and values, canonical: envelope metadata holds an empty value (its keys "
        "must not be empty: min_len 1); SecurityContext.metadata, whose keys may be empty, an "
        "entry with an empty key and value and one with an empty value. Both key and value of "
        "every entry are written.",
        _EMPTY_MAP_METADATA,
        known_differences=("python-upb-map-order", "prost-map-entry-defaults"),
    ),
    Vector(
        "processing_started_map_entries_defaults_omitted",
        "processing_started",
        _EMPTY_MAP_PAYLOAD,
        "The envelope of processing_started_empty_map_keys_and_values as prost writes it: map "
        "entries leave out an empty key or value (the entry with both empty is zero bytes long). "
        "Every runtime reads the missing key or value as empty, so both forms decode equal.",
        _EMPTY_MAP_METADATA,
        non_canonical=each(
            at("metadata", drop_empty_key_and_value),
            at("processing_started.security_context.metadata", drop_empty_key_and_value),
        ),
        known_differences=("python-upb-map-order", "prost-map-entry-defaults"),
    ),
    Vector(
        "metrics_updated_stage_metrics_non_canonical_defaults",
        "metrics_updated",
        {"processingId": PROCESSING_ID, "metrics": _STAGE_DEFAULTS_METRICS},
        "A map<string, StageMetrics> with an empty key, written as prost does (no key field), and "
        "defaults written out where canonical bytes leave them out: ProcessingMetrics.bytes_total "
        '= 0, StageMetrics.stage_name = "", throughput = 0.0 and error_count = 0 in each map '
        "value, UnsignedDuration secs = 0 and nanos = 0 (an overlong varint).",
        non_canonical=each(
            at("metrics_updated.metrics", spell_out(varint_record(2, 0))),
            at(
                "metrics_updated.metrics.stage_metrics",
                lambda records: [r for r in records if r[2]],
            ),
            at(
                "metrics_updated.metrics.stage_metrics.value",
                spell_out(text_record(1, ""), (4, I64, bytes(8)), varint_record(5, 0)),
            ),
            at(
                "metrics_updated.metrics.stage_metrics.value.processing_time",
                spell_out(varint_record(1, 0), (2, VARINT, b"\x80\x80\x00")),
            ),
        ),
        known_differences=("python-upb-map-order", "prost-map-entry-defaults"),
    ),
    Vector(
        "chunk_processed_explicit_defaults",
        "chunk_processed",
        {"processingId": PROCESSING_ID, "chunkId": CHUNK_ID, "stageName": ""},
        "Implicit-presence fields written out with their default value, which canonical bytes "
        'leave out: envelope correlation_id and causation_id "", ChunkProcessed chunk_sequence, '
        'chunk_size and processing_time_ms 0, stage_name ""; and schema_version 1 as an overlong '
        "two-byte varint.",
        {"correlationId": "", "causationId": ""},
        non_canonical=each(
            at(
                "",
                lambda records: spell_out(text_record(6, ""), text_record(7, ""))(
                    [(n, w, b"\x81\x00" if n == 5 else b) for n, w, b in records]
                ),
            ),
            at(
                "chunk_processed",
                spell_out(
                    varint_record(3, 0),
                    varint_record(4, 0),
                    text_record(5, ""),
                    varint_record(6, 0),
                ),
            ),
        ),
    ),
    Vector(
        "processing_started_maps_out_of_order",
        "processing_started",
        _with_security(
            metadata={
                "cost-center": "cc-7",
                "department": "finance",
                "region": "eu",
                "ticket": "OPS-1234",
            }
        ),
        "Map entries written in reverse key order, in the envelope metadata and in the nested "
        "SecurityContext.metadata; canonical bytes sort them.",
        {"metadata": {**_METADATA, "attempt": "1", "zone": "eu-west-1"}},
        non_canonical=each(
            at("", reverse_entries(8)),
            at("processing_started.security_context", reverse_entries(8)),
        ),
    ),
    Vector(
        "processing_completed_stage_metrics_out_of_order",
        "processing_completed",
        {
            **FULL_PAYLOADS["processing_completed"],
            "metrics": {
                **METRICS_FULL,
                "stageMetrics": {
                    **METRICS_FULL["stageMetrics"],
                    "checksum": {
                        "stageName": "checksum",
                        "processingTime": {"secs": "1", "nanos": 5},
                    },
                },
            },
        },
        "A map of messages (ProcessingMetrics.stage_metrics) with its entries in reverse key "
        "order; canonical bytes sort them.",
        non_canonical=at("processing_completed.metrics", reverse_entries(16)),
    ),
    Vector(
        "chunk_processed_metadata_interleaved",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        "Envelope fields out of number order (the payload first) with the metadata entries "
        'scattered among them, and an earlier entry for "host" ("stale-host") that a later one '
        "replaces: the last entry for a key wins. Canonical bytes put the fields in order and the "
        "entries together, sorted.",
        {"metadata": {**_METADATA, "attempt": "2", "zone": "eu-west-1"}},
        non_canonical=at("", interleave_metadata),
    ),
    Vector(
        "pipeline_created_metadata_key_order",
        "pipeline_created",
        FULL_PAYLOADS["pipeline_created"],
        "Map keys the runtimes' sort orders disagree on, in canonical (UTF-8 byte) order: "
        '"10" < "2" (integer-like: JS objects put them first, numerically), "Zone" < '
        '"trace" < "trace-id" < "zone" (a key before the keys it begins), "é" U+00E9 < '
        '"ﬁ" U+FB01 < "🦀" U+1F980 (UTF-16 order puts the last before the second).',
        {
            "metadata": {
                **_METADATA,
                "trace": "sampled",
                "trace-id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "2": "two",
                "10": "ten",
                "Zone": "upper",
                "zone": "lower",
                "é": "U+00E9",
                "ﬁ": "U+FB01",
                "🦀": "U+1F980",
            }
        },
        known_differences=("python-upb-map-order", "protobuf-java-utf16-key-order"),
    ),
    Vector(
        "metrics_updated_negative_zero",
        "metrics_updated",
        {
            "processingId": PROCESSING_ID,
            "metrics": {
                "throughputBytesPerSecond": -0.0,
                "compressionRatio": -0.0,
                "stageMetrics": {"compression": _NEGATIVE_ZERO_STAGE},
            },
        },
        "-0.0 in plain doubles (ProcessingMetrics.throughput_bytes_per_second, "
        "StageMetrics.throughput and success_rate), which are written because -0.0 is not the "
        "default 0.0, and in optional ones (compression_ratio, cpu_usage).",
        known_differences=(
            "betterproto2-negative-zero",
            "protobuf-java-json-negative-zero",
            "prost-negative-zero",
        ),
    ),
    Vector(
        "metrics_updated_nan",
        "metrics_updated",
        {
            "processingId": PROCESSING_ID,
            "metrics": {
                "throughputBytesPerSecond": "NaN",
                "compressionRatio": "NaN",
                "stageMetrics": {
                    "compression": {
                        "stageName": "compression",
                        "processingTime": {},
                        "throughput": "NaN",
                        "successRate": "NaN",
                        "cpuUsage": "NaN",
                    }
                },
            },
        },
        "NaN (the quiet NaN 0x7FF8000000000000) in every double: plain and optional, in "
        "ProcessingMetrics and in a StageMetrics map value. NaN != NaN: compare bytes.",
        known_differences=("protobuf-go-json-nan",),
    ),
    Vector(
        "metrics_updated_infinities",
        "metrics_updated",
        {
            "processingId": PROCESSING_ID,
            "metrics": {
                "throughputBytesPerSecond": "Infinity",
                "compressionRatio": "-Infinity",
                "stageMetrics": {
                    "compression": {
                        "stageName": "compression",
                        "processingTime": {},
                        "throughput": "-Infinity",
                        "successRate": "Infinity",
                        "cpuUsage": "Infinity",
                    },
                    "encryption": {
                        "stageName": "encryption",
                        "processingTime": {},
                        "cpuUsage": "-Infinity",
                    },
                },
            },
        },
        "+Infinity and -Infinity in plain and optional doubles, in ProcessingMetrics and in "
        "StageMetrics map values. (ChunkProcessed has no double.)",
    ),
    *(
        Vector(
            f"processing_started_security_level_{level.lower()}",
            "processing_started",
            _with_security(securityLevel=f"SECURITY_LEVEL_{level}"),
            f"SecurityLevel {level}. With processing_started_minimal_context (PUBLIC) and "
            "processing_started_full (TOP_SECRET) every defined value has a vector; 0 and "
            "undefined numbers are refused by the rules (defined_only, not_in [0]).",
        )
        for level in ("INTERNAL", "MEDIUM", "CONFIDENTIAL", "SECRET")
    ),
    *(
        Vector(
            f"security_violation_severity_{severity.lower()}",
            "security_violation",
            {**_SEVERITY_PAYLOAD, "severity": f"SECURITY_VIOLATION_SEVERITY_{severity}"},
            f"SecurityViolationSeverity {severity}. With security_violation_absent_optionals "
            "(LOW) and security_violation_full (CRITICAL) every defined value has a vector; 0 "
            "and undefined numbers are refused by the rules (defined_only, not_in [0]).",
        )
        for severity in ("MEDIUM", "HIGH")
    ),
    Vector(
        "unknown_event_type_future_payload",
        None,
        {},
        "An envelope from a newer schema: EventType 17, which v1 does not define (the only open "
        "enum field whose rules allow undefined values: not_in [0], no defined_only), and its "
        "payload as unknown field 117 (100 + 17). It breaks one schema rule, the required "
        "payload oneof, which the server waives for exactly this case (README: forward "
        "compatibility); tests/contract/test_vectors.py exempts it from that rule alone. No "
        "JSON form: the unknown payload cannot be carried in JSON.",
        {"eventType": 17},
        unknown=at(
            "",
            append(
                text_record(
                    117, write_records([text_record(1, PROCESSING_ID), varint_record(2, 42)])
                )
            ),
        ),
        known_differences=("prost-unknown-fields",),
    ),
    Vector(
        "chunk_processed_unknown_fields",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        "Unknown fields of every wire type but groups, after the known ones: in the envelope "
        "field 50 (varint 150), 51 (fixed64), 52 (fixed32) and 1000 (length-delimited); in the "
        "ChunkProcessed payload field 7 (varint) and 8 (length-delimited). They survive decode "
        "and re-encode byte for byte.",
        unknown=each(
            at(
                "",
                append(
                    varint_record(50, 150),
                    (51, I64, (2**63 + 5).to_bytes(8, "little")),
                    (52, I32, (0xDEADBEEF).to_bytes(4, "little")),
                    text_record(1000, "future envelope metadata"),
                ),
            ),
            at("chunk_processed", append(varint_record(7, 1), text_record(8, b"\x00\x01\xfe\xff"))),
        ),
        known_differences=("prost-unknown-fields",),
    ),
    Vector(
        "processing_started_unknown_fields_nested",
        "processing_started",
        FULL_PAYLOADS["processing_started"],
        "Unknown fields in nested messages: ProcessingStarted field 6 (length-delimited), its "
        "SecurityContext field 10 (varint), the first Permission field 3 (varint) and "
        "SecurityContext.created_at, a google.protobuf.Timestamp, field 3 (varint).",
        unknown=each(
            at("processing_started", append(text_record(6, "future payload field"))),
            at("processing_started.security_context", append(varint_record(10, 1))),
            at("processing_started.security_context", unknown_in_first_permission),
            at("processing_started.security_context.created_at", append(varint_record(3, 1))),
        ),
        known_differences=("prost-unknown-fields",),
    ),
    Vector(
        "metrics_updated_unknown_fields_in_map_value",
        "metrics_updated",
        {"processingId": PROCESSING_ID, "metrics": METRICS_FULL},
        "Unknown fields inside map values: every StageMetrics value of stage_metrics has field "
        "9 (varint) and its UnsignedDuration field 3 (varint); ProcessingMetrics itself field "
        "17 (length-delimited).",
        unknown=each(
            at("metrics_updated.metrics", append(text_record(17, "future metric"))),
            at("metrics_updated.metrics.stage_metrics.value", append(varint_record(9, 3))),
            at(
                "metrics_updated.metrics.stage_metrics.value.processing_time",
                append(varint_record(3, 1)),
            ),
        ),
        known_differences=("prost-unknown-fields",),
    ),
    Vector(
        "chunk_processed_unknown_fields_out_of_order",
        "chunk_processed",
        FULL_PAYLOADS["chunk_processed"],
        "Unknown fields where a newer producer writes them: envelope field 9 in field-number "
        "order, before the payload (113), and ChunkProcessed field 9 first. Re-encoding keeps "
        "their bytes and puts them after the known fields (the canonical bytes).",
        unknown=each(
            at("", append(varint_record(9, 1))),
            at("chunk_processed", append(varint_record(9, 5))),
        ),
        non_canonical=each(at("", move_before(9, 113)), at("chunk_processed", move_before(9, 1))),
        known_differences=("prost-unknown-fields",),
    ),
    Vector(
        "pipeline_created_metadata_entry_unknown_field",
        "pipeline_created",
        FULL_PAYLOADS["pipeline_created"],
        'A map entry holding an unknown field (field 3 in the "host" entry of the envelope '
        "metadata). Map entries are not messages that keep unknown fields: canonical bytes drop "
        "it and keep the entry (protobuf-go, protobuf-java, betterproto2 and prost do). No schema "
        "can add a field to a map entry, so only a hand-made encoder writes this.",
        non_canonical=at(
            "metadata",
            lambda records: (
                [*records, varint_record(3, 1)]
                if map_key(write_records(records)) == b"host"
                else records
            ),
        ),
        known_differences=("python-upb-map-entry-unknown", "protobuf-es-map-entry-unknown"),
    ),
]


def _maps_in_source_order(js: Any, source: Any, message: descriptor.Descriptor) -> Any:
    """`js` (MessageToDict's output) with every JSON map object's keys in `source`'s order."""
    if not isinstance(js, dict) or not isinstance(source, dict):
        return js
    for field in message.fields:
        name = field.json_name
        if name not in js or field.type != field.TYPE_MESSAGE:
            continue
        value, origin = js[name], source.get(name)
        if _is_map(field):
            order = list(origin) if isinstance(origin, dict) else []
            rank = {key: i for i, key in enumerate(order)}
            keys = sorted(value, key=lambda key: rank.get(key, len(order)))
            inner = field.message_type.fields_by_name["value"]
            js[name] = {
                key: _maps_in_source_order(value[key], (origin or {}).get(key), inner.message_type)
                if inner.type == inner.TYPE_MESSAGE
                else value[key]
                for key in keys
            }
        elif isinstance(value, list):
            for item, item_origin in zip(value, origin or [], strict=False):
                _maps_in_source_order(item, item_origin, field.message_type)
        else:
            _maps_in_source_order(value, origin, field.message_type)
    return js


def json_text(message: envelope_pb2.EventEnvelope, source: dict[str, Any]) -> str:
    """MessageToJson's text, except that JSON map objects list their keys in the order of the
    dict the message was parsed from: upb iterates maps in an order that changes from one
    process to the next, so MessageToJson alone does not reproduce a file."""
    js = _maps_in_source_order(json_format.MessageToDict(message), source, message.DESCRIPTOR)
    return json.dumps(js, indent=2) + "\n"


def _event_type(value: int) -> str | int:
    return envelope_pb2.EventType.Name(value) if value in envelope_pb2.EventType.values() else value


def _new_vector(index: int, vector: Vector) -> tuple[dict[str, Any], dict[str, bytes | str]]:
    """The manifest entry of one new vector and its files, checked against the official binding."""
    if vector.case is None:
        envelope = envelope_dict(index, "chunk_processed", {}, vector.overrides or {})
        del envelope["chunkProcessed"]
    else:
        envelope = envelope_dict(index, vector.case, vector.payload, vector.overrides or {})
    message = json_format.ParseDict(envelope, envelope_pb2.EventEnvelope())
    canonical = canonical_bytes(message)
    if vector.unknown is not None:
        canonical = rewrite(ENVELOPE, canonical, vector.unknown)
    binary = (
        canonical
        if vector.non_canonical is None
        else rewrite(ENVELOPE, canonical, vector.non_canonical)
    )
    if vector.non_canonical is not None and binary == canonical:
        raise AssertionError(f"{vector.name}: the input is canonical")
    files: dict[str, bytes | str] = {f"{vector.name}.binpb": binary}
    entry: dict[str, Any] = {
        "name": vector.name,
        "event_type": _event_type(message.event_type),
        "binary": f"{vector.name}.binpb",
    }
    if binary != canonical:
        entry["canonical_binary"] = files_name = f"{vector.name}.canonical.binpb"
        files[files_name] = canonical
    entry["json"] = None
    if vector.unknown is None:
        entry["json"] = f"{vector.name}.json"
        files[entry["json"]] = json_text(message, envelope)
        again = json_format.Parse(files[entry["json"]], envelope_pb2.EventEnvelope())
        if canonical_bytes(again) != canonical:
            raise AssertionError(f"{vector.name}: its JSON does not encode to its canonical bytes")
    entry["notes"] = vector.notes
    if vector.known_differences:
        entry["known_differences"] = [
            {"id": name, **KNOWN_DIFFERENCES[name]} for name in vector.known_differences
        ]
    # The official binding's differences are confirmed here, as the vectors are made.
    decoded = envelope_pb2.EventEnvelope.FromString(binary)
    reencoded = decoded.SerializeToString(deterministic=True)
    entry_unknown = "python-upb-map-entry-unknown" in vector.known_differences
    if entry_unknown:  # the entry goes last, as an unknown field: not a matter of map order
        if canonical_map_order(reencoded) == canonical:
            raise AssertionError(f"{vector.name}: the official binding re-encodes it canonically")
    else:
        upb_order = reencoded != canonical
        if upb_order != ("python-upb-map-order" in vector.known_differences):
            raise AssertionError(f"{vector.name}: python-upb-map-order listed wrongly")
        if canonical_map_order(reencoded) != canonical:
            raise AssertionError(f"{vector.name}: the official binding re-encodes it otherwise")
    return entry, files


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.iterdir():
        stale.unlink()
    cases = [(f"{case}_full", case, payload, {}) for case, payload in FULL_PAYLOADS.items()]
    cases += EDGE_CASES
    manifest = []
    for index, (name, case, payload, overrides) in enumerate(cases, start=1):
        source = envelope_dict(index, case, payload, overrides)
        message = json_format.ParseDict(source, envelope_pb2.EventEnvelope())
        binary = message.SerializeToString(deterministic=True)
        if canonical_map_order(binary) != binary:
            raise AssertionError(f"{name}: not in canonical map order")
        (OUT / f"{name}.binpb").write_bytes(binary)
        (OUT / f"{name}.json").write_text(json_text(message, source))
        manifest.append(
            {
                "name": name,
                "event_type": envelope_pb2.EventType.Name(message.event_type),
                "binary": f"{name}.binpb",
                "json": f"{name}.json",
            }
        )
    for index, vector in enumerate(NEW_VECTORS, start=len(cases) + 1):
        entry, files = _new_vector(index, vector)
        for file_name, content in files.items():
            path = OUT / file_name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        manifest.append(entry)
    document = {
        "message": "adaptive_pipeline.events.v1.EventEnvelope",
        "conventions": CONVENTIONS,
        "runtime_differences": RUNTIME_DIFFERENCES,
        "vectors": manifest,
    }
    (OUT / "manifest.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(manifest)} vectors to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
