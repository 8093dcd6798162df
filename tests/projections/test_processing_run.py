"""The processing-run fold on hand-written histories: its state machine and what it keeps."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline_events import domain
from pipeline_events.projections import (
    Folded,
    ProcessingRunState,
    ProcessingStatus,
    StageStatus,
    processing_run,
)
from tests.projections.builders import CONTEXT, PIPELINE, RUN, STAGE, at, event, numbered

S = ProcessingStatus


def fold(events: list[Any]) -> ProcessingRunState:
    state = None
    for recorded in numbered(events):
        state = processing_run.apply(state, recorded)
    assert state is not None
    return state


def test_a_clean_run() -> None:
    metrics = domain.ProcessingMetrics(bytes_processed=2048, chunks_processed=2)
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.StageStarted, 1),
            event(domain.ChunkProcessed, 2, chunk_size=1000, processing_time_ms=7),
            event(domain.ChunkProcessed, 3, chunk_size=1048, processing_time_ms=8),
            event(domain.StageCompleted, 4, bytes_processed=2048, processing_time_ms=20),
            event(domain.MetricsUpdated, 5),
            event(domain.ResourceExhausted, 5.5),
            event(domain.ProcessingCompleted, 6, metrics=metrics, output_size=512),
        ]
    )
    assert (state.processing_id, state.pipeline_id) == (RUN, PIPELINE)
    assert state.status is S.COMPLETED and state.status.is_terminal
    assert (state.input_path, state.output_path, state.file_size) == (
        "/in/a.csv",
        "/out/a.adapipe",
        4096,
    )
    assert state.security_context == CONTEXT
    assert (state.started_at, state.ended_at) == (at(0), at(6))
    assert (state.metrics, state.output_size) == (metrics, 512)
    assert [(t.status, t.position, t.occurred_at) for t in state.transitions] == [
        (S.RUNNING, 1, at(0)),
        (S.COMPLETED, 8, at(6)),
    ]
    (stage,) = state.stages.values()
    assert (stage.stage_id, stage.stage_name, stage.stage_type, stage.status) == (
        STAGE,
        "compress",
        "compression",
        StageStatus.COMPLETED,
    )
    assert (stage.chunks_processed, stage.chunk_bytes, stage.chunk_time_ms) == (2, 2048, 15)
    assert (stage.bytes_processed, stage.processing_time_ms) == (2048, 20)  # StageCompleted's
    assert (stage.started_at, stage.ended_at) == (at(1), at(4))
    assert (state.resource_exhaustions, state.security_violations) == (1, 0)
    assert (state.last_position, state.revision, state.events_folded) == (8, 8, 8)
    assert state.anomalies == []


def test_a_running_stage_reports_its_chunk_sums() -> None:
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.StageStarted, 1),
            event(domain.ChunkProcessed, 2, chunk_size=10, processing_time_ms=3),
            event(domain.ChunkProcessed, 3, chunk_size=15, processing_time_ms=4),
        ]
    )
    stage = state.stages["compress"]
    assert (stage.status, stage.bytes_processed, stage.processing_time_ms) == (
        StageStatus.RUNNING,
        25,
        7,
    )
    assert state.status is S.RUNNING and state.ended_at is None


def test_pauses_add_up_from_their_occurred_at() -> None:
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.ProcessingPaused, 1, reason="operator"),
            event(domain.ProcessingResumed, 3),
            event(domain.ProcessingPaused, 4, reason="quota"),
        ]
    )
    assert (state.status, state.error_message) == (S.PAUSED, "quota")
    assert (state.pause_count, state.resume_count, state.paused_ns) == (2, 1, 2_000_000_000)
    assert state.paused_since == at(4)  # open: not counted until it closes
    resumed = processing_run.apply(state, Folded(event(domain.ProcessingResumed, 4.5), 5, 5))
    assert (resumed.status, resumed.error_message) == (S.RUNNING, "")
    assert (resumed.paused_ns, resumed.paused_since) == (2_500_000_000, None)
    assert resumed.paused_time.total_seconds() == 2.5
    assert [t.status for t in resumed.transitions] == [
        S.RUNNING,
        S.PAUSED,
        S.RUNNING,
        S.PAUSED,
        S.RUNNING,
    ]


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (domain.ProcessingCompleted, S.COMPLETED),
        (domain.ProcessingFailed, S.FAILED),
        (domain.ProcessingCancelled, S.CANCELLED),
    ],
)
def test_ending_while_paused_closes_the_interval_at_the_end(
    end: type[domain.Event], status: ProcessingStatus
) -> None:
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.ProcessingPaused, 1),
            event(end, 4.25),
        ]
    )
    assert (state.status, state.paused_ns, state.paused_since) == (status, 3_250_000_000, None)
    assert (state.pause_count, state.resume_count, state.ended_at) == (1, 0, at(4.25))
    assert state.anomalies == []


def test_a_failed_run_keeps_the_failing_stage_and_its_error() -> None:
    partial = domain.ProcessingMetrics(bytes_processed=1024, error_count=1)
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.MetricsUpdated, 0.5),
            event(domain.StageStarted, 1),
            event(domain.ChunkProcessed, 2),
            event(domain.StageFailed, 3),
            event(domain.ProcessingFailed, 4, partial_metrics=partial),
        ]
    )
    assert (state.status, state.error_code, state.error_message, state.failed_stage) == (
        S.FAILED,
        "E_STAGE",
        "stage compress failed",
        "compress",
    )
    assert state.metrics == partial  # the partial metrics replace the last update
    stage = state.stages["compress"]
    assert (stage.status, stage.error_code, stage.error_message, stage.chunks_processed) == (
        StageStatus.FAILED,
        "E_KEY",
        "key material unavailable",
        1,
    )


def test_a_failure_without_partial_metrics_keeps_the_last_ones() -> None:
    state = fold([event(domain.ProcessingStarted, 0), event(domain.MetricsUpdated, 1)])
    before = state.metrics
    processing_run.apply(state, Folded(event(domain.ProcessingFailed, 2), 3, 3))
    assert state.metrics == before is not None


def test_a_cancelled_run_keeps_the_reason_and_who() -> None:
    state = fold([event(domain.ProcessingStarted, 0), event(domain.ProcessingCancelled, 1)])
    assert (state.status, state.error_code, state.error_message, state.cancelled_by) == (
        S.CANCELLED,
        "",
        "superseded",
        "bob",
    )


def test_a_violation_naming_an_ended_run_is_the_runs() -> None:
    state = fold(
        [
            event(domain.ProcessingStarted, 0),
            event(domain.ProcessingCompleted, 1),
            event(domain.SecurityViolation, 2),
        ]
    )
    assert (state.status, state.security_violations, state.anomalies) == (S.COMPLETED, 1, [])


def test_stages_keep_their_start_order() -> None:
    names = ["input_checksum", "compression", "encryption"]
    events: list[Any] = [event(domain.ProcessingStarted, 0)]
    for i, name in enumerate(names):
        stage_id = uuid.UUID(int=i + 1)
        events += [
            event(domain.StageStarted, 2 * i + 1, stage_name=name, stage_id=stage_id),
            event(domain.StageCompleted, 2 * i + 2, stage_name=name, stage_id=stage_id),
        ]
    assert list(fold(events).stages) == names


def test_other_runs_and_pipeline_events_are_not_the_runs() -> None:
    state = fold([event(domain.ProcessingStarted, 0)])
    before = state.copy()
    for recorded in [
        Folded(event(domain.ChunkProcessed, 1, processing_id=uuid.UUID(int=5)), 2, 2),
        Folded(event(domain.PipelineUpdated, 2), 3, 3),
        Folded(event(domain.SecurityViolation, 3, processing_id=None), 4, 4),
    ]:
        assert processing_run.apply(state, recorded) is state
    assert state == before


def test_a_state_needs_a_run_to_begin_with() -> None:
    with pytest.raises(ValueError, match="PipelineCreated belongs to no processing run"):
        processing_run.apply(None, Folded(event(domain.PipelineCreated)))


def test_a_subclass_of_an_event_folds_as_its_base() -> None:
    class AuditedChunk(domain.ChunkProcessed):
        pass

    state = fold([event(domain.ProcessingStarted, 0), event(domain.StageStarted, 1)])
    processing_run.apply(state, Folded(event(AuditedChunk, 2), 3, 3))
    assert (state.chunks_processed, state.anomalies) == (1, [])


def test_a_copy_does_not_follow_the_fold() -> None:
    state = fold([event(domain.ProcessingStarted, 0), event(domain.StageStarted, 1)])
    kept = state.copy()
    processing_run.apply(state, Folded(event(domain.ChunkProcessed, 2), 3, 3))
    processing_run.apply(state, Folded(event(domain.ProcessingPaused, 3), 4, 4))
    assert kept.chunks_processed == 0 and kept.status is S.RUNNING
    assert len(kept.transitions) == 1 and state.chunks_processed == 1
