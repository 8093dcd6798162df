"""SQLite event store, the embedded default: one file, WAL, a single writer thread.

Design:
- One writer thread owns the only write connection. Appends queue up and it
  commits whatever is waiting in one transaction (group commit), each append
  inside its own SAVEPOINT, so a failing append rolls back alone and the
  others still commit. An append is acknowledged only after COMMIT returns.
- Readers use their own connections on a small thread pool; WAL lets them
  read while the writer writes. No SQLite call runs on the event loop (a WAL
  checkpoint can stall a commit for milliseconds).
- Global positions are assigned by the single writer in commit order, so a
  reader never sees position N+1 before N.
- Ids are stored as 16-byte blobs: the unique event-id index that makes
  appends idempotent stays small (random-key index inserts are the write cost).

Durability: `durability="process"` (default, synchronous=NORMAL) survives a
crash or `kill -9` of the process; `"power"` (synchronous=FULL, an fsync per
commit) also survives power loss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pipeline_events.store.base import (
    AppendResult,
    EventEnvelope,
    EventFilter,
    EventStore,
    ExpectedRevision,
    HeadSignal,
    Position,
    ProposedEvent,
    ReadResult,
    RecordedEvent,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
    canonical_uuid,
    normalise_expected,
    plan_append,
)

Durability = Literal["process", "power"]

# Migrations by target version; each runs once, in order, in one transaction.
MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE events (
            position      INTEGER PRIMARY KEY,  -- global position, from 1, no gaps
            aggregate_id  BLOB    NOT NULL,     -- 16-byte UUID
            revision      INTEGER NOT NULL,     -- from 1 within the aggregate
            event_id      BLOB    NOT NULL,     -- 16-byte UUID
            event_type    INTEGER NOT NULL,     -- EventType value
            processing_id BLOB,                 -- 16-byte UUID, NULL when the event has none
            recorded_at   INTEGER NOT NULL,     -- ns since the epoch
            envelope      BLOB    NOT NULL      -- the envelope's bytes, as appended
        );
        CREATE UNIQUE INDEX events_by_aggregate ON events (aggregate_id, revision);
        CREATE UNIQUE INDEX events_by_event_id ON events (event_id);
        CREATE INDEX events_by_type ON events (event_type, position);
        CREATE INDEX events_by_processing ON events (processing_id, position)
            WHERE processing_id IS NOT NULL;
    """,
}
SCHEMA_VERSION = max(MIGRATIONS)
_MAX_GROUP = 256  # appends committed together at most
_ID_CHUNK = 500  # ids per IN (...) lookup
_MAX_CACHED_AGGREGATES = 100_000
_COLUMNS = "position, revision, recorded_at, envelope"  # RecordedEvent's fields, in order  # the writer's revision cache starts over beyond this


def _blob(canonical: str) -> bytes:
    """The 16 bytes of a UUID in canonical text (see base.canonical_uuid)."""
    return bytes.fromhex(canonical.replace("-", ""))


def _text(blob: bytes) -> str:
    """Canonical text of a 16-byte UUID."""
    hexed = blob.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def _connect(path: str, durability: Durability) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute("PRAGMA cache_size=-65536")  # 64 MiB
    # Checkpoint the WAL every ~40 MB rather than every ~4 MB: fewer, larger checkpoints.
    connection.execute("PRAGMA wal_autocheckpoint=10000")
    return connection


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        found = row[0] or 0
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {found}; this code knows {SCHEMA_VERSION}"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return found


class _Append:
    """One queued append and the future that acknowledges it."""

    __slots__ = ("batch", "checks", "future", "loop")

    def __init__(self, batch, checks, future, loop):  # type: ignore[no-untyped-def]
        self.batch: list[ProposedEvent] = batch
        self.checks: dict[str, ExpectedRevision] = checks
        self.future: asyncio.Future[AppendResult] = future
        self.loop: asyncio.AbstractEventLoop = loop


class SQLiteEventStore(EventStore):
    """An event store in one SQLite file. Open it with `await SQLiteEventStore.open(path)`."""

    def __init__(self, path: str | Path, *, durability: Durability = "process", readers: int = 2):
        self.path = str(path)
        self.durability = durability
        self._requests: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(readers, "sqlite-reader")
        self._local = threading.local()
        self._head = 0  # last committed global position; written by the writer thread only
        self._revisions: dict[str, int] = {}  # aggregate -> latest committed revision (writer only)
        self._signal: HeadSignal | None = None  # the head as the event loop knows it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._connection: sqlite3.Connection | None = None

    @classmethod
    async def open(
        cls, path: str | Path, *, durability: Durability = "process", readers: int = 2
    ) -> SQLiteEventStore:
        """Open (creating and migrating if needed) the store at `path`."""
        store = cls(path, durability=durability, readers=readers)
        await asyncio.to_thread(store._start)
        store._signal = HeadSignal(store._head)
        store._loop = asyncio.get_running_loop()
        store._writer.start()
        return store

    def _start(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._connection = _connect(self.path, self.durability)
        migrate(self._connection)
        self._head = self._connection.execute(
            "SELECT coalesce(max(position), 0) FROM events"
        ).fetchone()[0]

    # --- writing (the writer thread) -----------------------------------------------------

    async def append(
        self,
        envelopes: Sequence[EventEnvelope],
        expected: Mapping[str, ExpectedRevision] | None = None,
    ) -> AppendResult:
        if self._closed:
            raise StoreClosedError("the store is closed")
        batch = [ProposedEvent.of(envelope) for envelope in envelopes]
        checks = normalise_expected(expected)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._requests.put(_Append(batch, checks, future, loop))
        return await future

    def _write_loop(self) -> None:
        while True:
            first = self._requests.get()
            if first is None:
                break
            group = [first]
            while len(group) < _MAX_GROUP:
                try:
                    request = self._requests.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    self._requests.put(None)  # finish this group, then stop
                    break
                group.append(request)
            self._commit_group(group)
        assert self._connection is not None
        self._connection.close()

    def _commit_group(self, group: list[_Append]) -> None:
        connection = self._connection
        assert connection is not None
        outcomes: list[AppendResult | BaseException] = []
        head = self._head
        revisions = dict(self._revisions)  # this transaction's view; kept only if it commits
        try:
            connection.execute("BEGIN IMMEDIATE")
            for request in group:
                connection.execute("SAVEPOINT append")
                try:
                    plan = self._plan_and_insert(request, head, revisions)
                    connection.execute("RELEASE append")
                except Exception as error:  # the request's own failure: roll back just it
                    connection.execute("ROLLBACK TO append")
                    connection.execute("RELEASE append")
                    outcomes.append(error)
                    continue
                for event, position in plan.new_events:
                    revisions[event.aggregate_id] = position.revision
                    head = position.global_position
                outcomes.append(plan.result)
            connection.execute("COMMIT")
            self._head = head
            self._revisions = revisions if len(revisions) < _MAX_CACHED_AGGREGATES else {}
            # Live readers learn of the new head before any appender is acknowledged.
            assert self._loop is not None and self._signal is not None
            self._loop.call_soon_threadsafe(self._signal.advance, head)
        except Exception as error:  # the commit itself failed: nothing of the group is durable
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [StoreError(f"commit failed: {error}")] * len(group)
        for request, outcome in zip(group, outcomes, strict=True):
            request.loop.call_soon_threadsafe(_settle, request.future, outcome)

    def _plan_and_insert(self, request: _Append, head: int, revisions: dict[str, int]) -> Any:
        """Plan and write one append inside its savepoint.

        Optimistic: it first assumes every event id is new, so the common case costs
        no lookup; the unique event-id index catches a retry or a conflict, and then
        the append is planned again with the stored events looked up (as it is when
        an expected revision fails, which a retried append also does).
        """
        assert self._connection is not None

        def revision_of(aggregate_id: str) -> int:
            if aggregate_id not in revisions:
                revisions[aggregate_id] = self._revision_of(aggregate_id)
            return revisions[aggregate_id]

        try:
            plan = plan_append(
                request.batch, request.checks, head=head, stored=lambda ids: {},
                revision_of=revision_of,
            )  # fmt: skip
            self._insert(plan.new_events)
            return plan
        except sqlite3.IntegrityError:  # an id is already stored
            self._connection.execute("ROLLBACK TO append")
        except WrongExpectedRevisionError:  # or this is a retry of an append that succeeded
            pass
        plan = plan_append(
            request.batch, request.checks, head=head, stored=self._stored, revision_of=revision_of
        )
        self._insert(plan.new_events)
        return plan

    def _stored(self, ids: list[str]) -> dict[str, tuple[bytes, Position]]:
        assert self._connection is not None
        found: dict[str, tuple[bytes, Position]] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = [_blob(event_id) for event_id in ids[start : start + _ID_CHUNK]]
            rows = self._connection.execute(
                "SELECT event_id, envelope, position, revision FROM events "
                f"WHERE event_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for blob, data, position, revision in rows:
                found[_text(blob)] = (data, Position(position, revision))
        return found

    def _revision_of(self, aggregate_id: str) -> int:
        assert self._connection is not None
        row = self._connection.execute(
            "SELECT coalesce(max(revision), 0) FROM events WHERE aggregate_id = ?",
            (_blob(aggregate_id),),
        ).fetchone()
        return row[0]

    def _insert(self, new_events: list[tuple[ProposedEvent, Position]]) -> None:
        assert self._connection is not None
        now = time.time_ns()
        self._connection.executemany(
            "INSERT INTO events (position, aggregate_id, revision, event_id, event_type,"
            " processing_id, recorded_at, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    position.global_position,
                    event.aggregate_blob,
                    position.revision,
                    event.event_blob,
                    event.event_type,
                    event.processing_blob,
                    now,
                    event.data,
                )
                for event, position in new_events
            ],
        )

    # --- reading (the reader pool) -------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _connect(self.path, self.durability)
            connection.execute("PRAGMA query_only=1")
            self._local.connection = connection
        return connection

    async def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise StoreClosedError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, function, *args)

    async def read_aggregate(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        blob = _blob(canonical_uuid(aggregate_id, "aggregate_id"))
        return await self._read(self._read_aggregate, blob, from_revision, backwards, limit)

    def _read_aggregate(
        self, blob: bytes, from_revision: int, backwards: bool, limit: int | None
    ) -> list[RecordedEvent]:
        if backwards:
            bound = from_revision or (1 << 62)
            sql = "revision <= ? ORDER BY revision DESC"
        else:
            bound = from_revision
            sql = "revision >= ? ORDER BY revision"
        rows = self._reader().execute(
            f"SELECT {_COLUMNS} FROM events WHERE aggregate_id = ? AND {sql} LIMIT ?",
            (blob, bound, -1 if limit is None else limit),
        )
        return list(map(RecordedEvent._make, rows))

    async def read_all(
        self,
        *,
        after_position: int = 0,
        filter: EventFilter | None = None,
        limit: int = 1000,
    ) -> ReadResult:
        return await self._read(self._read_all, after_position, filter, limit)

    def _read_all(self, after: int, filter: EventFilter | None, limit: int) -> ReadResult:
        where, args = ["position > ?"], [after]
        if filter is not None and not filter.is_empty:
            types = filter.type_set
            if types is not None:
                where.append(f"event_type IN ({','.join('?' * len(types))})")
                args.extend(sorted(types))
            for column, ids in (
                ("aggregate_id", filter.aggregate_ids),
                ("processing_id", filter.processing_ids),
            ):
                if ids:
                    where.append(f"{column} IN ({','.join('?' * len(ids))})")
                    args.extend(_blob(i) for i in sorted(ids))
        connection = self._reader()
        connection.execute("BEGIN")  # one snapshot for the rows and the head
        try:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)}"
                " ORDER BY position LIMIT ?",
                [*args, limit],
            ).fetchall()
            head = connection.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        finally:
            connection.execute("COMMIT")
        events = list(map(RecordedEvent._make, rows))
        scanned_to = events[-1].global_position if len(events) == limit else max(head, after)
        return ReadResult(events, scanned_to, head)

    async def head_position(self) -> int:
        return await self._read(
            lambda: (
                self._reader()
                .execute("SELECT coalesce(max(position), 0) FROM events")
                .fetchone()[0]
            )
        )

    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        if self._closed:
            raise StoreClosedError("the store is closed")
        assert self._signal is not None
        return await self._signal.wait(after_position, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        await asyncio.to_thread(self._writer.join)
        self._reader_pool.shutdown(wait=True)
        if self._signal is not None:
            self._signal.close()


def _settle(future: asyncio.Future[AppendResult], outcome: AppendResult | BaseException) -> None:
    if future.cancelled():
        return  # the caller went away; the append itself already committed or failed
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
