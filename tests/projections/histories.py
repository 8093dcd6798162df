"""Hypothesis strategies for event logs: valid lifecycles with their expected outcome, and broken ones.

- `histories()`: valid logs of 1-3 pipelines with 0-3 runs each, interleaved;
  each run follows the lifecycle (start, stages of chunks, pauses and resumes,
  metrics, exhaustions, violations, then completed, failed, cancelled or still
  open, possibly while paused). Each story carries what the folds must find.
- `broken_logs()`: a valid log, then duplicated, dropped and swapped events,
  events after the end, unknown payloads, events moved to another pipeline,
  and arbitrary events (tests/strategies.py) aimed at the log's ids.
- `chaotic_logs()`: random sequences of one or two runs' events, with times
  going forwards and backwards.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from pipeline_events import domain
from pipeline_events.projections import ProcessingStatus, StageStatus
from pipeline_events.timestamps import NanoDatetime
from tests import strategies
from tests.projections.builders import T0, event, unknown

S = ProcessingStatus
SECOND = 1_000_000_000
# Actions of a run between its start and its end (chunks are the most common, as in life).
ACTIONS = (
    "chunk",
    "chunk",
    "chunk",
    "stage",
    "stage",
    "pause",
    "metrics",
    "exhausted",
    "violation",
)


@dataclass
class RunStory:
    """One run's events and what the run's fold must make of them."""

    processing_id: uuid.UUID
    events: list[domain.Event] = field(default_factory=list)
    status: ProcessingStatus = S.RUNNING
    chunks: dict[str, int] = field(default_factory=dict)  # per stage, in start order
    stages: dict[str, StageStatus] = field(default_factory=dict)
    pauses: int = 0
    resumes: int = 0
    paused_ns: int = 0
    exhaustions: int = 0
    violations: int = 0
    failed_stage: str | None = None


@dataclass
class PipelineStory:
    """One pipeline's events (its runs' included) and what the pipeline's fold must find."""

    pipeline_id: uuid.UUID
    events: list[domain.Event]
    runs: list[RunStory]
    name: str
    changes: list[str]
    violations: int  # its own and its runs'
    deleted: bool


@dataclass
class History:
    """A valid log and its stories."""

    pipelines: list[PipelineStory]
    events: list[domain.Event]


class Ids:
    """Small distinct UUIDs, so a failing example reads well."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._next))


def interleave(draw: Any, sequences: list[list[Any]]) -> list[Any]:
    """A random merge of the sequences that keeps each one's order."""
    tags = [i for i, sequence in enumerate(sequences) for _ in sequence]
    order = draw(st.permutations(tags))
    iterators: list[Iterator[Any]] = [iter(s) for s in sequences]
    return [next(iterators[i]) for i in order]


@st.composite
def run_story(draw: Any, pipeline_id: uuid.UUID, ids: Ids) -> RunStory:
    """A valid run of `pipeline_id` and its expected outcome."""
    story = RunStory(ids())
    clock = draw(st.integers(0, 1000 * SECOND))

    def emit(cls: type[domain.Event], **fields: Any) -> NanoDatetime:
        nonlocal clock
        clock += draw(st.integers(0, SECOND))
        now = NanoDatetime.from_epoch_ns(T0 + clock)
        story.events.append(
            event(
                cls,
                event_id=ids(),
                pipeline_id=pipeline_id,
                processing_id=story.processing_id,
                occurred_at=now,
                **fields,
            )
        )
        return now

    stage_ids: dict[str, uuid.UUID] = {}
    current: str | None = None  # the running stage
    paused_at: NanoDatetime | None = None

    def start_stage() -> str:
        name = f"stage-{len(stage_ids)}"
        stage_ids[name] = ids()
        emit(domain.StageStarted, stage_id=stage_ids[name], stage_name=name)
        story.chunks[name], story.stages[name] = 0, StageStatus.RUNNING
        return name

    def end_stage(name: str, cls: type[domain.Event], status: StageStatus) -> None:
        emit(cls, stage_id=stage_ids[name], stage_name=name)
        story.stages[name] = status

    emit(domain.ProcessingStarted, file_size=draw(st.integers(0, 1 << 40)))
    for action in draw(st.lists(st.sampled_from(ACTIONS), max_size=14)):
        if action == "pause" and paused_at is None:
            paused_at = emit(domain.ProcessingPaused)
            story.pauses += 1
        elif action == "pause":
            story.paused_ns += emit(domain.ProcessingResumed).epoch_ns - paused_at.epoch_ns
            story.resumes += 1
            paused_at = None
        elif action == "stage" and current is not None:
            end_stage(current, domain.StageCompleted, StageStatus.COMPLETED)
            current = None
        elif action == "stage":
            current = start_stage()
        elif action == "chunk":
            current = current or start_stage()
            emit(
                domain.ChunkProcessed,
                stage_name=current,
                chunk_sequence=story.chunks[current],
                chunk_size=draw(st.integers(0, 1 << 24)),
            )
            story.chunks[current] += 1
        elif action == "metrics":
            emit(domain.MetricsUpdated)
        elif action == "exhausted":
            emit(domain.ResourceExhausted)
            story.exhaustions += 1
        else:
            emit(domain.SecurityViolation)
            story.violations += 1

    outcome = draw(st.sampled_from([S.COMPLETED, S.FAILED, S.CANCELLED, S.RUNNING]))
    if outcome is S.COMPLETED:
        if current is not None:
            end_stage(current, domain.StageCompleted, StageStatus.COMPLETED)
        ended = emit(domain.ProcessingCompleted)
    elif outcome is S.FAILED:
        if current is not None and draw(st.booleans()):
            end_stage(current, domain.StageFailed, StageStatus.FAILED)
        story.failed_stage = current
        ended = emit(domain.ProcessingFailed, stage_name=current)
    elif outcome is S.CANCELLED:
        ended = emit(domain.ProcessingCancelled)
    if outcome is S.RUNNING:
        story.status = S.RUNNING if paused_at is None else S.PAUSED
    else:
        story.status = outcome
        if paused_at is not None:  # ending while paused closes the interval at the end
            story.paused_ns += ended.epoch_ns - paused_at.epoch_ns
        if draw(st.booleans()):  # a violation naming the run after it ended (the demo's kind)
            emit(domain.SecurityViolation)
            story.violations += 1
    return story


@st.composite
def pipeline_story(draw: Any, ids: Ids) -> PipelineStory:
    """A valid pipeline life: created, its runs and updates interleaved, maybe deleted."""
    pipeline_id = ids()
    name = draw(st.sampled_from(["ingest", "archive", ""]))
    runs = draw(st.lists(run_story(pipeline_id, ids), max_size=3))
    updates = [
        event(
            domain.PipelineUpdated,
            event_id=ids(),
            pipeline_id=pipeline_id,
            changes=tuple(draw(st.lists(st.sampled_from(["chunk size", "cipher"]), max_size=2))),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    own_violations = [
        event(domain.SecurityViolation, event_id=ids(), pipeline_id=pipeline_id, processing_id=None)
        for _ in range(draw(st.integers(0, 2)))
    ]
    body = interleave(draw, [run.events for run in runs] + [[e] for e in updates + own_violations])
    deleted = draw(st.booleans())
    events = [
        event(
            domain.PipelineCreated,
            -1,
            event_id=ids(),
            pipeline_id=pipeline_id,
            pipeline_name=name,
            stage_count=draw(st.integers(0, 8)),
        ),
        *body,
        *([event(domain.PipelineDeleted, 5000, event_id=ids(), pipeline_id=pipeline_id)] * deleted),
    ]
    # The updates' changes, in the order the interleaving put them.
    changes = [c for e in body if isinstance(e, domain.PipelineUpdated) for c in e.changes]
    violations = len(own_violations) + sum(run.violations for run in runs)
    return PipelineStory(pipeline_id, events, runs, name, changes, violations, deleted)


@st.composite
def histories(draw: Any) -> History:
    """A valid log of 1-3 pipelines."""
    ids = Ids()
    pipelines = draw(st.lists(pipeline_story(ids), min_size=1, max_size=3))
    return History(pipelines, interleave(draw, [p.events for p in pipelines]))


OPERATIONS = ("duplicate", "drop", "swap", "after_end", "unknown", "foreign", "noise")


@st.composite
def broken_logs(draw: Any) -> list[Any]:
    """A valid log, broken by 1-6 operations."""
    log: list[Any] = list(draw(histories()).events)
    pipelines = sorted({e.pipeline_id for e in log}, key=lambda u: u.int)
    runs = sorted({getattr(e, "processing_id", None) for e in log} - {None}, key=str)
    stranger = uuid.UUID(int=0xFFFF)
    for operation in draw(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=6)):
        if not log:
            break
        i = draw(st.integers(0, len(log) - 1))
        where = draw(st.integers(0, len(log)))
        if operation == "duplicate":
            log.insert(max(where, i + 1), log[i])
        elif operation == "drop":
            del log[i]
        elif operation == "swap":
            j = draw(st.integers(0, len(log) - 1))
            log[i], log[j] = log[j], log[i]
        elif operation == "after_end":
            log.append(log[i])
        elif operation == "unknown":
            owner = draw(st.sampled_from([*pipelines, stranger]))
            log.insert(where, unknown(pipeline_id=owner))
        elif operation == "foreign":
            owner = draw(
                st.sampled_from([p for p in [*pipelines, stranger] if p != log[i].pipeline_id])
            )
            log.insert(where, dataclasses.replace(log[i], pipeline_id=owner))
        else:
            noise = draw(strategies.events())
            changes: dict[str, Any] = {"pipeline_id": draw(st.sampled_from(pipelines))}
            if hasattr(noise, "processing_id") and runs and draw(st.booleans()):
                changes["processing_id"] = draw(st.sampled_from(runs))
            log.insert(where, dataclasses.replace(noise, **changes))
    return log


_RUNS = (uuid.UUID(int=0xA1), uuid.UUID(int=0xA2))
_PIPELINES = (uuid.UUID(int=0xB1), uuid.UUID(int=0xB2))
_TEMPLATES: list[tuple[type[domain.Event], dict[str, Any]]] = [
    (domain.PipelineCreated, {}),
    (domain.PipelineUpdated, {}),
    (domain.PipelineDeleted, {}),
    (domain.ProcessingStarted, {}),
    (domain.ProcessingCompleted, {}),
    (domain.ProcessingFailed, {}),
    (domain.ProcessingPaused, {}),
    (domain.ProcessingResumed, {}),
    (domain.ProcessingCancelled, {}),
    *(
        (cls, {"stage_name": name, "stage_id": uuid.UUID(int=ord(name))})
        for cls in (domain.StageStarted, domain.StageCompleted, domain.StageFailed)
        for name in "ab"
    ),
    (domain.StageCompleted, {"stage_name": "b", "stage_id": uuid.UUID(int=0xBAD)}),
    *((domain.ChunkProcessed, {"stage_name": name}) for name in "abb"),
    (domain.MetricsUpdated, {}),
    (domain.SecurityViolation, {}),
    (domain.ResourceExhausted, {}),
]


# Template indices, mid-run events three times as likely as creations, deletions and ends
# (which make every later event an anomaly); len(_TEMPLATES) stands for an unknown payload.
_FINAL = (
    domain.PipelineCreated,
    domain.PipelineDeleted,
    domain.ProcessingCompleted,
    domain.ProcessingFailed,
    domain.ProcessingCancelled,
)
_WEIGHTED = [
    i for i, (cls, _) in enumerate(_TEMPLATES) for _ in range(1 if cls in _FINAL else 3)
] + [len(_TEMPLATES)]


@st.composite
def chaotic_logs(draw: Any) -> list[Any]:
    """Random events of two runs of (mostly) one pipeline, at times going back and forth."""
    log: list[Any] = []
    clock = 0
    steps = st.tuples(
        st.sampled_from(_WEIGHTED),
        st.sampled_from(_RUNS),
        st.sampled_from(_PIPELINES[:1] * 4 + _PIPELINES[1:]),
        st.integers(-SECOND, 3 * SECOND),
    )
    # The length drawn first: st.lists would keep most logs shorter than a lifecycle.
    for _ in range(draw(st.integers(1, 60))):
        index, run, pipeline_id, gap = draw(steps)
        clock += gap
        now = NanoDatetime.from_epoch_ns(T0 + clock)
        if index == len(_TEMPLATES):
            log.append(dataclasses.replace(unknown(pipeline_id=pipeline_id), occurred_at=now))
            continue
        cls, fields = _TEMPLATES[index]
        extra = {"processing_id": run} if "processing_id" in cls.own_fields() else {}
        log.append(
            event(
                cls,
                pipeline_id=pipeline_id,
                occurred_at=now,
                event_id=uuid.UUID(int=len(log) + 1),
                **fields,
                **extra,
            )
        )
    return log
