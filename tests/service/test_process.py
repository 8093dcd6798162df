"""The server as users run it (`pipeline-events serve`): slow subscribers, SIGTERM under load."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from pathlib import Path

import grpc
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2, service_pb2_grpc

from pipeline_events.store import SQLiteEventStore
from tests.service.conftest import ServerProcess, chunks

SLOW_EVENTS = 500_000
BATCH = 1000


def batches(count: int, size: int) -> list[list[envelope_pb2.EventEnvelope]]:
    """`count` batches of distinct ChunkProcessed envelopes (copies of one, new ids)."""
    (template,) = chunks(uuid.uuid4(), 1)
    result = []
    for _ in range(count):
        batch = []
        for _ in range(size):
            envelope = envelope_pb2.EventEnvelope()
            envelope.CopyFrom(template)
            envelope.event_id = str(uuid.uuid4())
            batch.append(envelope)
        result.append(batch)
    return result


async def test_a_stalled_subscriber_costs_bounded_memory_and_loses_nothing(
    server_process: ServerProcess,
) -> None:
    async with grpc.aio.insecure_channel(server_process.target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start={}))
        assert (await subscription.read()).HasField("caught_up")
        # From here the subscriber reads nothing while 500,000 events are published.
        await stub.Publish(service_pb2.PublishRequest(events=batches(1, BATCH)[0]))
        baseline = server_process.rss_bytes()
        peak = baseline
        async with grpc.aio.insecure_channel(server_process.target) as publishing:
            publisher = service_pb2_grpc.EventServiceStub(publishing)
            for batch in batches(SLOW_EVENTS // BATCH - 1, BATCH):
                await publisher.Publish(service_pb2.PublishRequest(events=batch))
                peak = max(peak, server_process.rss_bytes())
        # Buffering the events for the stalled subscriber would cost far more than the
        # ~130 MB they take on the wire; reading by position costs one page per subscriber.
        growth = peak - baseline
        print(f"server RSS: baseline {baseline >> 20} MiB, peak {peak >> 20} MiB")
        assert growth < 160 * 2**20, f"server memory grew by {growth >> 20} MiB"

        received: list[int] = []
        while len(received) < SLOW_EVENTS:
            message = await subscription.read()
            received.extend(e.global_position for e in message.events.events)
        subscription.cancel()
        assert received == list(range(1, SLOW_EVENTS + 1))


async def test_sigterm_under_publishing_load_loses_no_acknowledged_event(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    acknowledged: dict[str, int] = {}
    stop_publishing = threading.Event()

    async def publisher() -> None:
        async with grpc.aio.insecure_channel(server_process.target) as channel:
            stub = service_pb2_grpc.EventServiceStub(channel)
            while not stop_publishing.is_set():
                (batch,) = batches(1, 50)
                try:
                    result = await stub.Publish(
                        service_pb2.PublishRequest(events=batch), timeout=10
                    )
                except grpc.aio.AioRpcError:
                    return  # the server is going away: this batch was not acknowledged
                for envelope, position in zip(batch, result.positions, strict=True):
                    acknowledged[envelope.event_id] = position.global_position

    publishers = [asyncio.create_task(publisher()) for _ in range(4)]
    deadline = time.monotonic() + 30
    while len(acknowledged) < 2000 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    server_process.process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(server_process.process.wait, 30)
    stop_publishing.set()
    await asyncio.gather(*publishers)
    assert exit_code == 0, "".join(server_process.log)
    assert any("shutting down" in line for line in server_process.log)
    assert len(acknowledged) >= 2000

    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        events = (await store.read_all(limit=10_000_000)).events
    stored = {e.envelope.event_id: e.global_position for e in events}
    missing = [
        event_id for event_id in acknowledged if stored.get(event_id) != acknowledged[event_id]
    ]
    assert missing == []
    assert [e.global_position for e in events] == list(range(1, len(events) + 1))
