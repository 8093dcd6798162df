"""The SQLite backend passes the store contract, persists, and migrates."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from pipeline_events.store import EventStore, SQLiteEventStore, StoreError, open_store
from pipeline_events.store.sqlite import SCHEMA_VERSION
from tests.store.contract import EventStoreContract, chunk


class TestSQLiteEventStore(EventStoreContract):
    async def make_store(self, tmp_path: Path) -> EventStore:
        return await SQLiteEventStore.open(tmp_path / "events.db")


class TestSQLiteEventStoreFsync(EventStoreContract):
    async def make_store(self, tmp_path: Path) -> EventStore:
        return await open_store(f"sqlite:///{tmp_path}/events.db?durability=power")


async def test_events_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    a = uuid.uuid4()
    async with await SQLiteEventStore.open(path) as store:
        first = await store.append([chunk(a), chunk(a)])
    async with await SQLiteEventStore.open(path) as store:
        assert await store.head_position() == 2
        assert [e.revision for e in await store.read_aggregate(str(a))] == [1, 2]
        nxt = await store.append([chunk(a)], {str(a): 2})
        assert (nxt.positions[0].global_position, nxt.positions[0].revision) == (3, 3)
        assert first.positions[0].global_position == 1


async def test_snapshots_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await SQLiteEventStore.open(path) as store:
        await store.append([chunk(uuid.uuid4())])
        await store.save_snapshot("projections", 1, b"state")
    async with await SQLiteEventStore.open(path) as store:
        assert await store.load_snapshot("projections") == (1, b"state")


async def test_the_schema_is_versioned_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await SQLiteEventStore.open(path):
        pass
    async with await SQLiteEventStore.open(path):  # migrating twice changes nothing
        pass
    with sqlite3.connect(path) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with await SQLiteEventStore.open(path):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="schema version"):
        await SQLiteEventStore.open(path)


async def test_store_urls(tmp_path: Path) -> None:
    for bad in ("postgres://x", "sqlite://", f"sqlite:///{tmp_path}/x.db?durability=maybe"):
        with pytest.raises(StoreError):
            await open_store(bad)


async def test_state_writes_alone_have_the_wal_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline_events.store import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_FRAMES", 10)
    store = await SQLiteEventStore.open(tmp_path / "events.db")
    try:
        for n in range(40):  # no append in between: nothing else asks for upkeep
            await store.write_state({f"group/{n}": b"x" * 8192})
        for _ in range(200):
            if store._frames < 10:
                break
            await asyncio.sleep(0.01)
        assert store._frames < 10, f"{store._frames} WAL pages written and never checkpointed"
    finally:
        await store.close()
