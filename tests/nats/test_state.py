"""The NATS store's service state: chunked values, atomic writes, consistent reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_events.store import StoreError, open_store
from pipeline_events.store.nats import MAX_BATCH, NatsEventStore, StoreUnavailableError
from tests.nats.test_store_contract import store_url
from tests.nats_support import NatsServer, start_cluster, stop_all, wait_for_stream_leader


@pytest.fixture
async def store(nats_server_module: NatsServer) -> AsyncIterator[NatsEventStore]:
    opened = await open_store(store_url(nats_server_module))
    assert isinstance(opened, NatsEventStore)
    yield opened
    await opened.close()


async def state_messages(store: NatsEventStore) -> int:
    info = await store._js.stream_info(store.state_stream)
    return int(info.state.messages)


async def test_values_larger_than_max_payload_are_chunked_and_round_trip(
    store: NatsEventStore,
) -> None:
    max_payload = int(store._nc.max_payload)
    big = bytes(range(256)) * (max_payload * 3 // 2 // 256)  # ~1.5 MiB: two messages
    huge = b"h" * (5 * max_payload + 17)  # six messages
    await store.write_state({"parked/g/1": big, "parked/g/2": huge, "group/g": b"settings"})
    assert await store.read_state("parked/") == [("parked/g/1", big), ("parked/g/2", huge)]
    assert await state_messages(store) == 2 + 6 + 1
    # Smaller again, or removed: the old chunks are purged, the value is the new one.
    await store.write_state({"parked/g/2": b"small", "parked/g/1": None})
    assert await state_messages(store) == 3 + 5  # g/2's five old chunks: purged when read
    assert await store.read_state("") == [("group/g", b"settings"), ("parked/g/2", b"small")]
    assert await state_messages(store) == 3  # two records and one removal marker
    await store.write_state({"parked/g/1": huge})  # over the removal marker
    assert dict(await store.read_state("parked/g/1")) == {"parked/g/1": huge}


async def test_a_refused_batch_changes_nothing(
    store: NatsEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = b"b" * (int(store._nc.max_payload) * 2)
    await store.write_state({"group/a": b"old", "group/b": big})
    before = await store.read_state("")
    publish = store._publish_atomic

    async def refused_at_commit(messages: list[tuple[str, bytes, dict[str, str]]]) -> Any:
        # An expectation that fails on the batch's last message: JetStream drops it all.
        subject, data, headers = messages[-1]
        broken = {**headers, "Nats-Expected-Last-Subject-Sequence": "999999"}
        return await publish([*messages[:-1], (subject, data, broken)])

    monkeypatch.setattr(store, "_publish_atomic", refused_at_commit)
    with pytest.raises(StoreError, match="refused the state write"):
        await store.write_state(
            {"group/a": b"new", "group/b": None, "group/c": big + b"c", "group/d": b"d"}
        )
    monkeypatch.undo()
    assert await store.read_state("") == before


async def test_too_many_messages_for_one_batch_are_refused_before_writing(
    store: NatsEventStore,
) -> None:
    await store.write_state({"k/before": b"1"})
    with pytest.raises(StoreError, match="at most 1000"):
        await store.write_state({f"k/{n:05d}": b"v" for n in range(MAX_BATCH + 1)})
    changes: dict[str, bytes | None] = {f"k/{n:05d}": None for n in range(MAX_BATCH - 1)}
    changes["k/before"] = b"x" * (store.max_state_chunk + 1)  # two messages: 1001 in all
    with pytest.raises(StoreError, match="1001 messages"):  # chunks count too
        await store.write_state(changes)
    assert await store.read_state("") == [("k/before", b"1")]
    del changes["k/00000"]  # exactly 1000: one batch still
    await store.write_state(changes)
    assert await store.read_state("") == [("k/before", changes["k/before"])]


async def test_thousands_of_records_come_back_in_key_order(store: NatsEventStore) -> None:
    keys = [f"parked/g/{n:020d}" for n in range(3000)]
    for start in range(0, len(keys), MAX_BATCH):
        # Written in descending order of key, so stream order is not key order.
        await store.write_state({k: k.encode() for k in reversed(keys[start : start + MAX_BATCH])})
    assert await store.read_state("parked/g/") == [(k, k.encode()) for k in keys]
    assert await store.read_state("parked/g/0000000000000000299") == [
        (k, k.encode()) for k in keys[2990:3000]
    ]


async def test_a_reader_never_sees_half_a_write(store: NatsEventStore) -> None:
    chunk = store.max_state_chunk
    done = asyncio.Event()

    def values(n: int) -> dict[str, bytes | None]:
        tag = str(n).encode()
        # A chunked record whose size varies, a small one, and one set and removed in turn.
        changes: dict[str, bytes | None] = {
            "g/big": tag * (chunk // len(tag) * (1 + n % 3)),
            "g/small": tag,
        }
        changes["g/toggle"] = None if n % 2 else tag
        return changes

    async def write() -> None:
        try:
            for n in range(1, 40):
                await store.write_state(values(n))
        finally:
            done.set()

    async def read() -> int:
        reads = 0
        while not done.is_set():
            found = dict(await store.read_state("g/"))
            reads += 1
            if not found:
                continue
            assert "g/small" in found, {k: len(v) for k, v in found.items()}
            n = int(found["g/small"])
            expected = {k: v for k, v in values(n).items() if v is not None}
            assert found == expected, f"a read mixing writes (small from write {n})"
        return reads

    _, reads = await asyncio.gather(write(), read())
    assert reads > 1


async def test_stores_sharing_a_server_keep_their_state_apart(
    nats_server_module: NatsServer,
) -> None:
    # Prefixes that a state subject built from the prefix (`<prefix>_state.>`) would mix up.
    name = uuid.uuid4().hex[:8]
    one = await open_store(store_url(nats_server_module, prefix=f"p{name}"))
    two = await open_store(store_url(nats_server_module, prefix=f"p{name}_state"))
    three = await open_store(store_url(nats_server_module))
    try:
        await one.write_state({"group/g": b"one"})
        await two.write_state({"group/g": b"two"})
        assert await one.read_state("") == [("group/g", b"one")]
        assert await two.read_state("") == [("group/g", b"two")]
        assert await three.read_state("") == []
        assert await one.head_position() == await two.head_position() == 0
    finally:
        for store in (one, two, three):
            await store.close()


async def test_state_has_the_logs_replicas_and_outlives_a_node(tmp_path: Path) -> None:
    name = uuid.uuid4().hex[:12]
    servers = start_cluster(tmp_path / "nats", nodes=3)
    try:
        hosts = [s.url.removeprefix("nats://") for s in servers]
        query = f"stream=S{name}&prefix=p{name}&replicas=3"
        writer = await open_store(f"nats://{hosts[0]}?{query}")
        assert isinstance(writer, NatsEventStore)
        big = b"r" * (int(writer._nc.max_payload) * 3 // 2)
        try:
            await writer.write_state({"group/g": b"settings", "parked/g/1": big})
            info = await writer._js.stream_info(writer.state_stream)
            assert info.config.num_replicas == 3
        finally:
            await writer.close()
        leader = await wait_for_stream_leader(servers[1].url, f"S{name}_STATE")
        next(s for s in servers if s.name == leader).kill()
        others = ",".join(h for s, h in zip(servers, hosts, strict=True) if s.name != leader)
        reader = await open_store(f"nats://{others}?{query}")
        try:
            deadline = time.monotonic() + 30
            while True:  # a new stream leader is elected
                try:
                    found = await reader.read_state("")
                    break
                except StoreUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            assert found == [("group/g", b"settings"), ("parked/g/1", big)]
        finally:
            await reader.close()
    finally:
        stop_all(servers)
