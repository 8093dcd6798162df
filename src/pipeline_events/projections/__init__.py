"""Read models folded from the event log: pure folds, one module per read model.

- `pipeline.apply(state, recorded)`: a pipeline (`PipelineState`);
- `processing_run.apply(state, recorded)`: a processing run (`ProcessingRunState`);
- `replay(events)`: every pipeline's and run's state from an iterable of events
  (a store's pages, a client's reads, or bare domain events such as a file of
  upstream Rust JSON decoded with `pipeline_events.codecs.rust_json`).

Anomalies (an event the lifecycle does not allow) are recorded on the states,
never raised. States are mutable and owned by the fold (see
`processing_run` for why); every state has `copy()`, `to_bytes()` and
`from_bytes()` (snapshots, refused across `FOLD_VERSION`s).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import domain
from pipeline_events.projections import messages, pipeline, processing_run, snapshot
from pipeline_events.projections.base import (
    FOLD_VERSION,
    Anomaly,
    AnomalyKind,
    Folded,
    SnapshotError,
)
from pipeline_events.projections.pipeline import PipelineChange, PipelineState, PipelineStatus
from pipeline_events.projections.processing_run import (
    ProcessingRunState,
    ProcessingStatus,
    RunSummary,
    StageState,
    StageStatus,
    Transition,
)

if TYPE_CHECKING:
    from pipeline_events.client import RecordedEvent as ClientRecordedEvent

__all__ = [
    "FOLD_VERSION",
    "Anomaly",
    "AnomalyKind",
    "Folded",
    "PipelineChange",
    "PipelineState",
    "PipelineStatus",
    "ProcessingRunState",
    "ProcessingStatus",
    "Replayable",
    "Replayed",
    "RunSummary",
    "SnapshotError",
    "StageState",
    "StageStatus",
    "Transition",
    "apply",
    "messages",
    "pipeline",
    "processing_run",
    "replay",
]

#: What `replay` folds: a Folded; a stored event (`pipeline_events.store.RecordedEvent`)
#: or a client's (`pipeline_events.client.RecordedEvent`); or a bare domain event.
Replayable: TypeAlias = (
    "Folded | envelope_pb2.RecordedEvent | ClientRecordedEvent | domain.Event | domain.UnknownEvent"
)


@dataclass(slots=True, kw_only=True)
class Replayed:
    """Every pipeline's and run's state folded from a log, by id (in the order first seen)."""

    pipelines: dict[uuid.UUID, PipelineState] = field(default_factory=dict)
    runs: dict[uuid.UUID, ProcessingRunState] = field(default_factory=dict)
    last_position: int = 0  # global position of the latest event folded
    events_folded: int = 0

    @property
    def anomalies(self) -> list[Anomaly]:
        """Every state's anomalies, by position (pipelines' first where both have one)."""
        found = [a for p in self.pipelines.values() for a in p.anomalies]
        found += [a for r in self.runs.values() for a in r.anomalies]
        return sorted(found, key=lambda anomaly: anomaly.position)

    def copy(self) -> Replayed:
        """An independent copy."""
        return dataclasses.replace(
            self,
            pipelines={k: state.copy() for k, state in self.pipelines.items()},
            runs={k: state.copy() for k, state in self.runs.items()},
        )

    def to_bytes(self) -> bytes:
        """A snapshot of every state (see `projections.snapshot`)."""
        return snapshot.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Replayed:
        """The states of a snapshot.

        Raises:
            SnapshotError: another fold version's snapshot, or damaged bytes.
        """
        return snapshot.decode(data, cls)


def _as_folded(item: Any) -> Folded:
    if isinstance(item, Folded):
        return item
    if isinstance(item, domain.Event | domain.UnknownEvent):
        return Folded(item)
    if isinstance(item, envelope_pb2.RecordedEvent):
        return Folded.from_proto(item)
    if hasattr(item, "envelope") and hasattr(item, "global_position"):
        return Folded.from_client(item)  # duck-typed: the client needs the grpc extra
    raise TypeError(f"cannot fold a {type(item).__name__}")


def apply(replayed: Replayed | None, item: Replayable) -> Replayed:
    """Fold one event into every state it concerns (updated in place; None begins afresh).

    The event goes to its pipeline's state, and to its run's if it has a
    processing id. An event without a position (a bare event, or a Folded with
    position 0) is numbered as a store would have: the next global position,
    and the next revision of its pipeline.

    Raises:
        DecodeError: a stored or client event's envelope breaks the schema.
        TypeError: `item` is none of the `Replayable` types.
    """
    if replayed is None:
        replayed = Replayed()
    recorded = item if type(item) is Folded else _as_folded(item)
    event = recorded.event
    pipeline_id = event.pipeline_id
    state = replayed.pipelines.get(pipeline_id)
    if recorded.position <= 0:
        revision = 1 if state is None else state.revision + 1
        recorded = Folded(event, replayed.last_position + 1, revision, recorded.recorded_at)
    if state is None:
        replayed.pipelines[pipeline_id] = pipeline.apply(None, recorded)
    else:
        pipeline.apply(state, recorded)
    processing_id = getattr(event, "processing_id", None)
    if processing_id is not None:
        run = replayed.runs.get(processing_id)
        if run is None:
            replayed.runs[processing_id] = processing_run.apply(None, recorded)
        else:
            processing_run.apply(run, recorded)
    replayed.last_position = recorded.position
    replayed.events_folded += 1
    return replayed


def replay(events: Iterable[Replayable], start: Replayed | None = None) -> Replayed:
    """Every pipeline's and run's state from `events`, in log order.

    Args:
        events: the log, or its tail after `start`.
        start: states to continue from (e.g. `Replayed.from_bytes(snapshot)`); it is
            updated in place and returned.

    Raises:
        DecodeError: a stored or client event's envelope breaks the schema.
        TypeError: an item is none of the `Replayable` types.
    """
    replayed = Replayed() if start is None else start
    for item in events:
        apply(replayed, item)
    return replayed
