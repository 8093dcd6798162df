"""What the folds take: Folded from a store's or a client's RecordedEvent, bare events, Rust JSON."""

from __future__ import annotations

import dataclasses

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import adapter, demo, domain, projections
from pipeline_events.codecs import rust_json
from pipeline_events.errors import DecodeError
from pipeline_events.projections import FOLD_VERSION, Folded, replay
from pipeline_events.timestamps import NanoDatetime
from tests.projections.builders import PIPELINE, RUN, event, numbered

EXPORTS = [
    "FOLD_VERSION", "Anomaly", "AnomalyKind", "Folded", "PipelineChange", "PipelineState",
    "PipelineStatus", "ProcessingRunState", "ProcessingStatus", "Replayable", "Replayed",
    "RunSummary", "SnapshotError", "StageState", "StageStatus", "Transition", "apply", "messages",
    "pipeline", "processing_run", "replay",
]  # fmt: skip


def test_the_public_api_is_pinned() -> None:
    assert projections.__all__ == EXPORTS
    assert all(hasattr(projections, name) for name in EXPORTS)
    assert isinstance(FOLD_VERSION, int) and FOLD_VERSION >= 1


def recorded_message(e: domain.Event, position: int, revision: int) -> envelope_pb2.RecordedEvent:
    message = envelope_pb2.RecordedEvent(
        envelope=adapter.to_envelope(e), global_position=position, revision=revision
    )
    message.recorded_at.seconds, message.recorded_at.nanos = 1_700_000_001, 5
    return message


def test_folded_from_a_stored_event() -> None:
    chunk = event(domain.ChunkProcessed, 1)
    folded = Folded.from_proto(recorded_message(chunk, 7, 3))
    assert folded == Folded(chunk, 7, 3, NanoDatetime.from_seconds_nanos(1_700_000_001, 5))
    bare = envelope_pb2.RecordedEvent(envelope=adapter.to_envelope(chunk), global_position=1)
    assert Folded.from_proto(bare).recorded_at is None


def test_folded_from_a_client_event() -> None:
    pytest.importorskip("grpc")
    from pipeline_events.client import RecordedEvent

    chunk = event(domain.ChunkProcessed, 1)
    folded = Folded.from_client(RecordedEvent.from_proto(recorded_message(chunk, 7, 3)))
    assert folded == Folded(chunk, 7, 3, NanoDatetime.from_seconds_nanos(1_700_000_001, 5))


def test_replay_takes_every_form_of_an_event_alike() -> None:
    pytest.importorskip("grpc")
    from pipeline_events.client import RecordedEvent

    events = [e for log in demo.simulate(2, 4, seed=3) for e in log]
    messages = [recorded_message(f.event, f.position, f.revision) for f in numbered(events)]
    expected = replay(numbered(events))
    assert replay(events) == expected
    assert replay(messages) == expected
    assert replay(RecordedEvent.from_proto(m) for m in messages) == expected


def test_bare_events_are_numbered_as_a_store_would() -> None:
    other = dataclasses.replace(event(domain.PipelineCreated, 1), pipeline_id=RUN)
    replayed = replay([event(domain.PipelineCreated, 0), other, event(domain.PipelineUpdated, 2)])
    assert (replayed.last_position, replayed.events_folded) == (3, 3)
    assert (replayed.pipelines[PIPELINE].revision, replayed.pipelines[RUN].revision) == (2, 1)
    assert replayed.pipelines[PIPELINE].history[0].position == 3
    # A Folded without a position is numbered too, and a tail continues the numbering.
    tail = replay([Folded(event(domain.PipelineDeleted, 3))], start=replayed)
    assert (tail.last_position, tail.pipelines[PIPELINE].revision) == (4, 3)


def test_a_file_of_upstream_rust_json() -> None:
    events = [e for log in demo.simulate(3, 5, seed=8) for e in log]
    lines = [rust_json.encode(e) for e in events]
    assert replay(rust_json.decode(line) for line in lines) == replay(events)


def test_what_replay_cannot_fold() -> None:
    with pytest.raises(TypeError, match="cannot fold a str"):
        replay(["ChunkProcessed"])  # type: ignore[list-item]
    envelope = adapter.to_envelope(event(domain.ChunkProcessed, 1))
    envelope.aggregate_id = "not a uuid"
    with pytest.raises(DecodeError, match="aggregate_id"):
        replay([envelope_pb2.RecordedEvent(envelope=envelope, global_position=1)])


def test_replay_continues_the_states_it_is_given() -> None:
    events = [e for log in demo.simulate(2, 4, seed=4) for e in log]
    start = replay(events[:50])
    assert replay(events[50:], start=start) is start
    assert start == replay(events)


def test_replayed_lists_every_anomaly_by_position() -> None:
    replayed = replay(
        [
            event(domain.ChunkProcessed, 0),  # the run's and the pipeline's first event
            event(domain.ProcessingCompleted, 1),
            event(domain.ProcessingCompleted, 2),
        ]
    )
    assert [(a.position, a.kind.value) for a in replayed.anomalies] == [
        (1, "not_created"),
        (1, "not_started"),
        (1, "stage_not_started"),
        (2, "run_not_started"),
        (3, "run_already_ended"),
        (3, "after_end"),
    ]
