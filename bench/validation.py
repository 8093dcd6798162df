"""Validation cost per event of a publish request: protovalidate, the compiled fast pass, and
the whole `validate_publish`, before and after the fast pass, for 500-event requests of
ChunkProcessed and of ProcessingStarted envelopes (all valid: the common case).

Run: `python bench/validation.py` (about 25 s). Prints a Markdown table of µs per event;
compare rows within one run. Times are CPU time of this process (`time.process_time`), the
best of 50 passes over 10 distinct requests, each parsed afresh, with the measures taking
turns and the garbage collector off while one runs: on these shared 2-core machines
wall-clock passes vary by 2x with the neighbours' load, CPU time far less.
"""

from __future__ import annotations

import gc
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protovalidate
from adaptive_pipeline.events.v1 import service_pb2
from machine import describe, table

from pipeline_events import adapter, domain
from pipeline_events.service import rules, validation
from pipeline_events.service.wire import field_bytes
from pipeline_events.store.base import varint

PIPELINE = uuid.UUID("01945e7b-8ba3-d938-5f1b-e752169601a1")
RUN = uuid.uuid4()
EVENTS = 500
REQUESTS = 10
ROUNDS = 5
MAX_EVENT_BYTES = 1 << 20
GOAL = 3.0  # µs an event for validate_publish (issue: validation at a fraction of its cost)


def requests() -> dict[str, list[bytes]]:
    """REQUESTS PublishRequests of EVENTS distinct envelopes, as bytes, for each event kind."""
    context = domain.SecurityContext(
        user_id="alice",
        permissions=(domain.StandardPermission.READ, domain.CustomPermission("audit")),
    )

    def chunk(i: int) -> domain.Event:
        return domain.ChunkProcessed.new(
            PIPELINE, RUN, uuid.uuid4(), i, 1_048_576, "compression", 12
        )

    def started(i: int) -> domain.Event:
        return domain.ProcessingStarted.new(
            PIPELINE, uuid.uuid4(), f"/data/in/{i}.csv", f"/data/out/{i}.adapipe", 1 << 20, context
        )

    return {
        kind: [
            service_pb2.PublishRequest(
                events=[adapter.to_envelope(make(i)) for i in range(EVENTS)]
            ).SerializeToString()
            for _ in range(REQUESTS)
        ]
        for kind, make in (("ChunkProcessed", chunk), ("ProcessingStarted", started))
    }


def old_probe(envelopes: list[bytes]) -> bytes:
    """The nesting probe as validation.py built it before: wrapped by concatenation."""
    data = b"".join(b"\x12" + varint(len(e)) + e for e in envelopes)
    for _ in range(68):
        data = b"\x0a" + varint(len(data)) + data
    return data


def before(request: service_pb2.PublishRequest, sent: list[bytes]) -> None:
    """validate_publish as it was: protovalidate and every envelope check, old probe."""
    with mock.patch.object(validation, "_probe", old_probe):
        assert not validation._publish_violations(request, sent, MAX_EVENT_BYTES)


def old_envelope_checks(request: service_pb2.PublishRequest, sent: list[bytes]) -> None:
    """The envelope checks of the full pass (old probe)."""
    with mock.patch.object(validation, "_probe", old_probe):
        assert not validation.envelope_violations(request.events, sent, MAX_EVENT_BYTES)


STRICT = validation._PUBLISH_CHECKS[service_pb2.PublishRequest.DESCRIPTOR.full_name]
MEASURES: list[tuple[str, Callable[[service_pb2.PublishRequest, list[bytes]], object]]] = [
    ("protovalidate.validate(request)", lambda r, s: protovalidate.validate(r)),
    ("rules.is_valid(request): the rules, compiled", lambda r, s: rules.is_valid(r)),
    ("compiled rules + envelope checks (the fast pass)", lambda r, s: STRICT(r)),
    ("nesting probe, built as before", lambda r, s: validation._PROBE.FromString(old_probe(s))),
    ("nesting probe, now", lambda r, s: validation._parses_nested(s)),
    ("validate_publish before (full pass)", before),
    ("before: its envelope_violations", lambda r, s: old_envelope_checks(r, s)),
    (
        "before: its hidden_map_entries",
        lambda r, s: [validation.hidden_map_entries(e) for e in r.events],
    ),
    ("validate_publish now", lambda r, s: validation.validate_publish(r, s, MAX_EVENT_BYTES)),
]


def costs(datas: list[bytes]) -> list[float]:
    """Best µs an event of each measure, over ROUNDS passes of each request (parsed just
    before each). The measures take turns within every pass, so that a quiet moment of
    this shared machine, or a busy one, falls on all of them alike."""
    best = [float("inf")] * len(MEASURES)
    for _ in range(ROUNDS):
        for data in datas:
            for index, (_, measure) in enumerate(MEASURES):
                request = service_pb2.PublishRequest.FromString(data)
                sent = field_bytes(data, 1)
                gc.collect()  # as timeit does: no collection of another measure's garbage
                gc.disable()
                began = time.process_time()
                measure(request, sent)
                best[index] = min(best[index], time.process_time() - began)
                gc.enable()
    return [seconds / EVENTS * 1e6 for seconds in best]


def main() -> None:
    samples = requests()
    results = {kind: costs(datas) for kind, datas in samples.items()}
    rows = []
    for index, (label, _) in enumerate(MEASURES):
        rows.append(
            [label]
            + [f"{results[kind][index]:.2f}" for kind in results]
            + [f"<= {GOAL}" if label == "validate_publish now" else ""]
        )
    print(
        f"Validation, µs per event (best of {ROUNDS * REQUESTS} passes over {EVENTS}-event "
        f"PublishRequests, CPU time) — {describe()}\n"
    )
    print(table(["measure", *results, "goal"], rows))


if __name__ == "__main__":
    main()
