"""The client commands of the CLI: publish, tail, history, status, demo, run, runs,
pipeline, group and parked.

Each takes the parsed arguments and returns an exit status. People get rich
tables and progress bars on a terminal; `--json` gives JSON Lines for machines:
for tail and history, the contract's proto3 JSON of each RecordedEvent, which
`publish --format proto-json` reads back; for run, runs and pipeline, the proto3
JSON of state.proto's messages with its field names (`reports.as_json`); for group
and parked, one object per group or parked event with snake_case keys that are always
there, times as RFC 3339 (`reports.group_json`, `reports.parked_json`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, TypeVar

import orjson
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf import timestamp_pb2
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline_events import adapter, domain, reports
from pipeline_events.client import (
    ClientError,
    ConsumerGroup,
    DeadlineExceededError,
    DuplicateEventError,
    EventClient,
    GroupSettings,
    InvalidArgumentError,
    NotFoundError,
    ProjectionBehindError,
    PublishResult,
    RecordedEvent,
    ServiceUnavailableError,
    error_from_rpc,
)
from pipeline_events.codecs import proto_json
from pipeline_events.convert import READERS
from pipeline_events.errors import DecodeError
from pipeline_events.projections import messages
from pipeline_events.store import ExpectedState
from pipeline_events.tls import ClientTls, TlsError


class _Console(Console):
    """rich's Console, printing text as it is (event fields and error messages hold
    brackets and colons, not markup or emoji codes), and leaving a closed pipe to
    the CLI's entry point, which ends quietly with status 0 (rich would exit 1)."""

    def __init__(self, **options: Any):
        super().__init__(highlight=False, soft_wrap=True, markup=False, emoji=False, **options)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


out = _Console()
err = _Console(stderr=True)


def _credentials(args: argparse.Namespace) -> Any:
    """TLS channel credentials from --tls-* or PIPELINE_EVENTS_TLS_*; None: plaintext.

    Raises:
        TlsError: files that cannot be used.
    """
    tls = ClientTls.of(args.tls_ca, args.tls_cert, args.tls_key)
    return None if tls is None else tls.credentials()


def _client(args: argparse.Namespace) -> EventClient:
    return EventClient(
        args.target, timeout=args.timeout, credentials=_credentials(args), token=args.token
    )


def contract_json(recorded: RecordedEvent) -> bytes:
    """The contract's proto3 JSON of a RecordedEvent (envelope, globalPosition, ...)."""
    seconds, nanos = divmod(recorded.recorded_at.epoch_ns, 1_000_000_000)
    message = envelope_pb2.RecordedEvent(
        global_position=recorded.global_position,
        revision=recorded.revision,
        recorded_at=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
    )
    message.envelope.CopyFrom(recorded.envelope)
    return orjson.dumps(proto_json.message_to_dict(message))


def _row(recorded: RecordedEvent) -> list[str]:
    try:
        event = recorded.event
    except DecodeError as error:  # stored by a writer with rules this version does not share
        return _undecodable_row(recorded, error)
    run = getattr(event, "processing_id", None)
    return [
        str(recorded.global_position),
        str(recorded.revision),
        event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
        event.event_type,
        str(event.pipeline_id)[:8],
        str(run)[:8] if run else "",
        reports.event_summary(event),
    ]


def _undecodable_row(recorded: RecordedEvent, error: DecodeError) -> list[str]:
    """The row of an event that cannot be decoded: what the envelope says, and why."""
    envelope = recorded.envelope
    try:
        occurred = envelope.occurred_at.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
    except (ValueError, OverflowError, OSError):
        occurred = "?"
    return [
        str(recorded.global_position),
        str(recorded.revision),
        occurred,
        adapter.event_type_name(envelope.event_type),
        envelope.aggregate_id[:8],
        "",
        f"cannot decode this event: {error}",
    ]


COLUMNS = ["position", "rev", "time", "event", "pipeline", "run", "details"]


# --- publish -------------------------------------------------------------------------------

_EVENT_FIELD = re.compile(r"events\[(\d+)\](?:\.(.+))?")  # a field violation of one event


class _Read(NamedTuple):
    """One decoded input line."""

    line: int
    envelope: Any


def _read_events(source: IO[bytes], fmt: str, bad: list[str]) -> Iterator[_Read]:
    """Envelopes from JSON Lines; a bad line is reported, recorded in `bad` and skipped."""
    read = READERS[fmt]
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            yield _Read(number, read(line))
        except DecodeError as error:
            bad.append(f"line {number}: {error}")
            err.print(bad[-1])


def _batches(events: Iterator[_Read], size: int) -> Iterator[list[_Read]]:
    batch: list[_Read] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(description: str) -> Progress:
    # Only for people at a terminal: piped or captured stderr gets the errors alone.
    return Progress(
        TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=False, disable=not err.is_terminal,
    )  # fmt: skip


def _lines(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _count(number: int, what: str) -> str:
    return f"{number} {what}" if number == 1 else f"{number} {what}s"


class LineError(NamedTuple):
    """Why the server rejected the events of input lines `first` to `last`."""

    first: int
    last: int
    reason: str

    def __str__(self) -> str:
        return f"{_lines(self.first, self.last)}: {self.reason}"


def line_errors(batch: list[_Read], error: ClientError) -> list[LineError]:
    """The errors of a rejected batch, by input line.

    The server names events by their index in the batch (`events[3].occurred_at`);
    this maps them back to the input lines. An error naming no event is the batch's.
    """
    found = []
    if isinstance(error, InvalidArgumentError):
        for violation in error.field_violations:
            match = _EVENT_FIELD.fullmatch(violation.field)
            if match and int(match[1]) < len(batch):
                line = batch[int(match[1])].line
                where = f"{match[2]}: " if match[2] else ""
                found.append(LineError(line, line, where + violation.description))
    elif isinstance(error, DuplicateEventError):
        found = [
            LineError(e.line, e.line, str(error))
            for e in batch
            if e.envelope.event_id == error.event_id
        ]
    return found or [LineError(batch[0].line, batch[-1].line, str(error))]


@dataclass
class _Report:
    """What publish did, batch by batch, and the summary it ends with.

    `already_recorded` is per batch: a batch counts as already stored when every event
    in it was, and as new otherwise (even if some of its events were stored before).
    """

    bad: list[str] = field(default_factory=list)  # `line N: reason` of undecodable lines
    new: int = 0
    already: int = 0
    lines: tuple[int, int] | None = None  # first and last line of the batches stored
    positions: tuple[int, int] | None = None  # lowest and highest position of new batches
    stop: str | None = None  # the rejection that stopped publishing
    stop_line: int | None = None
    stop_batch: tuple[int, int] | None = None

    def stored(self, batch: list[_Read], result: PublishResult) -> None:
        """Count a batch the server accepted."""
        first = self.lines[0] if self.lines else batch[0].line
        self.lines = (first, batch[-1].line)
        if result.already_recorded:
            self.already += len(batch)
            return
        self.new += len(batch)
        numbers = [p.global_position for p in result.positions]
        low, high = min(numbers), max(numbers)
        if self.positions:
            low, high = min(low, self.positions[0]), max(high, self.positions[1])
        self.positions = (low, high)

    def rejected(self, batch: list[_Read], error: LineError) -> None:
        """Note the batch that stopped publishing, and why (its first error)."""
        self.stop_batch = (batch[0].line, batch[-1].line)
        self.stop = f"{_lines(error.first, error.last)} rejected: {error.reason}"
        self.stop_line = error.first

    def text(self) -> str:
        """The summary for people."""
        rejected = f"{_count(len(self.bad), 'line')} rejected"
        if self.stop is None:
            return f"{self._outcome()}; {rejected}" if self.bad else self._outcome()
        assert self.stop_batch is not None
        return (
            f"{self.stored_text()}; {self.stop}; nothing of its batch "
            f"({_lines(*self.stop_batch)}) was stored, and nothing after it was sent"
            + (f"; before it, {rejected}" if self.bad else "")
        )

    def _outcome(self) -> str:
        if self.new == 0 and self.already:
            return f"all {_count(self.already, 'event')} were already stored; nothing new"
        text = f"published {_count(self.new, 'event')}"
        if self.positions:
            text += f" (positions {self.positions[0]}..{self.positions[1]})"
        if self.already:
            text += (
                f"; {self.already} were already stored (counted by batch: a batch counts as "
                "already stored when all of its events were)"
            )
        return text

    def stored_text(self) -> str:
        """What is stored so far: `stored lines 1-500 (positions 11..510)`."""
        if self.lines is None:
            return "stored nothing"
        text = f"stored {_lines(*self.lines)}"
        if self.new == 0:
            return text + " (all of them already stored before)"
        positions = f"positions {self.positions[0]}..{self.positions[1]}" if self.positions else ""
        if self.already:
            positions += f"; {self.already} of the events were already stored before"
        return f"{text} ({positions})"

    def as_json(self) -> dict[str, Any]:
        """The summary for machines."""
        return {
            "published": self.new,
            "already_stored": self.already,
            "first": self.positions[0] if self.positions else None,
            "last": self.positions[1] if self.positions else None,
            "rejected": len(self.bad),
            "stored_lines": list(self.lines) if self.lines else None,
            "stopped_at_line": self.stop_line,
            "stop": self.stop,
        }


def _count_lines(path: str) -> int | None:
    """Non-blank lines of a regular file, for the progress bar (None: stdin, a pipe)."""
    if path == "-" or not os.path.isfile(path):
        return None  # a pipe or a FIFO could be read only once
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def run_publish(args: argparse.Namespace) -> int:
    """`publish`: send events from a JSON Lines file (or stdin) in batches.

    Stops at the first batch the server rejects, reporting the input line(s) it named
    and exactly which lines were stored before it.
    """
    with contextlib.ExitStack() as stack:
        total = _count_lines(args.file)
        source = (
            sys.stdin.buffer if args.file == "-" else stack.enter_context(open(args.file, "rb"))
        )
        report = _publish(args, source, total)
    if args.json:
        out.print(orjson.dumps(report.as_json()).decode())
    else:
        out.print(report.text())
    return 1 if report.bad or report.stop else 0


def _publish(args: argparse.Namespace, source: IO[bytes], total: int | None) -> _Report:
    report = _Report()
    with _client(args) as client, _progress("publishing") as progress:
        task = progress.add_task("publishing", total=total)
        for batch in _batches(_read_events(source, args.format, report.bad), args.batch):
            try:
                result = client.publish([event.envelope for event in batch])
            except (ServiceUnavailableError, DeadlineExceededError):
                _interrupted(report)
                raise
            except ClientError as error:
                errors = line_errors(batch, error)
                for line in errors:
                    err.print(str(line))
                report.rejected(batch, errors[0])
                break
            report.stored(batch, result)
            progress.advance(task, len(batch))
    return report


def _interrupted(report: _Report) -> None:
    """Before a transport error ends publish: say what was stored (re-running is safe)."""
    if report.lines is not None:
        err.print(
            f"{report.stored_text()} before the error below; publishing the file again is "
            "safe: events already stored are recognised by their ids"
        )


# --- tail and history ----------------------------------------------------------------------


def _write_json(recorded: RecordedEvent, *, flush: bool = False) -> None:
    sys.stdout.buffer.write(contract_json(recorded) + b"\n")
    if flush:
        sys.stdout.buffer.flush()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops like Ctrl-C.

    `kill`, service managers and test harnesses send SIGTERM, and a process started in
    the background by a non-interactive shell ignores SIGINT (inherited SIG_IGN).
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # handled exactly like Ctrl-C

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_tail(args: argparse.Namespace) -> int:
    """`tail`: follow the log live until interrupted (or until caught up)."""
    # Ctrl-C or SIGTERM, at any moment: the way to stop following, not an error.
    with _sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt), _client(args) as client:
        subscription = client.subscribe(
            from_position=args.from_,
            event_types=args.type or (),
            categories=args.category or (),
            pipeline_ids=args.pipeline or (),
            processing_ids=args.processing_id or (),
            # The first CaughtUp follows every event stored before it: closing the
            # subscription there ends the iteration after the last of them.
            on_caught_up=(lambda _: subscription.close()) if args.until_caught_up else None,
        )
        with subscription:
            if not args.json:
                out.print("  ".join(COLUMNS), style="bold")
            show = _show_json if args.json else _show_row
            _interruptible(lambda: _each(subscription, show), stop=subscription.close)
    return 0


def _show_json(recorded: RecordedEvent) -> None:
    _write_json(recorded, flush=True)  # live: each line as it comes


def _show_row(recorded: RecordedEvent) -> None:
    out.print("  ".join(_row(recorded)))


def _each(subscription: Iterator[RecordedEvent], show: Callable[[RecordedEvent], None]) -> None:
    for recorded in subscription:
        show(recorded)


def _interruptible(work: Callable[[], None], *, stop: Callable[[], None]) -> None:
    """Run `work` in a thread while this (main) thread waits; `stop` it on the way out.

    Python raises KeyboardInterrupt in the main thread, wherever it is. Inside grpc's
    iteration it can leave a call half made and the channel's close hanging for ever;
    so the main thread only waits here. The work's own errors (a closed pipe, a lost
    service) are raised again here.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # raised again in the main thread
            failures.append(error)

    worker = threading.Thread(target=run, name="pipeline-events-tail", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    finally:
        stop()
        worker.join(5)  # one stuck writing to a full pipe is a daemon: left behind
    if failures:
        raise failures[0]


def run_history(args: argparse.Namespace) -> int:
    """`history`: one pipeline's events, oldest first (or newest first with --backwards)."""
    with _client(args) as client:
        events = client.read_aggregate(
            args.pipeline_id,
            from_revision=args.from_revision,
            backwards=args.backwards,
            limit=args.limit,
        )
    if args.json:
        for recorded in events:
            _write_json(recorded)
        return 0
    selection = f" from revision {args.from_revision}" if args.from_revision else ""
    if not events:
        out.print(f"pipeline {args.pipeline_id} has no events{selection}")
        return 0
    title = f"pipeline {args.pipeline_id}: {_count(len(events), 'event')}{selection}"
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

    credentials = _credentials(args)
    if credentials is None:
        channel = grpc.insecure_channel(args.target)
    else:
        channel = grpc.secure_channel(args.target, credentials)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=args.timeout
            )
            # A subscription from the end says where the log ends in its first message.
            metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None
            subscription = service_pb2_grpc.EventServiceStub(channel).Subscribe(
                service_pb2.SubscribeRequest(from_end={}), timeout=args.timeout, metadata=metadata
            )
            head = next(iter(subscription)).caught_up.position
            subscription.cancel()
        except grpc.RpcError as error:
            raise error_from_rpc(error, target=args.target, rpc="status") from error
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
    with _client(args) as client, _progress("simulating") as progress:
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


# --- run, runs and pipeline: the service's read models ---------------------------------------

_T = TypeVar("_T")


def _query(args: argparse.Namespace, ask: Callable[[EventClient], _T]) -> _T | None:
    """A state query's answer; None after saying on one line why there is none.

    An unknown id and read models behind `--min-position` are this command's
    failures (exit 1); an unreachable service is left to `guarded` (exit 2).
    """
    with _client(args) as client:
        try:
            return ask(client)
        except (NotFoundError, ProjectionBehindError) as error:
            err.print(f"pipeline-events {args.command}: {error}")
            return None


def _write_line(data: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(data) + b"\n")


def _show(report: RenderableType) -> None:
    """Print a report: on a terminal at its width; piped, as wide as the report needs,
    so that no cell wraps (a line of a table stays one line for grep)."""
    if out.is_terminal:
        out.print(report)
        return
    options = out.options.update(width=1 << 16, max_width=1 << 16)
    width = Measurement.get(out, options, report).maximum
    _Console(file=out.file, width=max(width, 80)).print(report)


def run_run(args: argparse.Namespace) -> int:
    """`run`: one processing run's state, as a report or as its ProcessingRunState JSON."""
    state = _query(args, lambda c: c.run_state(args.processing_id, min_position=args.min_position))
    if state is None:
        return 1
    if args.json:
        _write_line(reports.as_json(messages.run_to_proto(state)))
    else:
        _show(reports.run_report(state))
    return 0


def run_runs(args: argparse.Namespace) -> int:
    """`runs`: processing runs, newest first, as a table or ProcessingRunSummary JSON Lines."""
    summaries = _query(
        args,
        lambda client: client.runs(
            pipeline_id=args.pipeline,
            statuses=args.status or (),
            limit=args.limit,
            min_position=args.min_position,
        ),
    )
    if summaries is None:
        return 1
    if args.json:
        for summary in summaries:
            _write_line(reports.as_json(reports.summary_message(summary)))
        return 0
    if not summaries:
        out.print("no runs")
        return 0
    more = f" (--limit {args.limit}: there may be more)" if len(summaries) == args.limit else ""
    _show(reports.runs_table(summaries, title=f"{_count(len(summaries), 'run')}{more}"))
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    """`pipeline`: one pipeline's state, as a report or as its PipelineState JSON."""
    state = _query(
        args, lambda c: c.pipeline_state(args.pipeline_id, min_position=args.min_position)
    )
    if state is None:
        return 1
    if args.json:
        _write_line(reports.as_json(messages.pipeline_to_proto(state)))
    else:
        _show(reports.pipeline_report(state))
    return 0


def run_info(args: argparse.Namespace) -> int:
    """`info`: what the server holds and serves, as a report or one JSON object."""
    with _client(args) as client:
        info = client.server_info()
    if args.json:
        _write_line(reports.info_json(info))
    else:
        _show(reports.info_report(info))
    return 0


# --- consumer groups and their parked events ---------------------------------------------------


def _what(args: argparse.Namespace) -> str:
    """`group create`, `parked list`: the command and its action, for messages."""
    action = getattr(args, "group_action", None) or getattr(args, "parked_action", "")
    return f"{args.command} {action}"


def _group_call(args: argparse.Namespace, ask: Callable[[EventClient], _T]) -> _T | None:
    """A consumer-group call's answer; None after saying on one line why there is none.

    An unknown group, a group that exists with other settings and a request the server
    refuses are this command's failures (exit 1); an unreachable service is left to
    `guarded` (exit 2).
    """
    with _client(args) as client:
        try:
            return ask(client)
        except (NotFoundError, InvalidArgumentError) as error:
            err.print(f"pipeline-events {_what(args)}: {_refusal(error)}")
            return None
        except ClientError as error:
            if error.code.name != "ALREADY_EXISTS":  # a group with other settings
                raise
            err.print(f"pipeline-events {_what(args)}: {error}")
            return None


def _refusal(error: ClientError) -> str:
    """The server's message, with the fields it named (`settings.max_deliveries: ...`)."""
    violations = getattr(error, "field_violations", ())
    if not violations:
        return str(error)
    return "; ".join(f"{v.field}: {v.description}" for v in violations)


def _settings(args: argparse.Namespace, current: GroupSettings | None = None) -> GroupSettings:
    """The settings given, the others as `current` has them (None: the server's defaults)."""
    base = current or GroupSettings()
    return GroupSettings(
        max_deliveries=args.max_deliveries or base.max_deliveries,
        backoff=base.backoff if args.backoff is None else args.backoff,
        ack_timeout=args.ack_timeout or base.ack_timeout,
        max_in_flight=args.max_in_flight or base.max_in_flight,
    )


def _selection(args: argparse.Namespace, current: ConsumerGroup | None = None) -> dict[str, Any]:
    """The filter given, each part not given as `current` has it (None: every event)."""

    def part(given: list[Any] | None, kept: tuple[Any, ...]) -> list[Any]:
        return list(kept) if given is None else given

    if current is None or getattr(args, "every_event", False):
        kept: tuple[tuple[Any, ...], ...] = ((), (), (), ())
    else:
        kept = (current.event_types, current.categories, current.pipeline_ids,
                current.processing_ids)  # fmt: skip
    return {
        "event_types": part(args.type, kept[0]),
        "categories": part(args.category, kept[1]),
        "pipeline_ids": part(args.pipeline, kept[2]),
        "processing_ids": part(args.processing_id, kept[3]),
    }


def _show_group(args: argparse.Namespace, group: ConsumerGroup, headline: str) -> None:
    if args.json:
        _write_line(reports.group_json(group))
        return
    out.print(headline)
    _show(reports.group_report(group))


def run_group(args: argparse.Namespace) -> int:
    """`group create|list|info|update|delete`: consumer groups."""
    return _GROUP_ACTIONS[args.group_action](args)


def _group_create(args: argparse.Namespace) -> int:
    answer = _group_call(
        args,
        lambda client: client.create_group(
            args.name, start=args.start, settings=_settings(args), **_selection(args)
        ),
    )
    if answer is None:
        return 1
    group, created = answer
    if args.json:
        _write_line({"created": created, "group": reports.group_json(group)})
        return 0
    done = "created" if created else "already exists with these settings:"
    _show_group(args, group, f"consumer group {group.name!r} {done}")
    return 0


def _group_list(args: argparse.Namespace) -> int:
    groups = _group_call(args, lambda client: client.groups())
    if groups is None:
        return 1
    if args.json:
        for group in groups:
            _write_line(reports.group_json(group))
        return 0
    if not groups:
        out.print("no consumer groups")
        return 0
    _show(reports.groups_table(groups, title=_count(len(groups), "consumer group")))
    return 0


def _group_info(args: argparse.Namespace) -> int:
    group = _group_call(args, lambda client: client.group(args.name))
    if group is None:
        return 1
    _show_group(args, group, f"consumer group {group.name!r}")
    return 0


def _group_update(args: argparse.Namespace) -> int:
    def update(client: EventClient) -> ConsumerGroup:
        current = client.group(args.name)  # what is not given stays as it is
        return client.update_group(
            args.name, settings=_settings(args, current.settings), **_selection(args, current)
        )

    group = _group_call(args, update)
    if group is None:
        return 1
    _show_group(args, group, f"consumer group {group.name!r} updated")
    return 0


def _group_delete(args: argparse.Namespace) -> int:
    def delete(client: EventClient) -> bool:
        client.delete_group(args.name)
        return True

    if _group_call(args, delete) is None:
        return 1
    if args.json:
        _write_line({"name": args.name, "deleted": True})
    else:
        out.print(f"deleted consumer group {args.name!r} with its checkpoint and parked events")
    return 0


_GROUP_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": _group_create,
    "list": _group_list,
    "info": _group_info,
    "update": _group_update,
    "delete": _group_delete,
}


def run_parked(args: argparse.Namespace) -> int:
    """`parked list|replay|discard`: the events a consumer group gave up on."""
    return _PARKED_ACTIONS[args.parked_action](args)


def _parked_list(args: argparse.Namespace) -> int:
    parked = _group_call(args, lambda client: client.parked(args.group, limit=args.limit))
    if parked is None:
        return 1
    if args.json:
        for event in parked:
            event_json = orjson.loads(contract_json(event.event))
            _write_line(reports.parked_json(event, event_json))
        return 0
    if not parked:
        out.print(f"consumer group {args.group!r} has no parked events")
        return 0
    more = f" (--limit {args.limit}: there may be more)" if len(parked) == args.limit else ""
    title = f"consumer group {args.group!r}: {_count(len(parked), 'parked event')}{more}"
    _show(reports.parked_table(parked, title=title))
    return 0


MAX_REPLAY = 10_000  # parked events one ReplayParkedEvents gives back at most


def _parked_replay(args: argparse.Namespace) -> int:
    def replay_all(client: Any) -> int:
        # The server gives back at most 10,000 a call: ask again while it gives that many.
        total = 0
        while (count := client.replay_parked(args.group, args.event_ids)) >= MAX_REPLAY:
            total += count
        return total + count

    count = _group_call(args, replay_all)
    if count is None:
        return 1
    if args.json:
        _write_line({"group": args.group, "replayed": count})
    else:
        out.print(f"replayed {_count(count, 'parked event')} of consumer group {args.group!r}")
    return 0


def _parked_discard(args: argparse.Namespace) -> int:
    ids = [] if args.all else args.event_ids
    count = _group_call(args, lambda client: client.discard_parked(args.group, ids))
    if count is None:
        return 1
    if args.json:
        _write_line({"group": args.group, "discarded": count})
    else:
        out.print(f"discarded {_count(count, 'parked event')} of consumer group {args.group!r}")
    return 0


_PARKED_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _parked_list,
    "replay": _parked_replay,
    "discard": _parked_discard,
}


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
    except TlsError as error:  # TLS files the client cannot use: before any connection
        err.print(f"pipeline-events: {error}")
        return 2
