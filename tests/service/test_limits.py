"""Accepted means readable: the limits that keep every stored event servable, and the answers
to what lies past them, through a real server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2, service_pb2_grpc
from google.rpc import error_details_pb2

from pipeline_events import adapter, domain
from pipeline_events.client import (
    AsyncEventClient,
    InvalidArgumentError,
    RecordedEvent,
    RetryPolicy,
)
from pipeline_events.errors import DecodeError
from pipeline_events.service.server import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    PAGE_BYTES,
    RunningServer,
    start_server,
)
from pipeline_events.service.validation import MAX_NESTING
from pipeline_events.store import MemoryEventStore, SQLiteEventStore
from tests.service.conftest import chunks
from tests.service.test_server import detail, head, rich_status

Publish = service_pb2.PublishRequest
SERVICE = "/adaptive_pipeline.events.v1.EventService/"


def padded(envelope: envelope_pb2.EventEnvelope, size: int) -> envelope_pb2.EventEnvelope:
    """The envelope grown to exactly `size` serialized bytes with metadata values."""
    remaining = size - envelope.ByteSize()
    key = 0
    while remaining > 0:
        # A map entry costs its value plus framing; values are at most 64 KiB (the schema).
        value = min(remaining - 16, 60_000)
        if value <= 0:
            break
        envelope.metadata[f"pad{key:03}"] = "x" * value
        key += 1
        remaining = size - envelope.ByteSize()
    while envelope.ByteSize() < size:  # settle the last bytes one character at a time
        envelope.metadata["pad000"] += "x"
    while envelope.ByteSize() > size:
        envelope.metadata["pad000"] = envelope.metadata["pad000"][:-1]
    assert envelope.ByteSize() == size
    return envelope


@pytest.fixture
async def channel(running: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    """A raw channel to the server, for calls with bytes in and bytes out."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as raw:
        yield raw


async def expect_code(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value


# --- pages and event sizes -------------------------------------------------------------------


async def test_big_events_come_back_in_pages_bounded_by_bytes(
    channel, stub, running: RunningServer
) -> None:
    pipeline = uuid.uuid4()
    big = [padded(e, 279_000) for e in chunks(pipeline, 80)]
    for start in range(0, 80, 20):  # 20 x 279 KB per Publish, well under 16 MiB
        await stub.Publish(Publish(events=big[start : start + 20]))
    raw_read = channel.unary_unary(SERVICE + "ReadAggregate")  # bytes in, bytes out
    request = service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline))
    read, sizes = [], []
    while True:
        data = await raw_read(request.SerializeToString())
        sizes.append(len(data))
        page = service_pb2.ReadAggregateResponse.FromString(data)
        read += page.events
        if not page.next_revision:
            break
        request.from_revision = page.next_revision
    assert [e.revision for e in read] == list(range(1, 81))
    assert [e.envelope for e in read] == big
    assert max(sizes) <= PAGE_BYTES < 4 * 1024 * 1024  # a default client of any language
    # Subscribe from the start, a default page too: the same events, in messages under 3 MiB.
    subscription = channel.unary_stream(SERVICE + "Subscribe")(
        service_pb2.SubscribeRequest(from_start={}).SerializeToString()
    )
    seen = []
    async for data in subscription:
        message = service_pb2.SubscribeResponse.FromString(data)
        if message.HasField("caught_up"):
            break
        assert len(data) <= PAGE_BYTES
        seen += message.events.events
    subscription.cancel()
    assert [e.envelope for e in seen] == big
    async with AsyncEventClient(f"127.0.0.1:{running.port}") as client:
        assert len(await client.read_aggregate(pipeline)) == 80


async def test_the_largest_event_is_accepted_and_read_back_and_one_byte_more_is_refused(
    stub,
) -> None:
    pipeline = uuid.uuid4()
    (largest,) = [padded(e, DEFAULT_MAX_EVENT_BYTES) for e in chunks(pipeline, 1)]
    await stub.Publish(Publish(events=[largest]))
    (over,) = [padded(e, DEFAULT_MAX_EVENT_BYTES + 1) for e in chunks(pipeline, 1)]
    error = await expect_code(
        stub.Publish(Publish(events=[over])), grpc.StatusCode.INVALID_ARGUMENT
    )
    (violation,) = detail(rich_status(error), error_details_pb2.BadRequest).field_violations
    assert violation.field == "events[0]"
    assert "1,048,577 bytes; this server takes at most 1,048,576" in violation.description
    assert await head(stub) == 1
    (stored,) = (
        await stub.ReadAggregate(service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline)))
    ).events
    assert stored.envelope == largest


async def test_a_publish_of_exactly_the_message_limit_stores_nothing(stub) -> None:
    # One event of a newer type, its payload (unknown field 117) filling a 16 MiB request:
    # it was accepted once, and its RecordedEvent could never be sent back.
    (envelope,) = chunks(uuid.uuid4(), 1)
    envelope.ClearField("chunk_processed")
    envelope.event_type = 17
    base = envelope.SerializeToString(deterministic=True)
    size = MAX_MESSAGE_BYTES - len(base) - 2 * 5 - 2  # framing: two tags and two lengths
    for _ in range(4):  # the varint lengths depend on the size: settle it
        body = base + b"\xaa\x07" + _varint(size) + b"x" * size
        request = Publish(events=[envelope_pb2.EventEnvelope.FromString(body)])
        size += MAX_MESSAGE_BYTES - request.ByteSize()
    assert request.ByteSize() == MAX_MESSAGE_BYTES
    error = await expect_code(stub.Publish(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "events[0]: the event is 16,777,2" in error.details()
    assert await head(stub) == 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes([*out, value])


async def test_limits_that_could_not_be_served_back_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="the largest event must be between"):
        await start_server(MemoryEventStore(), max_event_bytes=MAX_MESSAGE_BYTES)
    server = await start_server(MemoryEventStore(), max_event_bytes=MAX_MESSAGE_BYTES - 65536)
    await server.stop(0)


# --- nesting, times, positions ---------------------------------------------------------------


def nested_groups(depth: int) -> bytes:
    """Unknown field 52 as `depth` groups, one inside the other."""
    data = b""
    for _ in range(depth):
        data = b"\xa3\x03" + data + b"\xa4\x03"
    return data


@pytest.mark.parametrize("groups", [MAX_NESTING - 1, MAX_NESTING, 97, 98, 99, 500])
async def test_nesting_is_refused_before_it_could_not_round_trip(
    channel, stub, groups: int
) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    data = envelope.SerializeToString(deterministic=True) + nested_groups(groups)
    publish = channel.unary_unary(SERVICE + "Publish")
    call = publish(b"\x0a" + _varint(len(data)) + data)  # raw: past ~100 no binding builds it
    if groups + 1 <= MAX_NESTING:  # the envelope itself is one level
        await call
        (recorded,) = (await stub.ReadAggregate(
            service_pb2.ReadAggregateRequest(aggregate_id=envelope.aggregate_id)
        )).events  # fmt: skip
        assert recorded.envelope.SerializeToString(deterministic=True) == data
        return
    error = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
    refusal = f"more than {MAX_NESTING} levels deep" if groups < 100 else "not a valid"
    assert refusal in error.details()
    assert await head(stub) == 0


async def test_nesting_hidden_in_a_map_entry_is_refused_too(channel, stub) -> None:
    # The fuzzer's find: unknown groups inside a metadata map entry, which the map API
    # of every binding hides, were stored and then broke every page that held them.
    (envelope,) = chunks(uuid.uuid4(), 1)
    entry = b"\x0a\x01k\x12\x01v" + nested_groups(95)
    data = envelope.SerializeToString(deterministic=True) + b"\x42" + _varint(len(entry)) + entry
    publish = channel.unary_unary(SERVICE + "Publish")
    error = await expect_code(
        publish(b"\x0a" + _varint(len(data)) + data), grpc.StatusCode.INVALID_ARGUMENT
    )
    violations = detail(rich_status(error), error_details_pb2.BadRequest).field_violations
    assert {(v.field, v.description.split(" ")[0]) for v in violations} == {
        ("events[0].metadata", "a"),  # the entry is not one (see the test below)
        ("events[0]", "nests"),  # and too deep, both said
    }
    assert await head(stub) == 0


async def test_times_outside_years_1_to_9999_are_refused_and_9999_reads_back(running) -> None:
    target = f"127.0.0.1:{running.port}"
    async with AsyncEventClient(target) as client:
        for seconds, nanos, field in [
            (253_402_300_800, 0, "events[0].occurred_at"),  # 10000-01-01
            (-62_135_596_801, 0, "events[0].occurred_at"),  # before 0001-01-01
            (0, 1_000_000_000, "events[0].occurred_at.nanos"),
            (0, -1, "events[0].occurred_at.nanos"),
        ]:
            (envelope,) = chunks(uuid.uuid4(), 1)
            envelope.occurred_at.seconds, envelope.occurred_at.nanos = seconds, nanos
            with pytest.raises(Exception) as raised:
                await client.publish(envelope)
            assert [v.field for v in raised.value.field_violations] == [field]
        (last,) = chunks(uuid.uuid4(), 1)
        last.occurred_at.seconds, last.occurred_at.nanos = 253_402_300_799, 999_999_999
        await client.publish(last)
        (recorded,) = await client.read_aggregate(last.aggregate_id)
        assert recorded.event.occurred_at.year == 9999
        assert recorded.event.occurred_at.nanosecond == 999_999_999


def test_a_reader_says_decode_error_for_a_time_it_cannot_represent() -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    envelope.occurred_at.seconds = 253_402_300_800
    with pytest.raises(DecodeError, match="occurred_at"):
        adapter.from_envelope(envelope)
    recorded = envelope_pb2.RecordedEvent(envelope=envelope, global_position=1, revision=1)
    recorded.recorded_at.seconds = 1 << 62
    read = RecordedEvent.from_proto(recorded)  # decoded when first read
    assert read.global_position == 1 and read.envelope == envelope
    with pytest.raises(DecodeError, match="recorded_at"):
        _ = read.recorded_at


@pytest.mark.parametrize("value", [1 << 63, (1 << 64) - 1])
async def test_positions_past_what_a_store_holds_are_answered(stub, value: int) -> None:
    pipeline = uuid.uuid4()
    await stub.Publish(Publish(events=chunks(pipeline, 2)))
    forwards = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(aggregate_id=str(pipeline), from_revision=value)
    )
    assert (list(forwards.events), forwards.next_revision, forwards.last_revision) == ([], 0, 2)
    backwards = await stub.ReadAggregate(
        service_pb2.ReadAggregateRequest(
            aggregate_id=str(pipeline), from_revision=value, backwards=True
        )
    )
    assert [e.revision for e in backwards.events] == [2, 1]
    subscription = stub.Subscribe(service_pb2.SubscribeRequest(after_position=value))
    async for message in subscription:
        assert message.WhichOneof("content") == "caught_up"  # nothing beyond the head
        subscription.cancel()
        break
    check = service_pb2.ExpectedRevision(aggregate_id=str(pipeline), revision=value)
    request = Publish(events=chunks(pipeline, 1), expected_revisions=[check])
    error = await expect_code(stub.Publish(request), grpc.StatusCode.FAILED_PRECONDITION)
    assert detail(rich_status(error), error_details_pb2.ErrorInfo).metadata["actual"] == "2"


# --- undecodable requests and the forward-compatibility exemption ---------------------------


@pytest.mark.parametrize(
    "rpc", ["Publish", "ReadAggregate", "GetPipelineState", "GetProcessingState"]
)
async def test_undecodable_request_bytes_are_invalid_argument_logged_once(
    channel, stub, rpc: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = channel.unary_unary(SERVICE + rpc)
    with caplog.at_level(logging.WARNING, logger="pipeline_events.server"):
        for _ in range(100):
            error = await expect_code(call(b"\xff\xff\xff"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "are not a valid adaptive_pipeline.events.v1." in error.details()
    lines = [r for r in caplog.records if r.name == "pipeline_events.server"]
    assert 1 <= len(lines) <= 2 and all(r.exc_info is None for r in lines)  # no tracebacks


async def test_an_undecodable_subscribe_is_invalid_argument(channel, stub) -> None:
    subscription = channel.unary_stream(SERVICE + "Subscribe")(b"\x1a")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in subscription:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_undecodable_batch_on_a_publish_stream_does_not_end_it(channel, stub) -> None:
    good = service_pb2.PublishStreamRequest(batch_id=7, events=chunks(uuid.uuid4(), 1))

    async def requests() -> AsyncIterator[bytes]:
        yield b"\xff\xff"
        yield good.SerializeToString()

    stream = channel.stream_stream(SERVICE + "PublishStream")(requests())
    answers = [service_pb2.PublishStreamResponse.FromString(data) async for data in stream]
    assert [(a.batch_id, a.WhichOneof("result")) for a in answers] == [
        (0, "error"),
        (7, "published"),
    ]
    assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_only_an_unknown_payload_case_is_exempt_from_the_required_payload(stub) -> None:
    (envelope,) = chunks(uuid.uuid4(), 1)
    envelope.ClearField("chunk_processed")
    base = envelope.SerializeToString(deterministic=True)
    field_50 = b"\x92\x03\x01x"  # unknown field 50: the metadata range, not a payload case
    field_117 = b"\xaa\x07\x01x"  # unknown field 117: a payload case from a newer schema
    cases = [
        (13, field_50, False),  # typed ChunkProcessed, no payload: not a newer event
        (13, field_117, False),  # a known type cannot have an unknown payload
        (17, field_50, False),  # an unknown type needs its payload
        (17, field_117, True),
    ]
    for event_type, unknown, accepted in cases:
        typed = envelope_pb2.EventEnvelope.FromString(base + unknown)
        typed.event_type = event_type
        typed.event_id = str(uuid.uuid4())
        call = stub.Publish(Publish(events=[typed]))
        if accepted:
            await call
        else:
            error = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
            assert "payload" in error.details()
    assert await head(stub) == 1


# --- one server per port, and bursts of callers ------------------------------------------------


async def test_a_second_server_on_the_same_port_fails_to_start(running) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{running.port}: .*in use"):
        await start_server(MemoryEventStore(), listen=f"127.0.0.1:{running.port}")


class SlowAppends(SQLiteEventStore):
    """A real SQLite store whose appends take 20 ms longer, so that calls pile up."""

    async def append(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.02)
        return await super().append(*args, **kwargs)


async def test_a_burst_over_the_call_limit_is_refused_with_retry_info_and_clients_retry(
    tmp_path: Path,
) -> None:
    store = await SlowAppends.open(tmp_path / "events.db")
    server = await start_server(store, max_calls=8)
    target = f"127.0.0.1:{server.port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = service_pb2_grpc.EventServiceStub(channel)
            outcomes = await asyncio.gather(
                *(stub.Publish(Publish(events=chunks(uuid.uuid4(), 1))) for _ in range(200)),
                return_exceptions=True,
            )
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert refused and all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
        retry = detail(rich_status(refused[0]), error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToTimedelta().total_seconds() > 0
        stored = await store.head_position()
        assert stored == 200 - len(refused)
        # The client retries them (publishing is idempotent by event id): every one lands.
        # 8 slots for 1,500 callers is a long wait: a patient policy, not the default four tries.
        async with AsyncEventClient(target, retry=RetryPolicy(max_attempts=100)) as client:
            events = [
                domain.PipelineCreated.new(uuid.uuid4(), f"burst-{n}", 1) for n in range(1500)
            ]
            results = await asyncio.gather(*(client.publish(e) for e in events))
        assert len({r.positions[0].global_position for r in results}) == 1500
        assert await store.head_position() == stored + 1500
        assert server.call_limit.calls == 0  # every slot given back
    finally:
        await server.stop(0)
        await store.close()


async def test_three_thousand_callers_at_once_are_never_shed_as_cancelled(channel, stub) -> None:
    # gRPC itself cancels calls queued beyond 1,000 unseen by the handlers (58 of 1,500
    # were, here): every caller now gets an answer it can act on.
    requests = [Publish(events=chunks(uuid.uuid4(), 1)) for _ in range(3000)]
    outcomes = await asyncio.gather(
        *(stub.Publish(request, timeout=60) for request in requests), return_exceptions=True
    )
    codes = {o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
    assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert await head(stub) == sum(not isinstance(o, Exception) for o in outcomes)


async def test_long_upstream_strings_are_accepted_up_to_the_documented_limits(running) -> None:
    # Upstream's strings are unbounded: a 300-character stage name or user id from the
    # Rust pipeline was refused at 256. Names, ids and codes now take 4,096 characters,
    # free text 65,536; only the per-event size guards the service beyond that.
    name, text = "n" * 4096, "t" * 65_536
    pipeline, run = uuid.uuid4(), uuid.uuid4()
    context = domain.SecurityContext(user_id=name, encryption_key_id=name, metadata={name: text})
    events = [
        domain.PipelineCreated.new(pipeline, name, 3, name),
        domain.PipelineUpdated.new(pipeline, (text, text), name),
        domain.ProcessingStarted.new(pipeline, run, "/in/" + "p" * 4000, "/out", 1, context),
        domain.StageStarted.new(pipeline, run, uuid.uuid4(), name, name),
        domain.StageFailed.new(pipeline, run, uuid.uuid4(), name, text, name),
        domain.ProcessingFailed.new(pipeline, run, text, name, name),
        domain.SecurityViolation.new(
            pipeline, name, text, domain.SecurityViolationSeverity.HIGH, run, name, name
        ),
    ]
    async with AsyncEventClient(f"127.0.0.1:{running.port}") as client:
        result = await client.publish(events, correlation_id=name, causation_id=name)
        assert len(result.positions) == len(events)
        read = await client.read_aggregate(pipeline)
        assert [r.event for r in read] == events
        with pytest.raises(InvalidArgumentError) as raised:
            await client.publish(domain.PipelineCreated.new(uuid.uuid4(), name + "n", 3))
        assert [v.field for v in raised.value.field_violations] == [
            "events[0].pipeline_created.pipeline_name"
        ]


async def test_a_map_entry_carrying_an_unknown_field_is_refused(channel, stub) -> None:
    # upb keeps such an entry whole as an unknown field of the envelope, so validation never
    # saw its key (an empty one passed min_len 1), and protobuf-es readers failed to decode
    # every page that held it (the golden vector pipeline_created_metadata_entry_unknown_field).
    (envelope,) = chunks(uuid.uuid4(), 1)
    entry = b"\x0a\x00\x12\x01v\x18\x07"  # key "", value "v", and field 3 of the entry
    data = envelope.SerializeToString(deterministic=True) + b"\x42" + _varint(len(entry)) + entry
    publish = channel.unary_unary(SERVICE + "Publish")
    error = await expect_code(
        publish(b"\x0a" + _varint(len(data)) + data), grpc.StatusCode.INVALID_ARGUMENT
    )
    (violation,) = detail(rich_status(error), error_details_pb2.BadRequest).field_violations
    assert violation.field == "events[0].metadata"
    assert "neither its key nor its value" in violation.description
    assert await head(stub) == 0
