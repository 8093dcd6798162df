"""The nats-server harness against real processes: persistence across kill -9,
replication, failover and catch-up in a 3-node JetStream cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo

from tests import nats_support
from tests.nats_support import NatsServer, start_cluster, stop_all, wait_for_stream_leader

# Errors a JetStream publish may raise while a stream elects a new leader.
TRANSIENT = (nats.errors.Error, TimeoutError)


async def connect(server: NatsServer) -> Client:
    return await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)


async def publish_retrying(
    js: JetStreamContext, subject: str, seq: int, within: float = 20.0
) -> None:
    """Publish message ``seq`` (deduplicated by msg id) retrying until ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            await js.publish(
                subject, f"m{seq}".encode(), timeout=2, headers={"Nats-Msg-Id": f"id-{seq}"}
            )
            return
        except TRANSIENT:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def poll_info(js: JetStreamContext, stream: str, ok, within: float = 20.0) -> StreamInfo:
    """``stream_info`` until ``ok(info)`` holds; fails with the last info otherwise."""
    deadline = time.monotonic() + within
    info: StreamInfo | None = None
    while True:
        try:
            info = await js.stream_info(stream)
            if ok(info):
                return info
        except TRANSIENT:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"stream {stream} never reached the expected state; last: {info}")
        await asyncio.sleep(0.1)


def replicas_current(info: StreamInfo, count: int) -> bool:
    replicas = (info.cluster.replicas if info.cluster else None) or []
    return len(replicas) == count and all(r.current for r in replicas)


async def test_single_node_survives_kill_9(nats_server: NatsServer) -> None:
    nc = await connect(nats_server)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="T",
                subjects=["t.>"],
                storage=StorageType.FILE,
                allow_atomic=True,
                allow_direct=True,
            )
        )
        for i in range(3):
            ack = await js.publish(f"t.{i}", f"m{i}".encode())
            assert ack.stream == "T" and ack.seq == i + 1
        info = await js.stream_info("T")
        assert info.state.messages == 3
        assert info.config.allow_atomic is True and info.config.allow_direct is True
    finally:
        await nc.close()

    old_pid = nats_server.pid
    nats_server.kill()
    assert not nats_server.is_running()
    assert nats_server.process is not None and nats_server.process.returncode == -9

    nats_server.start()
    nats_server.wait_ready()
    assert nats_server.pid != old_pid
    nc = await connect(nats_server)
    try:
        js = nc.jetstream()
        info = await js.stream_info("T")
        assert info.state.messages == 3
        assert (info.state.first_seq, info.state.last_seq) == (1, 3)
        assert (await js.get_msg("T", 2)).data == b"m1"
    finally:
        await nc.close()


async def test_module_fixture_serves_core_nats(nats_server_module: NatsServer) -> None:
    nc = await connect(nats_server_module)
    try:

        async def pong(msg) -> None:
            await msg.respond(b"pong:" + msg.data)

        sub = await nc.subscribe("ping", cb=pong)
        reply = await nc.request("ping", b"x", timeout=2)
        assert reply.data == b"pong:x"
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert nats_server_module.healthz() == 200


async def test_cluster_replicates_fails_over_and_catches_up(tmp_path: Path) -> None:
    servers = start_cluster(tmp_path, nodes=3)
    clients: list[Client] = []
    try:
        n1, _, n3 = servers
        assert len({s.meta_leader() for s in servers}) == 1

        nc1 = await connect(n1)
        clients.append(nc1)
        js1 = nc1.jetstream(timeout=5)
        await js1.add_stream(
            StreamConfig(name="R", subjects=["r.>"], num_replicas=3, allow_direct=True)
        )
        leader_name = await wait_for_stream_leader(n1.url, "R", timeout=20)
        for seq in range(1, 101):
            await publish_retrying(js1, f"r.{seq % 7}", seq)

        nc3 = await connect(n3)
        clients.append(nc3)
        info = await poll_info(
            nc3.jetstream(timeout=5),
            "R",
            lambda i: i.state.messages == 100 and replicas_current(i, 2),
        )
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader == leader_name

        # kill -9 the stream leader; publish through a surviving node.
        victim = next(s for s in servers if s.name == leader_name)
        survivor = next(s for s in servers if s is not victim)
        for nc in clients:
            await nc.close()
        clients.clear()
        victim.kill()

        nc_s = await connect(survivor)
        clients.append(nc_s)
        js_s = nc_s.jetstream(timeout=5)
        for seq in range(101, 111):
            await publish_retrying(js_s, f"r.{seq % 7}", seq)
        info = await js_s.stream_info("R")
        assert info.state.messages == 110
        assert info.cluster is not None and info.cluster.leader not in ("", None, victim.name)

        # Restart the victim on the same store dir: it catches up on its own replica.
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(victim.wait_ready)
        nc_v = await connect(victim)
        clients.append(nc_v)
        await poll_info(
            nc_v.jetstream(timeout=5),
            "R",
            lambda i: i.state.messages == 110 and replicas_current(i, 2),
        )
        deadline = time.monotonic() + 20
        while (state := await asyncio.to_thread(victim.local_stream_state, "R")) is None or (
            state.get("messages") != 110
        ):
            assert time.monotonic() < deadline, f"{victim.name} never caught up: {state}"
            await asyncio.sleep(0.1)
        assert state["last_seq"] == 110
    finally:
        for nc in clients:
            await nc.close()
        stop_all(servers)
    assert all(not s.is_running() for s in servers)


def test_missing_binary_fails_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(nats_support.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="nats-server binary not found"):
        nats_support.nats_server_binary()
