"""Every anomaly kind, from the smallest history that produces it: recorded, and the fold goes on."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from pipeline_events import domain
from pipeline_events.projections import (
    AnomalyKind,
    PipelineStatus,
    ProcessingStatus,
    StageStatus,
    pipeline,
    processing_run,
)
from pipeline_events.projections.base import (
    MAX_ANOMALIES,
    MAX_HISTORY,
    MAX_KEPT_EVENTS,
    MAX_STAGES,
)
from tests.projections.builders import OTHER_PIPELINE, event, numbered, unknown

K = AnomalyKind
started = event(domain.ProcessingStarted, 0)
stage = event(domain.StageStarted, 1)
chunk = event(domain.ChunkProcessed, 2)
stage_done = event(domain.StageCompleted, 3)
paused = event(domain.ProcessingPaused, 4)
resumed = event(domain.ProcessingResumed, 5)
completed = event(domain.ProcessingCompleted, 6)
created = event(domain.PipelineCreated, 0)
deleted = event(domain.PipelineDeleted, 9)

# (history, [(kind, position)]): the anomalies the run's fold must record, exactly.
RUN_CASES: dict[str, tuple[list[Any], list[tuple[K, int]]]] = {
    "a first event that is not the start": (
        [event(domain.MetricsUpdated, 0), started],
        [(K.NOT_STARTED, 1)],
    ),
    "a second start": ([started, stage, started], [(K.DUPLICATE_START, 3)]),
    "a pause while paused": ([started, paused, paused, resumed], [(K.PAUSE_WHILE_PAUSED, 3)]),
    "a resume without a pause": ([started, resumed, paused], [(K.RESUME_WITHOUT_PAUSE, 2)]),
    "anything after the end": (
        [started, completed, chunk, started, completed],
        [(K.AFTER_END, 3), (K.AFTER_END, 4), (K.AFTER_END, 5)],
    ),
    "a resume before its pause": (
        [started, event(domain.ProcessingPaused, 5), event(domain.ProcessingResumed, 4)],
        [(K.TIME_WENT_BACKWARDS, 3)],
    ),
    "a chunk of a stage never started": (
        [started, chunk, event(domain.ChunkProcessed, 2.5)],
        [(K.STAGE_NOT_STARTED, 2)],  # once per stage, not per chunk
    ),
    "the end of a stage never started": ([started, stage_done], [(K.STAGE_NOT_STARTED, 2)]),
    "a stage started twice": ([started, stage, stage, chunk], [(K.STAGE_STARTED_TWICE, 3)]),
    "a stage completed twice": (
        [started, stage, stage_done, stage_done],
        [(K.STAGE_ALREADY_ENDED, 4)],
    ),
    "a stage failing after it completed": (
        [started, stage, stage_done, event(domain.StageFailed, 4)],
        [(K.STAGE_ALREADY_ENDED, 4)],
    ),
    "a stage ending under another id": (
        [started, stage, event(domain.StageCompleted, 3, stage_id=uuid.UUID(int=7))],
        [(K.STAGE_ID_MISMATCH, 3)],
    ),
    "a chunk after its stage ended": (
        [started, stage, stage_done, chunk],
        [(K.CHUNK_AFTER_STAGE_END, 4)],
    ),
    "an event of another pipeline": (
        [started, event(domain.ChunkProcessed, 2, pipeline_id=OTHER_PIPELINE), stage],
        [(K.OTHER_PIPELINE, 2)],
    ),
    "an unknown payload case": ([started, unknown(1), stage], [(K.UNKNOWN_EVENT, 2)]),
    "a stage beyond the most a run keeps": (
        [
            started,
            *(event(domain.StageStarted, 1, stage_name=f"s{n}") for n in range(MAX_STAGES)),
            event(domain.StageStarted, 1, stage_name="one too many"),
            event(domain.ChunkProcessed, 2, stage_name="one too many"),
            event(domain.ChunkProcessed, 2, stage_name="s0"),
        ],
        [(K.TOO_MANY_STAGES, MAX_STAGES + 2), (K.TOO_MANY_STAGES, MAX_STAGES + 3)],
    ),
}

PIPELINE_CASES: dict[str, tuple[list[Any], list[tuple[K, int]]]] = {
    "a first event that is not the creation": ([started, created], [(K.NOT_CREATED, 1)]),
    "a second creation": (
        [created, event(domain.PipelineCreated, 1, pipeline_name="again")],
        [(K.DUPLICATE_CREATE, 2)],
    ),
    "anything after the deletion": (
        [created, deleted, started, created, event(domain.PipelineUpdated, 10)],
        [(K.AFTER_DELETE, 3), (K.AFTER_DELETE, 4), (K.AFTER_DELETE, 5)],
    ),
    "a run started twice": ([created, started, started], [(K.DUPLICATE_RUN_START, 3)]),
    "a run ending that never started": ([created, completed], [(K.RUN_NOT_STARTED, 2)]),
    "a run ending twice": (
        [created, started, completed, event(domain.ProcessingCancelled, 7)],
        [(K.RUN_ALREADY_ENDED, 4)],
    ),
    "an event of another pipeline": (
        [created, event(domain.PipelineUpdated, 1, pipeline_id=OTHER_PIPELINE)],
        [(K.OTHER_PIPELINE, 2)],
    ),
    "an unknown payload case": ([created, unknown(1)], [(K.UNKNOWN_EVENT, 2)]),
}


def fold_run(events: list[Any]) -> processing_run.ProcessingRunState:
    state = None
    for recorded in numbered(events):
        state = processing_run.apply(state, recorded)
    assert state is not None
    return state


def fold_pipeline(events: list[Any]) -> pipeline.PipelineState:
    state = None
    for recorded in numbered(events):
        state = pipeline.apply(state, recorded)
    assert state is not None
    return state


@pytest.mark.parametrize("case", RUN_CASES)
def test_the_run_fold_records_the_anomaly_and_goes_on(case: str) -> None:
    events, expected = RUN_CASES[case]
    state = fold_run(events)
    assert [(a.kind, a.position) for a in state.anomalies] == expected
    for anomaly in state.anomalies:
        assert anomaly.event_type == numbered(events)[anomaly.position - 1].event.event_type
        assert anomaly.description.startswith(f"{anomaly.kind}: ")
    assert state.last_position == len(events)


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_the_pipeline_fold_records_the_anomaly_and_goes_on(case: str) -> None:
    events, expected = PIPELINE_CASES[case]
    state = fold_pipeline(events)
    assert [(a.kind, a.position) for a in state.anomalies] == expected
    for anomaly in state.anomalies:
        assert anomaly.event_type == numbered(events)[anomaly.position - 1].event.event_type
    assert state.last_position == len(events)


def test_every_anomaly_kind_has_a_case() -> None:
    seen = {
        kind
        for _, expected in [*RUN_CASES.values(), *PIPELINE_CASES.values()]
        for kind, _ in expected
    }
    assert seen == set(AnomalyKind)


def test_what_the_fold_kept_after_the_anomalies() -> None:
    # Ignored events change nothing; applied-but-flagged ones keep their data.
    assert fold_run(RUN_CASES["anything after the end"][0]).chunks_processed == 0
    late = fold_run(RUN_CASES["a first event that is not the start"][0])
    assert (late.status, late.input_path) == (ProcessingStatus.RUNNING, "/in/a.csv")
    assert late.metrics is not None and late.metrics.bytes_processed == 2048
    twice = fold_run(RUN_CASES["a pause while paused"][0])
    assert (twice.pause_count, twice.paused_ns) == (1, 1_000_000_000)  # from the first pause
    backwards = fold_run(RUN_CASES["a resume before its pause"][0])
    assert (backwards.status, backwards.paused_ns) == (ProcessingStatus.RUNNING, 0)
    unstarted = fold_run(RUN_CASES["a chunk of a stage never started"][0])
    assert unstarted.stages["compress"].status is StageStatus.NOT_STARTED
    assert unstarted.chunks_processed == 2
    after = fold_run(RUN_CASES["a chunk after its stage ended"][0])
    assert after.stages["compress"].chunks_processed == 1
    assert after.stages["compress"].bytes_processed == 4096  # StageCompleted's figure stays
    assert fold_run(RUN_CASES["an event of another pipeline"][0]).chunks_processed == 0

    resurrected = fold_pipeline(PIPELINE_CASES["anything after the deletion"][0])
    assert resurrected.status is PipelineStatus.DELETED
    assert (resurrected.runs_started, resurrected.history) == (0, [])
    unseen = fold_pipeline(PIPELINE_CASES["a run ending that never started"][0])
    assert (unseen.runs_started, unseen.runs_completed) == (0, 1)
    assert unseen.runs == {completed.processing_id: ProcessingStatus.COMPLETED}
    ended = fold_pipeline(PIPELINE_CASES["a run ending twice"][0])
    assert (ended.runs_completed, ended.runs_cancelled) == (1, 0)


# --- what grows with the log is bounded; the counts cover everything ------------------------


def test_a_run_keeps_its_first_anomalies_and_counts_them_all() -> None:
    after_end = [event(domain.ChunkProcessed, 7)] * (MAX_ANOMALIES + 50)
    state = fold_run([started, completed, *after_end])
    assert state.anomaly_count == MAX_ANOMALIES + 50
    assert [a.position for a in state.anomalies] == list(range(3, 3 + MAX_ANOMALIES))
    assert state.events_folded == 2 + MAX_ANOMALIES + 50


def test_a_run_keeps_its_latest_violations_and_exhaustions_and_counts_them_all() -> None:
    violations = [
        event(domain.SecurityViolation, 1 + n / 1000, description=f"attempt {n}") for n in range(25)
    ]
    exhaustions = [
        event(domain.ResourceExhausted, 2 + n / 1000) for n in range(MAX_KEPT_EVENTS + 1)
    ]
    state = fold_run([started, *violations, *exhaustions])
    assert (state.security_violations, state.resource_exhaustions) == (25, MAX_KEPT_EVENTS + 1)
    assert [v.description for v in state.violations] == [
        f"attempt {n}" for n in range(25 - MAX_KEPT_EVENTS, 25)
    ]
    assert state.exhaustions == exhaustions[1:]


def test_a_pipeline_keeps_its_latest_changes_and_counts_them_all() -> None:
    updates = [
        event(domain.PipelineUpdated, 1 + n / 1000, changes=(f"change {n}",))
        for n in range(MAX_HISTORY + 5)
    ]
    state = fold_pipeline([created, *updates])
    assert state.update_count == MAX_HISTORY + 5
    assert state.changes == [f"change {n}" for n in range(5, MAX_HISTORY + 5)]
    assert [change.position for change in state.history] == list(range(7, MAX_HISTORY + 7))
