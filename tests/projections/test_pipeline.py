"""The pipeline fold on hand-written histories: definition, history, runs by outcome, deletion."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline_events import domain
from pipeline_events.projections import (
    Folded,
    PipelineChange,
    PipelineState,
    PipelineStatus,
    ProcessingStatus,
    pipeline,
)
from tests.projections.builders import PIPELINE, at, event, numbered

RUNS = [uuid.UUID(int=0x100 + i) for i in range(5)]


def fold(events: list[Any]) -> PipelineState:
    state = None
    for recorded in numbered(events):
        state = pipeline.apply(state, recorded)
    assert state is not None
    return state


def life() -> list[Any]:
    a, b, c, d, e = RUNS
    return [
        event(domain.PipelineCreated, 0, pipeline_name="ingest-1", stage_count=4),
        event(domain.PipelineUpdated, 1, changes=("chunk size 1 MiB", "aes-256-gcm")),
        event(domain.ProcessingStarted, 2, processing_id=a),
        event(domain.ProcessingStarted, 3, processing_id=b),
        event(domain.ChunkProcessed, 3.5, processing_id=a),
        event(domain.ProcessingCompleted, 4, processing_id=a),
        event(domain.ProcessingStarted, 5, processing_id=c),
        event(domain.ProcessingFailed, 6, processing_id=b),
        event(domain.ProcessingStarted, 7, processing_id=d),
        event(domain.ProcessingCancelled, 8, processing_id=c),
        event(domain.SecurityViolation, 9, processing_id=None),
        event(domain.SecurityViolation, 9.5, processing_id=a),
        event(domain.ProcessingStarted, 10, processing_id=e),
        event(domain.ProcessingPaused, 10.5, processing_id=e),
        event(domain.PipelineUpdated, 11, changes=("stage count 5",), updated_by="dave"),
    ]


def test_a_pipelines_life() -> None:
    state = fold(life())
    assert (state.pipeline_id, state.pipeline_name, state.stage_count, state.status) == (
        PIPELINE,
        "ingest-1",
        4,
        PipelineStatus.ACTIVE,
    )
    assert (state.created_by, state.created_at, state.updated_at) == ("alice", at(0), at(11))
    assert state.changes == ["chunk size 1 MiB", "aes-256-gcm", "stage count 5"]
    assert state.history == [
        PipelineChange(2, 2, at(1), ("chunk size 1 MiB", "aes-256-gcm"), "bob"),
        PipelineChange(15, 15, at(11), ("stage count 5",), "dave"),
    ]
    last = state.last_change
    assert last is not None and (last.updated_by, last.occurred_at) == ("dave", at(11))
    assert (state.runs_started, state.runs_completed, state.runs_failed) == (5, 1, 1)
    assert (state.runs_cancelled, state.security_violations) == (1, 2)
    assert state.processing_ids == RUNS
    assert state.active_processing_ids == [RUNS[3], RUNS[4]]  # a paused run is active
    assert state.runs[RUNS[1]] is ProcessingStatus.FAILED
    assert (state.revision, state.last_position, state.events_folded) == (15, 15, 15)
    assert (state.deleted_by, state.deleted_at, state.anomalies) == (None, None, [])


def test_deletion_is_final() -> None:
    state = fold([*life(), event(domain.PipelineDeleted, 12)])
    assert (state.status, state.deleted_by, state.deleted_at) == (
        PipelineStatus.DELETED,
        "carol",
        at(12),
    )
    kept = state.copy()
    for position, late in enumerate(
        [
            event(domain.PipelineCreated, 13, pipeline_name="reborn"),
            event(domain.ProcessingCompleted, 14, processing_id=RUNS[3]),
            event(domain.SecurityViolation, 15),
        ],
        start=17,
    ):
        pipeline.apply(state, Folded(late, position, position))
    # Not a resurrection: everything but the bookkeeping is as at the deletion.
    assert [a.kind for a in state.anomalies] == ["after_delete"] * 3
    assert (state.last_position, state.revision, state.updated_at) == (19, 19, at(15))
    state.anomalies, state.last_position, state.revision = kept.anomalies, 16, 16
    state.events_folded, state.updated_at = kept.events_folded, kept.updated_at
    assert state.anomaly_count == kept.anomaly_count + 3
    state.anomaly_count = kept.anomaly_count
    assert state == kept


def test_a_snapshot_brings_back_the_same_state() -> None:
    state = fold([*life(), event(domain.PipelineDeleted, 12)])
    assert PipelineState.from_bytes(state.to_bytes()) == state
