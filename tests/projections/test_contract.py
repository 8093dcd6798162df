"""The read models mirror state.proto: every contract field has its attribute, every enum its
values, and every state goes through its message and back unchanged."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from typing import Any

import pytest
from adaptive_pipeline.events.v1 import state_pb2
from hypothesis import given, settings

from pipeline_events.errors import DecodeError
from pipeline_events.projections import (
    PipelineState,
    PipelineStatus,
    ProcessingRunState,
    ProcessingStatus,
    RunSummary,
    StageState,
    StageStatus,
    Transition,
    messages,
    replay,
)
from pipeline_events.timestamps import NanoDatetime
from tests.projections.builders import numbered
from tests.projections.test_properties import ANY_LOG, PROPERTY

# Contract fields whose attribute has another name: the events themselves, not envelopes.
RENAMED = {"resource_exhaustion_events": "exhaustions", "security_violation_events": "violations"}
# Contract fields of an answer, not of a state (`messages.fit` sets it).
ANSWER_ONLY = {"truncated"}


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        (state_pb2.PipelineState, PipelineState),
        (state_pb2.ProcessingRunState, ProcessingRunState),
        (state_pb2.StageState, StageState),
    ],
)
def test_every_contract_field_has_its_attribute(message: type, cls: type) -> None:
    # A dataclass field or a property of the same name (or of RENAMED's name): what the
    # RPCs convert.
    missing = [
        f.name
        for f in message.DESCRIPTOR.fields
        if f.name not in ANSWER_ONLY and not hasattr(cls, RENAMED.get(f.name, f.name))
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("proto_enum", "prefix", "cls"),
    [
        (state_pb2.PipelineStatus, "PIPELINE_STATUS_", PipelineStatus),
        (state_pb2.ProcessingStatus, "PROCESSING_STATUS_", ProcessingStatus),
        (state_pb2.StageStatus, "STAGE_STATUS_", StageStatus),
    ],
)
def test_every_status_has_the_contracts_value(
    proto_enum: object, prefix: str, cls: type[enum.IntEnum]
) -> None:
    values = {
        name.removeprefix(prefix): number
        for name, number in proto_enum.items()  # type: ignore[attr-defined]
    }
    # 0 is the contract's _UNSPECIFIED: for a state, "not begun yet".
    assert {m.name: m.value for m in cls if m.value} == {
        name: number for name, number in values.items() if number
    }
    assert cls(0).name.startswith("NOT_") and values["UNSPECIFIED"] == 0


@settings(PROPERTY, max_examples=300)
@given(ANY_LOG)
def test_every_state_survives_the_contracts_message(log: list[Any]) -> None:
    # What a client reads over gRPC equals what a local replay folds: state -> message ->
    # wire bytes -> message -> state is the identity, on valid, broken and chaotic logs.
    replayed = replay(numbered(log))
    for state in replayed.pipelines.values():
        message = messages.pipeline_to_proto(state)
        wire = state_pb2.PipelineState.FromString(message.SerializeToString())
        assert messages.pipeline_from_proto(wire) == state
        assert list(wire.changes) == state.changes
    for run in replayed.runs.values():
        message = messages.run_to_proto(run)
        wire = state_pb2.ProcessingRunState.FromString(message.SerializeToString())
        assert messages.run_from_proto(wire) == run
        assert wire.chunks_processed == run.chunks_processed
        assert wire.resource_exhaustions == len(wire.resource_exhaustion_events)
        if run.status.is_terminal and run.started_at is not None:
            assert messages.run_from_proto(wire).duration_ns == run.duration_ns
        summary = state_pb2.ProcessingRunSummary.FromString(
            messages.summary_to_proto(run).SerializeToString()
        )
        assert messages.summary_from_proto(summary) == RunSummary.of(run)


def test_a_run_message_keeps_the_durations_exact() -> None:
    start = NanoDatetime.from_epoch_ns(1_700_000_000_123_456_789)
    run = ProcessingRunState(
        processing_id=uuid.uuid4(),
        pipeline_id=uuid.uuid4(),
        status=ProcessingStatus.COMPLETED,
        started_at=start,
        ended_at=NanoDatetime.from_epoch_ns(start.epoch_ns + 5_000_000_001),
        paused_ns=2_000_000_000,
    )
    message = messages.run_to_proto(run)
    assert (message.duration.secs, message.duration.nanos) == (5, 1)
    assert (message.active_duration.secs, message.active_duration.nanos) == (3, 1)
    assert (message.paused_time.secs, message.paused_time.nanos) == (2, 0)
    assert not messages.run_to_proto(
        dataclasses.replace(run, ended_at=None, status=ProcessingStatus.RUNNING)
    ).HasField("duration")


def test_a_damaged_state_message_is_a_decode_error() -> None:
    message = state_pb2.ProcessingRunState(processing_id="not-a-uuid")
    with pytest.raises(DecodeError, match="processing_id"):
        messages.run_from_proto(message)
    message = state_pb2.PipelineState(pipeline_id=str(uuid.uuid4()), status=7)
    with pytest.raises(DecodeError, match="status"):
        messages.pipeline_from_proto(message)


def test_an_answer_too_big_for_a_response_drops_its_oldest_entries_and_says_so() -> None:
    run = ProcessingRunState(processing_id=uuid.uuid4(), pipeline_id=uuid.uuid4())
    run.transitions = [
        Transition(ProcessingStatus.PAUSED, n, NanoDatetime.from_epoch_ns(n)) for n in range(5000)
    ]
    message = messages.run_to_proto(run)
    assert not messages.fit(message, message.ByteSize())  # fits exactly: untouched
    assert not message.truncated
    assert messages.fit(message, 20_000)
    assert message.truncated and message.ByteSize() <= 20_000
    positions = [t.position for t in message.transitions]
    assert positions == list(range(5000 - len(positions), 5000))  # the latest are kept
    assert len(positions) > 1000  # and no more were dropped than needed (~16 bytes each)


def test_a_pipeline_answer_holds_its_latest_runs_and_counts_them_all() -> None:
    state = PipelineState(pipeline_id=uuid.uuid4(), runs_started=messages.MAX_RUNS_IN_ANSWER + 5)
    ids = [uuid.UUID(int=n + 1) for n in range(messages.MAX_RUNS_IN_ANSWER + 5)]
    state.runs = dict.fromkeys(ids, ProcessingStatus.COMPLETED)
    message = messages.pipeline_to_proto(state)
    assert message.truncated and message.runs_started == len(ids)
    assert [run.processing_id for run in message.runs] == [str(i) for i in ids[5:]]
