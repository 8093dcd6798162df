"""Every RPC and error path of the EventService, through the generated stub on a real server."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from pipeline_events.service.server import SERVICE_NAME
from tests.service.conftest import chunks

Publish = service_pb2.PublishRequest


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a server sent in the trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no rich status details")


def detail(status: status_pb2.Status, kind):
    for holder in status.details:
        message = kind()
        if holder.Unpack(message):
            return message
    raise AssertionError(f"no {kind.__name__} detail")


async def head(stub) -> int:
    subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_end={}))
    async for message in subscription:
        subscription.cancel()
        return message.caught_up.position
    raise AssertionError("no caught_up")


# --- Publish -----------------------------------------------------------------------------


async def test_publish_returns_positions_and_is_idempotent(stub) -> None:
    pipeline = uuid.uuid4()
    batch = chunks(pipeline, 3)
    first = await stub.Publish(Publish(events=batch))
    assert [(p.global_position, p.revision) for p in first.positions] == [(1, 1), (2, 2), (3, 3)]
    assert not first.already_recorded
    again = await stub.Publish(Publish(events=batch))
    assert again.positions == first.positions and again.already_recorded
    assert await head(stub) == 3


async def test_invalid_events_are_rejected_with_field_violations_and_store_nothing(stub) -> None:
    good, bad = chunks(uuid.uuid4(), 2)
    bad.event_id = "not-a-uuid"
    bad.chunk_processed.chunk_id = ""
    bad.metadata[""] = "empty key"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(Publish(events=[good, bad]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = detail(rich_status(raised.value), error_details_pb2.BadRequest).field_violations
    fields = {v.field for v in violations}
    assert {"events[1].event_id", "events[1].chunk_processed.chunk_id"} <= fields
    assert any(f.startswith("events[1].metadata") for f in fields)
    assert await head(stub) == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (Publish(), "events"),
        (
            Publish(
                events=chunks(uuid.UUID(int=1), 1),
                expected_revisions=[
                    service_pb2.ExpectedRevision(aggregate_id=str(uuid.UUID(int=1)), any={}),
                    service_pb2.ExpectedRevision(aggregate_id=str(uuid.UUID(int=1)), revision=2),
                ],
            ),
            "expected_revisions[1].aggregate_id",
        ),
        (
            Publish(
                events=chunks(uuid.UUID(int=1), 1),
                expected_revisions=[service_pb2.ExpectedRevision()],
            ),
            "expected_revisions[0].aggregate_id",
        ),
    ],
)
async def test_malformed_requests_name_the_field(stub, request_, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [
        v.field
        for v in detail(rich_status(raised.value), error_details_pb2.BadRequest).field_violations
    ]
    assert field in fields


async def test_an_event_type_that_contradicts_the_payload_is_invalid(stub) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    envelope.event_type = envelope_pb2.EVENT_TYPE_STAGE_FAILED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(Publish(events=[envelope]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = detail(rich_status(raised.value), error_details_pb2.BadRequest).field_violations
    assert violation.field == "events[0].event_type"


async def test_a_wrong_expected_revision_is_failed_precondition_with_both_revisions(stub) -> None:
    pipeline = uuid.uuid4()
    await stub.Publish(Publish(events=chunks(pipeline, 2)))
    check = service_pb2.ExpectedRevision(aggregate_id=str(pipeline), revision=1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(Publish(events=chunks(pipeline, 1), expected_revisions=[check]))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = detail(rich_status(raised.value), error_details_pb2.ErrorInfo)
    assert info.reason == "WRONG_EXPECTED_REVISION"
    assert dict(info.metadata) == {"aggregate_id": str(pipeline), "expected": "1", "actual": "2"}
    ok = service_pb2.ExpectedRevision(aggregate_id=str(pipeline), revision=2)
    result = await stub.Publish(Publish(events=chunks(pipeline, 1), expected_revisions=[ok]))
    assert result.positions[0].revision == 3
    fresh = service_pb2.ExpectedRevision(aggregate_id=str(uuid.uuid4()), no_stream={})
    with pytest.raises(grpc.aio.AioRpcError):
        exists = service_pb2.ExpectedRevision(aggregate_id=fresh.aggregate_id, stream_exists={})
        await stub.Publish(
            Publish(events=chunks(uuid.UUID(fresh.aggregate_id), 1), expected_revisions=[exists])
        )


async def test_the_same_id_with_other_content_is_already_exists(stub) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    await stub.Publish(Publish(events=[envelope]))
    envelope.chunk_processed.chunk_size = 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(Publish(events=[envelope]))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = detail(rich_status(raised.value), error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["event_id"]) == (
        "DUPLICATE_EVENT_ID_CONFLICT",
        envelope.event_id,
    )


async def test_a_request_over_the_size_limit_is_resource_exhausted(stub) -> None:
    envelopes = chunks(uuid.uuid4(), 20)
    for envelope in envelopes:
        envelope.metadata["padding"] = "x" * 4000
    huge = Publish(events=envelopes * 250)  # about 20 MB, over the 16 MiB limit
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Publish(huge)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_unknown_payload_case_is_accepted_and_relayed_intact(stub) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    envelope.ClearField("chunk_processed")
    envelope.event_type = 17
    data = envelope.SerializeToString(deterministic=True) + b"\xaa\x07\x03\x0a\x01x"
    await stub.Publish(Publish(events=[envelope_pb2.EventEnvelope.FromString(data)]))
    subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start={}))
    async for message in subscription:
        (recorded,) = message.events.events
        assert recorded.envelope.SerializeToString(deterministic=True) == data
        subscription.cancel()
        break


# --- PublishStream -------------------------------------------------------------------------


async def test_publish_stream_answers_each_batch_and_survives_a_rejection(stub) -> None:
    pipeline = uuid.uuid4()
    bad = chunks(pipeline, 1)
    bad[0].aggregate_id = "nope"
    requests = [
        service_pb2.PublishStreamRequest(batch_id=1, events=chunks(pipeline, 2)),
        service_pb2.PublishStreamRequest(batch_id=2, events=bad),
        service_pb2.PublishStreamRequest(
            batch_id=3, events=chunks(pipeline, 1),
            expected_revisions=[service_pb2.ExpectedRevision(aggregate_id=str(pipeline), revision=9)],
        ),
        service_pb2.PublishStreamRequest(batch_id=4, events=chunks(pipeline, 3)),
    ]  # fmt: skip
    responses = [r async for r in stub.PublishStream(iter(requests))]
    assert [r.batch_id for r in responses] == [1, 2, 3, 4]
    assert [r.WhichOneof("result") for r in responses] == [
        "published",
        "error",
        "error",
        "published",
    ]
    assert responses[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert (responses[2].error.reason, responses[2].error.metadata["actual"]) == (
        "WRONG_EXPECTED_REVISION",
        "2",
    )
    assert [p.global_position for p in responses[3].published.positions] == [3, 4, 5]


# --- ReadAggregate -------------------------------------------------------------------------


async def test_read_aggregate_pages_forwards_and_backwards(stub) -> None:
    pipeline = uuid.uuid4()
    await stub.Publish(Publish(events=chunks(pipeline, 5) + chunks(uuid.uuid4(), 2)))
    page = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline), limit=2)
    )
    assert [e.revision for e in page.events] == [1, 2]
    assert (page.next_revision, page.last_revision) == (3, 5)
    rest = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline), from_revision=3)
    )
    assert ([e.revision for e in rest.events], rest.next_revision) == ([3, 4, 5], 0)
    back = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline), backwards=True, limit=3)
    )
    assert ([e.revision for e in back.events], back.next_revision) == ([5, 4, 3], 2)
    assert back.events[0].envelope.aggregate_id == str(pipeline)
    assert back.events[0].recorded_at.seconds > 0
    empty = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(aggregate_id=str(uuid.uuid4()))
    )
    assert (len(empty.events), empty.last_revision) == (0, 0)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReadAggregate(service_pb2.ReadAggregateRequest(aggregate_id="x"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Subscribe -----------------------------------------------------------------------------


async def collect(stub, request, stop_after_caught_up: bool = True) -> list:
    messages = []
    subscription = stub.Subscribe(request)
    async for message in subscription:
        messages.append(message)
        if stop_after_caught_up and message.WhichOneof("content") == "caught_up":
            subscription.cancel()
            break
    return messages


def positions(messages: list) -> list[int]:
    return [e.global_position for m in messages if m.HasField("events") for e in m.events.events]


async def test_subscribe_from_start_after_a_position_and_from_end(stub) -> None:
    await stub.Publish(Publish(events=chunks(uuid.uuid4(), 7)))
    everything = await collect(stub, service_pb2.SubscribeRequest(from_start={}, max_batch_size=3))
    assert positions(everything) == [1, 2, 3, 4, 5, 6, 7]
    assert [len(m.events.events) for m in everything if m.HasField("events")] == [3, 3, 1]
    assert everything[-1].caught_up.position == 7
    after = await collect(stub, service_pb2.SubscribeRequest(after_position=5))
    assert positions(after) == [6, 7]

    live = stub.Subscribe(service_pb2.SubscribeRequest(from_end={}))
    first = await live.read()
    assert first.caught_up.position == 7
    await stub.Publish(Publish(events=chunks(uuid.uuid4(), 2)))
    message = await live.read()
    assert [e.global_position for e in message.events.events] == [8, 9]
    live.cancel()


async def test_subscription_filters_and_checkpoints_for_sparse_filters(stub) -> None:
    target, run = uuid.uuid4(), uuid.uuid4()
    await stub.Publish(Publish(events=chunks(uuid.uuid4(), 10)))
    await stub.Publish(Publish(events=chunks(target, 2, run)))
    await stub.Publish(Publish(events=chunks(uuid.uuid4(), 10)))
    by_pipeline = service_pb2.EventFilter(aggregate_ids=[str(target)])
    messages = await collect(
        stub, service_pb2.SubscribeRequest(from_start={}, filter=by_pipeline, checkpoint_interval=5)
    )
    kinds = [m.WhichOneof("content") for m in messages]
    assert positions(messages) == [11, 12]
    assert kinds == ["events", "checkpoint", "caught_up"]
    assert messages[1].checkpoint.position == 22
    by_run = service_pb2.EventFilter(
        processing_ids=[str(run)], categories=[envelope_pb2.EVENT_CATEGORY_OPERATIONAL]
    )
    assert positions(
        await collect(stub, service_pb2.SubscribeRequest(from_start={}, filter=by_run))
    ) == [11, 12]
    by_type = service_pb2.EventFilter(event_types=[envelope_pb2.EVENT_TYPE_PIPELINE_CREATED])
    assert (
        positions(await collect(stub, service_pb2.SubscribeRequest(from_start={}, filter=by_type)))
        == []
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(
            stub,
            service_pb2.SubscribeRequest(
                from_start={}, filter=service_pb2.EventFilter(aggregate_ids=["x"])
            ),
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(stub, service_pb2.SubscribeRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_catch_up_hands_over_to_live_with_no_gap_and_no_duplicate(stub) -> None:
    """Publishers keep writing while a subscriber catches up from position 0."""
    await stub.Publish(Publish(events=chunks(uuid.uuid4(), 500)))
    total = 500 + 4 * 40 * 25

    async def publisher() -> None:
        for _ in range(40):
            await stub.Publish(Publish(events=chunks(uuid.uuid4(), 25)))

    received: list[int] = []

    async def subscriber() -> None:
        subscription = stub.Subscribe(
            service_pb2.SubscribeRequest(from_start={}, max_batch_size=64)
        )
        async for message in subscription:
            received.extend(e.global_position for e in message.events.events)
            if len(received) >= total:
                subscription.cancel()
                return

    reading = asyncio.create_task(subscriber())
    await asyncio.gather(*(publisher() for _ in range(4)))
    await asyncio.wait_for(reading, 60)
    assert received == list(range(1, total + 1))


# --- the rest of the service surface -------------------------------------------------------


async def test_state_queries_of_unknown_ids_are_not_found_with_the_position(stub) -> None:
    for call in (
        stub.GetPipelineState(service_pb2.GetPipelineStateRequest(pipeline_id=str(uuid.uuid4()))),
        stub.GetProcessingState(
            service_pb2.GetProcessingStateRequest(processing_id=str(uuid.uuid4()))
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "folded up to position 0" in raised.value.details()


async def test_health_and_reflection(running) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in reply.list_services_response.service}
            assert SERVICE_NAME in names and "grpc.health.v1.Health" in names
        await running.stop(1)


async def test_shutdown_goes_not_serving_and_ends_subscriptions_unavailable(running, stub) -> None:
    subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start={}))
    assert (await subscription.read()).HasField("caught_up")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(running.stop(5))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await subscription.read()
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        await stopping


async def test_a_live_subscriber_that_falls_behind_is_told_and_loses_nothing(stub) -> None:
    pipeline = uuid.uuid4()
    await stub.Publish(Publish(events=chunks(pipeline, 3)))
    subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start={}, max_batch_size=2))
    kinds, seen = [], []
    while "caught_up" not in kinds:
        message = await subscription.read()
        kinds.append(message.WhichOneof("content"))
        seen.extend(e.global_position for e in message.events.events)
    await stub.Publish(Publish(events=chunks(pipeline, 2)))  # exactly one page: not behind
    message = await subscription.read()
    assert [e.global_position for e in message.events.events] == [4, 5]
    await stub.Publish(Publish(events=chunks(pipeline, 5)))  # more than a page: behind
    later = []
    while len(seen) + sum(len(m.events.events) for m in later) < 8:
        later.append(await subscription.read())
    later.append(await subscription.read())
    subscription.cancel()
    kinds = [m.WhichOneof("content") for m in later]
    assert kinds[:2] == ["events", "fell_behind"]
    assert later[1].fell_behind.position == later[0].events.events[-1].global_position
    assert seen + [4, 5] + [e.global_position for m in later for e in m.events.events] == list(
        range(1, 11)
    )
