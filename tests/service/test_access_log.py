"""The access log of a real `serve --log-format json`: fields of structured lines, not text."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.protobuf import empty_pb2

from pipeline_events.service.access_log import DEFAULT_RATE
from tests.service.conftest import ServerProcess, chunks, start_server_process, stop_process
from tests.service.test_auth import make_token

PUBLISH = "/adaptive_pipeline.events.v1.EventService/Publish"


def start(*options: str) -> ServerProcess:
    return start_server_process("memory://", options=["--log-format", "json", *options])


def stopped_lines(server: ServerProcess) -> list[dict[str, object]]:
    """Stop the server by pid, then every stderr line it wrote: each one a JSON object."""
    assert stop_process(server.process) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reader thread takes what is left after exit
        if any('"stopped"' in line for line in server.log):
            break
        time.sleep(0.05)
    lines = [json.loads(line) for line in server.log if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert str(line["time"]).endswith("Z")
        datetime.fromisoformat(str(line["time"]))  # RFC 3339
    return lines


def access(lines: Sequence[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [
        line
        for line in lines
        if line["logger"] == "pipeline_events.access" and line["access"] == kind
    ]


async def bad_publishes(target: str, count: int, metadata: tuple = ()) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)

        async def bad() -> None:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Publish(service_pb2.PublishRequest(), metadata=metadata or None)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        await asyncio.gather(*(bad() for _ in range(count)))


async def good_calls(target: str, count: int, metadata: tuple = ()) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        for _ in range(count):
            request = service_pb2.PublishRequest(events=chunks(uuid.uuid4(), 2))
            await stub.Publish(request, metadata=metadata or None)
        # A stream that its client ends: no line either.
        subscription = stub.Subscribe(service_pb2.SubscribeRequest(from_start=empty_pb2.Empty()))
        async for _ in subscription:
            break
        subscription.cancel()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    process = start("--slow-call-ms", "60000")
    yield process
    if process.process.poll() is None:
        stop_process(process.process)


def test_a_refused_publish_is_one_line_with_its_method_code_and_duration(
    server: ServerProcess,
) -> None:
    asyncio.run(bad_publishes(server.target, 1))
    lines = stopped_lines(server)
    [line] = access(lines, "failed")
    assert line["level"] == "warning"
    assert line["method"] == PUBLISH
    assert line["code"] == "INVALID_ARGUMENT"
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 60_000
    assert str(line["peer"]).startswith("ipv4:127.0.0.1:")
    assert "principal" not in line  # no --auth
    assert "events" in str(line["details"])
    assert not access(lines, "suppressed") and not access(lines, "slow")
    # Start-up: the configuration once, then where it listens (with the port as a field).
    [configuration] = [line for line in lines if "config" in line]
    assert configuration["level"] == "info"
    assert configuration["config"]["log-format"] == "json"  # type: ignore[index]
    assert configuration["sources"]["log-format"] == "flag"  # type: ignore[index]
    [listening] = [
        line for line in lines if "port" in line and line["logger"] != "pipeline_events.access"
    ]
    assert listening["port"] == server.port


def test_good_calls_and_streams_their_client_ends_give_no_line(server: ServerProcess) -> None:
    asyncio.run(good_calls(server.target, 5))
    lines = stopped_lines(server)
    assert not [line for line in lines if line["logger"] == "pipeline_events.access"]


def test_a_burst_of_500_refusals_is_rate_limited_and_summarised(server: ServerProcess) -> None:
    asyncio.run(bad_publishes(server.target, 500))
    lines = stopped_lines(server)
    failed = access(lines, "failed")
    assert all(line["method"] == PUBLISH and line["code"] == "INVALID_ARGUMENT" for line in failed)
    times = [datetime.fromisoformat(str(line["time"])).timestamp() for line in failed]
    for first in times:  # at most the rate in any second (ms precision: 10 ms of slack)
        assert sum(first <= t < first + 0.99 for t in times) <= DEFAULT_RATE
    assert DEFAULT_RATE <= len(failed) < 500
    summaries = access(lines, "suppressed")
    assert summaries and all(
        s["method"] == PUBLISH and s["code"] == "INVALID_ARGUMENT" for s in summaries
    )
    assert len(failed) + sum(int(s["suppressed"]) for s in summaries) == 500  # type: ignore[call-overload]
    assert all(
        "more similar lines suppressed in the last 10 s" in str(s["message"]) for s in summaries
    )


def test_a_zero_slow_call_threshold_logs_good_unary_calls_as_slow() -> None:
    server = start("--slow-call-ms", "0")
    try:
        asyncio.run(good_calls(server.target, 3))
    finally:
        lines = stopped_lines(server)
    slow = [line for line in access(lines, "slow") if line["method"] == PUBLISH]
    assert len(slow) == 3
    for line in slow:
        assert line["code"] == "OK" and line["level"] == "warning"
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
        assert line["slow_call_ms"] == 0
    assert not access(lines, "failed")  # the stream its client cancelled is not a failure


def test_with_auth_the_line_names_the_principal(tmp_path: Path) -> None:
    token, toml = make_token("ingest-line", "--role", "publisher")
    principals = tmp_path / "principals.toml"
    principals.write_text(toml)
    principals.chmod(0o600)
    server = start("--auth", str(principals))
    try:
        asyncio.run(bad_publishes(server.target, 1, (("authorization", f"Bearer {token}"),)))
        refused = asyncio.run(_unauthenticated(server.target))
    finally:
        lines = stopped_lines(server)
    assert refused == grpc.StatusCode.UNAUTHENTICATED
    by_code = {line["code"]: line for line in access(lines, "failed")}
    assert by_code["INVALID_ARGUMENT"]["principal"] == "ingest-line"
    assert by_code["UNAUTHENTICATED"]["method"] == PUBLISH
    assert "principal" not in by_code["UNAUTHENTICATED"]


async def _unauthenticated(target: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.EventServiceStub(channel)
        try:
            await stub.Publish(service_pb2.PublishRequest(events=chunks(uuid.uuid4(), 1)))
        except grpc.aio.AioRpcError as error:
            return error.code()
    raise AssertionError("a call without a token was served")
