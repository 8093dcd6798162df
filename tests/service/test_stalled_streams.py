"""A stream whose client stops reading is ended RESOURCE_EXHAUSTED; a quiet live one is not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.rpc import error_details_pb2

from pipeline_events.client import AsyncEventClient
from pipeline_events.service.interceptors import STREAM_STALLED
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import MemoryEventStore
from tests.service.conftest import chunks
from tests.service.test_limits import padded
from tests.service.test_server import detail, rich_status

STALL_SECONDS = 0.5
# Without BDP probing the client's HTTP/2 window stays at its first 64 KiB, so a client
# that does not read stalls the server's writes after a few dozen KiB, not megabytes.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0)]


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    store = MemoryEventStore()
    server = await start_server(store, stalled_stream_seconds=STALL_SECONDS)
    yield server
    await server.stop(0)
    await store.close()


async def publish_big_events(running: RunningServer, count: int) -> None:
    """`count` events of 20 KB each: far more than one HTTP/2 window."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        events = [padded(e, 20_000) for e in chunks(uuid.uuid4(), count)]
        for start in range(0, count, 50):
            await stub.Publish(service_pb2.PublishRequest(events=events[start : start + 50]))


async def test_a_client_that_stops_reading_is_told_why_its_stream_ended(
    running: RunningServer,
) -> None:
    await publish_big_events(running, 200)  # 4 MB
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{running.port}", options=SMALL_WINDOW
    ) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        call = stub.Subscribe(service_pb2.SubscribeRequest(from_start={}, max_batch_size=10))
        first = await call.read()
        assert len(first.events.events) == 10
        await asyncio.sleep(STALL_SECONDS * 4)  # the server's next writes wait on us
        received = 10
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while True:
                message = await call.read()
                assert message is not grpc.aio.EOF, "the stream ended without a status"
                assert not message.HasField("caught_up"), "the stalled stream was not ended"
                received += len(message.events.events)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert detail(rich_status(raised.value), error_details_pb2.ErrorInfo).reason == STREAM_STALLED
    assert "took no response for 0.5 s" in raised.value.details()
    assert 10 < received < 200  # what gRPC had queued, then the status instead of the rest
    for _ in range(100):  # the call has ended: its stream slot is free again
        if running.call_limit.streams == 0:
            break
        await asyncio.sleep(0.02)
    assert running.call_limit.streams == 0


async def test_a_quiet_live_subscription_is_not_a_stalled_one(running: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        call = stub.Subscribe(service_pb2.SubscribeRequest(from_end={}))
        assert (await call.read()).HasField("caught_up")
        await asyncio.sleep(STALL_SECONDS * 4)  # nothing to send: no write waits
        await stub.Publish(service_pb2.PublishRequest(events=chunks(uuid.uuid4(), 3)))
        message = await call.read()
        assert len(message.events.events) == 3
        call.cancel()


async def test_a_reader_that_keeps_up_is_never_ended(running: RunningServer) -> None:
    await publish_big_events(running, 200)
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{running.port}", options=SMALL_WINDOW
    ) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        received = 0
        async for message in stub.Subscribe(
            service_pb2.SubscribeRequest(from_start={}, max_batch_size=10)
        ):
            received += len(message.events.events)
            if message.HasField("caught_up"):
                break
    assert received == 200


async def test_the_client_resumes_a_subscription_the_server_ended_for_stalling(
    running: RunningServer,
) -> None:
    await publish_big_events(running, 200)
    target = f"127.0.0.1:{running.port}"
    async with (
        grpc.aio.insecure_channel(target, options=SMALL_WINDOW) as channel,
        AsyncEventClient(target, channel=channel) as client,
    ):
        subscription = client.subscribe(from_position="start", max_batch_size=10)
        positions = []
        async for event in subscription:
            positions.append(event.global_position)
            if len(positions) == 15:
                await asyncio.sleep(STALL_SECONDS * 4)  # a handler that takes its time
            if len(positions) == 200:
                break
    assert positions == list(range(1, 201))  # nothing lost, nothing twice
    assert subscription.reconnects >= 1
