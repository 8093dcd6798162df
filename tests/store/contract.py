"""The contract every event store backend passes: subclass EventStoreContract once per backend."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events import adapter, domain
from pipeline_events.store import (
    DuplicateEventError,
    EventFilter,
    EventStore,
    ExpectedState,
    InvalidEventError,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
)
from pipeline_events.store.base import (
    MAX_POSITION,
    ProposedEvent,
    read_varint,
    record_envelope,
    varint,
)


def chunk(
    pipeline: uuid.UUID, run: uuid.UUID | None = None, n: int = 0
) -> envelope_pb2.EventEnvelope:
    """A ChunkProcessed envelope of `pipeline`."""
    event = domain.ChunkProcessed.new(
        pipeline, run or uuid.uuid4(), uuid.uuid4(), n, 1024, "compression", 1
    )
    return adapter.to_envelope(event)


def created(pipeline: uuid.UUID) -> envelope_pb2.EventEnvelope:
    """A PipelineCreated envelope (a pipeline-lifecycle event, no processing id)."""
    return adapter.to_envelope(domain.PipelineCreated.new(pipeline, "p", 3))


class EventStoreContract:
    """Guarantees of DESIGN.md's event store, identical for every backend."""

    async def make_store(self, tmp_path: Path) -> EventStore:
        """Open a fresh, empty store of the backend under test."""
        raise NotImplementedError

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        store = await self.make_store(tmp_path)
        yield store
        await store.close()

    # --- appending ------------------------------------------------------------------------

    async def test_positions_count_from_one_and_revisions_per_aggregate(
        self, store: EventStore
    ) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        result = await store.append([chunk(a), chunk(b), chunk(a), chunk(a)])
        assert [(p.global_position, p.revision) for p in result.positions] == [
            (1, 1), (2, 1), (3, 2), (4, 3),
        ]  # fmt: skip
        assert not result.already_recorded
        assert await store.head_position() == 4
        more = await store.append([chunk(b)])
        assert (more.positions[0].global_position, more.positions[0].revision) == (5, 2)

    async def test_a_batch_is_all_or_nothing(self, store: EventStore) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        await store.append([chunk(a)])
        with pytest.raises(WrongExpectedRevisionError):
            await store.append([chunk(b), chunk(a)], {str(a): ExpectedState.NO_STREAM})
        stored = await store.append([created(b)])
        with pytest.raises(DuplicateEventError):
            conflicting = created(b)
            conflicting.event_id = stored_event_id(await store.read_aggregate(str(b)))
            await store.append([chunk(b), conflicting])
        assert await store.head_position() == 2
        assert len(await store.read_aggregate(str(b))) == 1
        assert stored.positions[0].global_position == 2

    async def test_a_retried_batch_returns_the_original_positions(self, store: EventStore) -> None:
        a = uuid.uuid4()
        batch = [chunk(a), chunk(a)]
        first = await store.append(batch, {str(a): 0})
        await store.append([chunk(uuid.uuid4())])
        again = await store.append(batch, {str(a): 0})  # the check passed once; a retry succeeds
        assert again.positions == first.positions
        assert again.already_recorded
        assert await store.head_position() == 3

    async def test_known_events_in_a_batch_keep_their_positions_and_new_ones_append(
        self, store: EventStore
    ) -> None:
        a = uuid.uuid4()
        old = chunk(a)
        first = await store.append([old])
        mixed = await store.append([old, chunk(a)])
        assert mixed.positions[0] == first.positions[0]
        assert (mixed.positions[1].global_position, mixed.positions[1].revision) == (2, 2)
        assert not mixed.already_recorded

    async def test_events_prepared_ahead_are_appended_as_envelopes_are(
        self, store: EventStore
    ) -> None:
        a = uuid.uuid4()
        envelopes = [created(a), chunk(a, n=1)]
        prepared = await store.append([ProposedEvent.of(e) for e in envelopes], {str(a): 0})
        assert [(p.global_position, p.revision) for p in prepared.positions] == [(1, 1), (2, 2)]
        retried = await store.append(envelopes)  # the same events, as envelopes: a retry
        assert retried.already_recorded and retried.positions == prepared.positions
        events = await store.read_aggregate(str(a))
        assert [e.envelope for e in events] == envelopes

    async def test_the_same_id_with_other_content_is_a_conflict(self, store: EventStore) -> None:
        a = uuid.uuid4()
        original = chunk(a)
        await store.append([original])
        changed = envelope_pb2.EventEnvelope()
        changed.CopyFrom(original)
        changed.chunk_processed.chunk_size += 1
        with pytest.raises(DuplicateEventError) as raised:
            await store.append([changed])
        assert raised.value.event_id == original.event_id
        with pytest.raises(InvalidEventError):
            await store.append([original, original])
        assert await store.head_position() == 1

    @pytest.mark.parametrize(
        ("existing", "expected", "ok"),
        [
            (0, ExpectedState.ANY, True),
            (2, ExpectedState.ANY, True),
            (0, ExpectedState.NO_STREAM, True),
            (2, ExpectedState.NO_STREAM, False),
            (0, ExpectedState.STREAM_EXISTS, False),
            (2, ExpectedState.STREAM_EXISTS, True),
            (0, 0, True),
            (2, 2, True),
            (2, 1, False),
            (2, 3, False),
        ],
    )
    async def test_expected_revisions(
        self, store: EventStore, existing: int, expected, ok: bool
    ) -> None:
        a = uuid.uuid4()
        if existing:
            await store.append([chunk(a) for _ in range(existing)])
        if ok:
            result = await store.append([chunk(a)], {str(a): expected})
            assert result.positions[0].revision == existing + 1
        else:
            with pytest.raises(WrongExpectedRevisionError) as raised:
                await store.append([chunk(a)], {str(a).upper(): expected})
            assert (raised.value.expected, raised.value.actual) == (expected, existing)
            assert raised.value.aggregate_id == str(a)
            assert await store.head_position() == existing

    async def test_concurrent_writers_on_one_aggregate_win_each_revision_once(
        self, store: EventStore
    ) -> None:
        a = uuid.uuid4()
        wins: list[int] = []

        async def writer() -> None:
            for _ in range(20):
                revision = len(await store.read_aggregate(str(a)))
                try:
                    result = await store.append([chunk(a)], {str(a): revision})
                except WrongExpectedRevisionError as error:
                    assert error.actual > revision
                    continue
                wins.append(result.positions[0].revision)

        await asyncio.gather(*(writer() for _ in range(8)))
        events = await store.read_aggregate(str(a))
        assert sorted(wins) == list(range(1, len(wins) + 1)) == [e.revision for e in events]
        assert [e.global_position for e in events] == list(range(1, len(events) + 1))

    async def test_invalid_ids_are_rejected_and_store_nothing(self, store: EventStore) -> None:
        bad = chunk(uuid.uuid4())
        bad.aggregate_id = "not-a-uuid"
        with pytest.raises(InvalidEventError):
            await store.append([chunk(uuid.uuid4()), bad])
        with pytest.raises(InvalidEventError):
            await store.append([chunk(uuid.uuid4())], {"nope": 0})
        assert await store.head_position() == 0

    async def test_unknown_payload_cases_are_stored_byte_for_byte(self, store: EventStore) -> None:
        envelope = chunk(uuid.uuid4())
        envelope.ClearField("chunk_processed")
        envelope.event_type = 17
        data = envelope.SerializeToString(deterministic=True) + b"\xaa\x07\x03\x0a\x01x"
        future = envelope_pb2.EventEnvelope.FromString(data)
        await store.append([future])
        (recorded,) = (await store.read_all()).events
        assert recorded.envelope.SerializeToString(deterministic=True) == data
        assert recorded.envelope.event_type == 17

    # --- reading --------------------------------------------------------------------------

    async def test_reading_one_aggregate_forwards_backwards_from_and_limited(
        self, store: EventStore
    ) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        await store.append([chunk(a, n=i) for i in range(5)] + [chunk(b)])
        revisions = lambda events: [e.revision for e in events]  # noqa: E731
        assert revisions(await store.read_aggregate(str(a))) == [1, 2, 3, 4, 5]
        assert revisions(await store.read_aggregate(str(a), from_revision=3)) == [3, 4, 5]
        assert revisions(await store.read_aggregate(str(a), limit=2)) == [1, 2]
        assert revisions(await store.read_aggregate(str(a), backwards=True)) == [5, 4, 3, 2, 1]
        assert revisions(await store.read_aggregate(str(a), backwards=True, from_revision=2)) == [
            2,
            1,
        ]
        assert revisions(await store.read_aggregate(str(a), backwards=True, limit=1)) == [5]
        assert await store.read_aggregate(str(uuid.uuid4())) == []
        first = (await store.read_aggregate(str(a).upper()))[0]
        assert first.envelope.aggregate_id == str(a)
        assert first.envelope.chunk_processed.chunk_sequence == 0
        assert first.recorded_at.ToNanoseconds() > 0

    async def test_reading_the_log_with_filters(self, store: EventStore) -> None:
        a, b, run = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await store.append([created(a), chunk(a, run), created(b), chunk(b), chunk(a, run)])
        positions = lambda result: [e.global_position for e in result.events]  # noqa: E731
        assert positions(await store.read_all()) == [1, 2, 3, 4, 5]
        assert positions(await store.read_all(after_position=3)) == [4, 5]
        assert positions(await store.read_all(filter=EventFilter.of(event_types=[1]))) == [1, 3]
        assert positions(await store.read_all(filter=EventFilter.of(categories=[4]))) == [2, 4, 5]
        assert positions(await store.read_all(filter=EventFilter.of(aggregate_ids=[str(a)]))) == [
            1,
            2,
            5,
        ]
        by_run = EventFilter.of(processing_ids=[str(run).upper()])
        assert positions(await store.read_all(filter=by_run)) == [2, 5]
        both = EventFilter.of(aggregate_ids=[str(b)], categories=[1, 4])
        assert positions(await store.read_all(filter=both)) == [3, 4]
        nothing = EventFilter.of(event_types=[1], categories=[4])
        assert positions(await store.read_all(filter=nothing)) == []

    async def test_a_page_says_how_far_it_scanned(self, store: EventStore) -> None:
        a = uuid.uuid4()
        await store.append([created(a)] + [chunk(a) for _ in range(9)])
        page = await store.read_all(limit=4)
        assert ([e.global_position for e in page.events], page.scanned_to) == ([1, 2, 3, 4], 4)
        sparse = await store.read_all(filter=EventFilter.of(event_types=[1]), limit=4)
        assert ([e.global_position for e in sparse.events], sparse.scanned_to) == ([1], 10)
        empty = await store.read_all(after_position=10)
        assert (empty.events, empty.scanned_to) == ([], 10)

    async def test_pages_are_bounded_by_bytes_and_never_empty(self, store: EventStore) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        big = []
        for n in range(6):  # records of about 10 KB, mixed with small ones of another pipeline
            envelope = chunk(a, n=n)
            envelope.metadata["pad"] = "x" * 10_000
            big += [envelope, created(b) if n == 0 else chunk(b, n=n)]
        await store.append(big)
        sizes = [framed_size(e.ByteSize()) for e in (await store.read_all()).events]
        exact = await store.read_all(max_bytes=sum(sizes[:3]))  # exactly three records
        assert ([e.global_position for e in exact.events], exact.scanned_to) == ([1, 2, 3], 3)
        short = await store.read_all(max_bytes=sum(sizes[:3]) - 1)
        assert ([e.global_position for e in short.events], short.scanned_to) == ([1, 2], 2)
        rest = await store.read_all(after_position=2, max_bytes=sum(sizes[2:]))
        assert ([e.global_position for e in rest.events], rest.scanned_to) == ([*range(3, 13)], 12)
        # One record over the budget is still a page of one: a page is never empty.
        one = await store.read_all(max_bytes=1)
        assert ([e.global_position for e in one.events], one.scanned_to) == ([1], 1)
        only_b = EventFilter.of(aggregate_ids=[str(b)])
        sparse = await store.read_all(filter=only_b, max_bytes=1)
        assert [e.global_position for e in sparse.events] == [2]
        assert 2 <= sparse.scanned_to < 4  # resumes before the next match
        history = await store.read_aggregate(str(a), max_bytes=sizes[0] + sizes[2])
        assert [e.revision for e in history] == [1, 2]
        back = await store.read_aggregate(str(a), backwards=True, max_bytes=sizes[10] + 1)
        assert [e.revision for e in back] == [6]
        assert len(await store.read_aggregate(str(a), max_bytes=10**9)) == 6
        assert [e.revision for e in await store.read_aggregate(str(a), max_bytes=1)] == [1]

    async def test_positions_beyond_what_a_store_holds_read_as_empty(
        self, store: EventStore
    ) -> None:
        a = uuid.uuid4()
        await store.append([chunk(a), chunk(a)])
        for value in (1 << 63, (1 << 64) - 1, MAX_POSITION):
            assert (await store.read_all(after_position=value)).events == []
            filtered = await store.read_all(
                after_position=value, filter=EventFilter.of(aggregate_ids=[str(a)])
            )
            assert filtered.events == []
            assert await store.read_aggregate(str(a), from_revision=value) == []
            backwards = await store.read_aggregate(str(a), from_revision=value, backwards=True)
            assert [e.revision for e in backwards] == [2, 1]
        with pytest.raises(WrongExpectedRevisionError):
            await store.append([chunk(a)], {str(a): (1 << 64) - 1})

    async def test_envelopes_come_back_exactly_as_published(self, store: EventStore) -> None:
        a = uuid.uuid4()
        envelope = chunk(a)
        envelope.metadata.update({"b": "2", "a": "1"})
        canonical = envelope.SerializeToString(deterministic=True)
        # Another encoder's bytes for the same envelope: the map in the other order, and
        # the event id again at the end (a parser keeps the last value).
        b, a_entry = (b"\x42\x06\x0a\x01b\x12\x012", b"\x42\x06\x0a\x01a\x12\x011")
        plain = envelope_pb2.EventEnvelope()
        plain.CopyFrom(envelope)
        plain.metadata.clear()
        sent = plain.SerializeToString(deterministic=True) + b + a_entry
        sent += b"\x0a\x24" + envelope.event_id.encode()
        assert envelope_pb2.EventEnvelope.FromString(sent) == envelope and sent != canonical
        await store.append([ProposedEvent.of(envelope, sent)])
        page = await store.read_aggregate_page(str(a), limit=10, max_bytes=1 << 20)
        assert record_envelopes(page.records) == [sent]
        assert record_envelopes((await store.read_all()).records) == [sent]
        assert page.events[0].envelope == envelope
        # The canonical bytes of the same envelope are a retry, not a conflict.
        retry = await store.append([envelope])
        assert retry.already_recorded

    async def test_readers_never_see_a_gap_while_writers_append(self, store: EventStore) -> None:
        done = asyncio.Event()

        async def writer() -> None:
            for _ in range(30):
                await store.append([chunk(uuid.uuid4()) for _ in range(3)])

        async def reader() -> list[int]:
            seen: list[int] = []
            while not done.is_set() or len(seen) < await store.head_position():
                page = await store.read_all(after_position=seen[-1] if seen else 0)
                seen.extend(e.global_position for e in page.events)
                await asyncio.sleep(0)
            return seen

        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer() for _ in range(4)))
        done.set()
        assert await reading == list(range(1, 361))

    async def test_waiting_for_new_events(self, store: EventStore) -> None:
        assert await store.wait_for_append(0, timeout=0.05) == 0
        waiter = asyncio.create_task(store.wait_for_append(0, timeout=30))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await store.append([chunk(uuid.uuid4()), chunk(uuid.uuid4())])
        assert await waiter == 2
        assert await store.wait_for_append(1, timeout=30) == 2

    # --- snapshots ------------------------------------------------------------------------

    async def test_a_snapshot_is_kept_by_name_and_replaced(self, store: EventStore) -> None:
        assert await store.load_snapshot("projections") is None
        await store.save_snapshot("projections", 7, b"\x00first")
        await store.save_snapshot("other", 1, b"")
        assert await store.load_snapshot("projections") == (7, b"\x00first")
        await store.save_snapshot("projections", 9, b"second" * 100_000)
        assert await store.load_snapshot("projections") == (9, b"second" * 100_000)
        assert await store.load_snapshot("other") == (1, b"")
        assert await store.head_position() == 0  # derived data, never part of the log

    async def test_snapshots_and_appends_interleave(self, store: EventStore) -> None:
        a = uuid.uuid4()
        appends = [store.append([chunk(a, n=i)]) for i in range(20)]
        saves = [store.save_snapshot("s", i, bytes([i]) * 1000) for i in range(20)]
        await asyncio.gather(*appends, *saves)
        assert await store.head_position() == 20
        kept = await store.load_snapshot("s")
        assert kept is not None and kept.data == bytes([kept.position]) * 1000  # one whole save

    # --- service state --------------------------------------------------------------------

    async def test_state_records_are_set_replaced_removed_and_read_by_prefix(
        self, store: EventStore
    ) -> None:
        assert await store.read_state("group/") == []
        await store.write_state({"group/a": b"\x00one", "group/b": b"", "parked/a/1": b"p"})
        await store.write_state({"group/a": b"two" * 100_000, "group/b": None, "missing": None})
        assert await store.read_state("group/") == [("group/a", b"two" * 100_000)]
        assert await store.read_state("parked/a/") == [("parked/a/1", b"p")]
        assert [key for key, _ in await store.read_state("")] == ["group/a", "parked/a/1"]
        assert await store.head_position() == 0  # beside the log, never in it

    async def test_state_keys_come_back_in_key_order(self, store: EventStore) -> None:
        keys = [f"parked/g/{position:020d}" for position in (5, 100, 7, 1, 10**12)]
        await store.write_state({key: key.encode() for key in keys})
        assert [key for key, _ in await store.read_state("parked/g/")] == sorted(keys)
        # A prefix is a prefix of the key's characters, not of its path segments.
        await store.write_state({"parked/gg/1": b"x"})
        assert len(await store.read_state("parked/g/")) == 5
        assert len(await store.read_state("parked/g")) == 6

    async def test_state_records_are_read_in_pages(self, store: EventStore) -> None:
        keys = [f"parked/g/{position:020d}" for position in range(1, 8)]
        await store.write_state({key: key.encode() for key in keys} | {"parked/h/1": b"x"})
        first = await store.read_state("parked/g/", limit=3)
        assert [key for key, _ in first] == keys[:3]
        rest = await store.read_state("parked/g/", after=first[-1][0], limit=10)
        assert [key for key, _ in rest] == keys[3:]
        assert await store.read_state("parked/g/", after=keys[-1]) == []
        assert [key for key, _ in await store.read_state("parked/g/", after="a")] == keys
        assert await store.read_state("parked/g/", limit=0) == []

    async def test_a_state_write_with_a_bad_key_changes_nothing(self, store: EventStore) -> None:
        for bad in ("", "with space", "é", "a" * 513, "star*", "a>b"):
            with pytest.raises(StoreError):
                await store.write_state({"good": b"1", bad: b"2"})
        assert await store.read_state("") == []

    async def test_state_values_are_bytes_and_limits_counts_or_none(
        self, store: EventStore
    ) -> None:
        for bad in (5, "text", object()):
            with pytest.raises(StoreError):
                await store.write_state({"good": b"1", "bad": bad})  # type: ignore[dict-item]
        assert await store.read_state("") == []  # nothing of a refused write
        await store.write_state({"a/1": bytearray(b"x"), "a/2": memoryview(b"y")})
        assert await store.read_state("a/") == [("a/1", b"x"), ("a/2", b"y")]
        for bad_limit in (-1, 2.5, True):
            with pytest.raises(StoreError):
                await store.read_state("a/", limit=bad_limit)  # type: ignore[arg-type]

    async def test_state_survives_reopening(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)
        await store.write_state({"group/kept": b"checkpoint 7", "group/gone": b"x"})
        await store.write_state({"group/gone": None})
        await store.close()
        reopened = await self.make_store(tmp_path)
        try:
            assert await reopened.read_state("group/") == [("group/kept", b"checkpoint 7")]
        finally:
            await reopened.close()

    async def test_a_closed_store_refuses_work(self, tmp_path: Path) -> None:
        store = await self.make_store(tmp_path)
        await store.close()
        with pytest.raises(StoreClosedError):
            await store.append([chunk(uuid.uuid4())])


def framed_size(recorded_size: int) -> int:
    """Bytes of a RecordedEvent of this size framed as an EventBatch entry (a stored record)."""
    return 1 + len(varint(recorded_size)) + recorded_size


def record_envelopes(records: bytes) -> list[bytes]:
    """The envelope bytes inside concatenated records, exactly as the store holds them."""
    envelopes, offset = [], 0
    while offset < len(records):
        length, start = read_varint(records, offset + 1)
        envelopes.append(record_envelope(records[offset : start + length]))
        offset = start + length
    return envelopes


def stored_event_id(events: list) -> str:
    """The event id of the only event in `events`."""
    (event,) = events
    return event.envelope.event_id
