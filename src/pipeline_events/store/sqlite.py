"""SQLite event store, the embedded default: one file, WAL, one writer at a time.

Design (every choice measured in bench/store.py; see README "Event store"):
- Each row holds the event as a ready-made *record*: the bytes of an
  EventBatch `events` entry (RecordedEvent: envelope, position, revision,
  recorded-at). A read concatenates a page of records in SQL
  (`group_concat`) and parses it in one call, so no Python object is made
  per row, and the server can relay the messages as they are.
- The table is clustered by global position; one index serves aggregate
  reads and revision checks. Filters on type, category and processing id
  scan by position (bounded by `scan_window`, like KurrentDB's filtered $all
  reads), so appends do not pay for an index per filter.
- Idempotency by event id without a random-key index on every commit (each
  random insert dirties a page; those pages were the write cost): ids of
  recent events live in memory (`_recent`, rebuilt from the table on open),
  and every `_MERGE_AT` events they are merged, sorted, into the `event_ids`
  table, a slice per transaction between appends. An id is looked up in both.
- Writes: every append commits on the event loop, on the one write
  connection. Appends made while other tasks are ready commit together, in
  one transaction (group commit), each in its own SAVEPOINT so that one
  failure does not fail the others. No thread hand-off: a round trip costs
  ~70 µs here, and a thread that needs the GIL back while the loop runs
  Python waits up to the switch interval (5 ms) each time, which made
  appends handed to a writer thread crawl under load. An upkeep thread runs
  WAL checkpoints and the event-id merge slices (mostly C, a few GIL
  round trips each), holding the writer meanwhile; appends gathered then
  commit as soon as a step ends. A group larger than `_EVENTS_PER_TURN`
  events stays one transaction but yields to the loop every 256 rows. An
  append is acknowledged only after COMMIT.
- Reads: small ones run on the caller's thread, large ones on a reader pool;
  each thread has its own connection, memory-mapped (no read syscall per
  page). WAL lets them read while the writer writes.
- Global positions are assigned by the single writer in commit order, so a
  reader never sees position N+1 before N.

Durability: `durability="process"` (default, synchronous=NORMAL) survives a
crash or `kill -9` of the process; `"power"` (synchronous=FULL, an fsync per
commit) also survives power loss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pipeline_events.store.base import (
    MAX_POSITION,
    AggregatePage,
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
    Snapshot,
    StoreClosedError,
    StoreError,
    check_state_changes,
    check_state_limit,
    clamp_position,
    encode_record,
    normalise_expected,
    parse_records,
    plan_append,
    proposed,
    record_envelope,
    recorded_at_field,
    uuid_parts,
)
from pipeline_events.store.lock import StoreLock

Durability = Literal["process", "power"]
_log = logging.getLogger(__name__)

_V1 = """
    CREATE TABLE events (
        position      INTEGER PRIMARY KEY,
        aggregate_id  BLOB    NOT NULL,
        revision      INTEGER NOT NULL,
        event_id      BLOB    NOT NULL,
        event_type    INTEGER NOT NULL,
        processing_id BLOB,
        recorded_at   INTEGER NOT NULL,
        envelope      BLOB    NOT NULL
    );
    CREATE UNIQUE INDEX events_by_aggregate ON events (aggregate_id, revision);
    CREATE UNIQUE INDEX events_by_event_id ON events (event_id);
    CREATE INDEX events_by_type ON events (event_type, position);
    CREATE INDEX events_by_processing ON events (processing_id, position)
        WHERE processing_id IS NOT NULL;
"""

_V2_TABLES = """
    CREATE TABLE events_v2 (
        position      INTEGER PRIMARY KEY,  -- global position, from 1, no gaps
        aggregate_id  BLOB    NOT NULL,     -- 16-byte UUID
        revision      INTEGER NOT NULL,     -- from 1 within the aggregate
        event_id      BLOB    NOT NULL,     -- 16-byte UUID
        event_type    INTEGER NOT NULL,     -- EventType value (filters scan it)
        processing_id BLOB,                 -- 16-byte UUID, NULL when the event has none
        record        BLOB    NOT NULL      -- base.encode_record: the RecordedEvent, framed
    );
    -- Event ids of events up to store_state 'event_ids_merged_to' (later ones
    -- are in the writer's memory, rebuilt from `events` on open).
    CREATE TABLE event_ids (
        event_id BLOB PRIMARY KEY,
        position INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE store_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _to_records(connection: sqlite3.Connection) -> None:
    """v1 -> v2: rows become records; three indexes go; event ids move to `event_ids`."""
    _script(connection, _V2_TABLES)
    rows = connection.execute(
        "SELECT position, aggregate_id, revision, event_id, event_type, processing_id,"
        " recorded_at, envelope FROM events ORDER BY position"
    )
    while chunk := rows.fetchmany(10_000):
        connection.executemany(
            "INSERT INTO events_v2 VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (p, a, r, e, t, pid, encode_record(data, p, r, recorded_at_field(at)))
                for p, a, r, e, t, pid, at, data in chunk
            ],
        )
    _script(
        connection,
        """
        INSERT INTO event_ids SELECT event_id, position FROM events ORDER BY event_id;
        INSERT INTO store_state VALUES
            ('event_ids_merged_to', (SELECT coalesce(max(position), 0) FROM events));
        DROP TABLE events;
        ALTER TABLE events_v2 RENAME TO events;
        CREATE UNIQUE INDEX events_by_aggregate ON events (aggregate_id, revision);
        """,
    )


def _script(connection: sqlite3.Connection, sql: str) -> None:
    """Run `;`-separated statements inside the caller's transaction (executescript would commit)."""
    for statement in sql.split(";"):
        if statement.strip():
            connection.execute(statement)


_V3_SNAPSHOTS = """
    -- Read models' snapshots (derived data: dropping a row only costs a rebuild).
    CREATE TABLE snapshots (
        name     TEXT    PRIMARY KEY,
        position INTEGER NOT NULL,  -- the global position the state is as of
        data     BLOB    NOT NULL
    );
"""

_V4_STATE = """
    -- The service's own state (consumer groups): not derived, kept as the log is.
    CREATE TABLE service_state (
        key  TEXT PRIMARY KEY,
        data BLOB NOT NULL
    ) WITHOUT ROWID;
"""

# Migrations by target version; each runs once, in order, in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda connection: _script(connection, _V1),
    2: _to_records,
    3: lambda connection: _script(connection, _V3_SNAPSHOTS),
    4: lambda connection: _script(connection, _V4_STATE),
}
SCHEMA_VERSION = max(MIGRATIONS)

_INLINE_READ = 1000  # reads of at most this many events run on the caller's thread
_MERGE_AT = 65_536  # in-memory event ids merged into `event_ids` beyond this many
_MERGE_SLICE = 4_096  # ids merged per transaction
_CHECKPOINT_FRAMES = 8_000  # about this many WAL pages written -> checkpoint (~32 MB)
_ID_CHUNK = 500  # ids per IN (...) lookup
_MAX_CACHED_AGGREGATES = 100_000  # the writer's revision cache starts over beyond this
# Memory, whatever the store's size (measured on a 2.5M-event, 912 MiB store): mapped
# pages count in RSS (to 1 GiB uncapped), and catch-up reads were no faster above
# 64 MiB, nor with a reader page cache over 2 MiB (the mmap serves the reads). The
# writer keeps 64 MiB: its cache has not been measured under ingest at other sizes.
_MMAP_BYTES = 64 << 20
_WRITER_CACHE_KIB = 65_536
_READER_CACHE_KIB = 2_048


_INSERT_EVENTS = (
    "INSERT INTO events (position, aggregate_id, revision, event_id, event_type, processing_id,"
    " record) VALUES ",
    7,
)
_INSERT_EVENT_IDS = ("INSERT OR IGNORE INTO event_ids (event_id, position) VALUES ", 2)
_EVENTS_PER_TURN = 1024  # a larger group commits over several loop turns, 256 rows each
# Rows per multi-row INSERT at most (7 x 256 parameters; SQLite allows 32,766).
_ROWS_PER_INSERT = 256


def _insert_rows(
    connection: sqlite3.Connection, insert: tuple[str, int], values: list[Any]
) -> None:
    """INSERT rows given as one flat list of values, up to 256 rows per statement.

    Not executemany: it calls SQLite once per row, releasing the GIL each time,
    and while another thread runs Python, getting it back can take the switch
    interval (5 ms) every time. There is one statement text per row count, 256
    at most, each prepared once and kept in the connection's statement cache.
    """
    head, width = insert
    rows, start = len(values) // width, 0
    while start < rows:
        count = min(_ROWS_PER_INSERT, rows - start)
        connection.execute(
            _multi_row_sql(head, width, count), values[start * width : (start + count) * width]
        )
        start += count


@functools.lru_cache(maxsize=2 * _ROWS_PER_INSERT)
def _multi_row_sql(head: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([row] * rows)


_HEAD = "SELECT coalesce(max(position), 0) FROM events"  # the last global position


def _select_page(
    connection: sqlite3.Connection,
    where: str,
    order: str,
    args: Sequence[Any],
    max_bytes: int | None,
) -> tuple[bytes | None, int]:
    """One page of events (`WHERE where ORDER BY order LIMIT ?`, the limit last in `args`):
    (the records concatenated, rows considered).

    The records are concatenated inside SQLite (`group_concat`). With `max_bytes`,
    the page's size is summed first (`length()` of a blob reads its header, not
    the blob); only a page over the budget (rare: big events) is read with a
    running total that keeps the records up to the budget, and always the first
    one. Rows considered then tells a page cut by bytes from a short one. Both
    statements run in one read transaction, so they see the same rows.
    """
    if max_bytes is None:
        return connection.execute(_page_sql(where, order, None), args).fetchone()
    connection.execute("BEGIN")
    try:
        (size,) = connection.execute(_size_sql(where, order), args).fetchone()
        budget = max_bytes if size is not None and size > max_bytes else None
        return connection.execute(_page_sql(where, order, budget), args).fetchone()
    finally:
        connection.execute("COMMIT")


@functools.lru_cache(maxsize=64)
def _size_sql(where: str, order: str) -> str:
    rows = f"SELECT length(record) AS size FROM events WHERE {where} ORDER BY {order} LIMIT ?"
    return f"SELECT sum(size) FROM ({rows})"


@functools.lru_cache(maxsize=64)
def _page_sql(where: str, order: str, max_bytes: int | None) -> str:
    # The LIMIT also keeps SQLite from flattening the subquery, so group_concat sees
    # the rows in its ORDER BY order.
    if max_bytes is None:
        rows = f"SELECT record FROM events WHERE {where} ORDER BY {order} LIMIT ?"
        return f"SELECT group_concat(record, ''), count(*) FROM ({rows})"
    rows = (
        f"SELECT record, sum(length(record)) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING)"
        f" AS total FROM events WHERE {where} ORDER BY {order} LIMIT ?"
    )
    return (
        f"SELECT group_concat(CASE WHEN total <= {int(max_bytes)} OR total = length(record)"
        f" THEN record END, ''), count(*) FROM ({rows})"
    )


def _connect(
    path: str, durability: Durability, cache_kib: int = _WRITER_CACHE_KIB
) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=4 * _ROWS_PER_INSERT,  # room for every multi-row INSERT size
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={'FULL' if durability == 'power' else 'NORMAL'}")
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute(f"PRAGMA cache_size=-{cache_kib}")
    connection.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
    # The store checkpoints from its upkeep thread (see _maintain); a checkpoint
    # inside a commit would stall whichever thread committed, maybe the event loop.
    connection.execute("PRAGMA wal_autocheckpoint=0")
    # group_concat of blobs comes back as TEXT; these are record bytes, not UTF-8.
    connection.text_factory = bytes
    return connection


def _check_path(path: str) -> None:
    """Refuse a store path that cannot be a store file, before anything is created."""
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"store {path} is a directory, not a SQLite file")
    if not target.parent.is_dir():
        raise StoreError(f"store {path}: the directory {target.parent} does not exist")


def _create_private(path: str) -> None:
    """Create a new store file readable by its owner only (0600; SQLite gives its -wal and
    -shm files the database's mode). An existing file keeps the mode it has."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as error:
        raise StoreError(f"cannot create the store {path}: {error.strerror}") from error


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
        found = row[0] or 0
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {found}, newer than this version of"
                f" pipeline-events knows ({SCHEMA_VERSION}): upgrade pipeline-events"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](connection)
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return found


class _Append:
    """One append waiting to be committed, and the future that acknowledges it."""

    __slots__ = ("batch", "checks", "future")

    def __init__(self, batch, checks, future):  # type: ignore[no-untyped-def]
        self.batch: list[ProposedEvent] = batch
        self.checks: dict[str, ExpectedRevision] = checks
        self.future: asyncio.Future[AppendResult] = future


Outcome = AppendResult | BaseException


class SQLiteEventStore(EventStore):
    """An event store in one SQLite file. Open it with `await SQLiteEventStore.open(path)`."""

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "process",
        readers: int = 2,
        scan_window: int = 100_000,
    ):
        self.path = str(path)
        self.durability = durability
        # A filtered read_all looks at no more than this many positions per call.
        self.scan_window = scan_window
        self._upkeep_requests: queue.SimpleQueue[bool] = queue.SimpleQueue()  # False: stop
        self._upkeep = threading.Thread(target=self._upkeep_loop, name="sqlite-upkeep", daemon=True)
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(readers, "sqlite-reader")
        self._local = threading.local()
        self._closed = False
        self._signal: HeadSignal | None = None  # the head as the event loop knows it
        self._loop: asyncio.AbstractEventLoop | None = None
        # Writer state: touched only by whoever holds _write_lock (the loop, or upkeep).
        self._write_lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._head = 0  # last committed global position
        self._counts: dict[int, int] = {}  # events by type, up to _counted_to (event_counts)
        self._counted_to = 0
        self._revisions: dict[str, int] = {}  # aggregate -> latest committed revision (a cache)
        self._recent: dict[bytes, int] = {}  # event id -> position, for ids not in event_ids
        self._merged_to = 0  # event_ids holds the ids of positions up to here
        self._frames = 0  # estimated WAL pages written since the last checkpoint
        self._upkeep_queued = False
        self._merging: list[tuple[bytes, int]] | None = None  # sorted ids being merged
        self._merging_to = 0  # the head when that merge began
        self._merged_slices = 0
        self.transactions = 0  # appending transactions committed (one per group commit)
        self._gathered: list[_Append] = []  # appends waiting to commit on the event loop
        self._committing: asyncio.Task[None] | None = None  # a large commit, over several turns
        self._lock: StoreLock | None = None  # held from open to close (store/lock.py)

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        durability: Durability = "process",
        readers: int = 2,
        scan_window: int = 100_000,
    ) -> SQLiteEventStore:
        """Open (creating and migrating if needed) the store at `path`."""
        store = cls(path, durability=durability, readers=readers, scan_window=scan_window)
        await asyncio.to_thread(store._start)
        store._signal = HeadSignal(store._head)
        store._loop = asyncio.get_running_loop()
        store._upkeep.start()
        return store

    def _start(self) -> None:
        if self.path != ":memory:":
            _check_path(self.path)
            self._lock = StoreLock(self.path)
            _create_private(self.path)
        try:
            self._open_writer()
        except BaseException:
            if self._connection is not None:
                self._connection.close()
            if self._lock is not None:
                self._lock.release()
            raise

    def _open_writer(self) -> None:
        try:
            connection = self._connection = _connect(self.path, self.durability)
            migrate(connection)
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"store {self.path}: not a usable SQLite database ({error})"
            ) from error
        (self._head,) = connection.execute(_HEAD).fetchone()
        self._merged_to = connection.execute(
            "SELECT value FROM store_state WHERE name = 'event_ids_merged_to'"
        ).fetchone()[0]
        self._recent = dict(
            connection.execute(
                "SELECT event_id, position FROM events WHERE position > ?", (self._merged_to,)
            )
        )

    # --- writing -------------------------------------------------------------------------

    async def append(
        self,
        envelopes: Sequence[EventEnvelope | ProposedEvent],
        expected: Mapping[str, ExpectedRevision] | None = None,
    ) -> AppendResult:
        if self._closed:
            raise StoreClosedError("the store is closed")
        batch = proposed(envelopes)
        checks = normalise_expected(expected)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("a SQLite store is used from the event loop that opened it")
        future: asyncio.Future[AppendResult] = loop.create_future()
        self._gathered.append(_Append(batch, checks, future))
        if len(self._gathered) == 1:
            # The first append of a group: if other tasks are ready to run, commit
            # after them, so that the appends they make join one transaction (group
            # commit); alone, commit at once.
            if _others_ready(loop):
                loop.call_soon(self._flush)
            else:
                self._flush()
        return await future

    def _flush(self) -> None:
        """Commit the gathered appends on the event loop, unless upkeep holds the writer.

        Upkeep tells the loop when each of its steps ends (`_upkeep_step_done`),
        which flushes whatever gathered meanwhile, so no append waits for long.
        """
        if not self._gathered or not self._write_lock.acquire(blocking=False):
            return
        group, self._gathered = self._gathered, []
        if sum(len(request.batch) for request in group) > _EVENTS_PER_TURN:
            # A large commit takes several turns of the loop, other tasks running between.
            assert self._loop is not None
            self._committing = self._loop.create_task(self._commit_over_turns(group))
            return
        try:
            outcomes = self._commit([(r.batch, r.checks) for r in group])
        finally:
            self._write_lock.release()
        self._acknowledge(group, outcomes)

    async def _commit_over_turns(self, group: list[_Append]) -> None:
        """Commit a large group in one transaction, yielding to the loop every 256 rows."""
        steps = self._commit_steps([(r.batch, r.checks) for r in group])
        interrupted: BaseException | None = None
        try:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    outcomes: list[Outcome] = done.value
                    break
                await asyncio.sleep(0)
        except BaseException as error:  # cancelled between two steps: undo it, tell the appenders
            interrupted = error
            steps.close()
            assert self._connection is not None
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            outcomes = [StoreError(f"append interrupted: {error!r}")] * len(group)
        self._write_lock.release()
        self._committing = None
        self._acknowledge(group, outcomes)
        if interrupted is not None:
            raise interrupted
        self._flush()  # what gathered meanwhile

    def _acknowledge(self, group: list[_Append], outcomes: list[Outcome]) -> None:
        """After a commit (lock released): ask for upkeep, wake live readers, settle appends."""
        if self._maintenance_due() and not self._upkeep_queued:
            self._upkeep_queued = True
            self._upkeep_requests.put(True)
        assert self._signal is not None
        self._signal.advance(self._head)  # live readers learn of it before appenders
        for request, outcome in zip(group, outcomes, strict=True):
            if request.future.cancelled():
                continue  # the caller went away; the append itself already committed or failed
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

    def _upkeep_loop(self) -> None:
        """The upkeep thread: checkpoints and event-id merge slices, one step per request."""
        while self._upkeep_requests.get():
            with self._write_lock:
                try:
                    unfinished = self._maintenance_due() and self._maintain()
                except Exception:  # e.g. a full disk: appends will fail and say so
                    _log.exception("SQLite store upkeep failed; it is tried again later")
                    unfinished = False
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._upkeep_step_done, unfinished)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                return

    def _upkeep_step_done(self, unfinished: bool) -> None:
        """On the loop: commit what gathered during the step, then ask for the next one."""
        self._flush()
        self._upkeep_queued = unfinished
        if unfinished and not self._closed:  # a merge goes on, a slice at a time
            self._upkeep_requests.put(True)

    def _commit(
        self, appends: list[tuple[list[ProposedEvent], dict[str, ExpectedRevision]]]
    ) -> list[Outcome]:
        """Write appends in one transaction (caller holds the lock); an outcome per append."""
        steps = self._commit_steps(appends)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def _commit_steps(
        self, appends: list[tuple[list[ProposedEvent], dict[str, ExpectedRevision]]]
    ) -> Generator[None, None, list[Outcome]]:
        """`_commit`, pausing (yield) after every multi-row INSERT.

        Alone, an append that fails rolls the transaction back; in a group, each
        append has its own SAVEPOINT, so one failure does not fail the others.
        """
        connection = self._connection
        assert connection is not None
        grouped = len(appends) > 1
        outcomes: list[Outcome] = []
        head = self._head
        revisions: dict[str, int] = {}  # this transaction's new latest revisions
        recent: dict[bytes, int] = {}  # this transaction's new event ids
        frames = 0
        try:
            connection.execute("BEGIN IMMEDIATE")
            for batch, checks in appends:
                if grouped:
                    connection.execute("SAVEPOINT append")
                try:
                    plan = yield from self._plan_and_insert(batch, checks, head, revisions, recent)
                except Exception as error:  # the append's own failure
                    if not grouped:
                        connection.execute("ROLLBACK")
                        return [error]
                    connection.execute("ROLLBACK TO append")
                    connection.execute("RELEASE append")
                    outcomes.append(error)
                    continue
                if grouped:
                    connection.execute("RELEASE append")
                for event, position in plan.new_events:
                    revisions[event.aggregate_id] = position.revision
                    recent[event.event_blob] = head = position.global_position
                    frames += len(event.data)
                outcomes.append(plan.result)
            connection.execute("COMMIT" if recent else "ROLLBACK")  # nothing new: nothing to sync
        except Exception as error:  # the commit itself failed: nothing of it is durable
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return [StoreError(f"commit failed: {error}")] * len(appends)
        self._head = head
        self.transactions += bool(recent)
        if len(self._revisions) + len(revisions) > _MAX_CACHED_AGGREGATES:
            self._revisions.clear()
        self._revisions.update(revisions)
        self._recent.update(recent)
        # Pages written: the records, plus about one page per touched aggregate's index leaf.
        self._frames += 1 + frames // 3500 + len(revisions) if recent else 0
        return outcomes

    def _plan_and_insert(
        self,
        batch: list[ProposedEvent],
        checks: dict[str, ExpectedRevision],
        head: int,
        revisions: dict[str, int],
        recent: dict[bytes, int],
    ) -> Generator[None, None, Any]:
        """Plan one append (base.plan_append) against this transaction's view, and write it,
        pausing after each INSERT of up to 256 rows."""
        connection = self._connection
        assert connection is not None

        def revision_of(aggregate_id: str) -> int:
            known = revisions.get(aggregate_id)
            if known is None:
                known = self._revisions.get(aggregate_id)
            if known is None:
                known = self._revisions[aggregate_id] = connection.execute(
                    "SELECT coalesce(max(revision), 0) FROM events WHERE aggregate_id = ?",
                    (uuid_parts(aggregate_id, "aggregate_id")[1],),
                ).fetchone()[0]
            return known

        def stored(events: Sequence[ProposedEvent]) -> dict[str, tuple[bytes, Position]]:
            return self._stored(events, recent)

        plan = plan_append(batch, checks, head=head, stored=stored, revision_of=revision_of)
        recorded_at = recorded_at_field(time.time_ns())
        for start in range(0, len(plan.new_events), _ROWS_PER_INSERT):
            values: list[Any] = []
            for event, (position, revision) in plan.new_events[start : start + _ROWS_PER_INSERT]:
                values += (
                    position, event.aggregate_blob, revision, event.event_blob, event.event_type,
                    event.processing_blob, encode_record(event.data, position, revision, recorded_at),
                )  # fmt: skip
            _insert_rows(connection, _INSERT_EVENTS, values)
            yield
        return plan

    def _stored(
        self, events: Sequence[ProposedEvent], recent: dict[bytes, int]
    ) -> dict[str, tuple[bytes, Position]]:
        """Which events are stored already: id -> (envelope bytes, position)."""
        connection = self._connection
        assert connection is not None
        positions: dict[str, int] = {}
        unknown: list[ProposedEvent] = []
        for event in events:
            position = recent.get(event.event_blob) or self._recent.get(event.event_blob)
            if position:
                positions[event.event_id] = position
            elif self._merged_to:
                unknown.append(event)
        for start in range(0, len(unknown), _ID_CHUNK):
            chunk = unknown[start : start + _ID_CHUNK]
            by_blob = {event.event_blob: event.event_id for event in chunk}
            rows = connection.execute(
                "SELECT event_id, position FROM event_ids"
                f" WHERE event_id IN ({','.join('?' * len(chunk))})",
                list(by_blob),
            )
            positions.update((by_blob[blob], position) for blob, position in rows)
        if not positions:
            return {}
        by_position = {position: event_id for event_id, position in positions.items()}
        rows = connection.execute(
            f"SELECT position, revision, record FROM events"
            f" WHERE position IN ({','.join('?' * len(by_position))})",
            list(by_position),
        )
        return {
            by_position[position]: (record_envelope(record), Position(position, revision))
            for position, revision, record in rows
        }

    def _maintenance_due(self) -> bool:
        return (
            self._frames >= _CHECKPOINT_FRAMES
            or len(self._recent) >= _MERGE_AT
            or self._merging is not None
        )

    def _maintain(self) -> bool:
        """One step of upkeep (upkeep thread, lock held); True if a merge is unfinished.

        A merge copies the in-memory event ids, sorted, into `event_ids`, a slice
        of _MERGE_SLICE per transaction so that appends wait at most one slice.
        The ids stay in memory until the last slice commits with the new
        'event_ids_merged_to', so every id is always found in one place or the
        other; a merge cut short by a crash is simply done again (INSERT OR IGNORE).
        """
        connection = self._connection
        assert connection is not None
        if self._merging is None and len(self._recent) >= _MERGE_AT:
            self._merging = sorted(self._recent.items())  # key order: each page touched once
            self._merging_to, self._merged_slices = self._head, 0
        if self._merging is not None:
            start = self._merged_slices * _MERGE_SLICE
            last = start + _MERGE_SLICE >= len(self._merging)
            connection.execute("BEGIN IMMEDIATE")
            try:
                _insert_rows(
                    connection,
                    _INSERT_EVENT_IDS,
                    [v for pair in self._merging[start : start + _MERGE_SLICE] for v in pair],
                )
                if last:
                    connection.execute(
                        "UPDATE store_state SET value = ? WHERE name = 'event_ids_merged_to'",
                        (self._merging_to,),
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            self._merged_slices += 1
            self._frames += _MERGE_SLICE // 2  # pages a slice dirties: up to one per id
            if not last:
                return True
            self._merged_to = merged_to = self._merging_to
            self._recent = {i: p for i, p in self._recent.items() if p > merged_to}
            self._merging = None
        if self._frames >= _CHECKPOINT_FRAMES:
            # PASSIVE never waits for readers; with no write in between, the next
            # commit starts the WAL over from its beginning.
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._frames = 0
        return False

    # --- reading -------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (the loop's own for inline reads, or a pool thread's)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = _connect(self.path, self.durability, _READER_CACHE_KIB)
            connection.execute("PRAGMA query_only=1")
            self._local.connection = connection
        return connection

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    async def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a read on the reader pool."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, function, *args)

    async def read_aggregate(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> list[RecordedEvent]:
        self._check_open()
        blob = uuid_parts(aggregate_id, "aggregate_id")[1]
        from_revision = clamp_position(from_revision)
        if max_bytes is not None:  # a bounded page (the server's): one query
            if limit is not None and limit <= _INLINE_READ:
                return list(self._read_aggregate(blob, from_revision, backwards, limit, max_bytes))
            return list(
                await self._read(
                    self._read_aggregate, blob, from_revision, backwards,
                    -1 if limit is None else limit, max_bytes,
                )
            )  # fmt: skip
        # The first _INLINE_READ events here (most aggregates are shorter); the rest on the pool.
        first = _INLINE_READ if limit is None else min(limit, _INLINE_READ)
        events = list(self._read_aggregate(blob, from_revision, backwards, first))
        if len(events) < first or (limit is not None and limit <= first):
            return events
        after = events[-1].revision + (-1 if backwards else 1)
        if after == 0:
            return events
        rest = await self._read(
            self._read_aggregate, blob, after, backwards, -1 if limit is None else limit - first
        )
        return events + list(rest)

    async def read_aggregate_page(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int,
        max_bytes: int,
    ) -> AggregatePage:
        self._check_open()
        blob = uuid_parts(aggregate_id, "aggregate_id")[1]
        args = (blob, clamp_position(from_revision), backwards, limit, max_bytes)
        if limit <= _INLINE_READ:
            records = self._aggregate_records(*args)
        else:
            records = await self._read(self._aggregate_records, *args)
        return AggregatePage(parse_records(records), records or b"")

    def _read_aggregate(
        self,
        blob: bytes,
        from_revision: int,
        backwards: bool,
        limit: int,
        max_bytes: int | None = None,
    ) -> Sequence[RecordedEvent]:
        return parse_records(
            self._aggregate_records(blob, from_revision, backwards, limit, max_bytes)
        )

    def _aggregate_records(
        self,
        blob: bytes,
        from_revision: int,
        backwards: bool,
        limit: int,
        max_bytes: int | None,
    ) -> bytes | None:
        if backwards:
            bound, where, order = from_revision or MAX_POSITION, "revision <= ?", "revision DESC"
        else:
            bound, where, order = from_revision, "revision >= ?", "revision"
        records, _ = _select_page(
            self._reader(), f"aggregate_id = ? AND {where}", order, (blob, bound, limit), max_bytes
        )
        return records

    async def read_all(
        self,
        *,
        after_position: int = 0,
        filter: EventFilter | None = None,
        limit: int = 1000,
        max_bytes: int | None = None,
    ) -> ReadResult:
        after_position = clamp_position(after_position)
        if limit <= _INLINE_READ and (filter is None or filter.is_empty):
            # A short page read on the caller's thread; a filter may scan a whole window.
            self._check_open()
            return self._read_all(after_position, filter, limit, max_bytes)
        return await self._read(self._read_all, after_position, filter, limit, max_bytes)

    def _read_all(
        self, after: int, filter: EventFilter | None, limit: int, max_bytes: int | None
    ) -> ReadResult:
        connection = self._reader()
        # The head first, then rows up to it: every position up to a committed head
        # is committed, so the page and the head agree without a read transaction.
        head = connection.execute(_HEAD).fetchone()[0]
        where, args = ["position > ?", "position <= ?"], [after, head]
        if filter is not None and not filter.is_empty:
            args[1] = end = min(head, after + self.scan_window)
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
                    args.extend(uuid_parts(i, column)[1] for i in sorted(ids))
        else:
            end = head
        blob, rows = _select_page(
            connection, " AND ".join(where), "position", [*args, limit], max_bytes
        )
        events = parse_records(blob)
        # A page cut short by its limit or its bytes resumes after its last event.
        full = len(events) == limit or len(events) < rows
        scanned_to = events[-1].global_position if full else max(end, after)
        return ReadResult(events, scanned_to, head, blob or b"")

    async def head_position(self) -> int:
        self._check_open()
        return self._reader().execute(_HEAD).fetchone()[0]

    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        self._check_open()
        assert self._signal is not None
        return await self._signal.wait(after_position, timeout)

    async def event_counts(self) -> dict[int, int] | None:
        """Events by type. The first call scans the log; later ones count only what was
        appended since (a range of the primary key), so asking often costs little."""
        self._check_open()
        counted_to, head = self._counted_to, self._head
        if head > counted_to:
            fresh = await self._read(self._event_counts, counted_to, head)
            if self._counted_to == counted_to:  # no concurrent call merged this range
                for event_type, count in fresh:
                    self._counts[event_type] = self._counts.get(event_type, 0) + count
                self._counted_to = head
        return dict(self._counts)

    def _event_counts(self, after: int, up_to: int) -> list[tuple[int, int]]:
        return (
            self._reader()
            .execute(  # type: ignore[no-any-return]
                "SELECT event_type, count(*) FROM events WHERE position > ? AND position <= ?"
                " GROUP BY event_type",
                (after, up_to),
            )
            .fetchall()
        )

    # --- snapshots -----------------------------------------------------------------------

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        self._check_open()
        await asyncio.to_thread(self._save_snapshot, name, position, data)

    def _save_snapshot(self, name: str, position: int, data: bytes) -> None:
        def save(connection: sqlite3.Connection) -> int:
            connection.execute(
                "INSERT INTO snapshots (name, position, data) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET position = excluded.position, data = excluded.data",
                (name, position, data),
            )
            return len(data) // 4096 + 1

        self._side_write(save, "saving a snapshot")

    def _side_write(self, work: Callable[[sqlite3.Connection], int], what: str) -> None:
        """One transaction beside the appends (snapshots, service state), on a worker
        thread holding the writer as upkeep does; `work` returns the WAL pages it wrote.

        Whatever its outcome, the appends gathered meanwhile are flushed and upkeep is
        asked for when due (a store that only writes state still checkpoints its WAL).

        Raises:
            StoreError: SQLite refused it (nothing was written).
        """
        try:
            with self._write_lock:
                connection = self._connection
                assert connection is not None
                connection.execute("BEGIN IMMEDIATE")
                try:
                    frames = work(connection)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
                self._frames += frames
        except sqlite3.Error as error:
            raise StoreError(f"{what}: {error}") from error
        finally:
            assert self._loop is not None
            with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed
                self._loop.call_soon_threadsafe(self._after_side_write)

    def _after_side_write(self) -> None:
        if self._maintenance_due() and not self._upkeep_queued:
            self._upkeep_queued = True
            self._upkeep_requests.put(True)
        self._flush()  # appends gathered while the writer was held

    async def load_snapshot(self, name: str) -> Snapshot | None:
        self._check_open()
        row = await self._read(self._load_snapshot, name)
        return None if row is None else Snapshot(row[0], bytes(row[1]))

    def _load_snapshot(self, name: str) -> tuple[int, bytes] | None:
        return (
            self._reader()
            .execute(  # type: ignore[no-any-return]
                "SELECT position, data FROM snapshots WHERE name = ?", (name,)
            )
            .fetchone()
        )

    # --- service state ---------------------------------------------------------------------

    async def write_state(self, changes: Mapping[str, bytes | None]) -> None:
        self._check_open()
        checked = check_state_changes(changes)
        if checked:
            await asyncio.to_thread(self._write_state, checked)

    def _write_state(self, changes: dict[str, bytes | None]) -> None:
        def write(connection: sqlite3.Connection) -> int:
            removed = [(key,) for key, data in changes.items() if data is None]
            kept = [(key, data) for key, data in changes.items() if data is not None]
            connection.executemany("DELETE FROM service_state WHERE key = ?", removed)
            connection.executemany(
                "INSERT INTO service_state (key, data) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET data = excluded.data",
                kept,
            )
            return sum(len(data) for _, data in kept) // 4096 + len(changes)

        self._side_write(write, "writing service state")

    async def read_state(
        self, prefix: str, *, after: str = "", limit: int | None = None
    ) -> list[tuple[str, bytes]]:
        self._check_open()
        check_state_limit(limit)
        rows = await self._read(self._read_state, prefix, after, limit)
        return [(bytes(key).decode("ascii"), bytes(data)) for key, data in rows]  # text_factory

    def _read_state(self, prefix: str, after: str, limit: int | None) -> list[tuple[bytes, bytes]]:
        # key > max(prefix, after) AND key < prefix + U+10FFFF: an index range, with no
        # LIKE escaping (keys are ASCII). The prefix itself is a key too: >= for it.
        low, inclusive = (after, ">") if after >= prefix else (prefix, ">=")
        return (
            self._reader()
            .execute(  # type: ignore[no-any-return]
                f"SELECT key, data FROM service_state WHERE key {inclusive} ? AND key < ?"
                " ORDER BY key LIMIT ?",
                (low, prefix + "\U0010ffff", -1 if limit is None else limit),
            )
            .fetchall()
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._upkeep_requests.put(False)
        await asyncio.to_thread(self._upkeep.join)
        # Appends accepted before close() are committed first, a large group over turns.
        while self._committing is not None or self._gathered:
            if self._committing is not None:
                await asyncio.gather(self._committing, return_exceptions=True)
            else:
                self._flush()
        with self._write_lock:
            assert self._connection is not None
            self._connection.close()
        if self._lock is not None:
            self._lock.release()
        self._reader_pool.shutdown(wait=True)
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        if self._signal is not None:
            self._signal.close()


def _others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether callbacks (other tasks) wait to run on the loop; True when it cannot tell.

    Reads the ready queue of CPython's asyncio loops (`_ready`, not a public API);
    a loop without one is assumed busy, which costs an append one loop iteration.
    """
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0
