"""Events with fixed ids and times for the projection tests: `event(cls, t, **fields)`."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from pipeline_events import domain
from pipeline_events.projections import Folded
from pipeline_events.timestamps import NanoDatetime

PIPELINE = uuid.UUID(int=0x1000)
OTHER_PIPELINE = uuid.UUID(int=0x2000)
RUN = uuid.UUID(int=0x1001)
STAGE = uuid.UUID(int=0x1002)
T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z, in ns
CONTEXT = domain.SecurityContext(
    user_id="alice",
    session_id=uuid.UUID(int=0x1003),
    permissions=(domain.StandardPermission.READ, domain.CustomPermission("audit")),
    metadata={"team": "ingest"},
    created_at=NanoDatetime.from_epoch_ns(T0),
)

# The required fields of each event class, with plain values.
DEFAULTS: dict[type[domain.Event], dict[str, Any]] = {
    domain.PipelineCreated: {"pipeline_name": "ingest", "stage_count": 2, "created_by": "alice"},
    domain.PipelineUpdated: {"changes": ("chunk size 1 MiB",), "updated_by": "bob"},
    domain.PipelineDeleted: {"deleted_by": "carol"},
    domain.ProcessingStarted: {
        "processing_id": RUN,
        "input_path": "/in/a.csv",
        "output_path": "/out/a.adapipe",
        "file_size": 4096,
        "security_context": CONTEXT,
    },
    domain.ProcessingCompleted: {
        "processing_id": RUN,
        "metrics": domain.ProcessingMetrics(bytes_processed=4096, chunks_processed=4),
        "output_size": 1024,
    },
    domain.ProcessingFailed: {
        "processing_id": RUN,
        "error_message": "stage compress failed",
        "error_code": "E_STAGE",
        "stage_name": "compress",
    },
    domain.ProcessingPaused: {"processing_id": RUN, "reason": "operator request"},
    domain.ProcessingResumed: {"processing_id": RUN, "resumed_from_checkpoint": True},
    domain.ProcessingCancelled: {
        "processing_id": RUN,
        "reason": "superseded",
        "cancelled_by": "bob",
    },
    domain.StageStarted: {
        "processing_id": RUN,
        "stage_id": STAGE,
        "stage_name": "compress",
        "stage_type": "compression",
    },
    domain.StageCompleted: {
        "processing_id": RUN,
        "stage_id": STAGE,
        "stage_name": "compress",
        "processing_time_ms": 40,
        "bytes_processed": 4096,
    },
    domain.StageFailed: {
        "processing_id": RUN,
        "stage_id": STAGE,
        "stage_name": "compress",
        "error_message": "key material unavailable",
        "error_code": "E_KEY",
    },
    domain.ChunkProcessed: {
        "processing_id": RUN,
        "chunk_id": uuid.UUID(int=0x1004),
        "chunk_sequence": 0,
        "chunk_size": 1024,
        "stage_name": "compress",
        "processing_time_ms": 10,
    },
    domain.MetricsUpdated: {
        "processing_id": RUN,
        "metrics": domain.ProcessingMetrics(bytes_processed=2048, bytes_total=4096),
    },
    domain.SecurityViolation: {
        "processing_id": RUN,
        "violation_type": "unauthorized_access",
        "description": "read without permission",
        "severity": domain.SecurityViolationSeverity.HIGH,
        "user_id": "mallory",
    },
    domain.ResourceExhausted: {
        "processing_id": RUN,
        "resource_type": "memory",
        "current_usage": 9,
        "limit": 8,
        "action_taken": "throttled",
    },
}

_E = TypeVar("_E", bound=domain.Event)


def at(seconds: float) -> NanoDatetime:
    """The instant `seconds` after T0."""
    return NanoDatetime.from_epoch_ns(T0 + round(seconds * 1_000_000_000))


def event(cls: type[_E], t: float = 0, **fields: Any) -> _E:
    """An event of `cls` at T0 + t seconds, of PIPELINE (and RUN), with `fields` overriding."""
    defaults = next(DEFAULTS[base] for base in cls.__mro__ if base in DEFAULTS)
    values = {"pipeline_id": PIPELINE, "occurred_at": at(t), **defaults, **fields}
    values.setdefault("event_id", uuid.uuid5(PIPELINE, f"{cls.__name__}@{t}"))
    return cls(**values)


def unknown(t: float = 0, pipeline_id: uuid.UUID = PIPELINE) -> domain.UnknownEvent:
    """An event whose payload case this schema does not know (EventType 99)."""
    return domain.UnknownEvent(
        event_id=uuid.UUID(int=0x1005),
        pipeline_id=pipeline_id,
        occurred_at=at(t),
        version=1,
        type_number=99,
        envelope_bytes=b"",
    )


def numbered(events: list[Any]) -> list[Folded]:
    """Events as a store would hand them out: positions 1.., revisions per pipeline."""
    revisions: dict[uuid.UUID, int] = {}
    folded = []
    for position, e in enumerate(events, start=1):
        revisions[e.pipeline_id] = revisions.get(e.pipeline_id, 0) + 1
        folded.append(Folded(e, position, revisions[e.pipeline_id]))
    return folded
