"""Consumer groups: consume throughput with a no-op handler, beside a plain Subscribe.

Run: `python bench/groups.py` (about 4 minutes on a 2-core machine, 200,000
events, 3 repetitions); `--quick` (20,000 events, 1 repetition, under a
minute); `--events N`, `--repeats N`; `--json FILE` to keep the results.
Prints the machine line (with the date), one Markdown table and notes. The
issue's goal: a group's consume throughput (1 and 4 members, no-op handler)
at least 0.5 of a plain Subscribe catch-up measured in the same run.

One `pipeline-events serve` process (SQLite, default durability) over a fresh
database, into which N ChunkProcessed events (pipelines of 100) are published
through the raw stub first, 500 per Publish, 4 in flight, as bench/service.py
stores its log. Every row reads the same stored events: the Subscribe rows
all N from the start, the group rows through a new group created for the row
(deleted after it, untimed) starting after position N - M, M = N except in row
(c), which reads the last N/10 (at about 3,000 events/s it would take over a
minute per repetition otherwise); the events column says how many. Every
connection is made and warmed up (one untimed call) before its timing starts;
the server is idle (under 4% of a core) before each row. Rows, in this order
in every repetition:

- (a) `AsyncEventClient.subscribe(from_position="start")`, counting events
  until the N-th: the reference of the client rows;
- (b) the same through the raw stub (SubscribeRequest from_start, until
  CaughtUp): the reference of the raw row;
- (c) a group, 1 member: `client.consume(group, noop, concurrency=1)`, timed
  until the group's checkpoint (GetConsumerGroup, polled every 10 ms) reaches
  the head, i.e. every event acked; then `stop` is set (untimed); the last
  N/10 events only. Not stopped by the handler at the N-th event: the
  helper's stop cancels its pending read, which in grpc.aio cancels the call,
  so its last acks would be lost;
- (d) the same with concurrency 16;
- (e) 4 members, 4 `consume` tasks on one client in this process, concurrency
  4 each, timed as (c);
- (e') 4 members in 4 client processes (this file run as `--member`), each
  connected and warmed up before the timing; timed from "go" until the
  group's checkpoint reaches the head, as (c);
- (f) the raw stub's Consume: one member that acks every Deliveries message at
  once as it arrives (one Ack of its ids), no client helper: the server's cost
  without the client's;
- (g) as (f) in a group whose max_in_flight is 1,000: what the default window
  of 100 events per member costs (each Deliveries message of (f) carries the
  whole window, so (f) makes one round trip per 100 events).

The groups have the default settings (100 events in flight per member, 30 s
ack timeout). Columns: events/s is the median over the repetitions (min-max
when there are several); ratio: the row's median over its reference's (client
rows over (a), the raw rows over (b)); server CPU: µs of `pipeline-events
serve` CPU (utime + stime, /proc/PID/stat) per event over the timed part;
client CPU: this process's CPU (or the member processes' together) per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb
from adaptive_pipeline.events.v1 import consumer_group_pb2_grpc, service_pb2_grpc
from machine import describe, table
from service import (
    FROM_END,
    FROM_START,
    INGEST_IN_FLIGHT,
    INGEST_PER_CALL,
    Child,
    checked,
    connected,
    cpu_seconds_used,
    deal,
    in_flight,
    log,
    make_calls,
    settle,
    spawned,
    stop_children,
)

from pipeline_events.client import AsyncEventClient
from pipeline_events.consumer import Delivery, GroupSettings

GOAL = 0.5  # group consume throughput / plain Subscribe, at least
MEMBERS = 4
WIDE_WINDOW = 1_000  # the max_in_flight of row (g)
POLL_SECONDS = 0.01
ROW_TIMEOUT = 300.0


@dataclass
class Row:
    """One table row: per repetition, seconds and CPU seconds (server, client)."""

    key: str
    name: str
    reference: str | None  # the key of the row it is compared with (None: a reference)
    share: int = 1  # the row reads the last 1/share of the stored events
    events: int = 0  # set by `run`
    seconds: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    redelivered: list[int] = field(default_factory=list)


@dataclass
class Timed:
    seconds: float
    server_cpu: float
    client_cpu: float
    redelivered: int = 0


async def noop(_delivery: Delivery) -> None:
    return None


# --- rows ------------------------------------------------------------------------------------


async def timed(server: Child, work: Callable[[], Awaitable[Any]]) -> Timed:
    """Run `work` (already connected): wall seconds, server and this process's CPU seconds."""
    cpu, mine = server.cpu_seconds(), time.process_time()
    start = time.perf_counter()
    result = await asyncio.wait_for(work(), ROW_TIMEOUT)
    seconds = time.perf_counter() - start
    timing = Timed(seconds, server.cpu_seconds() - cpu, time.process_time() - mine)
    if isinstance(result, int):
        timing.redelivered = result
    return timing


async def client_subscribe(server: Child, events: int) -> Timed:
    async with connected(server.target) as channel:
        client = AsyncEventClient(server.target, channel=channel, timeout=60)
        await client.groups()  # warm-up

        async def work() -> None:
            received = 0
            async with client.subscribe(from_position="start") as subscription:
                async for _event in subscription:
                    received += 1
                    if received == events:
                        return
            raise RuntimeError(f"the subscription ended after {received:,} events")

        return await timed(server, work)


async def raw_subscribe(server: Child, events: int) -> Timed:
    async with connected(server.target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        await head_of(stub)  # warm-up

        async def work() -> None:
            received, call = 0, stub.Subscribe(FROM_START)
            try:
                async for response in call:
                    kind = response.WhichOneof("content")
                    if kind == "events":
                        received += len(response.events.events)
                    elif kind == "caught_up":
                        break
            finally:
                call.cancel()
            if received != events:
                raise RuntimeError(f"Subscribe delivered {received:,} events, not {events:,}")

        return await timed(server, work)


async def in_process_group(
    server: Child, group: str, head: int, events: int, members: int, concurrency: int
) -> Timed:
    """`members` consume tasks on one client, timed until the group's checkpoint (polled)
    reaches the head; then stopped (untimed).

    Not stopped from the handler at the N-th event: stopping cancels the stream's pending
    read, which cancels the call in grpc.aio, so the last acks would never arrive.
    """
    async with connected(server.target) as channel:
        client = AsyncEventClient(server.target, channel=channel, timeout=60)
        await client.create_group(group, start=head - events)
        await client.group(group)  # warm-up
        stop = asyncio.Event()
        again = 0

        async def count(delivery: Delivery) -> None:
            nonlocal again
            if delivery.delivery_count > 1:
                again += 1

        consuming: list[asyncio.Task[Any]] = []

        async def work() -> int:
            consuming.extend(
                asyncio.create_task(
                    client.consume(group, count, concurrency=concurrency, stop=stop)
                )
                for _ in range(members)
            )
            await until_done(client, group, head, consuming)
            return again

        try:
            timing = await timed(server, work)
        finally:
            stop.set()
            await asyncio.gather(*consuming, return_exceptions=True)
        await client.delete_group(group)
    return timing


async def until_done(
    client: AsyncEventClient, group: str, head: int, consuming: list[asyncio.Task[Any]]
) -> None:
    """Poll until the group's checkpoint reaches the head; a failed task raises."""
    while (await client.group(group)).checkpoint < head:
        for task in consuming:
            if task.done():
                task.result()  # its error
                raise RuntimeError("a consume task ended before the group was done")
        await asyncio.sleep(POLL_SECONDS)


async def raw_group(
    server: Child, group: str, head: int, events: int, max_in_flight: int = 0
) -> Timed:
    """One raw-stub Consume member that acks each Deliveries message at once."""
    async with connected(server.target) as channel:
        client = AsyncEventClient(server.target, channel=channel, timeout=60)
        settings = GroupSettings(max_in_flight=max_in_flight)
        await client.create_group(group, start=head - events, settings=settings)
        stub = consumer_group_pb2_grpc.ConsumerGroupServiceStub(channel)
        await stub.GetConsumerGroup(pb.GetConsumerGroupRequest(name=group))  # warm-up

        async def work() -> int:
            call = stub.Consume()
            await call.write(pb.ConsumeRequest(start=pb.ConsumeStart(group=group)))
            received = again = 0
            while received < events:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise RuntimeError(f"Consume ended after {received:,} events")
                if response.WhichOneof("content") != "deliveries":
                    continue
                deliveries = response.deliveries.deliveries
                ids = [d.event.envelope.event_id for d in deliveries]
                again += sum(1 for d in deliveries if d.delivery_count > 1)
                await call.write(pb.ConsumeRequest(ack=pb.Ack(event_ids=ids)))
                received += len(ids)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:  # the server has taken every ack
                pass
            return again

        timing = await timed(server, work)
        await done(client, group, head)
        await client.delete_group(group)
    return timing


async def process_group(
    server: Child, group: str, head: int, events: int, members: int, concurrency: int
) -> Timed:
    """`members` client processes (`--member`), timed until the checkpoint reaches the head."""
    async with connected(server.target) as channel:
        client = AsyncEventClient(server.target, channel=channel, timeout=60)
        await client.create_group(group, start=head - events)
        await client.group(group)  # warm-up
        argv = [sys.executable, __file__, "--member", server.target, "--group", group,
                "--concurrency", str(concurrency)]  # fmt: skip
        children = [
            await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            for _ in range(members)
        ]
        try:
            for child in children:  # connected and warmed up
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 60)
                if line.strip() != b"ready":
                    raise RuntimeError(f"a member process did not start: {line!r}")

            async def work() -> None:
                for child in children:
                    assert child.stdin is not None
                    child.stdin.write(b"go\n")
                    await child.stdin.drain()
                await until_done(client, group, head, [])

            timing = await timed(server, work)
            cpu, acked = 0.0, 0
            for child in children:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(b"stop\n")
                await child.stdin.drain()
                report = json.loads(await asyncio.wait_for(child.stdout.readline(), 60))
                cpu += report["cpu"]
                acked += report["acked"]
                await child.wait()
            timing.client_cpu = cpu
            timing.redelivered = max(0, acked - events)
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        await client.delete_group(group)
    return timing


async def done(client: AsyncEventClient, group: str, head: int) -> None:
    """Wait (untimed) until the group's checkpoint reaches the head: every event acked."""
    deadline = time.monotonic() + 10
    while (shown := await client.group(group)).checkpoint < head:
        if time.monotonic() > deadline:
            raise RuntimeError(f"group {group}: checkpoint {shown.checkpoint:,} < {head:,}")
        await asyncio.sleep(POLL_SECONDS)


async def head_of(stub: service_pb2_grpc.EventServiceStub) -> int:
    """The log's head: the position of a Subscribe from the end's CaughtUp."""
    call = stub.Subscribe(FROM_END)
    try:
        async for response in call:
            if response.WhichOneof("content") == "caught_up":
                return int(response.caught_up.position)
    finally:
        call.cancel()
    raise RuntimeError("no CaughtUp")


# --- a member process ------------------------------------------------------------------------


async def member(target: str, group: str, concurrency: int) -> None:
    """`--member`: connect, print `ready`, consume from `go` to `stop`, print what it did."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    async with connected(target) as channel:
        client = AsyncEventClient(target, channel=channel, timeout=60)
        await client.group(group)  # warm-up
        print("ready", flush=True)
        while await lines.get() != "go":
            pass
        stop = asyncio.Event()
        mine = time.process_time()
        consuming = asyncio.create_task(
            client.consume(group, noop, concurrency=concurrency, stop=stop)
        )
        while await lines.get() != "stop":
            pass
        stop.set()
        stats = await consuming
        cpu = time.process_time() - mine
    print(json.dumps({"acked": stats.acked, "cpu": cpu}), flush=True)


# --- the run ---------------------------------------------------------------------------------


def rows() -> list[Row]:
    return [
        Row("a", "(a) Subscribe from start, AsyncEventClient.subscribe", None),
        Row("b", "(b) Subscribe from start, raw stub", None),
        Row("c", "(c) group, 1 member, consume concurrency 1", "a", share=10),
        Row("d", "(d) group, 1 member, consume concurrency 16", "a"),
        Row("e", f"(e) group, {MEMBERS} members in this process, concurrency 4 each", "a"),
        Row("e'", f"(e') group, {MEMBERS} member processes, concurrency 4 each", "a"),
        Row("f", "(f) group, 1 member, raw stub Consume, acks each message", "b"),
        Row("g", f"(g) as (f), the group's max_in_flight {WIDE_WINDOW:,} (default 100)", "b"),
    ]


async def run(directory: Path, events: int, repeats: int, only: set[str] | None) -> list[Row]:
    table_rows = [r for r in rows() if only is None or r.key in only]
    database = directory / "groups.db"
    cli = str(Path(sys.executable).parent / "pipeline-events")
    argv = [cli, "serve", "--listen", "127.0.0.1:0", "--store", f"sqlite:///{database}"]
    async with spawned("serve (groups)", argv, database.with_suffix(".log")) as server:
        calls = make_calls(events, INGEST_PER_CALL)
        log(f"storing {calls.count:,} events")
        async with connected(server.target) as channel:
            stub = service_pb2_grpc.EventServiceStub(channel)
            await in_flight(deal(calls.requests, INGEST_IN_FLIGHT), checked(stub.Publish))
            head = await head_of(stub)
        if head != calls.count:
            raise RuntimeError(f"the log's head is {head:,}, not {calls.count:,}")
        await settle(server)
        log(f"server pid {server.process.pid}")
        for row in table_rows:
            row.events = events // row.share
        work: dict[str, Callable[[int, int], Awaitable[Timed]]] = {
            "a": lambda n, k: client_subscribe(server, k),
            "b": lambda n, k: raw_subscribe(server, k),
            "c": lambda n, k: in_process_group(server, f"bench-c-{n}", head, k, 1, 1),
            "d": lambda n, k: in_process_group(server, f"bench-d-{n}", head, k, 1, 16),
            "e": lambda n, k: in_process_group(server, f"bench-e-{n}", head, k, MEMBERS, 4),
            "e'": lambda n, k: process_group(server, f"bench-e2-{n}", head, k, MEMBERS, 4),
            "f": lambda n, k: raw_group(server, f"bench-f-{n}", head, k),
            "g": lambda n, k: raw_group(server, f"bench-g-{n}", head, k, WIDE_WINDOW),
        }
        for number in range(repeats):
            for row in table_rows:
                await settle(server)
                log(f"{number + 1}/{repeats} {row.name}")
                timing = await work[row.key](number, row.events)
                row.seconds.append(timing.seconds)
                row.server_cpu.append(timing.server_cpu)
                row.client_cpu.append(timing.client_cpu)
                row.redelivered.append(timing.redelivered)
                log(f"  {row.events / timing.seconds:,.0f} ev/s")
    return table_rows


def rate_cell(row: Row) -> str:
    rates = [row.events / s for s in row.seconds]
    text = f"{statistics.median(rates):,.0f}"
    if len(rates) > 1:
        text += f" ({min(rates):,.0f}-{max(rates):,.0f})"
    return text


def median_rate(row: Row) -> float:
    return statistics.median(row.events / s for s in row.seconds)


def render(table_rows: list[Row]) -> str:
    by_key = {r.key: r for r in table_rows}
    lines = []
    for row in table_rows:
        reference = by_key.get(row.reference) if row.reference else None
        ratio = median_rate(row) / median_rate(reference) if reference else None
        lines.append([
            row.name,
            f"{row.events:,}",
            f"{statistics.median(row.seconds):.2f}",
            rate_cell(row),
            "-" if ratio is None else f"{ratio:.2f} of ({reference.key})",  # type: ignore[union-attr]
            "-" if row.reference is None else f"≥ {GOAL:g}",
            "" if ratio is None else ("yes" if ratio >= GOAL else "no"),
            f"{statistics.median(row.server_cpu) / row.events * 1e6:.1f}",
            f"{statistics.median(row.client_cpu) / row.events * 1e6:.1f}",
        ])  # fmt: skip
    headers = ["row", "events", "seconds", "events/s", "ratio", "goal", "met?",
               "server CPU µs/ev", "client CPU µs/ev"]  # fmt: skip
    text = table(headers, lines)
    again = {r.key: sum(r.redelivered) for r in table_rows if sum(r.redelivered)}
    if again:
        text += "\n\n- redeliveries (delivery_count > 1), over every repetition: " + ", ".join(
            f"({k}) {v:,}" for k, v in again.items()
        )
    return text


def to_json(table_rows: list[Row]) -> list[dict[str, Any]]:
    by_key = {r.key: r for r in table_rows}
    out = []
    for row in table_rows:
        reference = by_key.get(row.reference) if row.reference else None
        rate = median_rate(row)
        out.append({
            "row": row.key,
            "name": row.name,
            "events": row.events,
            "events_per_second": rate,
            "events_per_second_each": [row.events / s for s in row.seconds],
            "seconds_each": row.seconds,
            "reference": row.reference,
            "ratio": rate / median_rate(reference) if reference else None,
            "goal": None if row.reference is None else GOAL,
            "server_cpu_us_per_event": statistics.median(row.server_cpu) / row.events * 1e6,
            "client_cpu_us_per_event": statistics.median(row.client_cpu) / row.events * 1e6,
            "redelivered_each": row.redelivered,
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 1 repetition")
    parser.add_argument("--events", type=int, help="events stored (default 200,000; quick 20,000)")
    parser.add_argument("--repeats", "--repeat", type=int, help="default 3; quick 1")
    parser.add_argument("--only", help="comma-separated row keys of: a,b,c,d,e,e',f,g")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--member", metavar="TARGET", help="(internal) run one member process")
    parser.add_argument("--group", help="(internal) the member's group")
    parser.add_argument("--concurrency", type=int, default=1, help="(internal)")
    args = parser.parse_args()
    if args.member:
        asyncio.run(member(args.member, args.group, args.concurrency))
        return
    events = args.events or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 3)
    if events < 10 * INGEST_PER_CALL or events % INGEST_PER_CALL or repeats < 1:
        parser.error(f"--events: a multiple of {INGEST_PER_CALL} from 5,000; --repeats: at least 1")
    only = set(args.only.split(",")) if args.only else None
    if only is not None and (unknown := only - {r.key for r in rows()}):
        parser.error(f"unknown rows {sorted(unknown)}")

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: clean up
    started, (machine_before, ours_before) = time.perf_counter(), cpu_seconds_used()
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as directory:
        try:
            table_rows = asyncio.run(run(Path(directory), events, repeats, only))
        except KeyboardInterrupt:
            sys.exit("bench/groups.py: interrupted (the server it started is stopped)")
        finally:
            stop_children()
    seconds = time.perf_counter() - started
    machine_after, ours_after = cpu_seconds_used()
    others = (machine_after - machine_before - (ours_after - ours_before)) / seconds
    print(describe())
    print(
        f"`pipeline-events serve` (SQLite, default durability) as a separate process ·"
        f" {events:,} stored events · median of {repeats} · run {seconds:.0f} s, other"
        f" processes busy {others:.2f} cores meanwhile\n"
    )
    print(render(table_rows), flush=True)
    if args.json:
        report = {
            "machine": describe(),
            "events": events,
            "repeats": repeats,
            "seconds": seconds,
            "other_processes_cores": others,
            "goal": f"group consume ≥ {GOAL:g} of Subscribe",
            "results": to_json(table_rows),
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
