"""The pipeline read model: one pipeline's definition, history and runs, folded from its events.

Events after PipelineDeleted are anomalies, not a resurrection: the state
keeps what it was at the deletion. Like the run fold (see
`projections.processing_run` for why), the state is mutable and owned by the
fold: `apply(state, recorded)` updates it in place and returns it, depending on
nothing but (state, event); `state.copy()` keeps a version.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline_events import domain
from pipeline_events.projections import snapshot
from pipeline_events.projections.base import (
    MAX_HISTORY,
    Anomaly,
    AnomalyKind,
    Folded,
    handler_for,
    keep_latest,
    note,
    same_id,
)
from pipeline_events.projections.processing_run import ProcessingStatus

__all__ = ["PipelineChange", "PipelineState", "PipelineStatus", "apply"]


class PipelineStatus(enum.IntEnum):
    """Where a pipeline is in its life; the values are state.proto's `PipelineStatus`."""

    NOT_CREATED = 0  # state.proto's _UNSPECIFIED: no PipelineCreated folded (yet)
    ACTIVE = 1
    DELETED = 2


@dataclass(frozen=True, slots=True)
class PipelineChange:
    """One PipelineUpdated: what changed, who changed it, when, and where in the log."""

    position: int
    revision: int
    occurred_at: datetime
    changes: tuple[str, ...]
    updated_by: str | None


@dataclass(slots=True, kw_only=True)
class PipelineState(snapshot.Snapshots):
    """One pipeline (state.proto's `PipelineState`, plus what issue 11 adds).

    `runs` holds every run id seen, in the order first seen, with RUNNING while
    the run is active (started, paused or not, and not ended) or its outcome.
    """

    pipeline_id: uuid.UUID
    pipeline_name: str = ""
    stage_count: int = 0
    status: PipelineStatus = PipelineStatus.NOT_CREATED
    created_by: str | None = None
    history: list[PipelineChange] = field(default_factory=list)  # the latest MAX_HISTORY
    update_count: int = 0  # every PipelineUpdated
    runs: dict[uuid.UUID, ProcessingStatus] = field(default_factory=dict)
    runs_started: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    runs_cancelled: int = 0
    security_violations: int = 0
    created_at: datetime | None = None  # occurred_at of the first event (state.proto)
    updated_at: datetime | None = None  # occurred_at of the latest event (state.proto)
    revision: int = 0  # revision of the latest event folded
    # Beyond state.proto.
    deleted_by: str | None = None
    deleted_at: datetime | None = None
    last_position: int = 0  # global position of the latest event folded (anomalies too)
    events_folded: int = 0  # events of this pipeline folded, anomalies included
    anomalies: list[Anomaly] = field(default_factory=list)  # the first MAX_ANOMALIES
    anomaly_count: int = 0  # every anomaly

    @property
    def changes(self) -> list[str]:
        """The kept changes' descriptions, oldest first (state.proto's `changes`)."""
        return [change for update in self.history for change in update.changes]

    @property
    def last_change(self) -> PipelineChange | None:
        """The latest PipelineUpdated: who updated the pipeline last, and when."""
        return self.history[-1] if self.history else None

    @property
    def processing_ids(self) -> list[uuid.UUID]:
        """Every run id seen, in the order first seen."""
        return list(self.runs)

    @property
    def active_processing_ids(self) -> list[uuid.UUID]:
        """Runs started and not ended (state.proto's `active_processing_ids`)."""
        return [run for run, status in self.runs.items() if status is ProcessingStatus.RUNNING]

    def copy(self) -> PipelineState:
        """An independent copy (the records inside are immutable and shared)."""
        return dataclasses.replace(
            self, history=list(self.history), runs=dict(self.runs), anomalies=list(self.anomalies)
        )


Handler = Callable[[PipelineState, Any, Folded], None]

_NOT_CREATED = PipelineStatus.NOT_CREATED
_DELETED = PipelineStatus.DELETED
_RUNNING = ProcessingStatus.RUNNING


def apply(state: PipelineState | None, recorded: Folded) -> PipelineState:
    """Fold one event into a pipeline's state (updated in place and returned; None begins one)."""
    event = recorded.event
    if state is None:
        state = PipelineState(pipeline_id=event.pipeline_id)
    state.last_position = recorded.position
    if not same_id(event.pipeline_id, state.pipeline_id):
        _note(state, AnomalyKind.OTHER_PIPELINE, recorded, f"of pipeline {event.pipeline_id}")
        return state
    state.events_folded += 1
    state.revision = recorded.revision
    if state.created_at is None:
        state.created_at = event.occurred_at
    state.updated_at = event.occurred_at
    if state.status is _DELETED:
        _note(state, AnomalyKind.AFTER_DELETE, recorded, f"deleted at {state.deleted_at}")
        return state
    handler = handler_for(_HANDLERS, type(event))
    if state.events_folded == 1 and handler is not _created:
        _note(state, AnomalyKind.NOT_CREATED, recorded, "the pipeline's first event")
    if handler is None:
        _note(state, AnomalyKind.UNKNOWN_EVENT, recorded, "a payload this schema does not know")
        return state
    handler(state, event, recorded)
    return state


_note = note


def _created(state: PipelineState, event: domain.PipelineCreated, recorded: Folded) -> None:
    if state.status is not _NOT_CREATED:
        _note(state, AnomalyKind.DUPLICATE_CREATE, recorded, f"name {event.pipeline_name!r}")
        return
    state.status = PipelineStatus.ACTIVE
    state.pipeline_name = event.pipeline_name
    state.stage_count = event.stage_count
    state.created_by = event.created_by


def _updated(state: PipelineState, event: domain.PipelineUpdated, recorded: Folded) -> None:
    state.update_count += 1
    change = PipelineChange(
        recorded.position, recorded.revision, event.occurred_at, event.changes, event.updated_by
    )
    keep_latest(state.history, change, MAX_HISTORY)


def _deleted(state: PipelineState, event: domain.PipelineDeleted, recorded: Folded) -> None:
    state.status = _DELETED
    state.deleted_by = event.deleted_by
    state.deleted_at = event.occurred_at


def _run_started(state: PipelineState, event: domain.ProcessingStarted, recorded: Folded) -> None:
    if event.processing_id in state.runs:
        _note(state, AnomalyKind.DUPLICATE_RUN_START, recorded, f"run {event.processing_id}")
        return
    state.runs[event.processing_id] = _RUNNING
    state.runs_started += 1


def _run_ended(outcome: ProcessingStatus, counter: str) -> Handler:
    def ended(state: PipelineState, event: Any, recorded: Folded) -> None:
        run = event.processing_id
        current = state.runs.get(run)
        if current is None:  # its start is not in this log: the outcome still counts
            _note(state, AnomalyKind.RUN_NOT_STARTED, recorded, f"run {run}")
        elif current is not _RUNNING:
            _note(
                state,
                AnomalyKind.RUN_ALREADY_ENDED,
                recorded,
                f"run {run} is {current.name.lower()}",
            )
            return
        state.runs[run] = outcome
        setattr(state, counter, getattr(state, counter) + 1)

    return ended


def _violation(state: PipelineState, event: domain.SecurityViolation, recorded: Folded) -> None:
    state.security_violations += 1


def _nothing(state: PipelineState, event: Any, recorded: Folded) -> None:
    """Run-level detail (stages, chunks, metrics, pauses): the run's read model keeps it."""


_HANDLERS: dict[type, Handler] = {
    domain.PipelineCreated: _created,
    domain.PipelineUpdated: _updated,
    domain.PipelineDeleted: _deleted,
    domain.ProcessingStarted: _run_started,
    domain.ProcessingCompleted: _run_ended(ProcessingStatus.COMPLETED, "runs_completed"),
    domain.ProcessingFailed: _run_ended(ProcessingStatus.FAILED, "runs_failed"),
    domain.ProcessingCancelled: _run_ended(ProcessingStatus.CANCELLED, "runs_cancelled"),
    domain.SecurityViolation: _violation,
    **{
        cls: _nothing
        for cls in (
            domain.ProcessingPaused,
            domain.ProcessingResumed,
            domain.StageStarted,
            domain.StageCompleted,
            domain.StageFailed,
            domain.ChunkProcessed,
            domain.MetricsUpdated,
            domain.ResourceExhausted,
        )
    },
}
