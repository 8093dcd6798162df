"""Realistic pipeline runs as domain events, for `pipeline-events demo`.

Every pipeline is created (and updated once); each run starts, passes its
stages chunk by chunk with metrics updates, and ends. Across the runs of a
pipeline the outcomes vary: a clean completion, a pause and resume, a failed
stage that fails the run, a cancellation; security violations and resource
exhaustion happen along the way.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline_events import domain

STAGES = [
    ("input_checksum", "checksum"),
    ("compression", "compression"),
    ("encryption", "encryption"),
    ("output_checksum", "checksum"),
]
OUTCOMES = ("completed", "paused_then_completed", "failed", "cancelled")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Run:
    """One simulated processing run and its events, in order."""

    pipeline_id: uuid.UUID
    processing_id: uuid.UUID
    outcome: str
    events: list[domain.Event]


def _metrics(
    done: int, total: int, chunks: int, started: float, now: float
) -> domain.ProcessingMetrics:
    elapsed = max(now - started, 1e-3)
    return domain.ProcessingMetrics(
        bytes_processed=done,
        bytes_total=total,
        chunks_processed=chunks,
        chunks_total=-(-total // CHUNK),
        processing_duration=domain.Duration(int(elapsed), int(elapsed % 1 * 1e9)),
        throughput_bytes_per_second=done / elapsed,
        input_file_size_bytes=total,
    )


def simulate_run(pipeline_id: uuid.UUID, outcome: str, rng: random.Random) -> Run:
    """The events of one run of `pipeline_id` ending with `outcome`."""
    run = uuid.UUID(int=rng.getrandbits(128), version=4)
    size = rng.randint(3, 12) * CHUNK
    name = f"batch_{rng.randint(1000, 9999)}.csv"
    events: list[domain.Event] = [
        domain.ProcessingStarted.new(
            pipeline_id, run, f"/data/in/{name}", f"/data/out/{name}.adapipe", size,
            domain.SecurityContext(
                user_id=rng.choice(["alice", "bob", "carol"]),
                permissions=(domain.StandardPermission.READ, domain.StandardPermission.WRITE,
                             domain.StandardPermission.COMPRESS, domain.StandardPermission.ENCRYPT),
                encryption_key_id="kms://keys/demo",
                security_level=domain.SecurityLevel.CONFIDENTIAL,
            ),
        )
    ]  # fmt: skip
    clock = 0.0
    done = 0
    failing_stage = rng.choice(STAGES[1:3])[0] if outcome == "failed" else None
    for stage_name, stage_type in STAGES:
        stage = uuid.UUID(int=rng.getrandbits(128), version=4)
        events.append(domain.StageStarted.new(pipeline_id, run, stage, stage_name, stage_type))
        stage_ms = 0
        for sequence in range(size // CHUNK):
            ms = rng.randint(2, 40)
            stage_ms += ms
            clock += ms / 1000
            events.append(
                domain.ChunkProcessed.new(
                    pipeline_id, run, uuid.uuid4(), sequence, CHUNK, stage_name, ms
                )
            )
            if stage_name == failing_stage and sequence == 1:
                events.append(
                    domain.StageFailed.new(
                        pipeline_id, run, stage, stage_name, "key material unavailable", "E_KEY"
                    )
                )
                events.append(
                    domain.ProcessingFailed.new(
                        pipeline_id, run, f"stage {stage_name} failed", "E_STAGE", stage_name,
                        _metrics(done, size, sequence, 0.0, clock),
                    )
                )  # fmt: skip
                return Run(pipeline_id, run, outcome, events)
        done = size
        events.append(
            domain.StageCompleted.new(pipeline_id, run, stage, stage_name, stage_ms, size)
        )
        events.append(
            domain.MetricsUpdated.new(
                pipeline_id, run, _metrics(done, size, size // CHUNK, 0.0, clock)
            )
        )
        if stage_name == "compression" and outcome == "paused_then_completed":
            events.append(
                domain.ProcessingPaused.new(pipeline_id, run, "operator request", b"\x00\x01")
            )
            events.append(domain.ProcessingResumed.new(pipeline_id, run, True))
        if stage_name == "compression" and outcome == "cancelled":
            events.append(
                domain.ProcessingCancelled.new(
                    pipeline_id, run, "superseded by a newer file", "bob"
                )
            )
            return Run(pipeline_id, run, outcome, events)
        if stage_name == "encryption" and (outcome == "completed" or rng.random() < 0.3):
            events.append(
                domain.ResourceExhausted.new(
                    pipeline_id, run, "memory", 7 << 30, 8 << 30, "throttled"
                )
            )
    events.append(
        domain.ProcessingCompleted.new(
            pipeline_id, run, _metrics(size, size, size // CHUNK, 0.0, clock), size // 3
        )
    )
    return Run(pipeline_id, run, outcome, events)


def simulate(pipelines: int, runs: int, seed: int | None = None) -> Iterator[list[domain.Event]]:
    """Per pipeline: its creation and update, then `runs` runs cycling through the outcomes.

    The last of several pipelines is deleted at the end, so all 16 event types occur.
    """
    rng = random.Random(seed)
    for index in range(pipelines):
        pipeline = uuid.UUID(int=rng.getrandbits(128), version=4)
        events: list[domain.Event] = [
            domain.PipelineCreated.new(pipeline, f"ingest-{index + 1}", len(STAGES), "alice"),
            domain.PipelineUpdated.new(
                pipeline, ("chunk size 1 MiB", "encryption aes-256-gcm"), "bob"
            ),
        ]
        for number in range(runs):
            run = simulate_run(pipeline, OUTCOMES[number % len(OUTCOMES)], rng)
            events.extend(run.events)
            if number % 3 == 2:
                events.append(
                    domain.SecurityViolation.new(
                        pipeline, "unauthorized_access", "read attempted without Read permission",
                        domain.SecurityViolationSeverity.HIGH, processing_id=run.processing_id,
                        user_id="mallory", source_ip="203.0.113.7",
                    )
                )  # fmt: skip
        if pipelines > 1 and index == pipelines - 1:
            events.append(domain.PipelineDeleted.new(pipeline, "alice"))  # retire the last one
        yield events
