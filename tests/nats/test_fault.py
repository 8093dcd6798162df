"""Issue 12, item 3: kill -9 JetStream nodes under load, and lose nothing acknowledged.

A 3-node JetStream cluster on loopback (each node its own store directory) holds an R3
stream; two `pipeline-events serve` replicas list all three nodes in their store URL,
so each one's NATS connection fails over. Four producers (two per replica), each the
only writer of its own pipeline, publish batches of 1-10 events (a ProcessingStarted,
then ChunkProcessed events) with a patient retry policy, recording every acknowledged event id and the positions the ack
returned; a subscriber through one replica records every (global position, event id)
it receives from the start.

Under that load the stream leader is killed with SIGKILL: publishing must resume (the
client retries, idempotently by event id) and the subscriber must resume from its
position, past everything acknowledged meanwhile. The node is restarted (same ports and
store directory) and, once it has caught up, another node is killed, with the same
demands: one a replica's NATS connection goes through while it is not the stream leader
(the leader commits a batch, its ack dies with the node), else the stream leader. Then the producers stop
and once every running node holds the whole stream, the log is checked through the
replicas: every acknowledged event is stored exactly once, at the positions its ack
returned; no event id appears twice; each pipeline's revisions are 1..n (as both
replicas read it); global positions run 1..head without a gap; both replicas' read
models count every chunk of the log; and the live subscriber's list is exactly the
log's, in order. Every broken guarantee is reported, not only the first.

Every wait is bounded (and all of them together by DEADLINE); every process is stopped
by pid.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline_events import domain
from pipeline_events.client import (
    AsyncEventClient,
    NotFoundError,
    ProjectionBehindError,
    RecordedEvent,
    RetryPolicy,
)
from pipeline_events.projections import ProcessingRunState
from tests.nats_support import NatsServer, start_cluster, stop_all, wait_for_stream_leader
from tests.service.conftest import ServerProcess, start_server_process, stop_process

CONTEXT = domain.SecurityContext(user_id="fault")
PRODUCERS = 4  # two per replica
PROGRESS = 300  # acknowledged events wanted before the first fault and after each one
PATIENT = RetryPolicy(max_attempts=60, initial_backoff=0.05, max_backoff=1.0)
RECONNECT = RetryPolicy(max_attempts=None, initial_backoff=0.05, max_backoff=1.0)
PAUSE = 0.05  # seconds between a producer's publishes: a few hundred events a second in all
PHASE_TIMEOUT = 40.0  # seconds for one wait (a leader election and a lost request included)
DEADLINE = 150.0  # seconds for the whole scenario, every wait included


def cluster_url(servers: list[NatsServer], stream: str, prefix: str) -> str:
    hosts = ",".join(s.url.removeprefix("nats://") for s in servers)
    return f"nats://{hosts}?stream={stream}&prefix={prefix}&replicas=3"


def chunk(pipeline: uuid.UUID, run: uuid.UUID, n: int) -> domain.ChunkProcessed:
    return domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 1024, "compression", 1)


@dataclass
class Producer:
    """The only writer of one pipeline: publishes batches until told to stop."""

    name: str
    client: AsyncEventClient
    pipeline: uuid.UUID = field(default_factory=uuid.uuid4)
    run: uuid.UUID = field(default_factory=uuid.uuid4)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (position, rev)
    order: list[str] = field(default_factory=list)  # acknowledged ids, in ack order
    attempted: set[str] = field(default_factory=set)
    slow: int = 0  # publishes that took over a second (retried across a fault)
    already_recorded: int = 0  # publishes whose retry found the batch stored
    error: BaseException | None = None

    @property
    def last_position(self) -> int:
        return self.acked[self.order[-1]][0] if self.order else 0

    async def produce(self, stop: asyncio.Event, rng: random.Random) -> None:
        sequence = 0
        started: list[domain.Event] = [
            domain.ProcessingStarted.new(self.pipeline, self.run, "/i", "/o", 1, CONTEXT)
        ]
        try:
            while not stop.is_set():
                events = started + [
                    chunk(self.pipeline, self.run, sequence + i)
                    for i in range(rng.randint(1, 10) - len(started))
                ]
                sequence += len(events) - len(started)
                started = []
                ids = [str(e.event_id) for e in events]
                self.attempted.update(ids)
                sent = time.monotonic()
                result = await self.client.publish(events)
                self.slow += int(time.monotonic() - sent > 1.0)
                self.already_recorded += int(result.already_recorded)
                assert len(result.positions) == len(ids), (ids, result)
                for event_id, position in zip(ids, result.positions, strict=True):
                    assert event_id not in self.acked, f"{event_id} acknowledged twice"
                    self.acked[event_id] = (position.global_position, position.revision)
                    self.order.append(event_id)
                await asyncio.sleep(PAUSE * rng.random() * 2)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # recorded, and failed on by the test
            self.error = error
            raise


@dataclass
class Subscriber:
    """Every (global position, event id) a live subscription delivers, from the start."""

    client: AsyncEventClient
    received: list[tuple[int, str]] = field(default_factory=list)
    reconnects: int = 0
    longest_silence: float = 0.0  # seconds without an event (a fault's stall)
    error: BaseException | None = None

    @property
    def last(self) -> int:
        return self.received[-1][0] if self.received else 0

    async def follow(self) -> None:
        before = time.monotonic()
        try:
            async with self.client.subscribe(from_position="start", reconnect=RECONNECT) as sub:
                async for recorded in sub:
                    self.received.append((recorded.global_position, recorded.event_id))
                    self.reconnects = sub.reconnects
                    now = time.monotonic()
                    self.longest_silence = max(self.longest_silence, now - before)
                    before = now
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.error = error
            raise


async def read_log(client: AsyncEventClient, timeout: float) -> list[RecordedEvent]:
    """The whole log, by a fresh subscription from the start, up to where it turns live."""
    log: list[RecordedEvent] = []
    caught_up = asyncio.get_running_loop().create_future()

    def on_caught_up(position: int) -> None:
        if not caught_up.done():
            caught_up.set_result(position)

    async def read() -> None:
        async with client.subscribe(from_position="start", on_caught_up=on_caught_up) as sub:
            async for recorded in sub:
                log.append(recorded)

    reading = asyncio.create_task(read())
    try:
        head = await asyncio.wait_for(asyncio.shield(caught_up), timeout)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    assert (log[-1].global_position if log else 0) == head, (len(log), head)
    return log


async def stream_leader(servers: list[NatsServer], stream: str, timeout: float = 20.0) -> str:
    """The stream's leader, as a running node reports it."""
    node = next(s for s in servers if s.is_running())
    return await wait_for_stream_leader(node.url, stream, timeout)


def client_connections(server: NatsServer) -> int:
    """How many clients the node serves (from `/connz`): the replicas' NATS connections."""
    with urllib.request.urlopen(f"{server.monitor_url}/connz", timeout=2) as response:
        return int(json.load(response).get("num_connections", 0))


async def wait_caught_up(node: NatsServer, leader: NatsServer, stream: str, timeout: float) -> None:
    """Until `node`'s replica of the stream holds what the leader held when asked."""
    deadline = time.monotonic() + timeout
    while True:
        theirs = await asyncio.to_thread(leader.local_stream_state, stream) or {}
        mine = await asyncio.to_thread(node.local_stream_state, stream) or {}
        if mine.get("last_seq", 0) >= theirs.get("last_seq", 1):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{node.name} did not catch up with {leader.name} in {timeout:.0f}s:"
                f" {mine} vs {theirs}\n{node.log_tail()}"
            )
        await asyncio.sleep(0.2)


async def test_kill_nodes_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    began = time.monotonic()
    name = uuid.uuid4().hex[:12]
    stream, prefix = f"S{name}", f"p{name}"
    servers = start_cluster(tmp_path / "nats", nodes=3)
    replicas: list[ServerProcess] = []
    try:
        url = cluster_url(servers, stream, prefix)
        replicas.append(start_server_process(url))
        replicas.append(start_server_process(url))
        await run_faults(servers, replicas, stream, began)
        for replica in replicas:  # both replicas outlived the faults, and stop cleanly
            assert replica.process.poll() is None, "".join(replica.log[-40:])
            assert stop_process(replica.process) == 0, "".join(replica.log[-40:])
    finally:
        for replica in replicas:
            stop_process(replica.process)
        stop_all(servers)
    assert time.monotonic() - began < DEADLINE + 20


async def run_faults(
    servers: list[NatsServer], replicas: list[ServerProcess], stream: str, began: float
) -> None:
    first, second = replicas
    by_name = {s.name: s for s in servers}
    seed = random.randrange(2**32)
    clients = [AsyncEventClient(r.target, retry=PATIENT) for r in replicas]
    reader = AsyncEventClient(first.target, retry=PATIENT)
    checker = AsyncEventClient(second.target, retry=PATIENT)
    producers = [Producer(f"producer{i}", clients[i % 2]) for i in range(PRODUCERS)]
    subscriber = Subscriber(reader)
    stop = asyncio.Event()
    producing = [
        asyncio.create_task(p.produce(stop, random.Random(seed + i)))
        for i, p in enumerate(producers)
    ]
    following = asyncio.create_task(subscriber.follow())
    timeline: list[str] = [f"seed {seed}"]

    def acked() -> int:
        return sum(len(p.acked) for p in producers)

    def note(what: str) -> None:
        timeline.append(
            f"{time.monotonic() - began:6.1f}s {what} (acked {acked()}, received {subscriber.last})"
        )

    def state() -> str:
        writers = [
            f"{p.name}: acked {len(p.acked)} of {len(p.attempted)}, slow {p.slow},"
            f" already recorded {p.already_recorded}, error {p.error!r}"
            for p in producers
        ]
        reading = [
            f"subscriber: {len(subscriber.received)} events, last {subscriber.last},"
            f" reconnects {subscriber.reconnects}, longest silence"
            f" {subscriber.longest_silence:.1f}s, error {subscriber.error!r}"
        ]
        logs = [
            f"--- {s.name} ({'up' if s.is_running() else 'down'}):\n{s.log_tail(15)}"
            for s in servers
        ] + [f"--- replica {r.target}:\n{''.join(r.log[-15:])}" for r in replicas]
        return "\n".join(timeline + writers + reading + logs)

    async def until(done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = min(time.monotonic() + timeout, began + DEADLINE)
        while not done():
            for p in producers:
                assert p.error is None, f"{p.name} failed: {p.error!r}\n{state()}"
            assert subscriber.error is None, f"the subscriber failed\n{state()}"
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s\n{state()}"
            await asyncio.sleep(0.05)
        note(what)

    async def progress(what: str) -> None:
        """Publishing goes on, and the live subscriber follows past what was acknowledged."""
        target = acked() + PROGRESS
        await until(lambda: acked() >= target, PHASE_TIMEOUT, f"{what}: {PROGRESS} more acked")
        reached = max(p.last_position for p in producers)
        await until(
            lambda: subscriber.last >= reached, PHASE_TIMEOUT, f"{what}: subscriber past {reached}"
        )

    try:
        note("started")
        await progress("warm-up")

        victim = by_name[await stream_leader(servers, stream)]
        meta = await asyncio.to_thread(victim.meta_leader)
        victim.kill()
        note(f"killed {victim.name} (the stream leader; meta leader {meta})")
        await progress(f"{victim.name} down")

        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(victim.wait_ready, 30.0)
        note(f"restarted {victim.name}")
        leader = by_name[await stream_leader(servers, stream)]
        await wait_caught_up(victim, leader, stream, PHASE_TIMEOUT)
        note(f"{victim.name} caught up with {leader.name}")
        await progress(f"{victim.name} back")

        # Another node: one a replica is connected to that is not the stream leader, if
        # any (the leader commits, the acks die with the node: the retries must find the
        # batches stored), else the stream leader.
        leader = by_name[await stream_leader(servers, stream)]
        others = [s for s in servers if s is not victim]
        serving = [s for s in others if await asyncio.to_thread(client_connections, s)]
        other = next((s for s in serving if s is not leader), leader)
        if other is victim:
            other = others[0]
        meta = await asyncio.to_thread(other.meta_leader)
        other.kill()
        note(
            f"killed {other.name} (stream leader {leader.name}; meta leader {meta};"
            f" serving replicas: {[s.name for s in serving]})"
        )
        await progress(f"{other.name} down")

        stop.set()
        await until(lambda: all(t.done() for t in producing), PHASE_TIMEOUT, "producers stopped")
        for p in producers:
            assert p.error is None, f"{p.name} failed: {p.error!r}\n{state()}"
        # Quiescent: every running node holds the whole stream, so no read below is stale.
        leader = by_name[await stream_leader(servers, stream)]
        for node in servers:
            if node.is_running():
                await wait_caught_up(node, leader, stream, PHASE_TIMEOUT)
        log = await read_log(checker, PHASE_TIMEOUT)
        head = log[-1].global_position if log else 0
        await until(lambda: subscriber.last >= head, PHASE_TIMEOUT, f"subscriber at head {head}")
        failures = await check(producers, subscriber, log, clients)
        print("\n" + "\n".join([state(), *failures]))  # shown with -s
        assert not failures, "\n".join([*failures, state()])
        assert acked() >= 4 * PROGRESS
    finally:
        stop.set()
        for task in [*producing, following]:
            task.cancel()
        await asyncio.gather(*producing, following, return_exceptions=True)
        for client in [*clients, reader, checker]:
            await client.close()


async def check(
    producers: list[Producer],
    subscriber: Subscriber,
    log: list[RecordedEvent],
    replicas: list[AsyncEventClient],
) -> list[str]:
    """What the log, both replicas' reads and read models, and the live subscriber break."""
    failures: list[str] = []
    head = log[-1].global_position if log else 0

    # Global positions run 1..head, and no event id is stored twice.
    positions = [r.global_position for r in log]
    if positions != list(range(1, head + 1)):
        gaps = [(a, b) for a, b in itertools.pairwise(positions) if b != a + 1]
        failures.append(f"the log's positions are not 1..{head}: jumps {gaps[:10]}")
    twice = [i for i, n in Counter(r.event_id for r in log).items() if n > 1]
    if twice:
        failures.append(f"{len(twice)} event ids stored twice: {twice[:5]}")
    stored = {r.event_id: r for r in log}
    attempted = set().union(*(p.attempted for p in producers))
    if not stored.keys() <= attempted:
        failures.append(f"the log holds {len(stored.keys() - attempted)} events nobody published")

    for p in producers:
        # Every acknowledged event is stored, at the positions its ack returned.
        lost = [i for i in p.order if i not in stored]
        if lost:
            failures.append(f"{p.name}: {len(lost)} acknowledged events lost: {lost[:5]}")
        moved = [
            (i, p.acked[i], (stored[i].global_position, stored[i].revision))
            for i in p.order
            if i in stored and p.acked[i] != (stored[i].global_position, stored[i].revision)
        ]
        if moved:
            failures.append(f"{p.name}: {len(moved)} acks differ from the log: {moved[:5]}")
        # The only writer of its pipeline: its acks hold revisions 1..n, in order.
        revisions = [p.acked[i][1] for i in p.order]
        if revisions != list(range(1, len(p.order) + 1)):
            failures.append(f"{p.name}: acknowledged revisions are not 1..n: {revisions[:20]}")
        in_log = [(r.global_position, r.event_id) for r in log if r.pipeline_id == str(p.pipeline)]
        for client in replicas:
            # Its pipeline as each replica reads it: revisions 1..n, exactly the log's events.
            history = await asyncio.wait_for(client.read_aggregate(p.pipeline), PHASE_TIMEOUT)
            if [r.revision for r in history] != list(range(1, len(history) + 1)):
                failures.append(f"{p.name} via {client.target}: revisions are not 1..n")
            if [(r.global_position, r.event_id) for r in history] != in_log:
                failures.append(
                    f"{p.name} via {client.target}: {len(history)} events, the log has"
                    f" {len(in_log)} of its pipeline"
                )
            # Its run as each replica's read models folded it: every chunk of the log.
            run = await folded_run(client, p.run, head, PHASE_TIMEOUT)
            chunks = run.stages["compression"].chunks_processed if run else None
            if chunks != len(in_log) - 1:
                failures.append(
                    f"{p.name} via {client.target}: the read models count {chunks} chunks,"
                    f" the log holds {len(in_log) - 1}"
                )

    # The live subscriber saw exactly the log, in order, across every fault.
    expected = [(r.global_position, r.event_id) for r in log]
    if subscriber.received != expected:
        seen = {position for position, _ in subscriber.received}
        missed = [r.global_position for r in log if r.global_position not in seen]
        repeated = len(subscriber.received) - len(seen)
        failures.append(
            f"the live subscriber received {len(subscriber.received)} events, the log holds"
            f" {len(expected)}: skipped positions {missed[:20]}, {repeated} repeated, in order:"
            f" {subscriber.received == sorted(subscriber.received)}"
        )
    return failures


async def folded_run(
    client: AsyncEventClient, run: uuid.UUID, position: int, timeout: float
) -> ProcessingRunState | None:
    """A run's state once the replica's read models have folded the log up to `position`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(client.run_state(run, min_position=position), timeout)
        except NotFoundError:
            return None
        except ProjectionBehindError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
