"""What consumer groups promise, on any store: subclass ConsumerGroupContract per backend.

Every test runs a real server on a loopback port over a real store, and real workers
(`AsyncEventClient.consume`) or raw Consume streams through the generated stub.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb
from adaptive_pipeline.events.v1 import consumer_group_pb2_grpc, envelope_pb2, service_pb2

from pipeline_events import adapter, domain
from pipeline_events.client import (
    AsyncEventClient,
    ClientError,
    Delivery,
    GroupSettings,
    InvalidArgumentError,
    NotFoundError,
)
from pipeline_events.consumer import ParkEvent, SkipEvent
from pipeline_events.service import groups
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.service.wire import field_bytes, length_delimited
from pipeline_events.store import EventStore, StoreError

FAST = GroupSettings(max_deliveries=3, backoff=(0.01,), ack_timeout=5.0)


def chunk_events(count: int, pipelines: int = 4) -> list[domain.ChunkProcessed]:
    ids = [uuid.uuid4() for _ in range(pipelines)]
    run = uuid.uuid4()
    return [
        domain.ChunkProcessed.new(ids[n % pipelines], run, uuid.uuid4(), n, 4096, "compression", 1)
        for n in range(count)
    ]


async def wait_until(condition: Callable[[], Any], what: str, seconds: float = 30.0) -> None:
    """Poll `condition` (sync or async) until true; fail naming `what` after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Worker:
    """A consume() task with a handler that records what it was given."""

    def __init__(self, client: AsyncEventClient, group: str, handler: Any = None, **options: Any):
        self.seen: list[Delivery] = []
        self.stop = asyncio.Event()
        self._handler = handler

        async def handle(delivery: Delivery) -> None:
            self.seen.append(delivery)
            if self._handler is not None:
                await self._handler(delivery)

        self.task = asyncio.create_task(client.consume(group, handle, stop=self.stop, **options))

    @property
    def ids(self) -> list[str]:
        return [d.event.event_id for d in self.seen]

    async def stopped(self) -> Any:
        self.stop.set()
        return await asyncio.wait_for(self.task, 30)


class ConsumerGroupContract:
    """The behaviour every backend's consumer groups share."""

    async def make_store(self, tmp_path: Path) -> EventStore:
        raise NotImplementedError

    @pytest.fixture
    async def server(self, tmp_path: Path) -> AsyncIterator[RunningServer]:
        store = await self.make_store(tmp_path)
        running = await start_server(store)
        yield running
        await running.stop(0)
        await store.close()

    @pytest.fixture
    async def client(self, server: RunningServer) -> AsyncIterator[AsyncEventClient]:
        async with AsyncEventClient(f"127.0.0.1:{server.port}") as client:
            yield client

    @pytest.fixture
    async def stub(
        self, server: RunningServer
    ) -> AsyncIterator[consumer_group_pb2_grpc.ConsumerGroupServiceStub]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield consumer_group_pb2_grpc.ConsumerGroupServiceStub(channel)

    # --- sharing, retrying, parking ----------------------------------------------------

    async def test_two_members_share_a_group_and_handle_every_event_once(
        self, client: AsyncEventClient
    ) -> None:
        await client.create_group("shared", settings=FAST)
        events = chunk_events(600)
        first = Worker(client, "shared", concurrency=4)
        second = Worker(client, "shared", concurrency=4)
        for start in range(0, len(events), 100):
            await client.publish(events[start : start + 100])
        expected = {str(e.event_id) for e in events}
        await wait_until(lambda: len(first.seen) + len(second.seen) >= len(events), "deliveries")
        stats = [await first.stopped(), await second.stopped()]
        handled = Counter(first.ids + second.ids)
        assert set(handled) == expected
        assert max(handled.values()) == 1, "an event was handled twice"
        assert first.seen and second.seen, "one member got everything"
        assert sum(s.acked for s in stats) == len(events)
        await wait_until(lambda: _checkpoint_at_head(client, "shared"), "the checkpoint")
        assert (await client.group("shared")).parked == 0
        assert all(d.delivery_count == 1 for d in first.seen + second.seen)

    async def test_a_handler_failing_twice_succeeds_on_the_third_delivery(
        self, client: AsyncEventClient
    ) -> None:
        await client.create_group("flaky", settings=FAST)
        (event,) = chunk_events(1)

        async def flaky(delivery: Delivery) -> None:
            if delivery.delivery_count < 3:
                raise RuntimeError(f"attempt {delivery.delivery_count} failed")

        worker = Worker(client, "flaky", flaky)
        await client.publish([event])
        await wait_until(lambda: len(worker.seen) == 3, "three deliveries")
        stats = await worker.stopped()
        assert [d.delivery_count for d in worker.seen] == [1, 2, 3]
        assert (stats.failed, stats.acked) == (2, 1)
        await wait_until(lambda: _checkpoint_at_head(client, "flaky"), "the checkpoint")
        assert (await client.group("flaky")).parked == 0

    async def test_an_always_failing_event_is_parked_then_replayed(
        self, client: AsyncEventClient
    ) -> None:
        await client.create_group("poison", settings=FAST)
        events = chunk_events(5)
        poison = str(events[2].event_id)
        healed = False

        async def handler(delivery: Delivery) -> None:
            if delivery.event.event_id == poison and not healed:
                raise ValueError("cannot parse the chunk")

        worker = Worker(client, "poison", handler)
        await client.publish(events)
        await wait_until(lambda: _parked_count(client, "poison"), "the poison event parked")
        parked = await client.parked("poison")
        assert [p.event.event_id for p in parked] == [poison]
        (entry,) = parked
        assert entry.deliveries == 3 and len(entry.attempts) == 3
        assert entry.reason == "ValueError: cannot parse the chunk"
        assert [a.outcome for a in entry.attempts] == ["ValueError: cannot parse the chunk"] * 3
        stored = [r for r in await client.read_aggregate(entry.event.pipeline_id)]
        (original,) = [r for r in stored if r.event_id == poison]
        assert entry.event == original  # the event as stored: envelope, position, revision
        # Parked counts as done (the head moves on with the parking's own events).
        await wait_until(lambda: _checkpoint_at_head(client, "poison"), "the checkpoint")
        # Parking is recorded as an event on the groups' own pipeline (not delivered).
        recorded = await client.read_aggregate(groups.GROUPS_PIPELINE)
        assert [r.event.__class__.__name__ for r in recorded] == [
            "PipelineCreated",
            "ResourceExhausted",
        ]
        assert poison in recorded[1].event.action_taken
        assert poison not in [d.event.event_id for d in worker.seen if d.delivery_count > 3]
        healed = True
        assert await client.replay_parked("poison") == 1
        await wait_until(lambda: worker.ids.count(poison) == 4, "the replayed delivery")
        await wait_until(lambda: _parked_count(client, "poison", 0), "the parked record gone")
        assert worker.seen[-1].delivery_count == 1  # a fresh count after a replay
        await worker.stopped()
        assert await client.parked("poison") == []
        assert all(d.event.pipeline_id != str(groups.GROUPS_PIPELINE) for d in worker.seen)

    async def test_park_and_skip_from_the_handler_and_discarding(
        self, client: AsyncEventClient
    ) -> None:
        await client.create_group("choices", settings=FAST)
        events = chunk_events(3)
        park, skip = str(events[0].event_id), str(events[1].event_id)

        async def handler(delivery: Delivery) -> None:
            if delivery.event.event_id == park:
                raise ParkEvent("schema too new")
            if delivery.event.event_id == skip:
                raise SkipEvent("not ours")

        worker = Worker(client, "choices", handler)
        await client.publish(events)
        await wait_until(lambda: len(worker.seen) == 3, "three deliveries")
        stats = await worker.stopped()
        assert (stats.parked, stats.skipped, stats.acked) == (1, 1, 1)
        (parked,) = await client.parked("choices")
        assert (parked.event.event_id, parked.reason, parked.deliveries) == (
            park,
            "schema too new",
            1,
        )
        assert await client.discard_parked("choices", [str(uuid.uuid4())]) == 0
        assert await client.discard_parked("choices", [park]) == 1
        assert await client.parked("choices") == []
        assert (await client.group("choices")).parked == 0

    async def test_parked_events_are_listed_in_pages_and_replayed_in_bounded_calls(
        self,
        client: AsyncEventClient,
        stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub,
        server: RunningServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(groups, "PARKED_PAGE", 2)  # pages of the store's reads
        monkeypatch.setattr(groups, "MAX_REPLAY", 3)
        await client.create_group("pages", settings=FAST)
        events = chunk_events(7)

        async def park(delivery: Delivery) -> None:
            raise ParkEvent("later")

        worker = Worker(client, "pages", park)
        await client.publish(events)
        await wait_until(lambda: _parked_count(client, "pages", 7), "seven parked")
        await worker.stopped()
        expected = [str(e.event_id) for e in events]
        seen, after = [], 0
        while True:
            page = await stub.ListParkedEvents(
                pb.ListParkedEventsRequest(group="pages", after_position=after, limit=3)
            )
            assert page.total == 7 and len(page.events) <= 3
            seen += [p.event.envelope.event_id for p in page.events]
            after = page.next_after_position
            if not after:
                break
        assert seen == expected
        assert [p.event.event_id for p in await client.parked("pages", limit=4)] == expected[:4]
        assert await client.replay_parked("pages") == 3  # at most MAX_REPLAY a call
        assert await client.replay_parked("pages") == 3  # the next ones, not the same
        assert await client.replay_parked("pages") == 1
        assert await client.replay_parked("pages") == 0  # all on their way already
        await client.delete_group("pages")  # its parked records go, two per write here
        store = server.service.store
        assert await store.read_state(groups.parked_prefix("pages")) == []
        assert await store.read_state(groups.group_key("pages")) == []

    async def test_many_parkings_at_once_are_stored_in_several_writes_checkpoint_last(
        self,
        client: AsyncEventClient,
        stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub,
        server: RunningServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(groups, "PARKED_PAGE", 2)  # so 5 parkings take 3 writes
        store = server.service.store
        writes: list[list[str]] = []
        write_state = store.write_state

        async def recording(changes: Any) -> None:
            writes.append(list(changes))
            await write_state(changes)

        monkeypatch.setattr(store, "write_state", recording)
        await client.create_group("bulk", settings=FAST)
        events = chunk_events(5)
        await client.publish(events)
        queue: asyncio.Queue[pb.ConsumeRequest] = asyncio.Queue()
        call = stub.Consume(_from_queue(pb.ConsumeStart(group="bulk"), queue))
        assert (await call.read()).HasField("started")
        held: list[str] = []
        while len(held) < 5:
            held += [d.event.envelope.event_id for d in (await call.read()).deliveries.deliveries]
        writes.clear()
        await queue.put(
            pb.ConsumeRequest(
                nack=pb.Nack(event_ids=held, action=pb.NACK_ACTION_PARK, reason="bulk")
            )
        )
        await wait_until(lambda: _checkpoint_at_head(client, "bulk"), "the checkpoint")
        await wait_until(lambda: any(groups.group_key("bulk") in w for w in writes), "stored")
        call.cancel()
        parked_writes = [w for w in writes if any(k.startswith("parked/bulk/") for k in w)]
        assert len(parked_writes) == 3 and all(len(w) <= 2 for w in writes)
        assert parked_writes[-1][-1] == groups.group_key("bulk")  # the checkpoint last
        assert len(await store.read_state(groups.parked_prefix("bulk"))) == 5

    async def test_a_deletion_the_store_refuses_leaves_the_group_to_delete_again(
        self, client: AsyncEventClient, server: RunningServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await client.create_group("stubborn", settings=FAST)
        store = server.service.store
        write_state = store.write_state

        async def refusing(changes: Any) -> None:
            if (
                groups.group_key("stubborn") in changes
                and changes[groups.group_key("stubborn")] is None
            ):
                raise StoreError("the disk is full")
            await write_state(changes)

        monkeypatch.setattr(store, "write_state", refusing)
        with pytest.raises(ClientError):
            await client.delete_group("stubborn")
        assert (await client.group("stubborn")).name == "stubborn"  # still there
        monkeypatch.setattr(store, "write_state", write_state)
        await client.delete_group("stubborn")
        with pytest.raises(NotFoundError):
            await client.group("stubborn")
        assert await store.read_state(groups.group_key("stubborn")) == []

    async def test_an_unacknowledged_event_is_redelivered_after_the_ack_timeout(
        self, client: AsyncEventClient, stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub
    ) -> None:
        await client.create_group("slow", settings=GroupSettings(ack_timeout=0.2, backoff=(0,)))
        (event,) = chunk_events(1)
        await client.publish([event])
        call = stub.Consume(_requests(pb.ConsumeStart(group="slow")))
        assert (await call.read()).HasField("started")
        first = await call.read()
        second = await call.read()  # never acked: it comes back
        assert [d.delivery_count for d in first.deliveries.deliveries] == [1]
        assert [d.delivery_count for d in second.deliveries.deliveries] == [2]
        call.cancel()
        await wait_until(lambda: _members(client, "slow", 0), "the member gone")

    # --- members coming and going -------------------------------------------------------

    async def test_a_member_that_leaves_mid_event_has_its_events_redelivered(
        self, client: AsyncEventClient, stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub
    ) -> None:
        await client.create_group("handover", settings=FAST)
        events = chunk_events(10)
        await client.publish(events)
        call = stub.Consume(_requests(pb.ConsumeStart(group="handover", max_in_flight=4)))
        assert (await call.read()).HasField("started")
        held = [d.event.envelope.event_id for d in (await call.read()).deliveries.deliveries]
        assert len(held) == 4
        other = Worker(client, "handover")
        await wait_until(lambda: len(other.seen) == 6, "the other member's share")
        call.cancel()  # the first member goes away holding four events
        await wait_until(lambda: len(other.seen) == 10, "the four redelivered")
        await other.stopped()
        redelivered = {d.event.event_id: d.delivery_count for d in other.seen[6:]}
        assert redelivered == dict.fromkeys(held, 2), (
            redelivered,
            held,
            [(d.event.event_id, d.delivery_count) for d in other.seen],
        )
        assert Counter(other.ids) == Counter(str(e.event_id) for e in events)

    async def test_deleting_a_group_ends_its_members_with_not_found(
        self, client: AsyncEventClient
    ) -> None:
        await client.create_group("doomed", settings=FAST)
        worker = Worker(client, "doomed")
        await wait_until(lambda: _members(client, "doomed", 1), "the member joined")
        await client.delete_group("doomed")
        with pytest.raises(NotFoundError):
            await asyncio.wait_for(worker.task, 30)
        with pytest.raises(NotFoundError):
            await client.group("doomed")
        assert "doomed" not in [g.name for g in await client.groups()]

    async def test_a_stuck_event_bounds_what_the_group_reads_ahead(
        self, client: AsyncEventClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(groups, "MAX_OUTSTANDING", 50)
        await client.create_group("stuck", settings=GroupSettings(backoff=(600,)))
        events = chunk_events(200)
        stuck = str(events[0].event_id)

        async def handler(delivery: Delivery) -> None:
            if delivery.event.event_id == stuck:
                raise RuntimeError("stuck for ten minutes")

        worker = Worker(client, "stuck", handler, concurrency=8)
        await client.publish(events)
        await wait_until(lambda: len(worker.seen) >= 50, "the first 50")
        await asyncio.sleep(0.5)  # time to read further, were it not bounded
        assert len(worker.seen) == 50
        group = await client.group("stuck")
        assert (group.waiting_retry, group.checkpoint) == (1, group.start_after)
        await worker.stopped()

    async def test_events_are_delivered_and_parked_byte_for_byte_as_sent(
        self, client: AsyncEventClient, server: RunningServer
    ) -> None:
        await client.create_group("exact", settings=GroupSettings(max_deliveries=1))
        envelope = adapter.to_envelope(chunk_events(1)[0])
        envelope.metadata.update({"b": "2", "a": "1"})
        event_id = envelope.event_id
        # The event id written last: the same message, bytes no serializer writes.
        rest = envelope_pb2.EventEnvelope()
        rest.CopyFrom(envelope)
        rest.ClearField("event_id")
        sent = (
            rest.SerializeToString()
            + envelope_pb2.EventEnvelope(event_id=event_id).SerializeToString()
        )
        assert sent != envelope.SerializeToString()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            publish = channel.unary_unary(
                "/adaptive_pipeline.events.v1.EventService/Publish",
                response_deserializer=service_pb2.PublishResponse.FromString,
            )
            await publish(length_delimited(1, sent))
            consume = channel.stream_stream(
                "/adaptive_pipeline.events.v1.ConsumerGroupService/Consume",
                request_serializer=pb.ConsumeRequest.SerializeToString,
            )
            call = consume(_requests(pb.ConsumeStart(group="exact")))
            await call.read()  # started
            delivered = await call.read()
            (record,) = field_bytes(field_bytes(field_bytes(delivered, 2)[0], 1)[0], 1)
            assert field_bytes(record, 1) == [sent]
            call.cancel()
            await wait_until(lambda: _parked_count(client, "exact"), "parked (member left)")
            listing = channel.unary_unary(
                "/adaptive_pipeline.events.v1.ConsumerGroupService/ListParkedEvents",
                request_serializer=pb.ListParkedEventsRequest.SerializeToString,
            )
            answer = await listing(pb.ListParkedEventsRequest(group="exact"))
            (parked,) = field_bytes(answer, 1)
            assert field_bytes(field_bytes(parked, 1)[0], 1) == [sent]

    # --- every input has an answer --------------------------------------------------------

    async def test_bad_requests_are_refused_and_change_nothing(
        self, client: AsyncEventClient, stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub
    ) -> None:
        for name in ("", "-leading", "has space", "slash/no", "é", "a" * 201):
            with pytest.raises(InvalidArgumentError):
                await client.create_group(name)
        with pytest.raises(InvalidArgumentError):
            await client.create_group("g", settings=GroupSettings(max_deliveries=1001))
        with pytest.raises(ValueError, match="start"):
            await client.create_group("g", start=-1)
        _, created = await client.create_group("g", settings=FAST)
        assert created
        again, created = await client.create_group("g", start="end", settings=FAST)
        assert not created and again.name == "g"
        with pytest.raises(ClientError) as exists:
            await client.create_group("g", settings=GroupSettings(max_deliveries=9))
        assert exists.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert exists.value.reason == "CONSUMER_GROUP_EXISTS"
        for missing in (client.group("nope"), client.delete_group("nope"), client.parked("nope")):
            with pytest.raises(NotFoundError):
                await missing
        assert [g.name for g in await client.groups()] == ["g"]

        async def status_of(*requests: pb.ConsumeRequest) -> grpc.StatusCode:
            call = stub.Consume(_listing(requests))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                while True:
                    await call.read()
            return refused.value.code()

        start = pb.ConsumeRequest(start=pb.ConsumeStart(group="g"))
        ack = pb.ConsumeRequest(ack=pb.Ack(event_ids=[str(uuid.uuid4())]))
        assert await status_of(ack) == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            await status_of(pb.ConsumeRequest(start=pb.ConsumeStart(group="nope")))
            == grpc.StatusCode.NOT_FOUND
        )
        assert await status_of(start, start) == grpc.StatusCode.INVALID_ARGUMENT
        bad_nack = pb.ConsumeRequest(nack=pb.Nack(event_ids=[str(uuid.uuid4())]))
        assert await status_of(start, bad_nack) == grpc.StatusCode.INVALID_ARGUMENT
        not_uuid = pb.ConsumeRequest(ack=pb.Ack(event_ids=["not-a-uuid"]))
        assert await status_of(start, not_uuid) == grpc.StatusCode.INVALID_ARGUMENT
        assert (await client.group("g")).members == 0

    async def test_acks_of_unknown_or_foreign_events_change_nothing(
        self, client: AsyncEventClient, stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub
    ) -> None:
        await client.create_group("strict", settings=FAST)
        (event,) = chunk_events(1)
        await client.publish([event])
        queue: asyncio.Queue[pb.ConsumeRequest] = asyncio.Queue()
        call = stub.Consume(_from_queue(pb.ConsumeStart(group="strict"), queue))
        assert (await call.read()).HasField("started")
        delivered = (await call.read()).deliveries.deliveries[0]
        await queue.put(pb.ConsumeRequest(ack=pb.Ack(event_ids=[str(uuid.uuid4())])))
        await asyncio.sleep(0.2)
        assert (await client.group("strict")).in_flight == 1
        await queue.put(
            pb.ConsumeRequest(ack=pb.Ack(event_ids=[delivered.event.envelope.event_id]))
        )
        await wait_until(lambda: _checkpoint_at_head(client, "strict"), "the ack")
        call.cancel()


def _requests(start: pb.ConsumeStart) -> AsyncIterator[pb.ConsumeRequest]:
    async def requests() -> AsyncIterator[pb.ConsumeRequest]:
        yield pb.ConsumeRequest(start=start)
        await asyncio.Event().wait()  # keep the stream open

    return requests()


def _listing(requests: tuple[pb.ConsumeRequest, ...]) -> AsyncIterator[pb.ConsumeRequest]:
    async def send() -> AsyncIterator[pb.ConsumeRequest]:
        for request in requests:
            yield request
        await asyncio.Event().wait()

    return send()


def _from_queue(
    start: pb.ConsumeStart, queue: asyncio.Queue[pb.ConsumeRequest]
) -> AsyncIterator[pb.ConsumeRequest]:
    async def send() -> AsyncIterator[pb.ConsumeRequest]:
        yield pb.ConsumeRequest(start=start)
        while True:
            yield await queue.get()

    return send()


async def _parked_count(client: AsyncEventClient, name: str, count: int = 1) -> bool:
    return (await client.group(name)).parked == count


async def _members(client: AsyncEventClient, name: str, count: int) -> bool:
    return (await client.group(name)).members == count


async def _checkpoint_at_head(client: AsyncEventClient, name: str) -> bool:
    group = await client.group(name)
    return group.checkpoint == group.head and group.in_flight == 0
