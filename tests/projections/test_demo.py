"""The demo's runs fold to what its story says, and a SQLite store gives back the same states."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from pipeline_events import adapter, demo, domain
from pipeline_events.projections import (
    Folded,
    PipelineStatus,
    ProcessingRunState,
    ProcessingStatus,
    Replayed,
    StageStatus,
    processing_run,
    replay,
)
from pipeline_events.store import SQLiteEventStore

PIPELINES, RUNS = 4, 8
S = ProcessingStatus
STAGE_NAMES = [name for name, _ in demo.STAGES]


@pytest.fixture(scope="module")
def logs() -> list[list[domain.Event]]:
    return list(demo.simulate(PIPELINES, RUNS, seed=11))


@pytest.fixture(scope="module")
def replayed(logs: list[list[domain.Event]]) -> Replayed:
    return replay(e for log in logs for e in log)


def the_runs(log: list[domain.Event], replayed: Replayed) -> list[ProcessingRunState]:
    """The pipeline's runs, in the order the demo ran them."""
    return [replayed.runs[e.processing_id] for e in log if type(e) is domain.ProcessingStarted]


def only(log: list[domain.Event], cls: type, run: ProcessingRunState) -> domain.Event:
    (found,) = [e for e in log if type(e) is cls and e.processing_id == run.processing_id]
    return found


def test_the_demo_log_has_no_anomalies(replayed: Replayed) -> None:
    assert replayed.anomalies == []
    assert len(replayed.pipelines) == PIPELINES and len(replayed.runs) == PIPELINES * RUNS


def test_each_run_ends_as_its_story_says(
    logs: list[list[domain.Event]], replayed: Replayed
) -> None:
    for log in logs:
        for number, run in enumerate(the_runs(log, replayed)):
            outcome = demo.OUTCOMES[number % len(demo.OUTCOMES)]
            chunks = run.file_size // demo.CHUNK
            assert run.security_violations == (number % 3 == 2)
            assert run.security_context is not None
            assert run.security_context.security_level is domain.SecurityLevel.CONFIDENTIAL
            if outcome in ("completed", "paused_then_completed"):
                assert run.status is S.COMPLETED
                assert list(run.stages) == STAGE_NAMES
                assert all(s.status is StageStatus.COMPLETED for s in run.stages.values())
                assert all(s.chunks_processed == chunks for s in run.stages.values())
                assert all(s.bytes_processed == run.file_size for s in run.stages.values())
                assert run.output_size == run.file_size // 3
                done = only(log, domain.ProcessingCompleted, run)
                assert run.metrics == done.metrics and run.ended_at == done.occurred_at
            if outcome == "completed":
                assert (run.pause_count, run.paused_ns, run.resource_exhaustions) == (0, 0, 1)
            elif outcome == "paused_then_completed":
                paused = only(log, domain.ProcessingPaused, run)
                resumed = only(log, domain.ProcessingResumed, run)
                assert (run.pause_count, run.resume_count) == (1, 1)
                assert run.paused_ns == resumed.occurred_at.epoch_ns - paused.occurred_at.epoch_ns
                assert run.paused_ns > 0
                assert [t.status for t in run.transitions] == [
                    S.RUNNING,
                    S.PAUSED,
                    S.RUNNING,
                    S.COMPLETED,
                ]
            elif outcome == "failed":
                failed = only(log, domain.ProcessingFailed, run)
                assert (run.status, run.error_code, run.failed_stage) == (
                    S.FAILED,
                    "E_STAGE",
                    failed.stage_name,
                )
                stage = run.stages[failed.stage_name]
                assert (stage.status, stage.error_code, stage.error_message) == (
                    StageStatus.FAILED,
                    "E_KEY",
                    "key material unavailable",
                )
                assert stage.chunks_processed == 2  # it failed on its second chunk
                assert list(run.stages)[-1] == failed.stage_name
                assert run.metrics == failed.partial_metrics
                assert run.resource_exhaustions == 0
            elif outcome == "cancelled":
                assert (run.status, run.error_message, run.cancelled_by) == (
                    S.CANCELLED,
                    "superseded by a newer file",
                    "bob",
                )
                assert list(run.stages) == STAGE_NAMES[:2]  # cancelled after compression
                assert run.paused_ns == 0


def test_each_pipeline_is_as_its_story_says(
    logs: list[list[domain.Event]], replayed: Replayed
) -> None:
    outcomes = collections.Counter(demo.OUTCOMES[n % len(demo.OUTCOMES)] for n in range(RUNS))
    position = 0  # the log is the pipelines' events one pipeline after the other
    for index, log in enumerate(logs):
        position += len(log)
        state = replayed.pipelines[log[0].pipeline_id]
        assert (state.pipeline_name, state.stage_count, state.created_by) == (
            f"ingest-{index + 1}",
            len(demo.STAGES),
            "alice",
        )
        assert state.changes == ["chunk size 1 MiB", "encryption aes-256-gcm"]
        last = state.last_change
        assert last is not None and last.updated_by == "bob"
        assert (state.runs_started, state.runs_completed) == (
            RUNS,
            outcomes["completed"] + outcomes["paused_then_completed"],
        )
        assert (state.runs_failed, state.runs_cancelled) == (
            outcomes["failed"],
            outcomes["cancelled"],
        )
        assert state.active_processing_ids == []
        assert state.processing_ids == [r.processing_id for r in the_runs(log, replayed)]
        assert state.security_violations == sum(n % 3 == 2 for n in range(RUNS))
        if index == PIPELINES - 1:  # the demo retires its last pipeline
            assert (state.status, state.deleted_by) == (PipelineStatus.DELETED, "alice")
            assert state.deleted_at == log[-1].occurred_at
        else:
            assert (state.status, state.deleted_at) == (PipelineStatus.ACTIVE, None)
        assert (state.revision, state.last_position) == (len(log), position)


async def test_a_sqlite_store_gives_back_the_same_states(
    tmp_path: Path, logs: list[list[domain.Event]], replayed: Replayed
) -> None:
    events = [e for log in logs for e in log]
    stored = []
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        for start in range(0, len(events), 300):
            await store.append([adapter.to_envelope(e) for e in events[start : start + 300]])
        after = 0
        while True:
            page = await store.read_all(after_position=after, limit=250)
            stored.extend(page.events)
            after = page.scanned_to
            if after >= page.head:
                break
    assert len(stored) == len(events)
    rebuilt = replay(stored)
    assert rebuilt == replayed
    assert rebuilt.last_position == len(events)
    # One run on its own, folded live from the same pages.
    run_id = next(iter(replayed.runs))
    state = None
    for recorded in map(Folded.from_proto, stored):
        if getattr(recorded.event, "processing_id", None) == run_id:
            state = processing_run.apply(state, recorded)
    assert state == replayed.runs[run_id]
