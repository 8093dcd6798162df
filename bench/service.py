"""The EventService measured through a real server process, beside limits measured in the same run.

Run: `python bench/service.py` (about 5 minutes on a 2-core machine);
`--quick` (smaller sizes, one repetition, under a minute) to smoke-test;
`--only ingest,latency` for some workloads (names below); `--repeat N`
(default 3; medians printed); `--json FILE` to keep the results for later
comparison. Prints the machine line (and how busy other processes kept the
machine meanwhile), one Markdown table (workload, ours, limit, ratio = ours /
limit, goal, met?) and notes: what the composite limits are made of, what the
open-loop workloads offered. Compare rows within one run: these 2-core machines
are noisy.

Every server is a subprocess: `pipeline-events serve` (SQLite at the default
durability, on a fresh database for every repetition that writes) or an echo
server, this file run as `--echo-server MODE --payload FILE` (grpc.aio generic
handlers answering precomputed bytes: no parsing, no store). The load comes
from this process over grpc.aio, through the generated stub ("raw stub",
requests built before any timing) or `AsyncEventClient`; every connection is
made and warmed up (one untimed call) before its timing starts. Events are
ChunkProcessed events from the domain factories, in pipelines of 100, each
pipeline one run, without expected revisions.

Workloads (`--only` names), each limit measured in the same repetition:

- ingest: Publish of 500 events, 4 calls in flight, raw stub, and through
  `AsyncEventClient.publish` of domain events (converted inside the timing).
  Limit: the same requests to an echo server answering a 500-position response,
  and bare `executemany` of the same rows into a fresh database with the store's
  schema (a transaction per 500), in series: 1 / (1/echo + 1/sqlite).
- catch-up: Subscribe from the start of a stored log (published through the
  service first) until CaughtUp, raw stub, and through `AsyncEventClient.subscribe`
  (every RecordedEvent delivered; none decoded to a domain event). Limit: an echo
  server streaming the bytes the service sent.
- single: Publish of one event, 16 callers each awaiting its calls in turn (each
  its own pipelines). Limit: the same requests to an echo server.
- latency: one subscriber (from the end) while single-event Publishes are
  offered at 1,000/s, open loop, raw stubs; from just before each Publish to the
  subscriber's receipt: p50, p99, max. Limit: an echo relay, which answers
  Publish and relays its events (framed as the store frames them) to every open
  Subscribe stream. Publishes refused RESOURCE_EXHAUSTED (the service's limit of
  calls in flight) are counted in the notes, not retried.
- read: ReadAggregate of a 100-event pipeline of the stored log, one call at a
  time, a different pipeline each, p50, raw stub and `read_aggregate`. Limit: the
  p50 of a bare SQLite read of the same rows plus the p50 of an echo server
  answering the service's response bytes.
- fanout: 10 subscribers (from the end) while 10,000 events/s are offered (100 per
  Publish, 100 calls/s), raw stubs: how many keep up (every event by 1 s after
  the last Publish was sent) and the p99 latency over all their events. The
  issue asks for context only; the echo relay under the same load is shown as
  the limit, which also shows what this process can measure.
- memory: 10 subscribers that stop reading after CaughtUp while N events are
  published as in ingest: the server's VmRSS growth (/proc/PID/status, the server
  idle before and after) and its peak (VmHWM); the same publishing without
  subscribers as context.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.protobuf import empty_pb2
from machine import describe, table

from pipeline_events import adapter, domain
from pipeline_events.client import CHANNEL_OPTIONS, AsyncEventClient
from pipeline_events.service.wire import field_bytes, length_delimited
from pipeline_events.store.base import encode_record, recorded_at_field
from pipeline_events.store.sqlite import _CHECKPOINT_FRAMES, _connect, migrate

T = TypeVar("T")

SERVICE = service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
PER_PIPELINE = 100
INGEST_PER_CALL, INGEST_IN_FLIGHT = 500, 4
SINGLE_IN_FLIGHT = 16
LATENCY_RATE = 1_000  # single-event Publishes offered per second
FANOUT_SUBSCRIBERS, FANOUT_RATE, FANOUT_PER_CALL = 10, 10_000, 100
KEEP_UP_SECONDS = 1.0  # kept up: the last event arrived by this long after the last Publish
DRAIN_SECONDS = 30.0  # how long subscribers get to receive everything at all
MEMORY_SUBSCRIBERS = 10
OVERLOADED = grpc.StatusCode.RESOURCE_EXHAUSTED  # the service's answer beyond its calls in flight
MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
SERVER_OPTIONS = [  # the echo servers accept what the service accepts
    ("grpc.max_receive_message_length", 16 * MIB),
    ("grpc.max_send_message_length", 16 * MIB),
    ("grpc.so_reuseport", 0),
]
FROM_START = service_pb2.SubscribeRequest(from_start=empty_pb2.Empty())
FROM_END = service_pb2.SubscribeRequest(from_end=empty_pb2.Empty())
CAUGHT_UP = service_pb2.SubscribeResponse(caught_up=service_pb2.CaughtUp()).SerializeToString()
INSERT = (
    "INSERT INTO events (position, aggregate_id, revision, event_id, event_type,"
    " processing_id, record) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
BY_AGGREGATE = "SELECT record FROM events WHERE aggregate_id = ? ORDER BY revision"


@dataclass(frozen=True)
class Sizes:
    """How much each workload does per repetition."""

    ingest: int = 100_000  # events
    catch_up: int = 200_000  # events stored, then read from the start
    single: int = 8_000  # events, one per Publish
    latency_seconds: float = 5.0
    read_calls: int = 1_000
    fanout_seconds: float = 5.0
    memory: int = 100_000  # events published while the subscribers stall


QUICK = Sizes(
    ingest=10_000, catch_up=20_000, single=1_600, latency_seconds=1.0, read_calls=200,
    fanout_seconds=1.0, memory=10_000,
)  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction 0.99: p99)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A bound on the ratio or on our own figure."""

    subject: Literal["ratio", "ours"]
    bound: float
    upper: bool  # the value must be at most the bound (else at least)
    text: str

    def met(self, ours: float, ratio: float | None) -> bool:
        value = ours if self.subject == "ours" else ratio
        assert value is not None, "a goal on the ratio needs a limit"
        return value <= self.bound if self.upper else value >= self.bound


def ratio_at_least(bound: float) -> Goal:
    return Goal("ratio", bound, upper=False, text=f"ratio ≥ {bound:g}")


def ratio_at_most(bound: float) -> Goal:
    return Goal("ratio", bound, upper=True, text=f"ratio ≤ {bound:g}")


def at_most(bound: float, unit: str) -> Goal:
    return Goal("ours", bound, upper=True, text=f"≤ {bound:g} {unit}")


UNITS: dict[str, Callable[[float], str]] = {
    "ev/s": lambda v: f"{v:,.0f} ev/s",
    "ms": lambda v: f"{v:.2f} ms",
    "MiB": lambda v: f"{v:.1f} MiB",
    "subscribers": lambda v: f"{v:.0f} of {FANOUT_SUBSCRIBERS}",
}


def rate(values: list[float]) -> str:
    return UNITS["ev/s"](statistics.median(values))


def ms(values: list[float]) -> str:
    return UNITS["ms"](statistics.median(values))


@dataclass
class Result:
    """One table row: our figure and its limit in each repetition (medians shown)."""

    workload: str
    unit: str
    ours: list[float]
    limit: list[float] = field(default_factory=list)  # empty: no limit (context)
    goal: Goal | None = None
    note: str = ""  # printed under the table: what the limit is made of, what was offered
    details: dict[str, list[float]] = field(default_factory=dict)  # per repetition, for the JSON

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ours) / statistics.median(self.limit) if self.limit else None

    @property
    def met(self) -> bool | None:
        return (
            None if self.goal is None else self.goal.met(statistics.median(self.ours), self.ratio)
        )

    def cells(self) -> list[str]:
        show, ratio, met = UNITS[self.unit], self.ratio, self.met
        return [
            self.workload,
            show(statistics.median(self.ours)),
            show(statistics.median(self.limit)) if self.limit else "-",
            "-" if ratio is None else f"{ratio:.2f}",
            "-" if self.goal is None else self.goal.text,
            "" if met is None else ("yes" if met else "no"),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "unit": self.unit,
            "ours": statistics.median(self.ours),
            "limit": statistics.median(self.limit) if self.limit else None,
            "ratio": self.ratio,
            "goal": None if self.goal is None else self.goal.text,
            "met": self.met,
            "ours_each": self.ours,
            "limit_each": self.limit,
            "note": self.note,
            "details_each": self.details,
        }


# --- events --------------------------------------------------------------------------------


@dataclass
class Calls:
    """Publish calls of events built before any timing: per call, domain events, request, ids."""

    events: list[list[domain.Event]]
    requests: list[service_pb2.PublishRequest]
    ids: list[list[str]]

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.ids)


def make_calls(events: int, per_call: int) -> Calls:
    """`events` ChunkProcessed events in pipelines of 100, `per_call` per call, in order.

    A call holds whole pipelines (per_call a multiple of 100) or consecutive events of one.
    """
    flat: list[domain.Event] = []
    for _ in range(events // PER_PIPELINE):
        pipeline, run = uuid.uuid4(), uuid.uuid4()
        flat += [
            domain.ChunkProcessed.new(
                pipeline, run, uuid.uuid4(), seq, 1_048_576, "compression", 12
            )
            for seq in range(PER_PIPELINE)
        ]
    calls = Calls([], [], [])
    for start in range(0, len(flat), per_call):
        chunk = flat[start : start + per_call]
        envelopes = [adapter.to_envelope(e) for e in chunk]
        calls.events.append(chunk)
        calls.requests.append(service_pb2.PublishRequest(events=envelopes))
        calls.ids.append([e.event_id for e in envelopes])
    return calls


def deal(items: Sequence[T], callers: int, run: int = 1) -> list[list[T]]:
    """`items` dealt round robin to `callers`, `run` consecutive items at a time."""
    hands: list[list[T]] = [[] for _ in range(callers)]
    for index, start in enumerate(range(0, len(items), run)):
        hands[index % callers] += items[start : start + run]
    return hands


def publish_response(events: int) -> bytes:
    """A PublishResponse for `events` events, with positions as deep into a log as a real one."""
    return service_pb2.PublishResponse(
        positions=[
            service_pb2.EventPosition(global_position=1_000_000 + i, revision=i % PER_PIPELINE + 1)
            for i in range(events)
        ]
    ).SerializeToString()


def sqlite_rows(requests: Sequence[service_pb2.PublishRequest]) -> list[list[tuple[Any, ...]]]:
    """Per call, the store's rows of its events, as `SQLiteEventStore` writes them."""
    recorded_at, position, revisions = recorded_at_field(time.time_ns()), 0, {}
    calls = []
    for request in requests:
        rows = []
        for envelope in request.events:
            position += 1
            revision = revisions[envelope.aggregate_id] = (
                revisions.get(envelope.aggregate_id, 0) + 1
            )
            data = envelope.SerializeToString(deterministic=True)
            rows.append((
                position, uuid.UUID(envelope.aggregate_id).bytes, revision,
                uuid.UUID(envelope.event_id).bytes, envelope.event_type,
                uuid.UUID(envelope.chunk_processed.processing_id).bytes,
                encode_record(data, position, revision, recorded_at),
            ))  # fmt: skip
        calls.append(rows)
    return calls


# --- processes -----------------------------------------------------------------------------


@dataclass(eq=False)
class Child:
    """A server subprocess, its log file and its gRPC target."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    target: str = ""

    def status(self) -> dict[str, int]:
        """Memory figures of /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile), in bytes."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[key] = int(value.split()[0]) * 1024
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited 10 s later."""
        if self in CHILDREN:
            CHILDREN.remove(self)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


CHILDREN: list[Child] = []  # every child not stopped yet: main stops them, whatever happened


def cpu_seconds_used() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (/proc/stat), and by this process and
    its children that have exited."""
    user, nice, system, _idle, _iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split(maxsplit=8)[1:8]
    )
    mine = os.times()
    used = (user + nice + system + irq + softirq) / CLOCK_TICKS
    return used, mine.user + mine.system + mine.children_user + mine.children_system


def stop_children() -> None:
    for child in list(CHILDREN):
        child.stop()


@contextlib.asynccontextmanager
async def connected(target: str) -> AsyncIterator[grpc.aio.Channel]:
    """A grpc.aio channel to `target`, with the client's options, once it is connected."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 20)
        yield channel


@contextlib.asynccontextmanager
async def spawned(name: str, argv: list[str], log_path: Path) -> AsyncIterator[Child]:
    """A server that logs `listening on 127.0.0.1:PORT`, once a channel to it is ready."""
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    child = Child(name, process, log_path)
    CHILDREN.append(child)
    try:
        deadline = time.monotonic() + 30
        while not (match := LISTENING.search(log_path.read_bytes())):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{child.log_tail()}")
            await asyncio.sleep(0.02)
        child.target = f"127.0.0.1:{int(match[1])}"
        async with connected(child.target):
            pass
        yield child
    except Exception:  # not on Ctrl-C, which stops the servers too
        if process.poll() is not None:
            log(f"{name} exited with status {process.returncode}:\n{child.log_tail()}")
        raise
    finally:
        child.stop()


async def settle(child: Child, timeout: float = 60.0) -> None:
    """Wait until the child is idle: under 4% of a core in two 0.25 s intervals running."""
    deadline, quiet = time.monotonic() + timeout, 0
    before = child.cpu_seconds()
    while quiet < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = child.cpu_seconds()
        quiet = quiet + 1 if now - before <= 0.01 else 0
        before = now


@dataclass
class Loaded:
    """The stored log of catch-up and read: its server, database file and pipelines."""

    server: Child
    database: Path
    pipelines: list[str]
    events: int
    stack: contextlib.AsyncExitStack  # closing it stops the server


@dataclass
class Bench:
    """A run: its sizes, repetitions, temporary directory, and the stored log once made."""

    sizes: Sizes
    repeat: int
    directory: Path
    loaded: Loaded | None = None
    _files: int = 0

    def path(self, stem: str, suffix: str) -> Path:
        """A new file name in the run's directory."""
        self._files += 1
        return self.directory / f"{stem}-{self._files}{suffix}"

    def service(
        self, database: Path | None = None
    ) -> contextlib.AbstractAsyncContextManager[Child]:
        """A `pipeline-events serve` process, on a fresh SQLite file unless given one."""
        database = database or self.path("serve", ".db")
        cli = str(Path(sys.executable).parent / "pipeline-events")
        argv = [cli, "serve", "--listen", "127.0.0.1:0", "--store", f"sqlite:///{database}"]
        return spawned(f"serve ({database.name})", argv, database.with_suffix(".log"))

    def echo(
        self, mode: str, messages: Sequence[bytes]
    ) -> contextlib.AbstractAsyncContextManager[Child]:
        """An echo server (this file, `--echo-server mode`) answering with `messages`."""
        payload = self.path(f"echo-{mode}", ".bin")
        payload.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in messages))
        argv = [sys.executable, __file__, "--echo-server", mode, "--payload", str(payload)]
        return spawned(f"echo server ({mode})", argv, payload.with_suffix(".log"))

    async def load(self) -> Loaded:
        """The stored log (made on first use): published through the service as in ingest."""
        if self.loaded is not None:
            return self.loaded
        calls = make_calls(self.sizes.catch_up, INGEST_PER_CALL)
        log(f"storing the log for catch-up and read: {calls.count:,} events")
        database = self.path("stored", ".db")
        stack = contextlib.AsyncExitStack()
        try:
            server = await stack.enter_async_context(self.service(database))
            async with connected(server.target) as channel:
                publish = checked(service_pb2_grpc.EventServiceStub(channel).Publish)
                await in_flight(deal(calls.requests, INGEST_IN_FLIGHT), publish)
            await settle(server)  # the read models fold what was published
        except BaseException:
            await stack.aclose()
            raise
        pipelines = [
            request.events[first].aggregate_id
            for request in calls.requests
            for first in range(0, len(request.events), PER_PIPELINE)
        ]
        self.loaded = Loaded(server, database, pipelines, calls.count, stack)
        return self.loaded


# --- the echo servers ----------------------------------------------------------------------


class Relay:
    """Answers Publish with `answer` and relays its events to every open Subscribe stream."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.streams: set[asyncio.Queue[bytes]] = set()
        self.position = 0

    async def publish(self, request: bytes, _context: Any) -> bytes:
        recorded_at = recorded_at_field(time.time_ns())
        records = []
        for envelope in field_bytes(request, 1):  # PublishRequest.events, as sent
            self.position += 1
            records.append(encode_record(envelope, self.position, 1, recorded_at))
        message = length_delimited(1, b"".join(records))  # SubscribeResponse.events
        for queue in self.streams:
            queue.put_nowait(message)
        return self.answer

    async def subscribe(self, _request: bytes, _context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams.add(queue)
        try:
            yield CAUGHT_UP
            while True:
                yield await queue.get()
        finally:
            self.streams.discard(queue)


def echo_handlers(mode: str, messages: list[bytes]) -> dict[str, grpc.RpcMethodHandler]:
    """The RPCs of an echo server: `unary` answers Publish and ReadAggregate with the first
    message; `stream` answers Subscribe with every message; `relay` is a Relay."""
    if mode == "unary":
        answer = messages[0]

        async def reply(_request: bytes, _context: Any) -> bytes:
            return answer

        return dict.fromkeys(
            ("Publish", "ReadAggregate"), grpc.unary_unary_rpc_method_handler(reply)
        )
    if mode == "stream":

        async def stream(_request: bytes, _context: Any) -> AsyncIterator[bytes]:
            for message in messages:
                yield message

        return {"Subscribe": grpc.unary_stream_rpc_method_handler(stream)}
    relay = Relay(messages[0])
    return {
        "Publish": grpc.unary_unary_rpc_method_handler(relay.publish),
        "Subscribe": grpc.unary_stream_rpc_method_handler(relay.subscribe),
    }


async def echo_server(mode: str, payload: Path) -> None:
    """Serve an echo server until SIGTERM or SIGINT (the payload: length-prefixed messages)."""
    data, messages, offset = payload.read_bytes(), [], 0
    while offset < len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        messages.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handlers = echo_handlers(mode, messages)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.stop(0)


# --- driving the load ----------------------------------------------------------------------


async def in_flight(work: Sequence[Sequence[T]], call: Callable[[T], Awaitable[Any]]) -> None:
    """One task per list in `work`, each making its calls one after another."""

    async def caller(mine: Sequence[T]) -> None:
        for item in mine:
            await call(item)

    await asyncio.gather(*(caller(mine) for mine in work))


def checked(publish: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[None]]:
    """A publish (raw stub or client) that fails unless its events got positions just now."""

    async def call(events: Any) -> None:
        response = await publish(events)
        if response.already_recorded or not response.positions:
            raise RuntimeError("a Publish stored nothing new: the benchmark reused a database")

    return call


async def publish_rate(
    target: str, work: list[list[Any]], events: int, warm_up: Any, client: bool
) -> float:
    """Events/s of publishing `work`, `events` in all (per caller: requests, or lists of
    domain events), after publishing `warm_up`."""
    async with connected(target) as channel:
        if client:
            publish = checked(AsyncEventClient(target, channel=channel, timeout=60).publish)
        else:
            publish = checked(service_pb2_grpc.EventServiceStub(channel).Publish)
        await publish(warm_up)
        start = time.perf_counter()
        await in_flight(work, publish)
        seconds = time.perf_counter() - start
    return events / seconds


def sqlite_rate(database: Path, calls: list[list[tuple[Any, ...]]]) -> float:
    """Events/s of bare executemany of the rows, a transaction per call, into a fresh database."""
    connection = _connect(str(database), "process")  # the store's PRAGMAs
    try:
        # The store checkpoints every ~_CHECKPOINT_FRAMES pages; SQLite does the same here.
        connection.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_FRAMES}")
        migrate(connection)
        start = time.perf_counter()
        for rows in calls:
            connection.execute("BEGIN")
            connection.executemany(INSERT, rows)
            connection.execute("COMMIT")
        seconds = time.perf_counter() - start
    finally:
        connection.close()
    return sum(len(rows) for rows in calls) / seconds


async def catch_up_rate(target: str, events: int, client: bool) -> float:
    """Events/s of a Subscribe from the start until the log's `events` have arrived."""
    async with connected(target) as channel:
        if client:
            count = client_catch_up(AsyncEventClient(target, channel=channel), events)
        else:
            count = raw_catch_up(service_pb2_grpc.EventServiceStub(channel))
        start = time.perf_counter()
        received = await asyncio.wait_for(count, 300)
        seconds = time.perf_counter() - start
    if received != events:
        raise RuntimeError(f"the catch-up delivered {received:,} events, not {events:,}")
    return events / seconds


async def raw_catch_up(stub: service_pb2_grpc.EventServiceStub) -> int:
    """The events received up to CaughtUp."""
    received, call = 0, stub.Subscribe(FROM_START)
    try:
        async for response in call:
            kind = response.WhichOneof("content")
            if kind == "events":
                received += len(response.events.events)
            elif kind == "caught_up":
                return received
    finally:
        call.cancel()
    return received


async def client_catch_up(client: AsyncEventClient, events: int) -> int:
    """The events received, stopping at the `events`-th."""
    received = 0
    async with client.subscribe(from_position="start") as subscription:
        async for _event in subscription:
            received += 1
            if received == events:
                break
    return received


async def captured_subscription(target: str) -> list[bytes]:
    """The service's messages of a Subscribe from the start, up to CaughtUp, as sent."""
    async with connected(target) as channel:
        subscribe = channel.unary_stream(
            f"/{SERVICE}/Subscribe",
            request_serializer=service_pb2.SubscribeRequest.SerializeToString,
            response_deserializer=None,
        )
        call, messages = subscribe(FROM_START), []
        try:
            async for data in call:
                messages.append(data)
                if service_pb2.SubscribeResponse.FromString(data).HasField("caught_up"):
                    break
        finally:
            call.cancel()
    return messages


async def captured_read(target: str, pipeline: str) -> bytes:
    """The service's ReadAggregateResponse of one pipeline, as sent."""
    async with connected(target) as channel:
        read = channel.unary_unary(
            f"/{SERVICE}/ReadAggregate",
            request_serializer=service_pb2.ReadAggregateRequest.SerializeToString,
            response_deserializer=None,
        )
        return await read(service_pb2.ReadAggregateRequest(aggregate_id=pipeline))


async def read_p50(target: str, pipelines: list[str], client: bool) -> float:
    """Milliseconds, p50, of reading each pipeline in turn (raw stub or `read_aggregate`)."""
    async with connected(target) as channel:
        if client:
            reader = AsyncEventClient(target, channel=channel)
            items: list[Any] = pipelines

            async def read(item: Any) -> int:
                return len(await reader.read_aggregate(item))
        else:
            stub = service_pb2_grpc.EventServiceStub(channel)
            items = [service_pb2.ReadAggregateRequest(aggregate_id=p) for p in pipelines]

            async def read(item: Any) -> int:
                return len((await stub.ReadAggregate(item)).events)

        await read(items[0])
        times = []
        for item in items:
            start = time.perf_counter()
            count = await read(item)
            times.append(time.perf_counter() - start)
            if count != PER_PIPELINE:
                raise RuntimeError(f"ReadAggregate returned {count} events, not {PER_PIPELINE}")
    return statistics.median(times) * 1e3


def bare_read_p50(database: Path, pipelines: list[str]) -> float:
    """Milliseconds, p50, of a bare SQLite read of each pipeline's records."""
    connection = _connect(str(database), "process")
    keys = [uuid.UUID(p).bytes for p in pipelines]
    try:
        connection.execute(BY_AGGREGATE, (keys[0],)).fetchall()
        times = []
        for key in keys:
            start = time.perf_counter()
            rows = connection.execute(BY_AGGREGATE, (key,)).fetchall()
            times.append(time.perf_counter() - start)
            assert len(rows) == PER_PIPELINE
    finally:
        connection.close()
    return statistics.median(times) * 1e3


class Subscriber:
    """A raw-stub subscription from the end, timing each event from just before its Publish."""

    def __init__(self, stub: service_pb2_grpc.EventServiceStub, sent: dict[str, float]):
        self.sent = sent
        self.latencies: list[float] = []  # seconds
        self.last_arrival = math.inf  # perf_counter() when its latest events arrived
        self.expected = math.inf  # events it is to receive, once known
        self.caught_up = asyncio.Event()
        self.complete = asyncio.Event()  # every expected event has arrived
        self.call = stub.Subscribe(FROM_END)
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for response in self.call:
            now = time.perf_counter()
            kind = response.WhichOneof("content")
            if kind == "events":
                sent = self.sent
                self.latencies += [now - sent[r.envelope.event_id] for r in response.events.events]
                self.last_arrival = now
                if len(self.latencies) >= self.expected:
                    self.complete.set()
            elif kind == "caught_up":
                self.caught_up.set()

    async def ready(self) -> None:
        """Wait for its CaughtUp."""
        waiting = asyncio.ensure_future(self.caught_up.wait())
        await asyncio.wait({waiting, self.task}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not self.caught_up.is_set():
            if self.task.done():
                self.task.result()  # its error
            raise RuntimeError("no CaughtUp within 20 s")

    def expect(self, events: int) -> None:
        """Complete once `events` have arrived."""
        self.expected = events
        if len(self.latencies) >= events:
            self.complete.set()

    @property
    def finished(self) -> float:
        """When its last expected event arrived (inf: not every one did)."""
        return self.last_arrival if self.complete.is_set() else math.inf

    def close(self) -> None:
        self.task.cancel()
        self.call.cancel()


@dataclass
class Offered:
    """What an open-loop run did: its subscribers, and when and how much it published."""

    followers: list[Subscriber]
    last_sent: float  # perf_counter() when the last Publish was sent
    rate: float  # events/s actually offered
    accepted: int  # events stored
    refused: int  # Publishes refused RESOURCE_EXHAUSTED (the server's limit of calls in flight)

    def latencies(self) -> list[float]:
        return [x for follower in self.followers for x in follower.latencies]


async def offered(target: str, calls: Calls, per_second: float, subscribers: int) -> Offered:
    """Subscribers from the end while `calls` are offered at `per_second` calls/s, open loop;
    returned once each has every event stored, or DRAIN_SECONDS after the last answer."""
    async with connected(target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        publish = checked(stub.Publish)
        await publish(make_calls(PER_PIPELINE, PER_PIPELINE).requests[0])  # warm-up
        sent: dict[str, float] = {}
        followers = [Subscriber(stub, sent) for _ in range(subscribers)]
        try:
            for follower in followers:
                await follower.ready()
            pending = []
            start = time.perf_counter()
            for index, (request, ids) in enumerate(zip(calls.requests, calls.ids, strict=True)):
                await asyncio.sleep(max(0.0, start + index / per_second - time.perf_counter()))
                sent.update(dict.fromkeys(ids, time.perf_counter()))
                pending.append(asyncio.create_task(publish(request)))
            last_sent = time.perf_counter()
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
            refused = 0
            for outcome in outcomes:
                if isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == OVERLOADED:
                    refused += 1
                elif outcome is not None:
                    raise outcome
            accepted = sum(len(i) for i, o in zip(calls.ids, outcomes, strict=True) if o is None)
            for follower in followers:
                follower.expect(accepted)
            await asyncio.wait([asyncio.ensure_future(f.complete.wait()) for f in followers],
                               timeout=DRAIN_SECONDS)  # fmt: skip
            for follower in followers:
                if follower.task.done():
                    follower.task.result()  # its error, if it failed
        finally:
            for follower in followers:
                follower.close()
    return Offered(followers, last_sent, calls.count / (last_sent - start), accepted, refused)


async def open_loop(
    bench: Bench, name: str, calls: Calls, per_second: float, subscribers: int
) -> dict[str, list[Offered]]:
    """Each repetition: `calls` offered (see `offered`) to a fresh service, then to an echo relay."""
    runs: dict[str, list[Offered]] = {"service": [], "relay": []}
    async with bench.echo("relay", [publish_response(len(calls.ids[0]))]) as relay:
        for number in range(bench.repeat):
            log(f"{name} {number + 1}/{bench.repeat}")
            async with bench.service() as server:
                runs["service"].append(await offered(server.target, calls, per_second, subscribers))
            runs["relay"].append(await offered(relay.target, calls, per_second, subscribers))
    return runs


def delivery(runs: dict[str, list[Offered]]) -> tuple[str, dict[str, list[float]]]:
    """A note on what each server was offered (medians) and what it refused or did not
    deliver (over every repetition); and those figures per repetition."""
    parts, details = [], {}
    for who, done in runs.items():
        text = f"{who}: offered {rate([run.rate for run in done])}"
        if refused := sum(run.refused for run in done):
            text += f", {refused:,} Publishes refused (RESOURCE_EXHAUSTED)"
        if lost := sum(run.accepted * len(run.followers) - len(run.latencies()) for run in done):
            text += f", {lost:,} deliveries of stored events missing after {DRAIN_SECONDS:g} s"
        parts.append(text)
        details[f"{who}: offered ev/s"] = [run.rate for run in done]
        details[f"{who}: Publishes refused"] = [run.refused for run in done]
        details[f"{who}: events stored"] = [run.accepted for run in done]
    return "; ".join(parts), details


async def until_caught_up(call: Any) -> None:
    """Read a Subscribe call's messages up to its CaughtUp."""
    while True:
        response = await call.read()
        if response is grpc.aio.EOF:
            raise RuntimeError("a subscription ended before its CaughtUp")
        if response.HasField("caught_up"):
            return


async def rss_around_publishing(
    bench: Bench, work: list[list[Any]], subscribers: int
) -> tuple[dict[str, int], dict[str, int]]:
    """The server's memory before and after `work` is published, `subscribers` not reading."""
    async with bench.service() as server, connected(server.target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        publish = checked(stub.Publish)
        await publish(make_calls(INGEST_PER_CALL, INGEST_PER_CALL).requests[0])  # warm-up
        stalled = [stub.Subscribe(FROM_END) for _ in range(subscribers)]
        try:
            for call in stalled:  # read up to CaughtUp, then never again
                await until_caught_up(call)
            await settle(server)
            before = server.status()
            await in_flight(work, publish)
            await settle(server)
            after = server.status()
        finally:
            for call in stalled:
                call.cancel()
    return before, after


# --- workloads -----------------------------------------------------------------------------


async def ingest(bench: Bench) -> list[Result]:
    calls = make_calls(bench.sizes.ingest, INGEST_PER_CALL)
    warm_up = make_calls(INGEST_PER_CALL, INGEST_PER_CALL)
    n, warm_raw, warm_events = calls.count, warm_up.requests[0], warm_up.events[0]
    requests, events = deal(calls.requests, INGEST_IN_FLIGHT), deal(calls.events, INGEST_IN_FLIGHT)
    rows = sqlite_rows(calls.requests)
    raw, client, echo, bare = [], [], [], []
    async with bench.echo("unary", [publish_response(INGEST_PER_CALL)]) as echo_server:
        for number in range(bench.repeat):
            log(f"ingest {number + 1}/{bench.repeat}")
            async with bench.service() as server:
                raw.append(await publish_rate(server.target, requests, n, warm_raw, False))
            async with bench.service() as server:
                client.append(await publish_rate(server.target, events, n, warm_events, True))
            echo.append(await publish_rate(echo_server.target, requests, n, warm_raw, False))
            bare.append(sqlite_rate(bench.path("bare", ".db"), rows))
    limit = [1 / (1 / e + 1 / s) for e, s in zip(echo, bare, strict=True)]
    note = (
        f"limit = 1 / (1/echo + 1/SQLite): echo server {rate(echo)}, bare SQLite"
        f" executemany {rate(bare)}"
    )
    details = {"echo ev/s": echo, "bare SQLite ev/s": bare}
    return [
        Result(f"ingest, {INGEST_PER_CALL} events per Publish ({INGEST_IN_FLIGHT} in flight), raw stub",
               "ev/s", raw, limit, ratio_at_least(0.6), note, details),
        Result("ingest, same, through AsyncEventClient.publish of domain events",
               "ev/s", client, limit, ratio_at_least(0.5)),
    ]  # fmt: skip


async def catch_up(bench: Bench) -> list[Result]:
    loaded = await bench.load()
    messages = await captured_subscription(loaded.server.target)
    raw, client, echo = [], [], []
    async with bench.echo("stream", messages) as echo_server:
        for number in range(bench.repeat):
            log(f"catch-up {number + 1}/{bench.repeat}")
            raw.append(await catch_up_rate(loaded.server.target, loaded.events, False))
            client.append(await catch_up_rate(loaded.server.target, loaded.events, True))
            echo.append(await catch_up_rate(echo_server.target, loaded.events, False))
    return [
        Result(f"catch-up Subscribe of {loaded.events:,} stored events, raw stub",
               "ev/s", raw, echo, ratio_at_least(0.6)),
        Result("catch-up through AsyncEventClient.subscribe", "ev/s", client, echo, ratio_at_least(0.4)),
    ]  # fmt: skip


async def single(bench: Bench) -> list[Result]:
    calls = make_calls(bench.sizes.single, 1)
    warm_up = make_calls(PER_PIPELINE, 1).requests[0]
    work = deal(calls.requests, SINGLE_IN_FLIGHT, run=PER_PIPELINE)  # each caller its pipelines
    ours, echo = [], []
    async with bench.echo("unary", [publish_response(1)]) as echo_server:
        for number in range(bench.repeat):
            log(f"single {number + 1}/{bench.repeat}")
            async with bench.service() as server:
                ours.append(await publish_rate(server.target, work, calls.count, warm_up, False))
            echo.append(await publish_rate(echo_server.target, work, calls.count, warm_up, False))
    name = f"one event per Publish, {SINGLE_IN_FLIGHT} in flight, raw stub"
    return [Result(name, "ev/s", ours, echo, ratio_at_least(0.85))]


async def latency(bench: Bench) -> list[Result]:
    calls = make_calls(int(LATENCY_RATE * bench.sizes.latency_seconds), 1)
    runs = await open_loop(bench, "latency", calls, LATENCY_RATE, 1)

    def at(who: str, fraction: float) -> list[float]:
        return [percentile(run.latencies(), fraction) * 1e3 for run in runs[who]]

    note, details = delivery(runs)
    name = f"publish → subscriber latency at {LATENCY_RATE:,} ev/s offered"
    return [
        Result(f"{name}, p50", "ms", at("service", 0.5), at("relay", 0.5),
               ratio_at_most(1.2), note, details),
        Result(f"{name}, p99", "ms", at("service", 0.99), at("relay", 0.99),
               at_most(3, "ms")),
        Result(f"{name}, max", "ms", at("service", 1.0), at("relay", 1.0)),
    ]  # fmt: skip


async def read(bench: Bench) -> list[Result]:
    loaded = await bench.load()
    pipelines = [loaded.pipelines[i % len(loaded.pipelines)] for i in range(bench.sizes.read_calls)]
    answer = await captured_read(loaded.server.target, pipelines[0])
    raw, client, bare, echo = [], [], [], []
    async with bench.echo("unary", [answer]) as echo_server:
        for number in range(bench.repeat):
            log(f"read {number + 1}/{bench.repeat}")
            raw.append(await read_p50(loaded.server.target, pipelines, False))
            client.append(await read_p50(loaded.server.target, pipelines, True))
            bare.append(bare_read_p50(loaded.database, pipelines))
            echo.append(await read_p50(echo_server.target, pipelines, False))
    limit = [b + e for b, e in zip(bare, echo, strict=True)]
    note = f"limit = bare SQLite read {ms(bare)} + echo server {ms(echo)}"
    details = {"bare SQLite read ms": bare, "echo server ms": echo}
    goal = ratio_at_most(1.2)
    return [
        Result(f"ReadAggregate of {PER_PIPELINE} events, p50, raw stub", "ms", raw, limit, goal,
               note, details),
        Result("ReadAggregate, same, through AsyncEventClient.read_aggregate", "ms", client, limit, goal),
    ]  # fmt: skip


async def fanout(bench: Bench) -> list[Result]:
    calls = make_calls(int(FANOUT_RATE * bench.sizes.fanout_seconds), FANOUT_PER_CALL)
    per_second = FANOUT_RATE / FANOUT_PER_CALL
    runs = await open_loop(bench, "fanout", calls, per_second, FANOUT_SUBSCRIBERS)

    def kept(who: str) -> list[float]:
        return [
            sum(f.finished <= run.last_sent + KEEP_UP_SECONDS for f in run.followers)
            for run in runs[who]
        ]

    def p99(who: str) -> list[float]:
        return [percentile(run.latencies(), 0.99) * 1e3 for run in runs[who]]

    note, details = delivery(runs)
    note += f"; kept up: every event by {KEEP_UP_SECONDS:g} s after the last Publish was sent"
    name = (
        f"{FANOUT_RATE:,} ev/s offered ({FANOUT_PER_CALL} per Publish), {FANOUT_SUBSCRIBERS}"
        " subscribers"
    )
    return [
        Result(f"{name}: subscribers keeping up", "subscribers", kept("service"), kept("relay"),
               Goal("ours", FANOUT_SUBSCRIBERS, False, f"all {FANOUT_SUBSCRIBERS}"), note, details),
        Result(f"{name}: p99 latency", "ms", p99("service"), p99("relay"), at_most(20, "ms")),
    ]  # fmt: skip


async def memory(bench: Bench) -> list[Result]:
    calls = make_calls(bench.sizes.memory, INGEST_PER_CALL)
    work = deal(calls.requests, INGEST_IN_FLIGHT)
    growth: dict[str, list[float]] = {}  # "VmRSS", "RssAnon", "RssFile", "alone"
    peak = []
    for number in range(bench.repeat):
        log(f"memory {number + 1}/{bench.repeat}")
        before, after = await rss_around_publishing(bench, work, MEMORY_SUBSCRIBERS)
        for key in ("VmRSS", "RssAnon", "RssFile"):
            growth.setdefault(key, []).append((after[key] - before[key]) / MIB)
        peak.append(after["VmHWM"] / MIB)
        before, after = await rss_around_publishing(bench, work, 0)
        growth.setdefault("alone", []).append((after["VmRSS"] - before["VmRSS"]) / MIB)
    show = UNITS["MiB"]
    note = (
        f"of it anonymous memory {show(statistics.median(growth['RssAnon']))}, file-backed"
        f" (the mapped database) {show(statistics.median(growth['RssFile']))}"
    )
    details = {f"{key} growth MiB": growth[key] for key in ("RssAnon", "RssFile")}
    name = (
        f"memory: {MEMORY_SUBSCRIBERS} subscribers stop reading, {calls.count:,} events published"
    )
    # What the stalled subscribers cost: the growth with them less the growth without
    # (the store's caches fill as the database grows, subscribers or not).
    cost = [with_ - alone for with_, alone in zip(growth["VmRSS"], growth["alone"], strict=True)]
    return [
        Result(f"{name}: what the subscribers cost (growth with them - without)", "MiB", cost,
               goal=at_most(10, "MiB")),
        Result(f"{name}: server RSS growth", "MiB", growth["VmRSS"], note=note, details=details),
        Result("memory: same publishing, no subscribers: server RSS growth", "MiB",
               growth["alone"]),
        Result(f"{name}: server peak RSS (VmHWM)", "MiB", peak, goal=at_most(300, "MiB")),
    ]  # fmt: skip


WORKLOADS: dict[str, Callable[[Bench], Awaitable[list[Result]]]] = {
    "ingest": ingest,
    "catch-up": catch_up,
    "single": single,
    "latency": latency,
    "read": read,
    "fanout": fanout,
    "memory": memory,
}


# --- main ----------------------------------------------------------------------------------


async def run(bench: Bench, names: list[str]) -> list[Result]:
    results = []
    try:
        for name in names:
            log(f"workload {name}")
            results += await WORKLOADS[name](bench)
    finally:
        if bench.loaded is not None:
            await bench.loaded.stack.aclose()
    return results


def render(results: list[Result]) -> str:
    """The table, then the notes of its rows (medians)."""
    rows = table(
        ["workload", "ours", "limit", "ratio", "goal", "met?"], [r.cells() for r in results]
    )
    notes = [f"- {r.workload}: {r.note}" for r in results if r.note]
    return "\n".join([rows, "", *notes]) if notes else rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition (< 60 s)")
    parser.add_argument("--repeat", type=int, help="repetitions per workload (default 3; quick 1)")
    parser.add_argument("--only", help=f"comma-separated workloads of: {','.join(WORKLOADS)}")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--echo-server", choices=["unary", "stream", "relay"], help="(internal)")
    parser.add_argument("--payload", type=Path, help="(internal) the echo server's messages")
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(echo_server(args.echo_server, args.payload))
        return
    names = list(WORKLOADS)
    if args.only:
        wanted = args.only.split(",")
        if unknown := set(wanted) - set(WORKLOADS):
            parser.error(f"unknown workload {sorted(unknown)[0]!r}; known: {', '.join(WORKLOADS)}")
        names = [name for name in WORKLOADS if name in wanted]
    sizes = QUICK if args.quick else Sizes()
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: clean up
    started, (machine_before, ours_before) = time.perf_counter(), cpu_seconds_used()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as directory:
        try:
            results = asyncio.run(run(Bench(sizes, repeat, Path(directory)), names))
        except KeyboardInterrupt:
            sys.exit("bench/service.py: interrupted (every server it started is stopped)")
        finally:
            stop_children()
    seconds = time.perf_counter() - started
    machine_after, ours_after = cpu_seconds_used()
    others = (machine_after - machine_before - (ours_after - ours_before)) / seconds
    print(describe())
    print(
        "`pipeline-events serve` (SQLite, default durability) and echo servers as separate"
        f" processes · median of {repeat} · run {seconds:.0f} s, other processes busy"
        f" {others:.2f} cores meanwhile\n"
    )
    print(render(results), flush=True)
    if args.json:
        report = {
            "machine": describe(),
            "repeat": repeat,
            "sizes": dataclasses.asdict(sizes),
            "seconds": seconds,
            "other_processes_cores": others,
            "results": [r.to_json() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
