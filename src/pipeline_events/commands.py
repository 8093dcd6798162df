"""The client commands of the CLI: publish, tail, history, status, demo.

Each takes the parsed arguments and returns an exit status. People get rich
tables and progress bars on a terminal; `--json` gives JSON Lines for machines.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline_events import domain
from pipeline_events.client import ClientError, EventClient, RecordedEvent, ServiceUnavailableError
from pipeline_events.codecs import proto_json
from pipeline_events.convert import READERS
from pipeline_events.errors import DecodeError
from pipeline_events.store import ExpectedState

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _client(args: argparse.Namespace) -> EventClient:
    return EventClient(args.target, timeout=args.timeout)


def _summary(event: domain.Event | domain.UnknownEvent) -> str:
    """A short description of what happened, for one line of a table."""
    if isinstance(event, domain.UnknownEvent):
        return f"{len(event.envelope_bytes)} bytes of an unknown event type"
    fields = []
    for name in event.own_fields():
        value = getattr(event, name)
        if value is None or name in (
            "processing_id",
            "security_context",
            "metrics",
            "partial_metrics",
        ):
            continue
        if isinstance(value, uuid.UUID):
            value = str(value)[:8]
        elif isinstance(value, bytes):
            value = f"{len(value)} bytes"
        elif isinstance(value, tuple):
            value = ", ".join(map(str, value))
        elif hasattr(value, "name") and not isinstance(value, str):
            value = value.name.lower()
        fields.append(f"{name}={value}")
    metrics = getattr(event, "metrics", None) or getattr(event, "partial_metrics", None)
    if metrics is not None:
        fields.append(f"progress={metrics.bytes_processed}/{metrics.bytes_total} bytes")
    return " ".join(fields)


def _as_json(recorded: RecordedEvent) -> bytes:
    return orjson.dumps(
        {
            "position": recorded.global_position,
            "revision": recorded.revision,
            "recorded_at": recorded.recorded_at.isoformat(),
            "envelope": proto_json.to_dict(recorded.envelope),
        }
    )


def _row(recorded: RecordedEvent) -> list[str]:
    event = recorded.event
    run = getattr(event, "processing_id", None)
    return [
        str(recorded.global_position),
        str(recorded.revision),
        event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
        event.event_type,
        str(event.pipeline_id)[:8],
        str(run)[:8] if run else "",
        _summary(event),
    ]


COLUMNS = ["position", "rev", "time", "event", "pipeline", "run", "details"]


# --- publish -------------------------------------------------------------------------------


def _read_events(path: str, fmt: str, bad: list[str]) -> Iterator[Any]:
    """Envelopes from JSON Lines; a bad line is recorded in `bad` and skipped."""
    read = READERS[fmt]
    with contextlib.ExitStack() as stack:
        source = sys.stdin.buffer if path == "-" else stack.enter_context(open(path, "rb"))
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                yield read(line)
            except DecodeError as error:
                bad.append(f"line {number}: {error}")


def _progress(total: int | None, description: str) -> Progress:
    return Progress(
        TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=False, disable=not err.is_terminal and total is None,
    )  # fmt: skip


def run_publish(args: argparse.Namespace) -> int:
    """`publish`: send events from a JSON Lines file (or stdin) in batches."""
    bad: list[str] = []
    published = 0
    first = last = None
    total = None
    if args.file != "-":
        with open(args.file, "rb") as handle:
            total = sum(1 for line in handle if line.strip())
    with _client(args) as client, _progress(total, "publishing") as progress:
        task = progress.add_task("publishing", total=total)
        batch: list[Any] = []

        def flush() -> None:
            nonlocal published, first, last
            if not batch:
                return
            result = client.publish(batch)
            published += len(batch)
            first = first or result.positions[0].global_position
            last = result.positions[-1].global_position
            progress.advance(task, len(batch))
            batch.clear()

        for envelope in _read_events(args.file, args.format, bad):
            batch.append(envelope)
            if len(batch) >= args.batch:
                flush()
        flush()
    for line in bad:
        err.print(line)
    if args.json:
        out.print(
            orjson.dumps(
                {"published": published, "first": first, "last": last, "rejected": len(bad)}
            ).decode()
        )
    else:
        span = f" (positions {first}..{last})" if published else ""
        out.print(f"published {published} events{span}; {len(bad)} lines rejected")
    return 1 if bad else 0


# --- tail and history ----------------------------------------------------------------------


def _start(text: str) -> Any:
    if text in ("start", "end"):
        return text
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"--from takes start, end or a position, not {text!r}") from None


def run_tail(args: argparse.Namespace) -> int:
    """`tail`: follow the log live until interrupted."""
    with _client(args) as client:
        subscription = client.subscribe(
            from_position=_start(args.from_),
            event_types=args.type or (),
            pipeline_ids=args.pipeline or (),
        )
        if not args.json:
            out.print("  ".join(COLUMNS), style="bold")
        try:
            for recorded in subscription:
                if args.json:
                    sys.stdout.buffer.write(_as_json(recorded) + b"\n")
                    sys.stdout.flush()
                else:
                    out.print("  ".join(_row(recorded)))
        except KeyboardInterrupt:
            pass
        finally:
            subscription.close()
    return 0


def run_history(args: argparse.Namespace) -> int:
    """`history`: one pipeline's events, oldest first."""
    with _client(args) as client:
        events = client.read_aggregate(args.pipeline_id)
    if args.json:
        for recorded in events:
            sys.stdout.buffer.write(_as_json(recorded) + b"\n")
        return 0
    if not events:
        out.print(f"pipeline {args.pipeline_id} has no events")
        return 0
    title = f"pipeline {args.pipeline_id}: {len(events)} events"
    if not out.is_terminal:  # piped: plain columns that never wrap mid-cell
        out.print(title)
        out.print("  ".join(COLUMNS), style="bold")
        for recorded in events:
            out.print("  ".join(_row(recorded)))
        return 0
    table = Table(*COLUMNS, title=title)
    for recorded in events:
        table.add_row(*_row(recorded))
    out.print(table)
    return 0


# --- status --------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    """`status`: is the service up, and how far does its log reach."""
    import grpc
    from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from pipeline_events.service.server import SERVICE_NAME

    with grpc.insecure_channel(args.target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=args.timeout
            )
            # A subscription from the end says where the log ends in its first message.
            subscription = service_pb2_grpc.EventServiceStub(channel).Subscribe(
                service_pb2.SubscribeRequest(from_end={}), timeout=args.timeout
            )
            head = next(iter(subscription)).caught_up.position
            subscription.cancel()
        except grpc.RpcError as error:
            raise ServiceUnavailableError(
                f"cannot reach the event service at {args.target}: {error.details()}",
                target=args.target,
            ) from error
    health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.json:
        out.print(
            orjson.dumps({"target": args.target, "health": health, "head_position": head}).decode()
        )
    else:
        table = Table("target", "health", "events stored (head position)")
        table.add_row(args.target, health, str(head))
        out.print(table)
    return 0 if health == "SERVING" else 1


# --- demo ----------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    """`demo`: simulate realistic pipeline runs through the service."""
    from pipeline_events.demo import simulate

    pipelines = list(simulate(args.pipelines, args.runs, seed=args.seed))
    total = sum(len(events) for events in pipelines)
    by_type: collections.Counter[str] = collections.Counter()
    started = time.perf_counter()
    with _client(args) as client, _progress(total, "simulating") as progress:
        task = progress.add_task("simulating", total=total)
        for events in pipelines:
            pipeline = events[0].pipeline_id
            revision = 0
            # Each run's events go out as a batch with an exact expected revision, as a
            # pipeline owner that is the only writer of its stream would publish them.
            for batch in _runs(events):
                check = ExpectedState.NO_STREAM if revision == 0 else revision
                result = client.publish(batch, expected={pipeline: check})
                revision = result.positions[-1].revision
                by_type.update(event.event_type for event in batch)
                progress.advance(task, len(batch))
    elapsed = time.perf_counter() - started
    if args.json:
        out.print(
            orjson.dumps(
                {"pipelines": args.pipelines, "events": total, "by_type": by_type}
            ).decode()
        )
        return 0
    table = Table(
        "event type", "count", title=f"demo: {args.pipelines} pipelines x {args.runs} runs"
    )
    for event_type in domain.EVENT_TYPES:
        table.add_row(event_type, str(by_type.get(event_type, 0)))
    table.add_row("total", str(total), style="bold")
    out.print(table)
    out.print(
        f"published {total} events in {elapsed:.2f} s; try: pipeline-events history {pipelines[0][0].pipeline_id}"
    )
    return 0


def _runs(events: list[domain.Event]) -> Iterator[list[domain.Event]]:
    """Split a pipeline's events into batches, one per processing run (plus the rest)."""
    batch: list[domain.Event] = []
    for event in events:
        if isinstance(event, domain.ProcessingStarted) and batch:
            yield batch
            batch = []
        batch.append(event)
    if batch:
        yield batch


def guarded(command: Any, args: argparse.Namespace) -> int:
    """Run a client command; a client error becomes one clear line and exit status 2."""
    try:
        return command(args)
    except ServiceUnavailableError as error:
        err.print(f"pipeline-events: {error} — is `pipeline-events serve` running there?")
        return 2
    except ClientError as error:
        err.print(f"pipeline-events: {error}")
        return 2
