"""The SQLite store's own mechanisms, each forced into action with small limits.

The contract suite checks what every backend promises; these tests drive the
parts behind it that ordinary sizes never reach: stored records, the v1
migration, the bulk merge of event ids, checkpoints, the scan window, reads
split between the caller's thread and the pool, and group commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from pipeline_events.store import (
    DuplicateEventError,
    EventFilter,
    ExpectedState,
    SQLiteEventStore,
    StoreError,
    WrongExpectedRevisionError,
)
from pipeline_events.store import sqlite as sqlite_store
from pipeline_events.store.base import (
    ProposedEvent,
    encode_record,
    parse_records,
    record_envelope,
    recorded_at_field,
)
from tests.store.contract import chunk, created


@given(
    data=st.binary(max_size=3000),
    position=st.integers(1, 2**63 - 1),
    revision=st.integers(1, 2**63 - 1),
    recorded_at_ns=st.integers(0, 253402300799 * 10**9),
)
def test_a_record_keeps_the_envelope_bytes_and_where_the_event_is(
    data: bytes, position: int, revision: int, recorded_at_ns: int
) -> None:
    record = encode_record(data, position, revision, recorded_at_field(recorded_at_ns))
    assert record_envelope(record) == data
    # Framing: EventBatch field 1 (tag 0x0a), the body's length, then the body.
    length, start = _varint(record, 1)
    assert (record[0], len(record) - start) == (0x0A, length)
    assert record[start] == 0x0A  # RecordedEvent field 1, the envelope, comes first


def _varint(buffer: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while buffer[offset] & 0x80:
        value |= (buffer[offset] & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
    return value | buffer[offset] << shift, offset + 1


@given(
    position=st.integers(1, 2**63 - 1),
    revision=st.integers(1, 2**63 - 1),
    recorded_at_ns=st.integers(0, 253402300799 * 10**9),
    size=st.integers(0, 2000),
)
def test_a_record_is_the_deterministic_encoding_of_a_recorded_event(
    position: int, revision: int, recorded_at_ns: int, size: int
) -> None:
    envelope = chunk(uuid.uuid4())
    envelope.metadata["padding"] = "x" * size
    data = envelope.SerializeToString(deterministic=True)
    record = encode_record(data, position, revision, recorded_at_field(recorded_at_ns))
    seconds, nanos = divmod(recorded_at_ns, 10**9)
    expected = service_pb2.EventBatch()
    expected.events.add(
        envelope=envelope,
        global_position=position,
        revision=revision,
        recorded_at=Timestamp(seconds=seconds, nanos=nanos),
    )
    assert record == expected.SerializeToString(deterministic=True)
    (parsed,) = parse_records(record)
    assert parsed == expected.events[0]


async def test_a_version_1_database_is_migrated_with_its_ids(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    a = uuid.uuid4()
    old = [created(a), chunk(a), chunk(a)]
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        sqlite_store.MIGRATIONS[1](connection)
        connection.execute("INSERT INTO schema_version VALUES (1)")
        for position, envelope in enumerate(old, 1):
            event = ProposedEvent.of(envelope)
            connection.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (position, event.aggregate_blob, position, event.event_blob, event.event_type,
                 event.processing_blob, 1_700_000_000_123_456_789, event.data),
            )  # fmt: skip
    async with await SQLiteEventStore.open(path) as store:
        events = await store.read_aggregate(str(a))
        assert [e.envelope for e in events] == old
        assert events[0].recorded_at.ToNanoseconds() == 1_700_000_000_123_456_789
        again = await store.append(old[1:])  # a retry of migrated events
        assert again.already_recorded
        assert [p.global_position for p in again.positions] == [2, 3]
        changed = envelope_pb2.EventEnvelope()
        changed.CopyFrom(old[2])
        changed.chunk_processed.chunk_size += 1
        with pytest.raises(DuplicateEventError):
            await store.append([changed])
        assert (await store.append([chunk(a)], {str(a): 3})).positions[0].global_position == 4
    with sqlite3.connect(path) as connection:
        indexes = {
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert {"events_by_event_id", "events_by_type", "events_by_processing"}.isdisjoint(indexes)
        assert connection.execute("SELECT count(*) FROM event_ids").fetchone()[0] == 3


@pytest.mark.parametrize("slice_size", [4096, 7])
async def test_event_ids_merge_in_bulk_and_stay_unique(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_size: int
) -> None:
    monkeypatch.setattr(sqlite_store, "_MERGE_AT", 50)
    monkeypatch.setattr(sqlite_store, "_MERGE_SLICE", slice_size)
    path = tmp_path / "events.db"
    a = uuid.uuid4()
    batches = [[chunk(a, n=10 * b + i) for i in range(10)] for b in range(12)]
    async with await SQLiteEventStore.open(path) as store:
        for batch in batches:
            await store.append(batch)
        await store.append([chunk(a)])  # the append after which the merge is due
        await _writer_idle(store)
        merged = _merged_ids(path)
        assert merged >= 50
        for batch in batches[:2]:  # merged ids: a retry is recognised, a change is refused
            assert (await store.append(batch)).already_recorded
        changed = envelope_pb2.EventEnvelope()
        changed.CopyFrom(batches[0][0])
        changed.chunk_processed.chunk_size += 1
        with pytest.raises(DuplicateEventError):
            await store.append([changed])
        big = [chunk(uuid.uuid4()) for _ in range(200)]  # > _INLINE_APPEND: the writer thread
        await store.append(big)
    async with await SQLiteEventStore.open(path) as store:  # ids both merged and not, reopened
        assert (await store.append(batches[0] + big[-3:])).already_recorded
        assert await store.head_position() == 121 + 200
    assert _merged_ids(path) >= merged


async def test_a_merge_cut_short_is_done_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_MERGE_AT", 40)
    monkeypatch.setattr(sqlite_store, "_MERGE_SLICE", 5)
    path = tmp_path / "events.db"
    batches = [[chunk(uuid.uuid4()) for _ in range(10)] for _ in range(5)]
    maintain, steps = SQLiteEventStore._maintain, []

    def three_slices_then_stop(store: SQLiteEventStore) -> bool:  # the process dies here
        steps.append(1)
        return maintain(store) if len(steps) <= 3 else False

    monkeypatch.setattr(SQLiteEventStore, "_maintain", three_slices_then_stop)
    async with await SQLiteEventStore.open(path) as store:
        for batch in batches:
            await store.append(batch)
        await _writer_idle(store)
        assert store._merging is not None  # closed with the merge half done
    monkeypatch.setattr(SQLiteEventStore, "_maintain", maintain)
    assert 0 < _merged_ids(path) < 50
    async with await SQLiteEventStore.open(path) as store:
        for batch in batches:  # every id is still found: retries, not new events
            assert (await store.append(batch)).already_recorded
        await store.append([chunk(uuid.uuid4())])
        await _writer_idle(store)
    merged = _merged_ids(path)  # the ids there when the merge began: 50 or 51
    assert merged >= 50
    async with await SQLiteEventStore.open(path) as store:
        assert len(store._recent) == 51 - merged  # the rest, in memory again


async def test_the_writer_checkpoints_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_FRAMES", 50)
    path = tmp_path / "events.db"
    wal_sizes = []
    async with await SQLiteEventStore.open(path) as store:
        for _ in range(200):
            await store.append([chunk(uuid.uuid4()) for _ in range(10)])  # ~3 KB a call
            if store._upkeep_queued:
                await _writer_idle(store)
            wal_sizes.append(os.path.getsize(f"{path}-wal"))
    # 2,000 events, ~0.7 MB of records plus index pages: without checkpoints the WAL
    # would hold every page written (several MB); with them it restarts every ~50 pages.
    assert max(wal_sizes) < 100 * 4096 + 32 * 1024


async def test_a_filtered_read_scans_a_bounded_window(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db", scan_window=5) as store:
        a = uuid.uuid4()
        await store.append([chunk(a) for _ in range(12)] + [created(uuid.uuid4())])
        wanted = EventFilter.of(event_types=[1])
        seen, position, calls = [], 0, 0
        while position < 13:
            page = await store.read_all(after_position=position, filter=wanted, limit=100)
            assert page.scanned_to - position <= 5 and page.head == 13
            seen += [e.global_position for e in page.events]
            position, calls = page.scanned_to, calls + 1
        assert (seen, calls) == ([13], 3)
        unfiltered = await store.read_all(limit=100)
        assert (len(unfiltered.events), unfiltered.scanned_to) == (13, 13)


async def test_long_aggregates_are_read_partly_on_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_INLINE_READ", 7)
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        a = uuid.uuid4()
        await store.append([chunk(a, n=i) for i in range(30)])
        revisions = lambda events: [e.revision for e in events]  # noqa: E731
        assert revisions(await store.read_aggregate(str(a))) == list(range(1, 31))
        assert revisions(await store.read_aggregate(str(a), backwards=True)) == list(
            range(30, 0, -1)
        )
        assert revisions(await store.read_aggregate(str(a), from_revision=5, limit=10)) == list(
            range(5, 15)
        )
        assert revisions(
            await store.read_aggregate(str(a), backwards=True, from_revision=9, limit=20)
        ) == list(range(9, 0, -1))
        assert revisions(await store.read_aggregate(str(a), limit=7)) == list(range(1, 8))
        page = await store.read_all(limit=20)  # > _INLINE_READ: read on the pool
        assert [e.global_position for e in page.events] == list(range(1, 21))


async def test_a_group_commit_isolates_a_failing_append(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await store.append([chunk(b)])
        appends = [
            ([ProposedEvent.of(chunk(a)), ProposedEvent.of(chunk(a))], {}),
            ([ProposedEvent.of(chunk(b))], {str(b): ExpectedState.NO_STREAM}),  # fails
            ([ProposedEvent.of(chunk(c))], {str(a): 5}),  # a gets nothing: not checked
        ]
        with store._write_lock:
            outcomes = store._commit(appends)
        assert isinstance(outcomes[1], WrongExpectedRevisionError)
        assert [p.global_position for p in outcomes[0].positions] == [2, 3]
        assert [p.global_position for p in outcomes[2].positions] == [4]
        page = await store.read_all()
        assert [e.global_position for e in page.events] == [1, 2, 3, 4]
        assert [e.revision for e in await store.read_aggregate(str(b))] == [1]


async def test_concurrent_small_and_large_appends_share_one_sequence(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        sizes = [1, 200, 3, 100, 1, 65, 64, 2] * 3
        results = await asyncio.gather(
            *(store.append([chunk(uuid.uuid4()) for _ in range(n)]) for n in sizes)
        )
        positions = sorted(p.global_position for r in results for p in r.positions)
        assert positions == list(range(1, sum(sizes) + 1))
        page = await store.read_all(limit=10_000)
        assert [e.global_position for e in page.events] == positions


async def test_concurrent_small_appends_commit_together_on_the_loop(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        results = await asyncio.gather(*(store.append([chunk(uuid.uuid4())]) for _ in range(8)))
        assert sorted(r.positions[0].global_position for r in results) == list(range(1, 9))
        assert store.transactions < 8
        before = store.transactions
        for _ in range(3):  # one at a time: one transaction each
            await store.append([chunk(uuid.uuid4())])
        assert store.transactions == before + 3


async def test_a_cancelled_leader_still_commits_the_appends_it_gathered(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        a, b = uuid.uuid4(), uuid.uuid4()
        leader = asyncio.create_task(store.append([chunk(a)]))
        follower = asyncio.create_task(store.append([chunk(b)]))
        await asyncio.sleep(0)  # the leader waits one turn for the follower to join
        leader.cancel()
        assert (await follower).positions[0].revision == 1
        with pytest.raises(asyncio.CancelledError):
            await leader
        # Like an append whose caller goes away mid-commit, the leader's own append stands.
        assert len(await store.read_aggregate(str(a))) == 1


@pytest.mark.parametrize("size", [1, 1500])  # 1,500 x 2 events: a commit over several turns
async def test_closing_finishes_the_appends_gathered_on_the_loop(tmp_path: Path, size: int) -> None:
    path = tmp_path / "events.db"
    store = await SQLiteEventStore.open(path)
    appends = [
        asyncio.create_task(store.append([chunk(uuid.uuid4()) for _ in range(size)]))
        for _ in range(2)
    ]
    await asyncio.sleep(0)  # the leader waits a turn; the other has joined it
    assert len(store._gathered) == 2
    await store.close()
    assert sorted(a.result().positions[-1].global_position for a in appends) == [size, 2 * size]
    async with await SQLiteEventStore.open(path) as reopened:
        assert await reopened.head_position() == 2 * size


async def test_a_large_commit_lets_the_loop_run_and_stays_atomic(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        a = uuid.uuid4()
        big = asyncio.create_task(store.append([chunk(a, n=i) for i in range(3000)]))
        small = [asyncio.create_task(store.append([chunk(uuid.uuid4())])) for _ in range(3)]
        heads = []
        while not big.done():  # this task runs while the 3,003 events are being written
            heads.append(await store.head_position())
            await asyncio.sleep(0)
        # Turns were taken, and the head went from nothing to everything: no partial batch.
        before = heads.count(0)
        assert before >= 5 and heads == [0] * before + [3003] * (len(heads) - before)
        assert [p.global_position for p in big.result().positions] == list(range(1, 3001))
        assert sorted(t.result().positions[0].global_position for t in await _done(small)) == [
            3001, 3002, 3003,
        ]  # fmt: skip
        assert store.transactions == 1


async def test_an_interrupted_large_commit_stores_nothing(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        big = asyncio.create_task(store.append([chunk(uuid.uuid4()) for _ in range(2000)]))  # noqa: RUF006
        for _ in range(3):
            await asyncio.sleep(0)
        assert store._committing is not None
        store._committing.cancel()
        with pytest.raises(StoreError, match="interrupted"):
            await big
        assert await store.head_position() == 0
        after = await store.append([chunk(uuid.uuid4())])  # the writer is free again
        assert after.positions[0].global_position == 1


async def _done(tasks: list[asyncio.Task]) -> list[asyncio.Task]:
    await asyncio.gather(*tasks)
    return tasks


async def test_a_failing_upkeep_step_holds_up_no_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_CHECKPOINT_FRAMES", 5)
    maintain, calls = SQLiteEventStore._maintain, []

    def fails_first(store: SQLiteEventStore) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return maintain(store)

    monkeypatch.setattr(SQLiteEventStore, "_maintain", fails_first)
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        for _ in range(30):
            await store.append([chunk(uuid.uuid4()) for _ in range(10)])
            await _writer_idle(store)
        assert await store.head_position() == 300
    assert len(calls) >= 2  # upkeep went on after the failure


async def test_a_store_refuses_appends_from_another_event_loop(tmp_path: Path) -> None:
    async with await SQLiteEventStore.open(tmp_path / "events.db") as store:
        with pytest.raises(StoreError, match="event loop that opened it"):
            # asyncio.run in a worker thread: a second event loop
            await asyncio.to_thread(asyncio.run, store.append([chunk(uuid.uuid4())]))
        assert await store.head_position() == 0


async def _writer_idle(store: SQLiteEventStore) -> None:
    """Wait until the writer thread has run any maintenance the appends queued."""
    for _ in range(500):
        if not store._upkeep_queued:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer thread never ran its maintenance")


def _merged_ids(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM event_ids").fetchone()[0]
