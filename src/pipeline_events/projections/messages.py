"""The read models as the contract's messages (state.proto), and back, losslessly.

The service answers state queries with `pipeline_to_proto` / `run_to_proto`;
the client turns the answers back into the same dataclasses a local `replay`
makes (`pipeline_from_proto` / `run_from_proto`), so a state read over gRPC
equals the state folded from the same log. Derived fields of state.proto
(`changes`, `active_processing_ids`, the counts, the durations) are written
for other languages and recomputed, not read, on the way back.

A run's ResourceExhausted and SecurityViolation events travel as envelopes
without the correlation, causation and metadata of the originals: the domain
events the fold keeps do not carry them.

Two things make an answer smaller than its state, each flagged `truncated`:
a pipeline's message holds its latest MAX_RUNS_IN_ANSWER runs (the counts
cover all, and ListProcessingRuns pages through every one), and `fit` trims
the oldest entries of a message's lists until it fits a response.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from typing import Any

from adaptive_pipeline.events.v1 import common_pb2, state_pb2
from google.protobuf import timestamp_pb2

from pipeline_events import adapter, domain
from pipeline_events.errors import DecodeError
from pipeline_events.projections.base import Anomaly, AnomalyKind
from pipeline_events.projections.pipeline import PipelineChange, PipelineState, PipelineStatus
from pipeline_events.projections.processing_run import (
    ProcessingRunState,
    ProcessingStatus,
    RunSummary,
    StageState,
    StageStatus,
    Transition,
)
from pipeline_events.timestamps import NanoDatetime

__all__ = [
    "MAX_RUNS_IN_ANSWER",
    "fit",
    "pipeline_from_proto",
    "pipeline_to_proto",
    "run_from_proto",
    "run_to_proto",
    "summary_from_proto",
    "summary_to_proto",
]

_NS = 1_000_000_000
MAX_RUNS_IN_ANSWER = 1000  # a pipeline's latest runs in its state message


# --- small values ---------------------------------------------------------------------------


def _set_time(target: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    if value is not None:
        instant = NanoDatetime.from_datetime(value)
        target.seconds = instant.epoch_seconds
        target.nanos = instant.nanosecond


def _time(message: Any, name: str) -> NanoDatetime | None:
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    try:
        return NanoDatetime.from_seconds_nanos(stamp.seconds, stamp.nanos)
    except (ValueError, OverflowError) as error:
        raise DecodeError(f"not a representable time: {error}", field=name) from error


def _required_time(message: Any, within: str) -> NanoDatetime:
    """The `occurred_at` of an entry of a repeated field, which every entry must have."""
    occurred_at = _time(message, "occurred_at")
    if occurred_at is None:
        raise DecodeError("required timestamp is missing", field=f"{within}.occurred_at")
    return occurred_at


def _set_duration(target: common_pb2.UnsignedDuration, nanos: int | None) -> None:
    if nanos is not None:
        target.secs, target.nanos = divmod(nanos, _NS)


def _duration_ns(value: common_pb2.UnsignedDuration) -> int:
    return value.secs * _NS + value.nanos


def _uuid(text: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise DecodeError(f"not a UUID: {text!r}", field=field) from error


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _enum(cls: Any, value: int, field: str) -> Any:
    try:
        return cls(value)
    except ValueError as error:
        raise DecodeError(f"unknown {cls.__name__} {value}", field=field) from error


def _anomalies_to(target: Any, anomalies: list[Anomaly]) -> None:
    for anomaly in anomalies:
        target.add(
            kind=anomaly.kind.value,
            position=anomaly.position,
            event_type=anomaly.event_type,
            description=anomaly.description,
        )


def _anomaly(message: state_pb2.Anomaly) -> Anomaly:
    # An AnomalyKind a newer server added is kept as text: str-valued, like the enum.
    try:
        kind: Any = AnomalyKind(message.kind)
    except ValueError:
        kind = message.kind
    return Anomaly(kind, message.position, message.event_type, message.description)


def _event(envelope: Any, cls: type, field: str) -> Any:
    event = adapter.from_envelope(envelope)
    if not isinstance(event, cls):
        raise DecodeError(f"a {event.event_type}, not a {cls.__name__}", field=field)
    return event


# --- pipelines ------------------------------------------------------------------------------


def pipeline_to_proto(state: PipelineState) -> state_pb2.PipelineState:
    """The contract's message of a pipeline's state."""
    message = state_pb2.PipelineState(
        pipeline_id=str(state.pipeline_id),
        pipeline_name=state.pipeline_name,
        stage_count=state.stage_count,
        status=int(state.status),
        changes=state.changes,
        active_processing_ids=[str(run) for run in state.active_processing_ids],
        runs_started=state.runs_started,
        runs_completed=state.runs_completed,
        runs_failed=state.runs_failed,
        runs_cancelled=state.runs_cancelled,
        security_violations=state.security_violations,
        revision=state.revision,
        last_position=state.last_position,
        events_folded=state.events_folded,
    )
    if state.created_by is not None:
        message.created_by = state.created_by
    if state.deleted_by is not None:
        message.deleted_by = state.deleted_by
    _set_time(message.created_at, state.created_at)
    _set_time(message.updated_at, state.updated_at)
    _set_time(message.deleted_at, state.deleted_at)
    for change in state.history:
        item = message.history.add(
            position=change.position, revision=change.revision, changes=change.changes
        )
        _set_time(item.occurred_at, change.occurred_at)
        if change.updated_by is not None:
            item.updated_by = change.updated_by
    runs = state.runs
    if len(runs) > MAX_RUNS_IN_ANSWER:
        latest = list(itertools.islice(reversed(runs), MAX_RUNS_IN_ANSWER))
        message.truncated = True
        for run in reversed(latest):
            message.runs.add(processing_id=str(run), status=int(runs[run]))
    else:
        for run, status in runs.items():
            message.runs.add(processing_id=str(run), status=int(status))
    _anomalies_to(message.anomalies, state.anomalies)
    message.anomaly_count = state.anomaly_count
    message.update_count = state.update_count
    return message


def pipeline_from_proto(message: state_pb2.PipelineState) -> PipelineState:
    """A pipeline's state from the contract's message (what `pipeline_to_proto` made).

    Raises:
        DecodeError: the message is not a valid pipeline state.
    """
    history = [
        PipelineChange(
            change.position,
            change.revision,
            _required_time(change, "history"),
            tuple(change.changes),
            _optional(change, "updated_by"),
        )
        for change in message.history
    ]
    return PipelineState(
        pipeline_id=_uuid(message.pipeline_id, "pipeline_id"),
        pipeline_name=message.pipeline_name,
        stage_count=message.stage_count,
        status=_enum(PipelineStatus, message.status, "status"),
        created_by=_optional(message, "created_by"),
        history=history,
        runs={
            _uuid(run.processing_id, "runs.processing_id"): _enum(
                ProcessingStatus, run.status, "runs.status"
            )
            for run in message.runs
        },
        runs_started=message.runs_started,
        runs_completed=message.runs_completed,
        runs_failed=message.runs_failed,
        runs_cancelled=message.runs_cancelled,
        security_violations=message.security_violations,
        created_at=_time(message, "created_at"),
        updated_at=_time(message, "updated_at"),
        revision=message.revision,
        deleted_by=_optional(message, "deleted_by"),
        deleted_at=_time(message, "deleted_at"),
        last_position=message.last_position,
        events_folded=message.events_folded,
        anomalies=[_anomaly(anomaly) for anomaly in message.anomalies],
        anomaly_count=message.anomaly_count,
        update_count=message.update_count,
    )


# --- processing runs ------------------------------------------------------------------------


def _stage_to(message: state_pb2.StageState, stage: StageState) -> None:
    message.stage_id = "" if stage.stage_id is None else str(stage.stage_id)
    message.stage_name = stage.stage_name
    message.stage_type = stage.stage_type
    message.status = int(stage.status)
    message.chunks_processed = stage.chunks_processed
    message.bytes_processed = stage.bytes_processed
    message.processing_time_ms = stage.processing_time_ms
    message.error_code = stage.error_code
    message.error_message = stage.error_message
    _set_time(message.started_at, stage.started_at)
    _set_time(message.ended_at, stage.ended_at)
    _set_duration(message.duration, stage.duration_ns)
    message.chunk_bytes = stage.chunk_bytes
    message.chunk_time_ms = stage.chunk_time_ms
    if stage.reported_bytes is not None:
        message.reported_bytes = stage.reported_bytes
    if stage.reported_time_ms is not None:
        message.reported_time_ms = stage.reported_time_ms


def _stage(message: state_pb2.StageState) -> StageState:
    return StageState(
        stage_id=_uuid(message.stage_id, "stages.stage_id") if message.stage_id else None,
        stage_name=message.stage_name,
        stage_type=message.stage_type,
        status=_enum(StageStatus, message.status, "stages.status"),
        chunks_processed=message.chunks_processed,
        chunk_bytes=message.chunk_bytes,
        chunk_time_ms=message.chunk_time_ms,
        reported_bytes=_optional(message, "reported_bytes"),
        reported_time_ms=_optional(message, "reported_time_ms"),
        error_code=message.error_code,
        error_message=message.error_message,
        started_at=_time(message, "started_at"),
        ended_at=_time(message, "ended_at"),
    )


def run_to_proto(state: ProcessingRunState) -> state_pb2.ProcessingRunState:
    """The contract's message of a run's state.

    Raises:
        EncodeError: a value does not fit the schema (never for a state folded from
            events the service accepted).
    """
    message = state_pb2.ProcessingRunState(
        processing_id=str(state.processing_id),
        pipeline_id=str(state.pipeline_id),
        status=int(state.status),
        input_path=state.input_path,
        output_path=state.output_path,
        file_size=state.file_size,
        output_size=state.output_size,
        error_code=state.error_code,
        error_message=state.error_message,
        pause_count=state.pause_count,
        resume_count=state.resume_count,
        resource_exhaustions=state.resource_exhaustions,
        security_violations=state.security_violations,
        last_position=state.last_position,
        first_position=state.first_position,
        revision=state.revision,
        events_folded=state.events_folded,
        chunks_processed=state.chunks_processed,
    )
    for stage in state.stages.values():
        _stage_to(message.stages.add(), stage)
    if state.metrics is not None:
        adapter.record_to_proto(state.metrics, message.metrics)
    if state.security_context is not None:
        adapter.record_to_proto(state.security_context, message.security_context)
    _set_time(message.started_at, state.started_at)
    _set_time(message.ended_at, state.ended_at)
    _set_time(message.paused_since, state.paused_since)
    if state.failed_stage is not None:
        message.failed_stage = state.failed_stage
    if state.cancelled_by is not None:
        message.cancelled_by = state.cancelled_by
    _set_duration(message.paused_time, state.paused_ns)
    _set_duration(message.duration, state.duration_ns)
    _set_duration(message.active_duration, state.active_ns)
    for transition in state.transitions:
        item = message.transitions.add(status=int(transition.status), position=transition.position)
        _set_time(item.occurred_at, transition.occurred_at)
    for exhausted in state.exhaustions:
        message.resource_exhaustion_events.append(adapter.to_envelope(exhausted))
    for violation in state.violations:
        message.security_violation_events.append(adapter.to_envelope(violation))
    _anomalies_to(message.anomalies, state.anomalies)
    message.anomaly_count = state.anomaly_count
    return message


def run_from_proto(message: state_pb2.ProcessingRunState) -> ProcessingRunState:
    """A run's state from the contract's message (what `run_to_proto` made).

    Raises:
        DecodeError: the message is not a valid run state.
    """
    transitions = [
        Transition(
            _enum(ProcessingStatus, item.status, "transitions.status"),
            item.position,
            _required_time(item, "transitions"),
        )
        for item in message.transitions
    ]
    stages = [_stage(stage) for stage in message.stages]
    return ProcessingRunState(
        processing_id=_uuid(message.processing_id, "processing_id"),
        pipeline_id=_uuid(message.pipeline_id, "pipeline_id"),
        status=_enum(ProcessingStatus, message.status, "status"),
        input_path=message.input_path,
        output_path=message.output_path,
        file_size=message.file_size,
        stages={stage.stage_name: stage for stage in stages},
        metrics=(
            adapter.record_from_proto(domain.ProcessingMetrics, message.metrics)
            if message.HasField("metrics")
            else None
        ),
        output_size=message.output_size,
        error_code=message.error_code,
        error_message=message.error_message,
        pause_count=message.pause_count,
        resume_count=message.resume_count,
        exhaustions=[
            _event(envelope, domain.ResourceExhausted, "resource_exhaustion_events")
            for envelope in message.resource_exhaustion_events
        ],
        violations=[
            _event(envelope, domain.SecurityViolation, "security_violation_events")
            for envelope in message.security_violation_events
        ],
        started_at=_time(message, "started_at"),
        ended_at=_time(message, "ended_at"),
        last_position=message.last_position,
        first_position=message.first_position,
        revision=message.revision,
        events_folded=message.events_folded,
        security_context=(
            adapter.record_from_proto(domain.SecurityContext, message.security_context)
            if message.HasField("security_context")
            else None
        ),
        failed_stage=_optional(message, "failed_stage"),
        cancelled_by=_optional(message, "cancelled_by"),
        paused_ns=_duration_ns(message.paused_time),
        paused_since=_time(message, "paused_since"),
        transitions=transitions,
        anomalies=[_anomaly(anomaly) for anomaly in message.anomalies],
        anomaly_count=message.anomaly_count,
        resource_exhaustions=message.resource_exhaustions,
        security_violations=message.security_violations,
    )


def summary_to_proto(state: ProcessingRunState) -> state_pb2.ProcessingRunSummary:
    """The line of a run in ListProcessingRuns."""
    message = state_pb2.ProcessingRunSummary(
        processing_id=str(state.processing_id),
        pipeline_id=str(state.pipeline_id),
        status=int(state.status),
        input_path=state.input_path,
        chunks_processed=state.chunks_processed,
        anomaly_count=state.anomaly_count,
        first_position=state.first_position,
        last_position=state.last_position,
        error_code=state.error_code,
    )
    _set_time(message.started_at, state.started_at)
    _set_time(message.ended_at, state.ended_at)
    return message


def summary_from_proto(message: state_pb2.ProcessingRunSummary) -> RunSummary:
    """A run's summary from the contract's message.

    Raises:
        DecodeError: the message is not a valid summary.
    """
    return RunSummary(
        processing_id=_uuid(message.processing_id, "processing_id"),
        pipeline_id=_uuid(message.pipeline_id, "pipeline_id"),
        status=_enum(ProcessingStatus, message.status, "status"),
        input_path=message.input_path,
        started_at=_time(message, "started_at"),
        ended_at=_time(message, "ended_at"),
        chunks_processed=message.chunks_processed,
        anomaly_count=message.anomaly_count,
        first_position=message.first_position,
        last_position=message.last_position,
        error_code=message.error_code,
    )


# --- answers that fit ---------------------------------------------------------------------

# What `fit` trims, in order: (field, True to drop the oldest (first) entries, False the
# latest). The first anomalies and stages are the last to go: they explain the state.
_TRIM_ORDER: dict[str, list[tuple[str, bool]]] = {
    "PipelineState": [
        ("runs", True), ("active_processing_ids", True), ("history", True),
        ("changes", True), ("anomalies", False),
    ],
    "ProcessingRunState": [
        ("security_violation_events", True), ("resource_exhaustion_events", True),
        ("transitions", True), ("anomalies", False), ("stages", False),
    ],
}  # fmt: skip


def _entry_bytes(item: Any) -> int:
    """An entry's bytes in its message: tag, length and body (an upper bound's tag of 2)."""
    body = len(item.encode()) if isinstance(item, str) else item.ByteSize()
    return 2 + (body.bit_length() + 6) // 7 + body


def fit(message: Any, max_bytes: int) -> bool:
    """Trim a state message's lists (see `_TRIM_ORDER`) until it is at most `max_bytes`.

    Returns whether it trimmed; a trimmed message says so in `truncated`.
    """
    size = message.ByteSize()
    if size <= max_bytes:
        return False
    message.truncated = True
    for name, oldest_first in _TRIM_ORDER[message.DESCRIPTOR.name]:
        items = getattr(message, name)
        order = range(len(items)) if oldest_first else range(len(items) - 1, -1, -1)
        dropped = 0
        for index in order:
            if size <= max_bytes:
                break
            size -= _entry_bytes(items[index])
            dropped += 1
        if dropped:
            if oldest_first:
                del items[:dropped]
            else:
                del items[len(items) - dropped :]
        size = message.ByteSize()
        if size <= max_bytes:
            break
    return True
