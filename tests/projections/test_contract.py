"""The read models mirror state.proto: every contract field has its attribute, every enum its values."""

from __future__ import annotations

import enum

import pytest
from adaptive_pipeline.events.v1 import state_pb2

from pipeline_events.projections import (
    PipelineState,
    PipelineStatus,
    ProcessingRunState,
    ProcessingStatus,
    StageState,
    StageStatus,
)


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        (state_pb2.PipelineState, PipelineState),
        (state_pb2.ProcessingRunState, ProcessingRunState),
        (state_pb2.StageState, StageState),
    ],
)
def test_every_contract_field_has_its_attribute(message: type, cls: type) -> None:
    # A dataclass field or a property of the same name: what the RPCs will convert.
    missing = [f.name for f in message.DESCRIPTOR.fields if not hasattr(cls, f.name)]
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
