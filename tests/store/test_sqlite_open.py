"""Opening a SQLite store: one owner at a time, and a clear error for every file that cannot be one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline_events.store import (
    SQLiteEventStore,
    StoreError,
    StoreLockedError,
    open_store,
    parse_store_url,
)
from tests.store.contract import chunk


async def test_a_second_opener_is_refused_while_the_first_holds_the_store(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = await SQLiteEventStore.open(path)
    await first.append([chunk(uuid.uuid4())])
    with pytest.raises(StoreLockedError, match=r"is in use by process \d+"):
        await SQLiteEventStore.open(path)
    # Another process trying is refused the same way, naming this process.
    other = subprocess.run(
        [sys.executable, "-c", OPEN_IN_CHILD, str(path)], capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert other.returncode == 3, other.stderr
    assert f"in use by process {__import__('os').getpid()}" in other.stdout
    # ...but it may read the file (a backup, sqlite3 -readonly) while the owner runs.
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
    reader.close()
    await first.close()
    again = await SQLiteEventStore.open(path)  # closing released the lock
    assert await again.head_position() == 1
    await again.close()


OPEN_IN_CHILD = """
import asyncio, sys
from pipeline_events.store import SQLiteEventStore, StoreLockedError
try:
    asyncio.run(SQLiteEventStore.open(sys.argv[1]))
except StoreLockedError as error:
    print(error)
    sys.exit(3)
"""


async def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_IN_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        with pytest.raises(StoreLockedError, match=f"process {child.pid}"):
            await SQLiteEventStore.open(path)
    finally:
        child.kill()
        child.wait(30)
    store = await SQLiteEventStore.open(path)
    await store.close()


HOLD_IN_CHILD = """
import asyncio, sys
from pipeline_events.store import SQLiteEventStore
async def main():
    await SQLiteEventStore.open(sys.argv[1])
    print("open", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


async def test_files_that_cannot_be_a_store_are_refused_clearly(tmp_path: Path) -> None:
    cases = {
        "a directory": (tmp_path, "is a directory"),
        "a missing directory": (tmp_path / "missing" / "events.db", "does not exist"),
    }
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("hello, not a database\n" * 100)
    cases["not SQLite"] = (not_sqlite, "not a usable SQLite database")
    newer = tmp_path / "newer.db"
    store = await SQLiteEventStore.open(newer)
    await store.close()
    with sqlite3.connect(newer) as connection:
        connection.execute("INSERT INTO schema_version VALUES (99)")
    cases["a newer schema"] = (newer, "schema version 99, newer than")
    for what, (path, message) in cases.items():
        with pytest.raises(StoreError, match=message):
            await SQLiteEventStore.open(path)
        assert not (tmp_path / "missing").exists(), what  # nothing created on the way
    assert not_sqlite.read_text().startswith("hello")  # the file was not touched


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/events", "unsupported store URL"),
        ("sqlite://host/events.db", "names a host"),
        ("sqlite://", "no file"),
        ("sqlite:///events.db?durability=sometimes", "durability must be"),
        ("sqlite:///events.db?durabilty=power", "unknown option 'durabilty'"),
        ("memory://somewhere", "takes no path"),
    ],
)
async def test_bad_store_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await open_store(url)


def test_relative_and_absolute_sqlite_urls() -> None:
    assert parse_store_url("sqlite:///data/events.db")[1]["path"] == "data/events.db"
    assert parse_store_url("sqlite:////var/lib/events.db")[1]["path"] == "/var/lib/events.db"
    assert parse_store_url("sqlite:///e.db?durability=power")[1]["durability"] == "power"


async def test_a_new_store_and_its_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = await SQLiteEventStore.open(path)
    await store.append([chunk(uuid.uuid4())])  # the WAL and its index exist from here
    files = [path, *(tmp_path / f"events.db{suffix}" for suffix in ("-wal", "-shm", "-lock"))]
    try:
        assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}
    finally:
        await store.close()
    path.chmod(0o640)  # an existing store keeps the mode its operator gave it
    async with await SQLiteEventStore.open(path):
        assert path.stat().st_mode & 0o777 == 0o640
