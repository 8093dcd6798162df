"""Snapshots: versioned, deterministic, exact for every value a state can hold, refused across versions."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings

from pipeline_events import domain
from pipeline_events.projections import (
    FOLD_VERSION,
    PipelineState,
    ProcessingRunState,
    Replayed,
    SnapshotError,
    replay,
    snapshot,
)
from tests import strategies
from tests.projections.builders import PIPELINE, RUN, event


def a_run() -> Replayed:
    return replay(
        [
            event(domain.PipelineCreated, 0),
            event(domain.ProcessingStarted, 1),
            event(domain.StageStarted, 2),
            event(domain.ChunkProcessed, 3, chunk_size=2**64 - 1),
            event(domain.ChunkProcessed, 4, chunk_size=2**64 - 1),  # the sum needs 65 bits
            event(domain.ProcessingPaused, 5),
            event(domain.ResourceExhausted, 6),
            event(domain.SecurityViolation, 7),
            event(domain.ProcessingCompleted, 8),
        ]
    )


def test_the_document_is_versioned() -> None:
    document = orjson.loads(a_run().runs[RUN].to_bytes())
    assert (document["format"], document["fold_version"], document["type"]) == (
        snapshot.FORMAT,
        FOLD_VERSION,
        "ProcessingRunState",
    )
    assert document["state"]["stages"][0][0] == "compress"  # maps keep their order as pairs


def test_every_state_comes_back_exactly() -> None:
    replayed = a_run()
    run = replayed.runs[RUN]
    assert run.stages["compress"].chunk_bytes == 2 * (2**64 - 1)
    assert ProcessingRunState.from_bytes(run.to_bytes()) == run
    assert (
        PipelineState.from_bytes(replayed.pipelines[PIPELINE].to_bytes())
        == (replayed.pipelines[PIPELINE])
    )
    assert Replayed.from_bytes(replayed.to_bytes()) == replayed


def test_equal_states_give_the_same_bytes() -> None:
    assert a_run().to_bytes() == a_run().to_bytes()


def test_another_fold_version_is_refused() -> None:
    document = orjson.loads(a_run().to_bytes())
    document["fold_version"] = FOLD_VERSION + 1
    with pytest.raises(SnapshotError, match="rebuild the state from the log"):
        Replayed.from_bytes(orjson.dumps(document))


@pytest.mark.parametrize(
    "damage",
    [
        b"not json",
        b"[]",
        b'{"format": 1}',
        orjson.dumps(
            {"format": 1, "fold_version": FOLD_VERSION, "type": "Replayed", "state": {"runs": []}}
        ),
        orjson.dumps(
            {"format": 1, "fold_version": FOLD_VERSION, "type": "Replayed", "state": [1, 2]}
        ),
    ],
)
def test_damaged_bytes_are_refused(damage: bytes) -> None:
    with pytest.raises(SnapshotError):
        Replayed.from_bytes(damage)


def test_a_snapshot_of_another_state_type_is_refused() -> None:
    with pytest.raises(SnapshotError, match="not of PipelineState"):
        PipelineState.from_bytes(a_run().runs[RUN].to_bytes())


def test_a_damaged_field_is_refused() -> None:
    document = orjson.loads(a_run().runs[RUN].to_bytes())
    document["state"]["status"] = 42
    with pytest.raises(SnapshotError, match="damaged ProcessingRunState"):
        ProcessingRunState.from_bytes(orjson.dumps(document))


@settings(derandomize=True, max_examples=200)
@given(strategies.events(allow_non_finite=True))
def test_any_domain_value_survives_the_codec(event: domain.Event) -> None:
    # States hold events (exhaustions, violations) and their records (metrics, contexts):
    # every value upstream can carry, including non-finite floats, u64s, bytes, years 1-9999.
    data = snapshot.encode(event)
    back = snapshot.decode(data, type(event))
    assert snapshot.encode(back) == data
    if not _has_nan(event):
        assert back == event


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if hasattr(value, "__dataclass_fields__"):
        return any(_has_nan(getattr(value, name)) for name in value.__dataclass_fields__)
    return False
