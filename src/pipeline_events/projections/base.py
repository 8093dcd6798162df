"""What every fold shares: its input (`Folded`), anomalies, and the fold version."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import adapter, domain
from pipeline_events.errors import PipelineEventsError
from pipeline_events.timestamps import NanoDatetime

if TYPE_CHECKING:  # the client needs the grpc extra; the folds must not
    from pipeline_events.client import RecordedEvent as ClientRecordedEvent

#: The meaning of the folds. Bump it whenever a fold would turn the same events into
#: different states (a new field, a changed rule): snapshots of another version are
#: refused and the states rebuilt from the log.
FOLD_VERSION = 3  # 2: a run's first_position; 3: bounded lists and their counts

# What a state keeps of what grows with its log, so that no log (a hostile one
# included) makes a state outgrow memory or an answer; the counts cover everything.
MAX_ANOMALIES = 100  # the first ones (the first is usually the cause)
MAX_KEPT_EVENTS = 10  # a run's latest ResourceExhausted and SecurityViolation events
MAX_HISTORY = 100  # a pipeline's latest PipelineUpdated changes
MAX_STAGES = 256  # stages of one run; events of stages beyond are anomalies only


class Folded(NamedTuple):
    """One event as a fold takes it: the domain event and where the log holds it.

    A named tuple, as the store's `Position`: one is made per event folded.
    `position` and `revision` are 0 when unknown (a bare event); `replay`
    numbers such events itself.
    """

    event: domain.Event | domain.UnknownEvent
    position: int = 0  # global position in the log
    revision: int = 0  # the event's revision in its pipeline's stream
    recorded_at: datetime | None = None  # when the store recorded it, if known

    @classmethod
    def from_proto(cls, message: envelope_pb2.RecordedEvent) -> Folded:
        """A stored event (`pipeline_events.store.RecordedEvent`, the contract's message).

        Raises:
            DecodeError: the envelope breaks the schema.
        """
        recorded_at = None
        if message.HasField("recorded_at"):
            stamp = message.recorded_at
            recorded_at = NanoDatetime.from_seconds_nanos(stamp.seconds, stamp.nanos)
        return cls(
            adapter.from_envelope(message.envelope),
            message.global_position,
            message.revision,
            recorded_at,
        )

    @classmethod
    def from_client(cls, recorded: ClientRecordedEvent) -> Folded:
        """An event read through the client (`pipeline_events.client.RecordedEvent`).

        Raises:
            DecodeError: the envelope breaks the schema.
        """
        return cls(
            recorded.event, recorded.global_position, recorded.revision, recorded.recorded_at
        )


class AnomalyKind(enum.StrEnum):
    """Stable identifiers of what a fold could not fold as the lifecycle says."""

    # Either read model.
    UNKNOWN_EVENT = "unknown_event"  # a payload case this schema does not know
    OTHER_PIPELINE = "other_pipeline"  # the event belongs to another pipeline
    # The pipeline.
    NOT_CREATED = "not_created"  # its stream does not begin with PipelineCreated (once)
    DUPLICATE_CREATE = "duplicate_create"  # a second PipelineCreated (the first one stays)
    AFTER_DELETE = "after_delete"  # any event after PipelineDeleted (not a resurrection)
    DUPLICATE_RUN_START = "duplicate_run_start"  # ProcessingStarted of a run already seen
    RUN_NOT_STARTED = "run_not_started"  # a run ends that never started (its outcome counts)
    RUN_ALREADY_ENDED = "run_already_ended"  # a run ends a second time (ignored)
    # A processing run.
    NOT_STARTED = "not_started"  # its events do not begin with ProcessingStarted (once)
    DUPLICATE_START = "duplicate_start"  # a second ProcessingStarted (ignored)
    PAUSE_WHILE_PAUSED = "pause_while_paused"  # ignored: the first pause's interval goes on
    RESUME_WITHOUT_PAUSE = "resume_without_pause"  # ignored
    AFTER_END = "after_end"  # any event after completed, failed or cancelled (ignored)
    TIME_WENT_BACKWARDS = "time_went_backwards"  # a pause interval ends before it began (0)
    STAGE_NOT_STARTED = "stage_not_started"  # a chunk or end of an unstarted stage (once)
    STAGE_STARTED_TWICE = "stage_started_twice"  # ignored: the first start stays
    STAGE_ALREADY_ENDED = "stage_already_ended"  # a stage completed or failed again (ignored)
    STAGE_ID_MISMATCH = "stage_id_mismatch"  # a stage ends under another id than it started
    CHUNK_AFTER_STAGE_END = "chunk_after_stage_end"  # counted all the same
    TOO_MANY_STAGES = "too_many_stages"  # an event of a stage beyond MAX_STAGES (not applied)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An event a fold recorded instead of applying as the lifecycle says."""

    kind: AnomalyKind
    position: int  # the event's global position (0 when the caller gave none)
    event_type: str  # e.g. "ChunkProcessed", or "Unknown(42)"
    description: str


class SnapshotError(PipelineEventsError, ValueError):
    """Snapshot bytes that this fold version cannot load (another version, or damaged)."""


def same_id(a: Any, b: Any) -> bool:
    """UUID equality, by identity first: the adapter hands out one object per repeated id."""
    return a is b or a == b


class _WithAnomalies(Protocol):
    anomalies: list[Anomaly]
    anomaly_count: int


def note(state: _WithAnomalies, kind: AnomalyKind, recorded: Folded, text: str) -> None:
    """Record an anomaly on a state (the first MAX_ANOMALIES, and the count); the fold goes on."""
    state.anomaly_count += 1
    if len(state.anomalies) < MAX_ANOMALIES:
        state.anomalies.append(
            Anomaly(kind, recorded.position, recorded.event.event_type, f"{kind.value}: {text}")
        )


def keep_latest(items: list[Any], item: Any, most: int) -> None:
    """Append `item`, dropping the oldest beyond `most`."""
    items.append(item)
    if len(items) > most:
        del items[0]


_H = TypeVar("_H")


def handler_for(handlers: Mapping[type, _H], cls: type) -> _H | None:
    """A fold's handler of an event class, or of the event class a user's subclass extends
    (None: an UnknownEvent, or anything else this schema does not know)."""
    handler = handlers.get(cls)
    if handler is None:
        handler = next((handlers[base] for base in cls.__mro__ if base in handlers), None)
    return handler
