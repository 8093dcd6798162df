"""The async and sync clients against a real server: publish, read, subscribe, resume, errors."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from adaptive_pipeline.events.v1 import consumer_group_pb2, envelope_pb2, service_pb2

from pipeline_events import adapter, client, domain
from pipeline_events.client import (
    AsyncEventClient,
    DuplicateEventError,
    EventClient,
    InvalidArgumentError,
    NotFoundError,
    PublishBatch,
    ServiceUnavailableError,
    WrongExpectedRevisionError,
)
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import EventStore, ExpectedState, MemoryEventStore, SQLiteEventStore
from tests.service.conftest import chunks

WAIT = 30.0  # seconds before a test that should finish at once is declared hung


def chunk_events(pipeline: uuid.UUID, count: int) -> list[domain.ChunkProcessed]:
    """`count` ChunkProcessed domain events of one pipeline run."""
    run = uuid.uuid4()
    return [
        domain.ChunkProcessed.new(pipeline, run, uuid.uuid4(), n, 4096, "compression", 12)
        for n in range(count)
    ]


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    store = MemoryEventStore()
    running = await start_server(store)
    yield running
    await running.stop(0)
    await store.close()


@pytest.fixture
async def events_client(server: RunningServer) -> AsyncIterator[AsyncEventClient]:
    async with AsyncEventClient(f"127.0.0.1:{server.port}", timeout=5) as connected:
        yield connected


class ServerThread:
    """An EventService on its own event loop in a background thread, for the sync client."""

    def __init__(self, open_store: Callable[[], Awaitable[EventStore]]):
        self.open_store = open_store
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer | None = None
        self.store: EventStore | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)  # type: ignore[arg-type]

    def start(self) -> None:
        """Open the store and serve it, on the same port as before if there was one."""

        async def start() -> int:
            self.store = await self.open_store()
            self.running = await start_server(self.store, listen=f"127.0.0.1:{self.port}")
            return self.running.port

        self.port = self._call(start())

    def stop(self) -> None:
        """Stop the server and close the store."""

        async def stop() -> None:
            assert self.running is not None and self.store is not None
            await self.running.stop(0)
            await self.store.close()
            self.running = None

        self._call(stop())

    def shutdown(self) -> None:
        if self.running is not None:
            self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def sync_server() -> Iterator[ServerThread]:
    async def memory() -> EventStore:
        return MemoryEventStore()

    running = ServerThread(memory)
    running.start()
    yield running
    running.shutdown()


@pytest.fixture
def sync_client(sync_server: ServerThread) -> Iterator[EventClient]:
    with EventClient(sync_server.target, timeout=5) as connected:
        yield connected


# --- coverage of the contract -----------------------------------------------------------------


def test_every_rpc_has_a_method_in_both_clients() -> None:
    rpcs = service_pb2.DESCRIPTOR.services_by_name["EventService"].methods_by_name
    assert set(client.RPC_METHODS) == set(rpcs)
    group_rpcs = consumer_group_pb2.DESCRIPTOR.services_by_name["ConsumerGroupService"]
    assert set(client.GROUP_RPC_METHODS) == set(group_rpcs.methods_by_name)
    for cls in (AsyncEventClient, EventClient):
        for rpc, name in {**client.RPC_METHODS, **client.GROUP_RPC_METHODS}.items():
            assert callable(getattr(cls, name, None)), f"{cls.__name__} has no {name} for {rpc}"


# --- Publish ----------------------------------------------------------------------------------


async def test_publish_domain_events_and_envelopes(events_client: AsyncEventClient) -> None:
    pipeline = uuid.uuid4()
    events = chunk_events(pipeline, 3)
    result = await events_client.publish(events, correlation_id="req-7")
    assert [(p.global_position, p.revision) for p in result.positions] == [(1, 1), (2, 2), (3, 3)]
    assert not result.already_recorded

    envelopes = chunks(pipeline, 2)
    result = await events_client.publish(envelopes)
    assert [p.global_position for p in result.positions] == [4, 5]
    single = await events_client.publish(chunk_events(pipeline, 1)[0])
    assert single.positions[0].revision == 6

    again = await events_client.publish(events, correlation_id="req-7")
    assert again.already_recorded and [p.revision for p in again.positions] == [1, 2, 3]

    recorded = await events_client.read_aggregate(pipeline)
    assert [r.event for r in recorded[:3]] == events
    assert recorded[0].envelope.correlation_id == "req-7"
    assert [r.envelope for r in recorded[3:5]] == envelopes
    assert [r.revision for r in recorded] == [1, 2, 3, 4, 5, 6]
    assert [e.event_id for e in [r async for r in events_client.history(pipeline)]] == [
        r.event.event_id for r in recorded
    ]


async def test_expected_revisions_are_checked_and_failures_carry_both_revisions(
    events_client: AsyncEventClient,
) -> None:
    pipeline = uuid.uuid4()
    await events_client.publish(
        chunk_events(pipeline, 2), expected={pipeline: ExpectedState.NO_STREAM}
    )
    await events_client.publish(chunk_events(pipeline, 1), expected={str(pipeline): 2})
    await events_client.publish(
        chunk_events(pipeline, 1), expected={pipeline: ExpectedState.STREAM_EXISTS}
    )

    with pytest.raises(WrongExpectedRevisionError) as raised:
        await events_client.publish(chunk_events(pipeline, 1), expected={pipeline: 1})
    error = raised.value
    assert (error.aggregate_id, error.expected, error.actual) == (str(pipeline), 1, 4)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(error, RuntimeError)

    with pytest.raises(WrongExpectedRevisionError) as raised:
        await events_client.publish(
            chunk_events(pipeline, 1), expected={pipeline: ExpectedState.NO_STREAM}
        )
    assert (raised.value.expected, raised.value.actual) == (ExpectedState.NO_STREAM, 4)
    assert len(await events_client.read_aggregate(pipeline)) == 4


async def test_a_reused_event_id_with_other_content_is_a_duplicate(
    events_client: AsyncEventClient,
) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    await events_client.publish(envelope)
    changed = envelope_pb2.EventEnvelope()
    changed.CopyFrom(envelope)
    changed.correlation_id = "something else"
    with pytest.raises(DuplicateEventError) as raised:
        await events_client.publish(changed)
    assert raised.value.event_id == envelope.event_id
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS


async def test_invalid_input_raises_with_field_violations_and_is_not_retried(
    events_client: AsyncEventClient,
) -> None:
    good, bad = chunks(uuid.uuid4(), 2)
    bad.event_id = "not-a-uuid"
    bad.ClearField("occurred_at")
    attempts = count_attempts(events_client)
    with pytest.raises(InvalidArgumentError) as raised:
        await events_client.publish([good, bad])
    fields = {v.field for v in raised.value.field_violations}
    assert {"events[1].event_id", "events[1].occurred_at"} <= fields
    assert isinstance(raised.value, ValueError)
    assert attempts == ["Publish"]

    with pytest.raises(InvalidArgumentError):
        await events_client.publish(good, expected={uuid.uuid4(): -1})


def count_attempts(events_client: AsyncEventClient, fail_first: int = 0) -> list[str]:
    """Record the RPCs the client makes; the first `fail_first` reach the server but then
    fail with UNAVAILABLE, as if the connection dropped before the response arrived."""
    attempts: list[str] = []
    original = events_client._get_stub

    class Stub:
        def __init__(self, stub: Any):
            self.stub = stub

        def __getattr__(self, rpc: str) -> Any:
            async def call(request: Any, **kwargs: Any) -> Any:
                attempts.append(rpc)
                response = await getattr(self.stub, rpc)(request, **kwargs)
                if len(attempts) <= fail_first:
                    raise grpc.aio.AioRpcError(
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.aio.Metadata(),
                        grpc.aio.Metadata(),
                        details="connection lost",
                    )
                return response

            return call

    async def stub() -> Any:
        return Stub(await original())

    events_client._get_stub = stub  # type: ignore[method-assign]
    return attempts


async def test_a_publish_whose_answer_was_lost_is_retried_safely(
    events_client: AsyncEventClient,
) -> None:
    pipeline = uuid.uuid4()
    attempts = count_attempts(events_client, fail_first=2)
    result = await events_client.publish(chunk_events(pipeline, 3))
    assert attempts == ["Publish"] * 3
    # Stored by the first attempt; the retries got the original positions back.
    assert result.already_recorded
    assert [p.global_position for p in result.positions] == [1, 2, 3]
    assert len(await events_client.read_aggregate(pipeline)) == 3


async def test_publish_stream_acknowledges_every_batch_and_survives_a_rejection(
    events_client: AsyncEventClient,
) -> None:
    pipeline = uuid.uuid4()

    async def batches() -> AsyncIterator[Any]:
        yield chunk_events(pipeline, 2)
        yield PublishBatch(chunk_events(pipeline, 1), expected={pipeline: 0})
        yield PublishBatch(chunks(pipeline, 1), expected={pipeline: 2})

    acks = [ack async for ack in events_client.publish_stream(batches())]
    assert [ack.batch_id for ack in acks] == [1, 2, 3]
    assert acks[0].result is not None and [p.revision for p in acks[0].result.positions] == [1, 2]
    assert isinstance(acks[1].error, WrongExpectedRevisionError) and acks[1].error.actual == 2
    assert acks[2].result is not None and acks[2].result.positions[0].revision == 3


async def test_publish_stream_raises_a_bad_batch_after_acknowledging_the_ones_before(
    events_client: AsyncEventClient,
) -> None:
    async def batches() -> AsyncIterator[Any]:
        yield chunk_events(uuid.uuid4(), 1)
        yield ["not an event"]

    acks = []
    with pytest.raises(TypeError, match="cannot publish str"):
        async for ack in events_client.publish_stream(batches()):
            acks.append(ack)
    assert [ack.batch_id for ack in acks] == [1] and acks[0].result is not None


# --- ReadAggregate ----------------------------------------------------------------------------


async def test_read_aggregate_follows_pages_forwards_and_backwards(
    events_client: AsyncEventClient,
) -> None:
    pipeline = uuid.uuid4()
    await events_client.publish(chunk_events(pipeline, 7))
    await events_client.publish(chunk_events(uuid.uuid4(), 2))
    attempts = count_attempts(events_client)

    forwards = await events_client.read_aggregate(pipeline, page_size=3)
    assert [r.revision for r in forwards] == [1, 2, 3, 4, 5, 6, 7]
    assert len(attempts) == 3
    backwards = await events_client.read_aggregate(pipeline, backwards=True, page_size=3)
    assert [r.revision for r in backwards] == [7, 6, 5, 4, 3, 2, 1]
    assert len(attempts) == 6

    middle = await events_client.read_aggregate(
        pipeline, from_revision=5, backwards=True, page_size=2
    )
    assert [r.revision for r in middle] == [5, 4, 3, 2, 1]
    limited = await events_client.read_aggregate(pipeline, from_revision=2, limit=4, page_size=3)
    assert [r.revision for r in limited] == [2, 3, 4, 5]
    assert await events_client.read_aggregate(uuid.uuid4()) == []
    history = [e async for e in events_client.history(pipeline, page_size=2)]
    assert [e.chunk_sequence for e in history] == list(range(7))


# --- Subscribe --------------------------------------------------------------------------------


async def test_subscribe_from_start_receives_everything_in_order(
    events_client: AsyncEventClient,
) -> None:
    for _ in range(3):
        await events_client.publish(chunk_events(uuid.uuid4(), 4))
    caught_up: list[int] = []
    async with events_client.subscribe(max_batch_size=5, on_caught_up=caught_up.append) as events:
        received = []
        async for recorded in events:
            received.append(recorded)
            if len(received) == 12:
                break
        assert [r.global_position for r in received] == list(range(1, 13))
        assert all(isinstance(r.event, domain.ChunkProcessed) for r in received)

        await events_client.publish(chunk_events(uuid.uuid4(), 1))
        live = await asyncio.wait_for(anext(events), WAIT)
        assert live.global_position == 13
        assert caught_up == [12] and events.live and events.position == 13


async def test_subscribe_from_end_receives_only_new_events(
    events_client: AsyncEventClient,
) -> None:
    await events_client.publish(chunk_events(uuid.uuid4(), 5))
    ready = asyncio.Event()
    async with events_client.subscribe(
        from_position="end", on_caught_up=lambda _: ready.set()
    ) as events:
        first = asyncio.ensure_future(anext(events))
        await asyncio.wait_for(ready.wait(), WAIT)
        assert events.position == 5
        await events_client.publish(chunk_events(uuid.uuid4(), 2))
        assert (await asyncio.wait_for(first, WAIT)).global_position == 6
        assert (await asyncio.wait_for(anext(events), WAIT)).global_position == 7


async def test_subscribe_after_a_position_and_with_a_filter(
    events_client: AsyncEventClient,
) -> None:
    wanted, other = uuid.uuid4(), uuid.uuid4()
    for pipeline in (wanted, other, wanted):
        await events_client.publish(chunk_events(pipeline, 2))
    await events_client.publish(domain.PipelineCreated.new(other, "p", 3, "alice"))

    async def take(count: int, **options: Any) -> list[int]:
        async with events_client.subscribe(**options) as events:
            return [
                (await asyncio.wait_for(anext(events), WAIT)).global_position for _ in range(count)
            ]

    assert await take(3, from_position=4) == [5, 6, 7]
    assert await take(4, pipeline_ids=[wanted]) == [1, 2, 5, 6]
    assert await take(1, event_types=[domain.PipelineCreated]) == [7]
    assert await take(1, event_types=["PipelineCreated"], categories=["pipeline_lifecycle"]) == [7]


async def test_subscribe_rejects_invalid_filters_without_retrying(
    events_client: AsyncEventClient,
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        async with events_client.subscribe(pipeline_ids=["not-a-uuid"]) as events:
            await anext(events)
    assert raised.value.field_violations[0].field.startswith("filter.aggregate_ids")


async def test_a_subscriber_resumes_across_a_server_restart_without_gaps_or_duplicates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = await SQLiteEventStore.open(path)
    running = await start_server(store)
    port = running.port
    target = f"127.0.0.1:{port}"
    received: list[int] = []
    halfway = asyncio.Event()

    async def consume(events_client: AsyncEventClient) -> client.AsyncSubscription:
        async with events_client.subscribe(max_batch_size=2) as events:
            async for recorded in events:
                received.append(recorded.global_position)
                if len(received) == 5:
                    halfway.set()
                await asyncio.sleep(0.005)  # a slow consumer: the stream drops mid-catch-up
                if len(received) == 60:
                    return events
        raise AssertionError("the subscription ended")

    async with AsyncEventClient(target, timeout=5) as events_client:
        for _ in range(3):
            await events_client.publish(chunk_events(uuid.uuid4(), 10))
        consumer = asyncio.ensure_future(consume(events_client))
        await asyncio.wait_for(halfway.wait(), WAIT)

        await running.stop(0)
        await store.close()
        await asyncio.sleep(0.5)  # the subscriber retries against nothing meanwhile
        store = await SQLiteEventStore.open(path)
        running = await start_server(store, listen=target)
        try:
            for _ in range(3):
                await events_client.publish(chunk_events(uuid.uuid4(), 10))
            events = await asyncio.wait_for(consumer, WAIT)
        finally:
            consumer.cancel()
            await running.stop(0)
            await store.close()

    assert received == list(range(1, 61))
    assert events.reconnects >= 1


# --- errors that are not the server's ---------------------------------------------------------


async def test_nothing_listening_fails_fast_with_the_target_in_the_message() -> None:
    target = f"127.0.0.1:{free_port()}"
    async with AsyncEventClient(target, timeout=0.5) as events_client:
        for call in (
            lambda: events_client.publish(chunk_events(uuid.uuid4(), 1)),
            lambda: events_client.read_aggregate(uuid.uuid4()),
            lambda: anext(events_client.subscribe()),
        ):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailableError, match=target) as raised:
                await call()
            assert time.monotonic() - started < 5
            assert isinstance(raised.value, ConnectionError)
            assert raised.value.target == target


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        retry = client.RetryPolicy(max_attempts=2, initial_backoff=0.01)
        async with AsyncEventClient(target, timeout=0.2, retry=retry) as hasty:
            started = time.monotonic()
            with pytest.raises(client.DeadlineExceededError, match="tried 2 times") as raised:
                await hasty.read_aggregate(uuid.uuid4())
    assert isinstance(raised.value, TimeoutError) and target in str(raised.value)
    assert time.monotonic() - started < 5


async def test_state_queries_of_unknown_ids_are_not_found(events_client: AsyncEventClient) -> None:
    with pytest.raises(NotFoundError, match="no pipeline") as raised:
        await events_client.pipeline_state(uuid.uuid4())
    assert raised.value.reason == "PIPELINE_NOT_FOUND" and raised.value.metadata == {
        "position": "0"
    }
    with pytest.raises(LookupError, match="no processing run"):
        await events_client.run_state(uuid.uuid4())


# --- the sync client --------------------------------------------------------------------------


def test_sync_client_publishes_reads_and_reports_errors(sync_client: EventClient) -> None:
    pipeline = uuid.uuid4()
    events = chunk_events(pipeline, 5)
    result = sync_client.publish(events, expected={pipeline: ExpectedState.NO_STREAM})
    assert [p.global_position for p in result.positions] == [1, 2, 3, 4, 5]
    assert sync_client.publish(events).already_recorded
    (envelope,) = chunks(pipeline, 1)
    assert sync_client.publish(envelope, expected={pipeline: 5}).positions[0].revision == 6

    recorded = sync_client.read_aggregate(pipeline, page_size=2)
    assert [r.event for r in recorded[:5]] == events and recorded[5].envelope == envelope
    backwards = sync_client.read_aggregate(pipeline, backwards=True, page_size=4)
    assert [r.revision for r in backwards] == [6, 5, 4, 3, 2, 1]
    assert list(sync_client.history(pipeline, page_size=4)) == [r.event for r in recorded]

    with pytest.raises(WrongExpectedRevisionError) as raised:
        sync_client.publish(chunk_events(pipeline, 1), expected={pipeline: 3})
    assert (raised.value.expected, raised.value.actual) == (3, 6)
    changed = envelope_pb2.EventEnvelope()
    changed.CopyFrom(envelope)
    changed.metadata["k"] = "v"
    with pytest.raises(DuplicateEventError) as duplicate:
        sync_client.publish(changed)
    assert duplicate.value.event_id == envelope.event_id
    bad = adapter.to_envelope(chunk_events(pipeline, 1)[0])
    bad.aggregate_id = "nope"
    with pytest.raises(InvalidArgumentError) as invalid:
        sync_client.publish(bad)
    assert "events[0].aggregate_id" in {v.field for v in invalid.value.field_violations}
    assert sync_client.pipeline_state(pipeline, min_position=6).revision == 6
    with pytest.raises(NotFoundError):
        sync_client.run_state(pipeline)

    acks = list(sync_client.publish_stream([chunk_events(pipeline, 1), [bad]]))
    assert acks[0].result is not None and acks[0].result.positions[0].revision == 7
    assert isinstance(acks[1].error, InvalidArgumentError)
    with pytest.raises(TypeError, match="cannot publish int"):
        list(sync_client.publish_stream([[42]]))


def test_sync_subscriptions_from_start_and_from_end(sync_client: EventClient) -> None:
    sync_client.publish(chunk_events(uuid.uuid4(), 6))
    with sync_client.subscribe(max_batch_size=4) as events:
        assert [next(events).global_position for _ in range(6)] == [1, 2, 3, 4, 5, 6]
    with sync_client.subscribe(max_batch_size=4) as events:
        assert next(events).global_position == 1
        events.close()  # mid-batch: the rest of the batch is not delivered
        assert list(events) == []

    ready = threading.Event()
    with sync_client.subscribe(from_position="end", on_caught_up=lambda _: ready.set()) as events:
        # The first event is awaited in another thread, so publish only once subscribed.
        publisher = threading.Thread(
            target=lambda: ready.wait(WAIT) and sync_client.publish(chunk_events(uuid.uuid4(), 2))
        )
        publisher.start()
        watchdog = threading.Timer(WAIT, events.close)
        watchdog.start()
        try:
            assert [next(events).global_position for _ in range(2)] == [7, 8]
        finally:
            watchdog.cancel()
            publisher.join()
        events.close()
        assert list(events) == []


def test_sync_subscriber_resumes_across_a_server_restart(tmp_path: Path) -> None:
    async def sqlite() -> EventStore:
        return await SQLiteEventStore.open(tmp_path / "events.db")

    server = ServerThread(sqlite)
    server.start()
    received: list[int] = []

    def restart_and_publish() -> None:
        server.stop()
        time.sleep(0.5)
        server.start()
        with EventClient(server.target, timeout=5) as publisher:
            for _ in range(2):
                publisher.publish(chunk_events(uuid.uuid4(), 10))

    try:
        with EventClient(server.target, timeout=5) as sync_client:
            for _ in range(2):
                sync_client.publish(chunk_events(uuid.uuid4(), 10))
            with sync_client.subscribe(max_batch_size=3) as events:
                watchdog = threading.Timer(WAIT, events.close)
                watchdog.start()
                restarter = threading.Thread(target=restart_and_publish)
                for recorded in events:
                    received.append(recorded.global_position)
                    if len(received) == 4:
                        restarter.start()
                    time.sleep(0.005)
                    if len(received) == 40:
                        break
                watchdog.cancel()
                restarter.join(WAIT)
                assert events.reconnects >= 1
    finally:
        server.shutdown()
    assert received == list(range(1, 41))


def test_sync_client_fails_fast_when_nothing_listens() -> None:
    target = f"127.0.0.1:{free_port()}"
    with EventClient(target, timeout=0.5) as sync_client:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=target):
            sync_client.publish(chunk_events(uuid.uuid4(), 1))
        with pytest.raises(ServiceUnavailableError, match=target):
            next(sync_client.subscribe())
        assert time.monotonic() - started < 10
