"""Write the golden vectors under tests/vectors/v1 (run once per schema version; never casually).

Each vector is an EventEnvelope as binary (`.binpb`, deterministic
serialization) and canonical proto3 JSON (`.json`), listed in manifest.json.
The values are fixed so the files are reproducible; a change to them is a
change to the contract and must be reviewed as one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "generated" / "python"))

from adaptive_pipeline.events.v1 import envelope_pb2  # noqa: E402
from google.protobuf import json_format  # noqa: E402

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
    "metadata": {"department": "finance", "ticket": "OPS-1234"},
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


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.iterdir():
        stale.unlink()
    cases = [(f"{case}_full", case, payload, {}) for case, payload in FULL_PAYLOADS.items()]
    cases += EDGE_CASES
    manifest = []
    for index, (name, case, payload, overrides) in enumerate(cases, start=1):
        message = json_format.ParseDict(
            envelope_dict(index, case, payload, overrides), envelope_pb2.EventEnvelope()
        )
        (OUT / f"{name}.binpb").write_bytes(message.SerializeToString(deterministic=True))
        (OUT / f"{name}.json").write_text(json_format.MessageToJson(message, indent=2) + "\n")
        manifest.append(
            {
                "name": name,
                "event_type": envelope_pb2.EventType.Name(message.event_type),
                "binary": f"{name}.binpb",
                "json": f"{name}.json",
            }
        )
    document = {"message": "adaptive_pipeline.events.v1.EventEnvelope", "vectors": manifest}
    (OUT / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(manifest)} vectors to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
