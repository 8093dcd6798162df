"""Prometheus metrics of a real server over real SQLite, scraped over HTTP and parsed
with the Prometheus text parser."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.protobuf import empty_pb2
from prometheus_client.parser import text_string_to_metric_families

from pipeline_events import adapter, domain
from pipeline_events.client import AsyncEventClient, InvalidArgumentError
from pipeline_events.consumer import ParkEvent
from pipeline_events.service.auth import Authenticator
from pipeline_events.service.metrics import Metrics
from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.service.wire import length_delimited
from pipeline_events.store import SQLiteEventStore
from pipeline_events.tokens import add_principal, new_token, principal_toml
from tests.service.groups_contract import FAST, Worker, chunk_events, wait_until

EVENTS = "adaptive_pipeline.events.v1.EventService"


class Scrape:
    """One scrape, parsed: `value(sample name, **labels)`."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            self.text = answer.read().decode()
        self.samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append(sample)

    def value(self, name: str, **labels: str) -> float | None:
        found = [
            s.value
            for s in self.samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Metrics, int]]:
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    metrics = Metrics()
    running = await start_server(store, listen="127.0.0.1:0", metrics=metrics)
    port = metrics.serve_http("127.0.0.1:0")
    yield running, metrics, port
    await running.stop(0)
    metrics.close()
    await store.close()


def _invalid_publish() -> service_pb2.PublishRequest:
    envelope = adapter.to_envelope(
        domain.ChunkProcessed.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 0, 1, "x", 1)
    )
    envelope.event_id = "not-a-uuid"
    return service_pb2.PublishRequest(events=[envelope])


async def test_a_scrape_counts_what_the_server_did(
    served: tuple[RunningServer, Metrics, int],
) -> None:
    running, _metrics, port = served
    target = f"127.0.0.1:{running.port}"
    async with AsyncEventClient(target) as client, grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        await client.publish(chunk_events(5))
        await client.publish(chunk_events(3))
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(_invalid_publish())
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # A consumer group that parks one event of the first eight.
        await client.create_group("indexer", event_types=["ChunkProcessed"], settings=FAST)
        events = chunk_events(2)
        poison = str(events[0].event_id)

        async def handler(delivery: Any) -> None:
            if delivery.event.event_id == poison:
                raise ParkEvent("not for this worker")

        worker = Worker(client, "indexer", handler)
        await client.publish(events)
        await wait_until(lambda: len(worker.seen) == 10, "ten deliveries")
        await worker.stopped()
        head = await running.service.store.head_position()
        assert head == 12  # 10 ChunkProcessed, and the parking's PipelineCreated and record

        async def settled() -> bool:
            group = await client.group("indexer")
            return group.checkpoint == head and group.members == 0

        await wait_until(settled, "the group's checkpoint at the head, no members")
        await wait_until(lambda: running.service.read_models.position == head, "folded")

        # An open subscription, read up to the head.
        subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start=empty_pb2.Empty()))
        async for message in subscription:
            if message.WhichOneof("content") == "caught_up":
                break
        scrape = Scrape(port)
        subscription.cancel()

    assert scrape.value("pipeline_events_events_appended_total", event_type="ChunkProcessed") == 10
    assert scrape.value("pipeline_events_append_batch_events_count") == 3
    assert scrape.value("pipeline_events_append_batch_events_sum") == 10
    assert scrape.value("pipeline_events_append_batch_events_bucket", le="2.0") == 1
    assert scrape.value("pipeline_events_append_batch_events_bucket", le="5.0") == 3
    assert (
        scrape.value("pipeline_events_store_append_duration_seconds_count", backend="sqlite") == 3
    )
    assert (
        scrape.value("pipeline_events_rpcs_total", service=EVENTS, method="Publish", code="OK") == 3
    )
    invalid = scrape.value(
        "pipeline_events_rpcs_total", service=EVENTS, method="Publish", code="INVALID_ARGUMENT"
    )
    assert invalid == 2
    assert scrape.value("pipeline_events_validation_refusals_total", method="Publish") == 2
    assert scrape.value("pipeline_events_rpc_duration_seconds_count", service=EVENTS,
                        method="Publish") == 5  # fmt: skip
    groups = "adaptive_pipeline.events.v1.ConsumerGroupService"
    assert scrape.value("pipeline_events_rpcs_total", service=groups, method="Consume",
                        code="OK") == 1  # fmt: skip
    assert scrape.value("pipeline_events_stream_duration_seconds_count", service=groups,
                        method="Consume") == 1  # fmt: skip
    assert scrape.value("pipeline_events_security_refusals_total", kind="unauthenticated") == 0

    assert scrape.value("pipeline_events_store_head_position") == head
    assert scrape.value("pipeline_events_read_model_position") == head
    assert scrape.value("pipeline_events_read_models_ready") == 1
    assert scrape.value("pipeline_events_subscriptions_open") == 1
    assert scrape.value("pipeline_events_calls_in_flight", kind="stream") == 1
    assert scrape.value("pipeline_events_consumer_groups") == 1
    assert scrape.value("pipeline_events_consumer_group_parked_events", group="indexer") == 1
    assert scrape.value("pipeline_events_consumer_group_lag_events", group="indexer") == 0
    assert (
        scrape.value("pipeline_events_consumer_group_checkpoint_position", group="indexer") == head
    )
    assert scrape.value("pipeline_events_consumer_group_members", group="indexer") == 0
    assert scrape.value("pipeline_events_consumer_group_in_flight_events", group="indexer") == 0
    assert scrape.value("pipeline_events_server_info", backend="sqlite") == 1
    size = scrape.value("pipeline_events_store_size_bytes")
    assert size is not None and size > 0
    memory = scrape.value("process_resident_memory_bytes")
    assert memory is not None and memory > 10 * 1024 * 1024
    assert scrape.value("process_open_fds") is not None
    assert "python_info" in scrape.samples

    # The subscription's end is counted with its status and its duration.
    def subscribe_ended() -> bool:
        after = Scrape(port)
        return after.value("pipeline_events_rpcs_total", method="Subscribe", code="CANCELLED") == 1

    await wait_until(subscribe_ended, "the cancelled subscription counted")
    after = Scrape(port)
    assert after.value("pipeline_events_subscriptions_open") == 0
    assert after.value("pipeline_events_stream_duration_seconds_count", service=EVENTS,
                       method="Subscribe") == 1  # fmt: skip


async def test_lag_and_waiting_events_of_a_group_without_members(
    served: tuple[RunningServer, Metrics, int],
) -> None:
    running, _metrics, port = served
    async with AsyncEventClient(f"127.0.0.1:{running.port}") as client:
        await client.create_group("idle", settings=FAST)
        await client.publish(chunk_events(7))
    scrape = Scrape(port)
    assert scrape.value("pipeline_events_store_head_position") == 7
    assert scrape.value("pipeline_events_consumer_group_lag_events", group="idle") == 7
    assert scrape.value("pipeline_events_consumer_group_parked_events", group="idle") == 0


async def test_security_refusals_are_counted_by_kind(tmp_path: Path) -> None:
    principals = tmp_path / "principals.toml"
    token, token_id, hash_line = new_token()
    add_principal(principals, principal_toml("reader", token_id, hash_line, ["subscriber"], []))
    limited, limited_id, limited_hash = new_token()
    pipeline = str(uuid.uuid4())
    add_principal(
        principals, principal_toml("one", limited_id, limited_hash, ["subscriber"], [pipeline])
    )
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    metrics = Metrics()
    running = await start_server(
        store, metrics=metrics, authenticator=Authenticator.open(principals)
    )
    port = metrics.serve_http("127.0.0.1:0")
    try:
        target = f"127.0.0.1:{running.port}"
        async with AsyncEventClient(target) as anonymous:
            for _ in range(3):
                with pytest.raises(Exception, match="token"):
                    await anonymous.server_info()
        async with AsyncEventClient(target, token=token) as reader:
            assert (await reader.server_info()).head_position == 0
            with pytest.raises(Exception, match="may not call Publish"):
                await reader.publish(chunk_events(1))
        async with AsyncEventClient(target, token=limited) as one:
            # Counts and groups of every pipeline: not for a principal limited to some.
            with pytest.raises(Exception, match="may not touch these pipelines"):
                await one.server_info()
        scrape = Scrape(port)
        assert scrape.value("pipeline_events_security_refusals_total", kind="unauthenticated") == 3
        assert (
            scrape.value("pipeline_events_security_refusals_total", kind="permission_denied") == 2
        )
        assert scrape.value("pipeline_events_rpcs_total", method="GetServerInfo",
                            code="UNAUTHENTICATED") == 3  # fmt: skip
        assert scrape.value("pipeline_events_rpcs_total", method="GetServerInfo", code="OK") == 1
        assert scrape.value("pipeline_events_rpcs_total", method="GetServerInfo",
                            code="PERMISSION_DENIED") == 1  # fmt: skip
        assert scrape.value("pipeline_events_rpcs_total", method="Publish",
                            code="PERMISSION_DENIED") == 1  # fmt: skip
    finally:
        await running.stop(0)
        metrics.close()
        await store.close()


def test_serve_http_on_an_address_in_use_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            Metrics().serve_http(f"127.0.0.1:{port}")
    metrics = Metrics()
    bound = metrics.serve_http("127.0.0.1:0")
    try:
        assert bound > 0
        assert "process_resident_memory_bytes" in Scrape(bound).samples
    finally:
        metrics.close()


async def test_an_invalid_publish_through_the_client_is_one_refusal(
    served: tuple[RunningServer, Metrics, int],
) -> None:
    running, _metrics, port = served
    async with AsyncEventClient(f"127.0.0.1:{running.port}") as client:
        with pytest.raises(InvalidArgumentError):
            await client.publish([_invalid_publish().events[0]])
    scrape = Scrape(port)
    assert scrape.value("pipeline_events_validation_refusals_total", method="Publish") == 1
    assert (
        scrape.value("pipeline_events_events_appended_total", event_type="ChunkProcessed") is None
    )


async def test_event_types_this_version_does_not_know_share_one_series(
    served: tuple[RunningServer, Metrics, int],
) -> None:
    running, _, port = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        publish = channel.unary_unary(
            "/adaptive_pipeline.events.v1.EventService/Publish",
            response_deserializer=service_pb2.PublishResponse.FromString,
        )
        for number in range(5000, 5040):  # a newer producer's types, each a new number
            envelope = adapter.to_envelope(domain.PipelineCreated.new(uuid.uuid4(), "p", 1, "a"))
            envelope.ClearField("pipeline_created")
            envelope.event_type = number  # proto3 enums are open: the number is kept
            raw = envelope.SerializeToString() + length_delimited(999, b"")  # a future case
            await publish(length_delimited(1, raw))
    scraped = Scrape(port)
    assert scraped.value("pipeline_events_events_appended_total", event_type="Unknown") == 40
    assert len(scraped.samples["pipeline_events_events_appended_total"]) == 1
