"""The EventService on NATS JetStream beside raw nats-py on the same server, in one run.

Run: `python bench/nats.py` (about 45 s with the default 20,000 events per
workload); `--quick` (2,000) for a run of a few seconds; `--service
inprocess` to host the service in this process instead of a `pipeline-events
serve` child; `--profile` to add cProfiles (this process) of the store's batched
append, of its `read_all` and of the service's Publish of 100 hosted in-process.
Prints Markdown tables; compare rows within one run, since these 2-core
machines are noisy.

One `nats-server` (JetStream, file storage, R1; its default 2-minute fsync
interval) is started in a temporary directory and stopped by pid at the end,
error or not. Every stream has the store's own configuration (allow_atomic,
allow_direct, 2-minute duplicate window). Every event is a ChunkProcessed
envelope from `adapter.to_envelope`, serialized before any timing (about 200
bytes); pipelines (aggregates) of 100 events; no expected revisions (ANY).
Each workload publishes events of its own, so no event id repeats.

Publishing (N events, or N/4 for one event per call):

- raw nats-py: `js.publish_async` of every event's bytes to
  `raw.<aggregate>.ChunkProcessed` (nats-py's own pipelining, up to 4,000
  acks pending), the limit for the batched-publish goal; the store's exact
  messages (its headers, one JetStream atomic batch per 100 events, the last
  message a request for the commit's ack), 4 batches in flight, but none of the
  store's lookups; `js.publish` awaited one at a time, and 16 at a time;
- service: `AsyncEventClient.publish` of 100 events (one pipeline) and of
  1,000 (ten pipelines), 4 calls in flight; and of single events, 16 in flight
  (each caller its own pipelines). By default the service is a `pipeline-events
  serve --store nats://...` process, so this process's CPU is the client's; with
  3 busy processes (client, service, nats-server) on 2 cores, the service rows
  pay for a core they share. The service's read models follow the log as it is
  published (as in production), in the service's process;
- store alone (no gRPC, in this process): `NatsEventStore.append` of 100 events,
  4 in flight, and of single events, 16 in flight.

Catch-up: every reader reads the service's stream from its start (all it holds
by then, the same stored messages for every row; their headers as the store
wrote them):

- raw nats-py: an ordered push consumer (`js.subscribe(ordered_consumer=True)`,
  flow control, AckNone) counting messages in its callback; a pull consumer with
  an ordered consumer's settings (ephemeral, AckNone, memory, R1), `fetch(1000)`
  in a loop, the limit for the catch-up goal; batched Direct Get of 1,000 (the
  store's read request) without the store;
- store alone: `read_all` pages of 1,000;
- service: `subscribe(from_position="start")` until its CaughtUp, counting the
  events received (the server's default of 500 per message, and 1,000).

Columns: events, seconds, events/s (medians over `--repeats` passes, each on
events of its own, with the min-max when there are several); CPU microseconds
per event of this process (client: the benchmark and its gRPC threads), of the
service process and of nats-server, from /proc, counted from the start of the
row until both servers are idle again, so the read models' folding of what was
published counts; `service busy`: the service process's CPU during the row over
its duration (100% = one core); `service ÷ this`: the matching service row's
events/s over this row's. The goals table puts each service figure beside its
raw limit from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import io
import json
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# This file is called nats.py: with its directory on sys.path (as a script's is),
# `import nats` would import it instead of nats-py. Take the directory off, load the
# sibling `machine` by path, and put the repository root on (for tests.nats_support).
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != BENCH]
sys.path.insert(0, str(BENCH.parent))

from pipeline_events import adapter, domain  # noqa: E402
from pipeline_events.store import open_store  # noqa: E402
from pipeline_events.store.base import EventEnvelope, ProposedEvent  # noqa: E402
from tests.nats_support import NatsServer, nats_server_binary, start_server, stop_all  # noqa: E402

try:
    import nats
    from nats.js import api as js_api

    from pipeline_events.client import AsyncEventClient
except ImportError:  # pragma: no cover
    sys.exit("bench/nats.py needs the [grpc,nats] extras: pip install -e '.[grpc,nats]'")

_spec = importlib.util.spec_from_file_location("machine", BENCH / "machine.py")
assert _spec is not None and _spec.loader is not None
machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(machine)
describe, table = machine.describe, machine.table

PER_AGGREGATE = 100
RAW_STREAM, RAW_PREFIX = "RAW", "raw"
SERVICE_STREAM, SERVICE_PREFIX = "PE_SERVICE", "pe_service"
STORE_STREAM, STORE_PREFIX = "PE_STORE", "pe_store"
PROFILE_STREAM, PROFILE_PREFIX = "PE_PROFILE", "pe_profile"
BATCH_IN_FLIGHT = 4
SINGLE_IN_FLIGHT = 16
GOAL = 0.5  # service / raw
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- events ------------------------------------------------------------------------------


@dataclass
class Aggregate:
    """One pipeline's events, revision order, with their serialized bytes."""

    id: str
    envelopes: list[EventEnvelope]
    data: list[bytes]
    proposed: list[ProposedEvent] = field(default_factory=list)


def aggregates(events: int) -> list[Aggregate]:
    """`events` ChunkProcessed events in pipelines of 100."""
    found = []
    for _ in range(events // PER_AGGREGATE):
        pipeline, run = uuid.uuid4(), uuid.uuid4()
        envelopes = [
            adapter.to_envelope(
                domain.ChunkProcessed.new(
                    pipeline, run, uuid.uuid4(), seq, 1_048_576, "compression", 12
                )
            )
            for seq in range(PER_AGGREGATE)
        ]
        data = [e.SerializeToString(deterministic=True) for e in envelopes]
        proposed = [ProposedEvent.of(e, d) for e, d in zip(envelopes, data, strict=True)]
        found.append(Aggregate(str(pipeline), envelopes, data, proposed))
    return found


def batches(aggs: list[Aggregate], size: int) -> list[list[Aggregate]]:
    """Calls of `size` events: whole pipelines, size/100 of them per call."""
    per = max(1, size // PER_AGGREGATE)
    return [aggs[i : i + per] for i in range(0, len(aggs), per)]


async def in_flight(
    work: Sequence[Any], callers: int, call: Callable[[Any], Awaitable[Any]]
) -> None:
    """`callers` tasks, caller k making calls k, k + callers, ... one after another."""

    async def caller(mine: Sequence[Any]) -> None:
        for item in mine:
            await call(item)

    await asyncio.gather(*(caller(work[k::callers]) for k in range(callers)))


# --- CPU of the processes ------------------------------------------------------------------


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Row:
    section: str
    name: str
    events: int
    seconds: float
    cpu: dict[str, float | None]  # CPU µs per event (until idle): client, service, nats
    service_busy: float | None  # service process CPU during the row / the row's seconds

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class Bench:
    nats: NatsServer
    service_pid: int | None = None
    rows: list[Row] = field(default_factory=list)
    settled: bool = False  # idle since the last row (nothing else talks to the servers)

    def cpu(self) -> dict[str, float | None]:
        return {
            "client": time.process_time(),
            "service": process_cpu(self.service_pid),
            "nats": process_cpu(self.nats.pid),
        }

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until the service and nats-server are idle (under 4% of a core for 0.5 s)."""
        deadline = time.monotonic() + timeout
        before, quiet = self.cpu(), 0
        while time.monotonic() < deadline and quiet < 2:
            await asyncio.sleep(0.25)
            now = self.cpu()
            busy = any(
                now[k] is not None and before[k] is not None and now[k] - before[k] > 0.01  # type: ignore[operator]
                for k in ("service", "nats")
            )
            quiet = 0 if busy else quiet + 1
            before = now

    async def time(
        self, section: str, name: str, run: Callable[[], Awaitable[int | None]], events: int
    ) -> Row:
        """Time one workload; `run` returns the events it handled (or None: `events`)."""
        if not self.settled:
            await self.settle()
        log(f"{section}: {name}")
        before = self.cpu()
        start = time.perf_counter()
        handled = await run()
        seconds = time.perf_counter() - start
        during = self.cpu()
        await self.settle()  # what the workload left to do (the read models) counts too
        after = self.cpu()
        self.settled = True
        count = events if handled is None else handled
        cpu = {
            k: None
            if after[k] is None or before[k] is None
            else (after[k] - before[k]) / count * 1e6  # type: ignore[operator]
            for k in after
        }
        busy = None
        if during["service"] is not None and before["service"] is not None:
            busy = (during["service"] - before["service"]) / seconds
        row = Row(section, name, count, seconds, cpu, busy)
        self.rows.append(row)
        return row


# --- raw nats-py ---------------------------------------------------------------------------


def stream_config(name: str, prefix: str) -> js_api.StreamConfig:
    """The NATS store's own stream configuration (`NatsEventStore._ensure_stream`)."""
    return js_api.StreamConfig(
        name=name,
        subjects=[f"{prefix}.>"],
        storage=js_api.StorageType.FILE,
        num_replicas=1,
        duplicate_window=120.0,
        allow_direct=True,
        allow_atomic=True,
        deny_delete=True,
        deny_purge=True,
        discard=js_api.DiscardPolicy.NEW,
    )


def subject(agg: Aggregate) -> str:
    return f"{RAW_PREFIX}.{agg.id}.ChunkProcessed"


def check_ack(reply: Any) -> int:
    ack = json.loads(reply.data)
    if "error" in ack:
        raise RuntimeError(f"JetStream refused a publish: {ack['error']}")
    return int(ack["seq"])


async def raw_publish_async(js: Any, aggs: list[Aggregate]) -> None:
    futures = []
    for agg in aggs:
        topic = subject(agg)
        for data in agg.data:
            futures.append(await js.publish_async(topic, data))
    await asyncio.gather(*futures)


async def raw_publish_awaited(js: Any, aggs: list[Aggregate], callers: int) -> None:
    async def one(agg: Aggregate) -> None:
        topic = subject(agg)
        for data in agg.data:
            await js.publish(topic, data)

    await in_flight(aggs, callers, one)


async def raw_atomic_batches(nc: Any, aggs: list[Aggregate], callers: int) -> None:
    """The store's messages for batches of one new pipeline's 100 events, no lookups."""

    async def one(agg: Aggregate) -> None:
        batch_id = uuid.uuid4().hex
        topic = subject(agg)
        last = len(agg.data)
        for number, (envelope, data) in enumerate(zip(agg.envelopes, agg.data, strict=True), 1):
            headers = {
                "Nats-Msg-Id": envelope.event_id,
                "Pe-Revision": str(number),
                "Pe-Processing-Id": envelope.chunk_processed.processing_id,
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(number),
            }
            if number == 1:
                headers["Nats-Expected-Last-Subject-Sequence"] = "0"
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"{RAW_PREFIX}.{agg.id}.*"
            if number < last:
                await nc.publish(topic, data, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                check_ack(await nc.request(topic, data, timeout=10, headers=headers))

    await in_flight(aggs, callers, one)


async def stream_messages(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def raw_ordered_push(js: Any, total: int, stream: str, prefix: str) -> int:
    done, count = asyncio.Event(), 0

    async def seen(_message: Any) -> None:
        nonlocal count
        count += 1
        if count >= total:
            done.set()

    sub = await js.subscribe(
        f"{prefix}.>",
        stream=stream,
        cb=seen,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    try:
        await asyncio.wait_for(done.wait(), 300)
    finally:
        await sub.unsubscribe()
    return count


async def raw_ordered_pull(js: Any, total: int, stream: str, prefix: str) -> int:
    """A pull consumer with an ordered consumer's settings, fetching 1,000 at a time."""
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE,
        deliver_policy=js_api.DeliverPolicy.ALL,
        mem_storage=True,
        num_replicas=1,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(f"{prefix}.>", stream=stream, config=config)
    count = 0
    try:
        while count < total:
            count += len(await sub.fetch(1000, timeout=5))
    finally:
        await sub.unsubscribe()
    return count


async def raw_direct_get(nc: Any, total: int, stream: str, prefix: str) -> int:
    """Batched Direct Get from sequence 1, 1,000 per request (the store's read request)."""
    count, seq = 0, 1
    while count < total:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        request = json.dumps({"seq": seq, "batch": 1000, "next_by_subj": f"{prefix}.>"})
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", request.encode(), reply=inbox)
        while True:
            message = await sub.next_msg(timeout=10)
            headers = message.headers or {}
            status = headers.get("Status")
            if status:
                if status not in ("204", "404"):
                    raise RuntimeError(f"Direct Get failed: {status}")
                break
            count += 1
            seq = int(headers["Nats-Sequence"]) + 1
        await sub.unsubscribe()
        if status == "404":
            break
    return count


# --- the service ---------------------------------------------------------------------------


def store_url(server: NatsServer, stream: str, prefix: str) -> str:
    return f"{server.url}?stream={stream}&prefix={prefix}"


@dataclass
class Service:
    target: str
    process: subprocess.Popen[bytes] | None = None
    running: Any = None  # in-process: the RunningServer
    store: Any = None
    log_path: Path | None = None

    def died(self) -> str | None:
        """The log of a service process that exited by itself (None while it runs)."""
        if self.process is None or self.process.poll() is None or self.log_path is None:
            return None
        return self.log_path.read_text(errors="replace")[-4000:]

    async def stop(self) -> None:
        if self.running is not None:
            with contextlib.suppress(Exception):
                await stop_in_process(self.running)
            with contextlib.suppress(Exception):
                await self.store.close()
        if self.process is not None:
            stop_process(self.process)


async def stop_in_process(running: Any) -> None:
    """Stop an in-process server, at most 10 s (then the store's close ends its read models).

    NOTE: `RunningServer.stop` can wait forever in `ReadModels.close`: on Python 3.11 a
    cancellation that lands as a nats-py request completes is swallowed by `wait_for`,
    and the read models' task goes back to waiting for an append.
    """
    with contextlib.suppress(Exception):
        await asyncio.wait_for(running.stop(1.0), 10)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM by pid, then SIGKILL; never raises."""
    with contextlib.suppress(Exception):
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


async def start_service(url: str, mode: str, directory: Path) -> Service:
    if mode == "inprocess":
        from pipeline_events.service.server import start_server as start_grpc

        store = await open_store(url)
        running = await start_grpc(store)
        return Service(f"127.0.0.1:{running.port}", running=running, store=store)
    cli = str(Path(sys.executable).parent / "pipeline-events")
    log_path = directory / "serve.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [cli, "serve", "--store", url, "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = Service("", process=process, log_path=log_path)
    deadline = time.monotonic() + 30
    while True:
        text = log_path.read_text(errors="replace")
        if match := LISTENING.search(text):
            service.target = f"127.0.0.1:{match[1]}"
            return service
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"pipeline-events serve did not start:\n{text}")
        await asyncio.sleep(0.05)


async def service_batches(client: AsyncEventClient, calls: list[list[Aggregate]]) -> None:
    async def one(call: list[Aggregate]) -> None:
        await client.publish([e for agg in call for e in agg.envelopes])

    await in_flight(calls, BATCH_IN_FLIGHT, one)


async def service_singles(client: AsyncEventClient, aggs: list[Aggregate]) -> None:
    async def one(agg: Aggregate) -> None:
        for envelope in agg.envelopes:
            await client.publish(envelope)

    await in_flight(aggs, SINGLE_IN_FLIGHT, one)


async def service_catch_up(client: AsyncEventClient, batch: int) -> int:
    """Subscribe from the start; the events received when CaughtUp arrives."""
    caught_up, received = asyncio.Event(), 0
    subscription = client.subscribe(
        from_position="start", max_batch_size=batch, on_caught_up=lambda _p: caught_up.set()
    )

    async def drain() -> None:
        nonlocal received
        async for _event in subscription:
            received += 1

    task = asyncio.create_task(drain())
    waiting = asyncio.create_task(caught_up.wait())
    await asyncio.wait({task, waiting}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await subscription.aclose()
    if not caught_up.is_set():
        raise RuntimeError("the subscription never caught up")
    return received


# --- the store alone -----------------------------------------------------------------------


async def store_batches(store: Any, calls: list[list[Aggregate]]) -> None:
    async def one(call: list[Aggregate]) -> None:
        await store.append([p for agg in call for p in agg.proposed])

    await in_flight(calls, BATCH_IN_FLIGHT, one)


async def store_singles(store: Any, aggs: list[Aggregate]) -> None:
    async def one(agg: Aggregate) -> None:
        for event in agg.proposed:
            await store.append([event])

    await in_flight(aggs, SINGLE_IN_FLIGHT, one)


async def store_read_all(store: Any) -> int:
    position, count = 0, 0
    while True:
        page = await store.read_all(after_position=position, limit=1000)
        count += len(page.events)
        position = page.scanned_to
        if position >= page.head:
            return count


# --- the run -------------------------------------------------------------------------------


RAW_ASYNC = "raw: js.publish_async"
RAW_ATOMIC = f"raw: atomic batches of 100, store's headers, {BATCH_IN_FLIGHT} in flight"
RAW_ONE = "raw: js.publish awaited, 1 in flight"
RAW_SIXTEEN = f"raw: js.publish awaited, {SINGLE_IN_FLIGHT} in flight"
SVC_100 = f"service: Publish of 100, {BATCH_IN_FLIGHT} in flight"
SVC_1000 = f"service: Publish of 1,000, {BATCH_IN_FLIGHT} in flight"
SVC_ONE = f"service: Publish of 1, {SINGLE_IN_FLIGHT} in flight"
STORE_100 = f"store: append of 100, {BATCH_IN_FLIGHT} in flight"
STORE_ONE = f"store: append of 1, {SINGLE_IN_FLIGHT} in flight"
RAW_PUSH = "raw: ordered push consumer"
RAW_PULL = "raw: ordered-consumer pull, fetch(1000)"
RAW_DIRECT = "raw: Direct Get batches of 1,000"
STORE_READ = "store: read_all pages of 1,000"
SVC_SUB = "service: Subscribe, 500 per message (default)"
SVC_SUB_1000 = "service: Subscribe, 1,000 per message"
#: Each raw or store row beside the service row it is the limit of.
MATCHING = {
    RAW_ASYNC: SVC_100, RAW_ATOMIC: SVC_100, RAW_ONE: SVC_ONE, RAW_SIXTEEN: SVC_ONE,
    STORE_100: SVC_100, STORE_ONE: SVC_ONE,
    RAW_PUSH: SVC_SUB, RAW_PULL: SVC_SUB, RAW_DIRECT: SVC_SUB, STORE_READ: SVC_SUB,
}  # fmt: skip
GOALS = [
    ("batched publish (Publish of 100) ≥ 50% of raw js.publish_async", SVC_100, RAW_ASYNC),
    ("batched publish (Publish of 1,000) ≥ 50% of raw js.publish_async", SVC_1000, RAW_ASYNC),
    ("catch-up Subscribe ≥ 50% of a raw ordered-consumer pull", SVC_SUB, RAW_PULL),
]


async def one_pass(
    args: argparse.Namespace, bench: Bench, js: Any, nc: Any, client: Any, store: Any, reader: Any
) -> None:
    """Every workload once, each on events of its own."""
    n, singles = args.events, args.single_events
    log(f"building the events ({6 * n + 4 * singles:,}, outside any timing)")
    raw_async, raw_atomic = aggregates(n), aggregates(n)
    raw_one, raw_sixteen = aggregates(singles), aggregates(singles)
    svc_100, svc_1000, svc_single = aggregates(n), aggregates(n), aggregates(singles)
    st_100, st_single = aggregates(n), aggregates(singles)

    pub, cat, t = "publish", "catch-up", bench.time
    await t(pub, RAW_ASYNC, lambda: raw_publish_async(js, raw_async), n)
    await t(pub, RAW_ATOMIC, lambda: raw_atomic_batches(nc, raw_atomic, BATCH_IN_FLIGHT), n)
    await t(pub, RAW_ONE, lambda: raw_publish_awaited(js, raw_one, 1), singles)
    await t(
        pub, RAW_SIXTEEN, lambda: raw_publish_awaited(js, raw_sixteen, SINGLE_IN_FLIGHT), singles
    )
    await t(pub, SVC_100, lambda: service_batches(client, batches(svc_100, 100)), n)
    await t(pub, SVC_1000, lambda: service_batches(client, batches(svc_1000, 1000)), n)
    await t(pub, SVC_ONE, lambda: service_singles(client, svc_single), singles)
    await t(pub, STORE_100, lambda: store_batches(store, batches(st_100, 100)), n)
    await t(pub, STORE_ONE, lambda: store_singles(store, st_single), singles)

    # Every reader reads the service's stream: the same stored messages, same count.
    total = await stream_messages(js, SERVICE_STREAM)
    log_of = (total, SERVICE_STREAM, SERVICE_PREFIX)
    await t(cat, RAW_PUSH, lambda: raw_ordered_push(js, *log_of), 0)
    await t(cat, RAW_PULL, lambda: raw_ordered_pull(js, *log_of), 0)
    await t(cat, RAW_DIRECT, lambda: raw_direct_get(nc, *log_of), 0)
    await t(cat, STORE_READ, lambda: store_read_all(reader), 0)
    await t(cat, SVC_SUB, lambda: service_catch_up(client, 0), 0)
    await t(cat, SVC_SUB_1000, lambda: service_catch_up(client, 1000), 0)
    for row in bench.rows[-6:]:
        assert row.events == total, (row.name, row.events, total)


async def run(args: argparse.Namespace, directory: Path) -> tuple[Bench, str | None]:
    server = start_server(directory / "nats")
    bench = Bench(server)
    service: Service | None = None
    nc = None
    stores: list[Any] = []
    profile_text = None
    try:
        nc = await nats.connect(server.url)  # type: ignore[attr-defined]  # (mypy: this file)
        js = nc.jetstream(timeout=10)
        await js.add_stream(stream_config(RAW_STREAM, RAW_PREFIX))
        # Warm the paths up (not timed): connections, consumers, caches.
        warm = aggregates(5 * PER_AGGREGATE)
        await raw_publish_async(js, warm[:1])
        await raw_publish_awaited(js, warm[1:2], 1)

        log(f"starting the service ({args.service})")
        service = await start_service(
            store_url(server, SERVICE_STREAM, SERVICE_PREFIX), args.service, directory
        )
        bench.service_pid = service.process.pid if service.process is not None else None
        client = AsyncEventClient(service.target, timeout=60)
        await client.publish(warm[2].envelopes)
        await client.publish(warm[3].envelopes[0])

        store = await open_store(store_url(server, STORE_STREAM, STORE_PREFIX))
        stores.append(store)
        await store.append(warm[4].proposed)
        reader = await open_store(store_url(server, SERVICE_STREAM, SERVICE_PREFIX))
        stores.append(reader)

        for number in range(args.repeats):
            log(f"pass {number + 1} of {args.repeats}")
            await one_pass(args, bench, js, nc, client, store, reader)
        await client.close()

        if args.profile:
            profile_text = await profile(server, js, args.events)
    except BaseException:
        if service is not None and (text := service.died()):
            log(f"the service process exited (status {service.process.returncode}):\n{text}")  # type: ignore[union-attr]
        raise
    finally:
        if service is not None:
            await service.stop()
        for opened in stores:
            with contextlib.suppress(Exception):
                await opened.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        stop_all([server])
    return bench, profile_text


async def profiled(title: str, events: int, work: Callable[[], Awaitable[Any]]) -> str:
    """cProfile of one workload in this process: its rate and the top costs."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    await work()
    profiler.disable()
    seconds = time.perf_counter() - start
    out = io.StringIO()
    out.write(
        f"#### {title}: {events:,} events, {events / seconds:,.0f}/s under the profiler\n\n```\n"
    )
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(r"pipeline_events|protovalidate|nats/", 15)
    out.write("```\n")
    return out.getvalue()


async def profile(server: NatsServer, js: Any, events: int) -> str:
    """cProfiles (this process) of the store's batched append, its catch-up read, and the
    service's batched Publish with the server in this process."""
    from pipeline_events.service.server import start_server as start_grpc

    parts = []
    log("profiling store.append of 100, 4 in flight")
    store = await open_store(store_url(server, PROFILE_STREAM, PROFILE_PREFIX))
    try:
        await store.append(aggregates(PER_AGGREGATE)[0].proposed)
        work = batches(aggregates(events), 100)
        parts.append(await profiled(
            "store.append of 100, 4 in flight", events, lambda: store_batches(store, work)
        ))  # fmt: skip
    finally:
        await store.close()
    log("profiling store.read_all pages of 1,000")
    reader = await open_store(store_url(server, SERVICE_STREAM, SERVICE_PREFIX))
    try:
        total = await stream_messages(js, SERVICE_STREAM)
        parts.append(await profiled(
            "store.read_all pages of 1,000 (the service's stream)", total,
            lambda: store_read_all(reader),
        ))  # fmt: skip
    finally:
        await reader.close()
    log("profiling the service's Publish of 100, server in this process")
    store = await open_store(store_url(server, PROFILE_STREAM, PROFILE_PREFIX))
    running = await start_grpc(store)
    client = AsyncEventClient(f"127.0.0.1:{running.port}", timeout=60)
    try:
        await client.publish(aggregates(PER_AGGREGATE)[0].envelopes)
        work = batches(aggregates(events), 100)
        parts.append(await profiled(
            "service Publish of 100, 4 in flight (client, server and read models in this process)",
            events, lambda: service_batches(client, work),
        ))  # fmt: skip
    finally:
        await client.close()
        await stop_in_process(running)
        await store.close()
    return "\n".join(parts)


# --- output --------------------------------------------------------------------------------


def micro(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


@dataclass
class Summary:
    """A workload's rows over the passes: medians."""

    name: str
    events: int
    seconds: float
    rate: float
    cpu: dict[str, float | None]
    service_busy: float | None
    spread: str  # min-max events/s over the passes


def summarise(rows: list[Row]) -> Summary:
    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    rates = [r.rate for r in rows]
    return Summary(
        rows[0].name,
        int(statistics.median(r.events for r in rows)),
        statistics.median(r.seconds for r in rows),
        statistics.median(rates),
        {k: median([r.cpu[k] for r in rows]) for k in rows[0].cpu},
        median([r.service_busy for r in rows]),
        f"{min(rates):,.0f}-{max(rates):,.0f}" if len(rows) > 1 else "",
    )


def render(bench: Bench, service_mode: str, repeats: int) -> str:
    names: dict[str, list[Row]] = {}
    for row in bench.rows:
        names.setdefault(row.name, []).append(row)
    summaries = {name: summarise(rows) for name, rows in names.items()}
    in_process = service_mode != "process"
    headers = [
        "workload", "events", "s", "events/s",
        *(["events/s min-max"] if repeats > 1 else []),
        "client CPU µs/ev", "service CPU µs/ev" + (" (in client)" if in_process else ""),
        "nats-server CPU µs/ev", "service busy", "service ÷ this",
    ]  # fmt: skip
    parts = []
    for section in ("publish", "catch-up"):
        lines = []
        for name, rows in names.items():
            if rows[0].section != section:
                continue
            it = summaries[name]
            other = summaries.get(MATCHING.get(name, ""))
            busy = "" if it.service_busy is None or in_process else f"{it.service_busy:.0%}"
            lines.append([
                name, f"{it.events:,}", f"{it.seconds:.2f}", f"{it.rate:,.0f}",
                *([it.spread] if repeats > 1 else []),
                micro(it.cpu["client"]), micro(it.cpu["service"]), micro(it.cpu["nats"]),
                busy, f"{other.rate / it.rate:.0%}" if other is not None else "",
            ])  # fmt: skip
        parts.append(f"### {section}\n\n" + table(headers, lines))
    goal_lines = []
    for goal, service_name, raw_name in GOALS:
        service_row, raw_row = summaries[service_name], summaries[raw_name]
        share = service_row.rate / raw_row.rate
        goal_lines.append([
            goal, f"{service_row.rate:,.0f}", f"{raw_row.rate:,.0f}", f"{share:.1%}",
            "yes" if share >= GOAL else "no",
        ])  # fmt: skip
    parts.append(
        "### goals\n\n"
        + table(["goal", "service events/s", "raw events/s (same run)", "ratio", "met"], goal_lines)
    )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per batched workload")
    parser.add_argument(
        "--single-events", type=int, default=None, help="events per one-event workload (N/4)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 events per workload")
    parser.add_argument(
        "--service",
        choices=["process", "inprocess"],
        default="process",
        help="a `pipeline-events serve` child (default) or the server in this process",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="passes over every workload (medians printed)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the store and service")
    args = parser.parse_args()
    if args.quick:
        args.events = 2_000
    if args.events < 1000 or args.events % 1000:
        parser.error("--events must be a positive multiple of 1,000")
    if args.single_events is None:
        args.single_events = max(PER_AGGREGATE * SINGLE_IN_FLIGHT, args.events // 4)
    if args.single_events < PER_AGGREGATE or args.single_events % PER_AGGREGATE:
        parser.error(f"--single-events must be a positive multiple of {PER_AGGREGATE}")

    version = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as name:
        bench, profile_text = asyncio.run(run(args, Path(name)))
    print(describe())
    print(
        f"{version} · JetStream file storage, R1 · service: "
        + ("`pipeline-events serve` process" if args.service == "process" else "in this process")
        + f" · {args.events:,} events per batched workload, {args.single_events:,} per"
        f" single-event one · run {time.perf_counter() - started:.0f} s\n"
    )
    print(render(bench, args.service, args.repeats), flush=True)
    if profile_text:
        print("\n### cProfile (this process, sorted by own time)\n")
        print(profile_text.rstrip())


if __name__ == "__main__":
    main()
