"""Properties of the folds on generated logs: valid lifecycles fold to their story, and on any log
(broken or chaotic too) the invariants hold: terminal stays terminal, deleted stays deleted,
chunk counts match the ChunkProcessed events, paused time is the sum of the pause intervals,
no event is lost from the counts, every anomaly names its position, live == rebuilt, and
snapshot + tail == full fold."""

from __future__ import annotations

import collections
import dataclasses
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_events import domain
from pipeline_events.projections import (
    AnomalyKind,
    Folded,
    PipelineState,
    PipelineStatus,
    ProcessingRunState,
    ProcessingStatus,
    Replayed,
    pipeline,
    processing_run,
    replay,
)
from pipeline_events.projections.base import MAX_ANOMALIES, MAX_KEPT_EVENTS
from pipeline_events.timestamps import NanoDatetime
from tests.projections.builders import numbered
from tests.projections.histories import History, broken_logs, chaotic_logs, histories

# Derandomized: the same examples on every run (for the same modules imported: Hypothesis
# also draws literals from the code under test). About 8 s in all on a 2-core machine.
PROPERTY = settings(
    derandomize=True,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MANY = settings(PROPERTY, max_examples=400)
ANY_LOG = st.one_of(histories().map(lambda h: h.events), broken_logs(), chaotic_logs())
DROPPED = {AnomalyKind.AFTER_END, AnomalyKind.OTHER_PIPELINE}  # events a run did not apply
S = ProcessingStatus


@PROPERTY
@given(histories())
def test_a_valid_lifecycle_folds_to_its_story(history: History) -> None:
    folded = numbered(history.events)
    replayed = replay(folded)
    assert replayed.anomalies == []
    last_position = {}
    for recorded in folded:
        last_position[getattr(recorded.event, "processing_id", None)] = recorded.position
        last_position[recorded.event.pipeline_id] = recorded.position
    for story in history.pipelines:
        state = replayed.pipelines[story.pipeline_id]
        expected_status = PipelineStatus.DELETED if story.deleted else PipelineStatus.ACTIVE
        assert (state.status, state.pipeline_name, state.changes) == (
            expected_status,
            story.name,
            story.changes,
        )
        outcomes = collections.Counter(run.status for run in story.runs)
        assert (state.runs_started, state.runs_completed) == (
            len(story.runs),
            outcomes[S.COMPLETED],
        )
        assert (state.runs_failed, state.runs_cancelled) == (
            outcomes[S.FAILED],
            outcomes[S.CANCELLED],
        )
        assert set(state.active_processing_ids) == {
            run.processing_id for run in story.runs if not run.status.is_terminal
        }
        assert state.security_violations == story.violations
        assert (state.created_at, state.updated_at) == (
            story.events[0].occurred_at,
            story.events[-1].occurred_at,
        )
        assert (state.revision, state.events_folded) == (len(story.events), len(story.events))
        assert state.last_position == last_position[story.pipeline_id]
        for run_story in story.runs:
            run = replayed.runs[run_story.processing_id]
            assert run.status is run_story.status
            assert {name: s.chunks_processed for name, s in run.stages.items()} == run_story.chunks
            assert {name: s.status for name, s in run.stages.items()} == run_story.stages
            assert (run.pause_count, run.resume_count, run.paused_ns) == (
                run_story.pauses,
                run_story.resumes,
                run_story.paused_ns,
            )
            assert (run.resource_exhaustions, run.security_violations) == (
                run_story.exhaustions,
                run_story.violations,
            )
            assert run.failed_stage == run_story.failed_stage
            assert run.started_at == run_story.events[0].occurred_at
            assert run.events_folded == len(run_story.events)
            assert run.last_position == last_position[run_story.processing_id]


def _ns(value: Any) -> int:
    return NanoDatetime.from_datetime(value).epoch_ns


def _run_data(state: ProcessingRunState) -> ProcessingRunState:
    """A run without what every folded event may touch (bookkeeping, anomalies, violations)."""
    return dataclasses.replace(
        state.copy(), last_position=0, revision=0, events_folded=0, anomalies=[], violations=[],
        anomaly_count=0, security_violations=0,
    )  # fmt: skip


def _pipeline_data(state: PipelineState) -> PipelineState:
    return dataclasses.replace(
        state.copy(), last_position=0, revision=0, events_folded=0, anomalies=[], updated_at=None,
        anomaly_count=0,
    )  # fmt: skip


def _live(folded: list[Folded]) -> Replayed:
    """Fold event by event with each read model's own apply, checking what must never change."""
    pipelines: dict[uuid.UUID, PipelineState] = {}
    runs: dict[uuid.UUID, ProcessingRunState] = {}
    ended: dict[uuid.UUID, ProcessingRunState] = {}  # runs as they were when they ended
    deleted: dict[uuid.UUID, PipelineState] = {}
    for recorded in folded:
        event = recorded.event
        state = pipelines[event.pipeline_id] = pipeline.apply(
            pipelines.get(event.pipeline_id), recorded
        )
        if event.pipeline_id in deleted:
            assert _pipeline_data(state) == deleted[event.pipeline_id]  # not a resurrection
        elif state.status is PipelineStatus.DELETED:
            deleted[event.pipeline_id] = _pipeline_data(state)
        processing_id = getattr(event, "processing_id", None)
        if processing_id is None:
            continue
        run = runs[processing_id] = processing_run.apply(runs.get(processing_id), recorded)
        if processing_id in ended:
            assert _run_data(run) == ended[processing_id]  # terminal stays terminal
        elif run.status.is_terminal:
            ended[processing_id] = _run_data(run)
    return Replayed(
        pipelines=pipelines, runs=runs, last_position=len(folded), events_folded=len(folded)
    )


def _check_invariants(folded: list[Folded], replayed: Replayed) -> None:
    by_run: dict[uuid.UUID, list[Folded]] = collections.defaultdict(list)
    by_pipeline: collections.Counter[uuid.UUID] = collections.Counter()
    for recorded in folded:
        by_pipeline[recorded.event.pipeline_id] += 1
        processing_id = getattr(recorded.event, "processing_id", None)
        if processing_id is not None:
            by_run[processing_id].append(recorded)
    # No event is lost from the counts.
    assert replayed.events_folded == len(folded)
    assert set(replayed.runs) == set(by_run) and set(replayed.pipelines) == set(by_pipeline)
    for pipeline_id, state in replayed.pipelines.items():
        assert state.events_folded == by_pipeline[pipeline_id]
        outcomes = collections.Counter(state.runs.values())
        not_started = sum(a.kind is AnomalyKind.RUN_NOT_STARTED for a in state.anomalies)
        assert len(state.runs) == state.runs_started + not_started
        assert len(state.anomalies) == min(state.anomaly_count, MAX_ANOMALIES)
        assert (state.runs_completed, state.runs_failed, state.runs_cancelled) == (
            outcomes[S.COMPLETED],
            outcomes[S.FAILED],
            outcomes[S.CANCELLED],
        )
    for processing_id, run in replayed.runs.items():
        events = by_run[processing_id]
        foreign = sum(a.kind is AnomalyKind.OTHER_PIPELINE for a in run.anomalies)
        assert run.events_folded + foreign == len(events)
        # Chunk counts match the ChunkProcessed events the run applied.
        dropped = {a.position for a in run.anomalies if a.kind in DROPPED}
        chunks = collections.Counter(
            r.event.stage_name
            for r in events
            if type(r.event) is domain.ChunkProcessed and r.position not in dropped
        )
        assert {
            n: s.chunks_processed for n, s in run.stages.items() if s.chunks_processed
        } == chunks
        assert run.chunks_processed == chunks.total()
        # Violations (recorded even after the end) and exhaustions: every one counted, the
        # latest kept.
        for cls, count, kept in (
            (domain.SecurityViolation, run.security_violations, run.violations),
            (domain.ResourceExhausted, run.resource_exhaustions, run.exhaustions),
        ):
            applied = [
                r.event for r in events if type(r.event) is cls and r.position not in dropped
            ]
            assert count == len(applied) and kept == applied[-MAX_KEPT_EVENTS:]
        assert len(run.anomalies) == min(run.anomaly_count, MAX_ANOMALIES)
        # Paused time is the sum of the pause intervals its transitions record.
        intervals = [
            _ns(b.occurred_at) - _ns(a.occurred_at)
            for a, b in zip(run.transitions, run.transitions[1:], strict=False)
            if a.status is S.PAUSED
        ]
        assert run.paused_ns == sum(max(0, gap) for gap in intervals)
        backwards = sum(a.kind is AnomalyKind.TIME_WENT_BACKWARDS for a in run.anomalies)
        assert backwards == sum(gap < 0 for gap in intervals)
        assert run.pause_count == sum(t.status is S.PAUSED for t in run.transitions)
        assert (run.paused_since is not None) == (run.status is S.PAUSED)
        assert run.status is (run.transitions[-1].status if run.transitions else S.NOT_STARTED)
    # Every anomaly names its position, and the event there.
    for anomaly in replayed.anomalies:
        assert 1 <= anomaly.position <= len(folded)
        assert folded[anomaly.position - 1].event.event_type == anomaly.event_type
        assert anomaly.description.startswith(f"{anomaly.kind.value}: ")


@MANY
@given(ANY_LOG)
def test_the_invariants_hold_on_any_log(log: list[Any]) -> None:
    folded = numbered(log)
    rebuilt = replay(folded)
    assert _live(folded) == rebuilt  # live (event by event) == rebuilt (replay)
    _check_invariants(folded, rebuilt)
    assert replay(log) == rebuilt  # bare events are numbered as a store would


@settings(PROPERTY, max_examples=300)
@given(ANY_LOG, st.data())
def test_a_snapshot_and_the_tail_fold_to_the_full_state(
    log: list[Any], data: st.DataObject
) -> None:
    folded = numbered(log)
    split = data.draw(st.integers(0, len(folded)), label="split")
    head = replay(folded[:split])
    saved = head.to_bytes()
    restored = Replayed.from_bytes(saved)
    assert restored == head and restored.to_bytes() == saved  # deterministic
    assert replay(folded[split:], start=restored) == replay(folded)
    for run in head.runs.values():  # each read model's own snapshot, too
        assert ProcessingRunState.from_bytes(run.to_bytes()) == run
