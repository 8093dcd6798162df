"""Folding speed of the projections (events/s of the pure folds), next to the cost of decoding.

Run: `python bench/projections.py` (about a minute); `--chunks 20000` for a quick
run. Prints a Markdown table; compare rows within one run, since these 2-core
machines are noisy.

Workloads, each stored as the contract's RecordedEvent messages (envelope,
position, revision, recorded_at) and decoded into `Folded` inputs before any
fold is timed, so ids are shared objects as a real decode makes them:

- one run of N ChunkProcessed events (after its PipelineCreated,
  ProcessingStarted and StageStarted): the bulk of a real log;
- the demo's mix (`demo.simulate`): creations, updates, pauses, failures,
  cancellations, violations, exhaustions, a deletion, all 16 event types.

Columns: the run fold (`processing_run.apply`, every run's events, routed to
its state by id), the pipeline fold (`pipeline.apply`, every event), replay
(`projections.apply`: both folds plus routing), then decoding alone
(`adapter.from_envelope` of each envelope, no fold) and decoding plus replay
(`Folded.from_proto` of each RecordedEvent, then `projections.apply`): what
the service will pay per event. The reference rows fold ChunkProcessed
events into frozen dataclasses, the design the folds did not take (see
`projections.processing_run`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe, table

from pipeline_events import adapter, demo, domain, projections
from pipeline_events.projections import Folded, Replayed, pipeline, processing_run
from pipeline_events.store.base import RecordedEvent

GOAL = 300_000  # ChunkProcessed events/s through the run fold
PASSES = 5


def recorded(events: list[domain.Event]) -> list[RecordedEvent]:
    """The events as a store hands them out: positions 1.., revisions per pipeline."""
    revisions: dict[uuid.UUID, int] = {}
    messages = []
    now = time.time_ns()
    for position, event in enumerate(events, start=1):
        revisions[event.pipeline_id] = revisions.get(event.pipeline_id, 0) + 1
        message = RecordedEvent(
            envelope=adapter.to_envelope(event),
            global_position=position,
            revision=revisions[event.pipeline_id],
        )
        message.recorded_at.seconds, message.recorded_at.nanos = divmod(now, 1_000_000_000)
        messages.append(message)
    return messages


def chunk_run(count: int) -> list[domain.Event]:
    """A run of `count` ChunkProcessed events, after what begins it."""
    pipeline_id, run, stage = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    context = domain.SecurityContext(user_id="alice")
    return [
        domain.PipelineCreated.new(pipeline_id, "ingest", 4, "alice"),
        domain.ProcessingStarted.new(pipeline_id, run, "/in/a", "/out/a", count << 20, context),
        domain.StageStarted.new(pipeline_id, run, stage, "compression", "compression"),
        *(
            domain.ChunkProcessed.new(pipeline_id, run, uuid.uuid4(), i, 1 << 20, "compression", 12)
            for i in range(count)
        ),
    ]


def demo_mix(pipelines: int, runs: int) -> list[domain.Event]:
    return [e for log in demo.simulate(pipelines, runs, seed=1) for e in log]


def best(items: int, one_pass: Callable[[], Any]) -> float:
    """Best items/s of PASSES passes (the least disturbed: this machine is shared and noisy)."""
    rates = []
    for _ in range(PASSES):
        began = time.perf_counter()
        one_pass()
        rates.append(items / (time.perf_counter() - began))
    return max(rates)


def run_fold(folded: list[Folded]) -> float:
    run_events = [f for f in folded if getattr(f.event, "processing_id", None) is not None]
    apply = processing_run.apply

    def one_pass() -> None:
        runs: dict[uuid.UUID, Any] = {}
        for f in run_events:
            key = f.event.processing_id
            runs[key] = apply(runs.get(key), f)

    return best(len(run_events), one_pass)


def pipeline_fold(folded: list[Folded]) -> float:
    apply = pipeline.apply

    def one_pass() -> None:
        states: dict[uuid.UUID, Any] = {}
        for f in folded:
            key = f.event.pipeline_id
            states[key] = apply(states.get(key), f)

    return best(len(folded), one_pass)


def replay_fold(folded: list[Folded]) -> float:
    apply = projections.apply

    def one_pass() -> None:
        replayed = Replayed()
        for f in folded:
            apply(replayed, f)

    return best(len(folded), one_pass)


def decode_only(messages: list[RecordedEvent]) -> float:
    envelopes = [m.envelope for m in messages]
    decode = adapter.from_envelope

    def one_pass() -> None:
        adapter._parse_uuid.cache_clear()  # every id first seen in the pass, as live
        for envelope in envelopes:
            decode(envelope)

    return best(len(envelopes), one_pass)


def decode_and_replay(messages: list[RecordedEvent]) -> float:
    apply, from_proto = projections.apply, Folded.from_proto

    def one_pass() -> None:
        adapter._parse_uuid.cache_clear()
        replayed = Replayed()
        for message in messages:
            apply(replayed, from_proto(message))

    return best(len(messages), one_pass)


# --- the design not taken: frozen states -----------------------------------------------------


def _frozen(cls: type, *, slots: bool) -> Any:
    """A frozen copy of a state class, with the same fields and defaults."""
    specs = [
        (f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(
        f"Frozen{cls.__name__}", specs, frozen=True, kw_only=True, slots=slots
    )


def reference_replace(folded: list[Folded]) -> float:
    """Each ChunkProcessed makes a new stage, stages map and run with dataclasses.replace."""
    stage_cls, run_cls = (
        _frozen(processing_run.StageState, slots=True),
        _frozen(processing_run.ProcessingRunState, slots=True),
    )
    chunks = [f for f in folded if type(f.event) is domain.ChunkProcessed]
    replace = dataclasses.replace

    def one_pass() -> None:
        first = chunks[0].event
        state = run_cls(
            processing_id=first.processing_id,
            pipeline_id=first.pipeline_id,
            stages={first.stage_name: stage_cls(stage_name=first.stage_name)},
        )
        for f in chunks:
            event = f.event
            stage = state.stages[event.stage_name]
            stage = replace(
                stage,
                chunks_processed=stage.chunks_processed + 1,
                chunk_bytes=stage.chunk_bytes + event.chunk_size,
                chunk_time_ms=stage.chunk_time_ms + event.processing_time_ms,
            )
            state = replace(
                state,
                stages={**state.stages, event.stage_name: stage},
                last_position=f.position,
                revision=f.revision,
                events_folded=state.events_folded + 1,
            )

    return best(len(chunks), one_pass)


def reference_dict_copy(folded: list[Folded]) -> float:
    """The same, copying each frozen instance's __dict__ (no __init__, no field checks)."""
    stage_cls, run_cls = (
        _frozen(processing_run.StageState, slots=False),
        _frozen(processing_run.ProcessingRunState, slots=False),
    )
    chunks = [f for f in folded if type(f.event) is domain.ChunkProcessed]
    new = object.__new__

    def one_pass() -> None:
        first = chunks[0].event
        state = run_cls(
            processing_id=first.processing_id,
            pipeline_id=first.pipeline_id,
            stages={first.stage_name: stage_cls(stage_name=first.stage_name)},
        )
        for f in chunks:
            event = f.event
            old = state.stages[event.stage_name]
            stage = new(stage_cls)
            values = stage.__dict__
            values.update(old.__dict__)
            values["chunks_processed"] = old.chunks_processed + 1
            values["chunk_bytes"] = old.chunk_bytes + event.chunk_size
            values["chunk_time_ms"] = old.chunk_time_ms + event.processing_time_ms
            previous, state = state, new(run_cls)
            values = state.__dict__
            values.update(previous.__dict__)
            values["stages"] = {**previous.stages, event.stage_name: stage}
            values["last_position"] = f.position
            values["revision"] = f.revision
            values["events_folded"] = previous.events_folded + 1

    return best(len(chunks), one_pass)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--demo-pipelines", type=int, default=20)
    parser.add_argument("--demo-runs", type=int, default=20)
    args = parser.parse_args()

    workloads = {
        f"{args.chunks:,} ChunkProcessed, one run": chunk_run(args.chunks),
        f"demo mix ({args.demo_pipelines} pipelines x {args.demo_runs} runs)": demo_mix(
            args.demo_pipelines, args.demo_runs
        ),
    }
    rows = []
    chunk_folded: list[Folded] = []
    for name, events in workloads.items():
        messages = recorded(events)
        folded = [Folded.from_proto(m) for m in messages]
        chunk_folded = chunk_folded or folded
        print(f"measuring: {name}", file=sys.stderr, flush=True)
        rates = [
            run_fold(folded),
            pipeline_fold(folded),
            replay_fold(folded),
            decode_only(messages),
            decode_and_replay(messages),
        ]
        rows.append([name, f"{len(events):,}", *(f"{r:,.0f}" for r in rates)])
    print("measuring: references", file=sys.stderr, flush=True)
    for name, measure in [
        ("reference: frozen + dataclasses.replace", reference_replace),
        ("reference: frozen + __dict__ copy", reference_dict_copy),
    ]:
        rows.append([name, f"{args.chunks:,}", f"{measure(chunk_folded):,.0f}", "", "", "", ""])
    headers = [
        "workload",
        "events",
        "run fold",
        "pipeline fold",
        "replay (both)",
        "decode only",
        "decode + replay",
    ]
    print(f"### Projection folds, events/s (best of {PASSES} passes) — {describe()}\n")
    print(table(headers, rows))
    print(
        f"\nGoal: the run fold of ChunkProcessed events >= {GOAL:,}/s. Reference rows fold only "
        "the ChunkProcessed events (stage sums and bookkeeping), none of the checks."
    )


if __name__ == "__main__":
    main()
