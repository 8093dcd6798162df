"""The event store on NATS JetStream: one stream holds the log; JetStream replicates it.

Layout (one stream, `stream` in the URL, default PIPELINE_EVENTS):

- subject per event `<prefix>.<aggregate id>.<event type>` (e.g.
  `pipeline_events.5bc8...c1.ChunkProcessed`; an EventType this version does not
  know is `Type<number>`);
- global position = the stream sequence (the stream holds events only, so
  positions run from 1 without gaps);
- body = the envelope bytes exactly as published; headers `Nats-Msg-Id` (the
  event id), `Pe-Revision` (its revision in its aggregate) and `Pe-Processing-Id`;
- recorded_at = the time JetStream stored the message.

Appends are all-or-nothing: one event is one publish, a batch one JetStream
atomic batch (server >= 2.12, `allow_atomic`; at most 1,000 messages). The
first message of each aggregate in a batch carries
`Nats-Expected-Last-Subject-Sequence` over the aggregate's subjects
(`<prefix>.<aggregate>.*`), so of two writers racing for a revision exactly one
wins, whichever replica they went through. Retries are idempotent by event id
within the stream's duplicate window (JetStream's `Nats-Msg-Id`); beyond it, an
expected revision still refuses the re-append, but an append with ANY would be
stored again (documented: set the window to the longest retry horizon).

Reads use batched Direct Get (`allow_direct`): the global log by sequence with
a subject filter where one maps (one aggregate, or one event type), otherwise
filtered here while scanning. An aggregate's revisions are located through an
in-process index of its sequences, built on first read and extended from the
log, so a page costs one request once known.

Snapshots (the read models') are objects in a JetStream object store bucket
`<stream>_SNAPSHOTS`.

The service's own state (`write_state`/`read_state`) is a second stream,
`<stream>_STATE`, with the log's replicas: one message per subject
`$PE_STATE.<stream>.<hex of the key>` (values beyond max_payload chunked, within
the write's one atomic batch); see `write_state`.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api as js_api
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError, ObjectNotFoundError

from pipeline_events import adapter
from pipeline_events.store.base import (
    MAX_POSITION,
    AggregatePage,
    AppendResult,
    DuplicateEventError,
    EventEnvelope,
    EventFilter,
    EventStore,
    ExpectedRevision,
    HeadSignal,
    InvalidEventError,
    Position,
    ProposedEvent,
    ReadResult,
    RecordedEvent,
    Snapshot,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
    canonical_uuid,
    check_state_changes,
    clamp_position,
    encode_record,
    normalise_expected,
    parse_records,
    plan_append,
    proposed,
    recorded_at_field,
    state_page,
)

_log = logging.getLogger(__name__)

DEFAULT_STREAM = "PIPELINE_EVENTS"
DEFAULT_PREFIX = "pipeline_events"
DEFAULT_DUPLICATE_WINDOW = 120.0  # seconds, JetStream's own default
MAX_BATCH = 1000  # JetStream's atomic batch limit (messages)
HEADER_ROOM = 1024  # bytes of headers and subject an event's message needs beside its body
REVISION = "Pe-Revision"
PROCESSING_ID = "Pe-Processing-Id"
_WRONG_LAST_SEQUENCE = {10071, 10164}  # expected-last-subject-sequence failed (or raced)
_DUPLICATE_IN_BATCH = 10201
_TOO_MANY_INFLIGHT = 10210
_RETRIES = 20  # conflicts with other writers retried per append (ANY revisions only)
_MAX_INDEXED_AGGREGATES = 10_000
_REQUEST_TIMEOUT = 10.0  # a publish: an R3 ack may wait out a leader election (~5 s)
_READ_TIMEOUT = 5.0  # a read: retried elsewhere sooner when a node dies mid-request
_SCAN_BATCH = 1000  # messages per read when a filter drops some
_SCAN_PAGES = 10  # reads per read_all at most (a sparse filter resumes from scanned_to)
_STALE_PATIENCE = 3.0  # seconds a read waits for a lagging replica before it says so
STATE_WRITE = "Pe-State-Write"  # the write (atomic batch) a state message belongs to
STATE_CHUNKS = "Pe-State-Chunks"  # on a record's first message: how many messages hold it
STATE_OP = "Pe-State-Op"  # "DEL" on a removal marker
STATE_PART = "Pe-State-Part"  # "<n>/<messages>": a message's place in its write
_STATE_MARKER_TTL = "60s"  # how long JetStream keeps a removal marker (Nats-TTL)
_STATE_PAGE_BYTES = 8 * 1024 * 1024  # bytes per state read page (values are chunks of ~1 MiB)
_STATE_PATIENCE = 10.0  # seconds read_state retries a view that writes keep changing


class StoreUnavailableError(StoreError, ConnectionError):
    """JetStream could not be reached or did not answer in time; the append may be retried."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """nats-py's errors as the store's: unavailable (retry) or refused."""
    try:
        yield
    except (NatsTimeoutError, NoRespondersError, ConnectionClosedError, OSError) as error:
        raise StoreUnavailableError(f"{what}: JetStream did not answer ({error!r})") from error
    except APIError as error:
        if error.code == 503:  # no JetStream leader yet (a cluster forming), or overloaded
            raise StoreUnavailableError(f"{what}: {error.description}") from error
        raise StoreError(f"{what}: {error.description}") from error


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """What a `nats://` store URL configures."""

    servers: tuple[str, ...]
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    replicas: int = 1
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None


@dataclass(slots=True)
class _Message:
    """One stored message as Direct Get returns it."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    time_ns: int

    @property
    def revision(self) -> int:
        return int(self.headers.get(REVISION, "0"))

    @property
    def event_id(self) -> str:
        return self.headers.get("Nats-Msg-Id", "")

    def record(self) -> bytes:
        return encode_record(self.data, self.seq, self.revision, recorded_at_field(self.time_ns))


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch of Go's RFC 3339 (nano) UTC time, e.g. 2026-12-01T12:00:00.5Z."""
    text = text.removesuffix("Z")
    whole, _, fraction = text.partition(".")
    date, _, clock = whole.partition("T")
    year, month, day = (int(p) for p in date.split("-"))
    hour, minute, second = (int(p) for p in clock.split(":"))
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds * 1_000_000_000 + nanos


def _type_token(event_type: int) -> str:
    name = adapter.event_type_name(event_type)
    return name if name.isidentifier() else f"Type{event_type}"


class NatsEventStore(EventStore):
    """The log as one JetStream stream; see the module docstring for the layout."""

    def __init__(self, nc: NatsClient, options: NatsOptions):
        self._nc = nc
        self._js = nc.jetstream(timeout=_REQUEST_TIMEOUT)
        self.options = options
        self.stream = options.stream
        self.prefix = options.prefix
        self._api = f"$JS.API.DIRECT.GET.{options.stream}"
        # aggregate -> sequences of its revisions 1..n (index i: revision i + 1), as known.
        self._seqs: OrderedDict[str, list[int]] = OrderedDict()
        # aggregate -> (sequence, revision) of its latest event, as this process last knew.
        self._heads: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._signal = HeadSignal()
        self._live: Any = None  # headers-only ordered consumer that wakes wait_for_append
        self._closed = False
        self._state_checked = False  # whether the state stream is known to be there and right
        # Appends to one aggregate take turns in this process (racing ourselves would only
        # cost retries); appends to others run at once. Other replicas race through JetStream.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # --- life -------------------------------------------------------------------------------

    @classmethod
    async def open(cls, options: NatsOptions) -> NatsEventStore:
        """Connect, and create the stream if missing (or check the one found).

        Raises:
            StoreError: JetStream unreachable, or a stream whose configuration cannot
                be this store's.
        """
        connect: dict[str, Any] = {
            "servers": list(options.servers),
            "connect_timeout": 5,
            # The first connection tries each server twice and gives up (nats-py would try
            # forever with -1, and `serve` must say "cannot reach" instead); once connected,
            # it reconnects for ever (set below): a node loss must not end the service.
            "max_reconnect_attempts": 2,
            "reconnect_time_wait": 0.5,
            "allow_reconnect": True,
        }
        if options.user is not None:
            connect["user"], connect["password"] = options.user, options.password
        if options.token is not None:
            connect["token"] = options.token
        if options.creds is not None:
            connect["user_credentials"] = options.creds

        last_logged = [0.0]
        connected = [False]  # a first connection that fails is one StoreError, not log lines

        async def error(problem: Exception) -> None:  # one line per 10 s, not a traceback each
            now = time.monotonic()
            if connected[0] and now - last_logged[0] >= 10:
                last_logged[0] = now
                _log.warning("NATS: %s", problem or type(problem).__name__)

        async def disconnected() -> None:
            _log.warning("NATS: disconnected; reconnecting")

        async def reconnected() -> None:
            _log.info(
                "NATS: reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?"
            )

        try:
            nc = await nats.connect(
                error_cb=error, disconnected_cb=disconnected, reconnected_cb=reconnected, **connect
            )
        except (NoServersError, OSError, NatsTimeoutError) as error:
            raise StoreError(
                f"cannot reach NATS at {', '.join(options.servers)}: {error or type(error).__name__}"
            ) from error
        nc.options["max_reconnect_attempts"] = -1  # read by nats-py on every reconnect
        connected[0] = True
        store = cls(nc, options)
        try:
            await store._ensure_stream()
            store._signal.advance(await store.head_position())
        except BaseException:
            await nc.close()
            raise
        return store

    async def _ensure_stream(self, patience: float = 30.0) -> None:
        """Create the stream, or check the one there; waits for a cluster still forming."""
        deadline = time.monotonic() + patience
        while True:
            try:
                await self._create_or_check_stream()
                return
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def _create_or_check_stream(self) -> None:
        subjects = [f"{self.prefix}.>"]
        try:
            with _translated(f"reading stream {self.stream}"):
                info = await self._js.stream_info(self.stream)
        except StoreError as error:
            if not isinstance(error.__cause__, NotFoundError):
                raise
            info = None
        if info is None:
            config = js_api.StreamConfig(
                name=self.stream,
                subjects=subjects,
                storage=js_api.StorageType.FILE,
                num_replicas=self.options.replicas,
                duplicate_window=self.options.duplicate_window,
                allow_direct=True,
                allow_atomic=True,
                deny_delete=True,
                deny_purge=True,
                discard=js_api.DiscardPolicy.NEW,
            )
            try:
                with _translated(f"creating stream {self.stream}"):
                    await self._js.add_stream(config)
            except StoreError as error:
                # Another replica created it meanwhile: check that one on the next round.
                if getattr(error.__cause__, "err_code", None) == 10058:
                    raise StoreUnavailableError(str(error)) from error
                raise
            return
        found = info.config
        problems = []
        if found.subjects != subjects:
            problems.append(f"subjects {found.subjects} (expected {subjects})")
        if not found.allow_direct:
            problems.append("allow_direct is off")
        if not found.allow_atomic:
            problems.append("allow_atomic is off")
        if (found.max_age or 0) > 0 or (found.max_msgs or -1) > 0 or (found.max_bytes or -1) > 0:
            problems.append("limits would delete events (max_age, max_msgs or max_bytes)")
        if found.retention not in (None, js_api.RetentionPolicy.LIMITS):
            problems.append(f"retention {found.retention} deletes events")
        if problems:
            raise StoreError(
                f"stream {self.stream} cannot hold this event log: {'; '.join(problems)}"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._signal.close()
        if self._live is not None:
            with contextlib.suppress(Exception):
                await self._live.unsubscribe()
        with contextlib.suppress(Exception):
            await self._nc.drain()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    @property
    def max_event_bytes(self) -> int:
        """The largest envelope this store can hold: the server's max_payload less headers."""
        return int(self._nc.max_payload) - HEADER_ROOM

    # --- requests -----------------------------------------------------------------------

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> Any:
        try:
            return await self._nc.request(
                subject, payload, timeout=_REQUEST_TIMEOUT, headers=headers
            )
        except (NatsTimeoutError, NoRespondersError, ConnectionClosedError, OSError) as error:
            raise StoreUnavailableError(f"JetStream did not answer: {error!r}") from error

    async def _direct_batch(
        self,
        start: int,
        *,
        batch: int,
        subject: str,
        max_bytes: int | None,
        api: str | None = None,
    ) -> tuple[list[_Message], int]:
        """Messages from sequence `start` on matching `subject`, and how many remain after them.

        `api` is the Direct Get subject of another stream (the state's); the log's by default.
        """
        request: dict[str, Any] = {"seq": max(1, start), "batch": batch, "next_by_subj": subject}
        if max_bytes:
            request["max_bytes"] = max_bytes
        inbox = self._nc.new_inbox()
        found: list[_Message] = []
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def each(message: Any) -> None:  # one callback per message: no task per message
            if done.done():
                return
            headers = message.headers or {}
            status = headers.get("Status")
            if status == "404":
                done.set_result(0)
            elif status == "204":  # end of batch
                done.set_result(int(headers.get("Nats-Num-Pending", "0")))
            elif status in ("503", "408"):  # no leader yet, or a node going away: retry
                done.set_exception(
                    StoreUnavailableError(
                        f"JetStream read failed: {status} {headers.get('Description')}"
                    )
                )
            elif status:
                done.set_exception(
                    StoreError(f"JetStream read failed: {status} {headers.get('Description')}")
                )
            else:
                found.append(
                    _Message(
                        int(headers["Nats-Sequence"]),
                        headers["Nats-Subject"],
                        headers,
                        message.data,
                        parse_time_ns(headers["Nats-Time-Stamp"]),
                    )
                )

        try:
            subscription = await self._nc.subscribe(inbox, cb=each)
        except ConnectionClosedError as error:
            raise StoreUnavailableError(f"JetStream connection closed: {error!r}") from error
        try:
            await self._nc.publish(api or self._api, json.dumps(request).encode(), reply=inbox)
            try:
                pending = await asyncio.wait_for(done, _READ_TIMEOUT)
            except TimeoutError as error:
                raise StoreUnavailableError("JetStream did not answer a read") from error
            return found, pending
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def head_position(self) -> int:
        self._check_open()
        with _translated("reading the log's head"):
            info = await self._js.stream_info(self.stream)
        head = int(info.state.last_seq)
        self._signal.advance(head)
        return head

    # --- appending ----------------------------------------------------------------------

    async def _last_of(self, aggregate_id: str) -> tuple[int, int]:
        """(sequence, revision) of an aggregate's latest event; (0, 0) when it has none.

        Asked of the stream leader (a message get, not a Direct Get, which any replica
        answers from its own state, possibly behind): revision checks must see every
        acknowledged append.
        """
        try:
            with _translated("reading an aggregate's latest revision"):
                message = await self._js.get_msg(
                    self.stream, subject=f"{self.prefix}.{aggregate_id}.*"
                )
        except StoreError as error:
            if isinstance(error.__cause__, NotFoundError):
                return 0, 0
            raise
        return int(message.seq or 0), int((message.headers or {}).get(REVISION, "0"))

    async def _stored_events(
        self, batch: Sequence[ProposedEvent]
    ) -> dict[str, tuple[bytes, Position]]:
        """Which of the batch's events are stored: scans their aggregates (the retry path)."""
        wanted = {event.event_id for event in batch}
        found: dict[str, tuple[bytes, Position]] = {}
        for aggregate_id in {event.aggregate_id for event in batch}:
            async for message in self._aggregate_messages(aggregate_id, 1):
                if message.event_id in wanted:
                    found[message.event_id] = (
                        message.data,
                        Position(message.seq, message.revision),
                    )
        return found

    async def append(
        self,
        envelopes: Sequence[EventEnvelope | ProposedEvent],
        expected: Mapping[str, ExpectedRevision] | None = None,
    ) -> AppendResult:
        self._check_open()
        batch = proposed(envelopes)
        checks = normalise_expected(expected)
        if not batch:
            return AppendResult((), already_recorded=False)
        if len(batch) > MAX_BATCH:
            raise InvalidEventError(
                f"a batch of {len(batch)} events: the NATS store takes at most {MAX_BATCH} at once"
            )
        limit = self.max_event_bytes
        for index, event in enumerate(batch):
            if len(event.data) > limit:
                raise InvalidEventError(
                    f"events[{index}] is {len(event.data):,} bytes; the NATS server's max_payload"
                    f" allows {limit:,}"
                )
        locks = [self._lock(a) for a in sorted({e.aggregate_id for e in batch})]
        async with contextlib.AsyncExitStack() as held:
            for lock in locks:  # in sorted order: two batches never wait on each other
                await held.enter_async_context(lock)
            stored: dict[str, tuple[bytes, Position]] = {}
            scanned = False  # whether `stored` was looked up (the retry path)
            fresh = False  # whether the revisions were read from JetStream, not the cache
            for attempt in range(_RETRIES):
                aggregates = list(dict.fromkeys(e.aggregate_id for e in batch))
                found = await self._lasts(aggregates, fresh=fresh)
                revisions = {a: last[1] for a, last in zip(aggregates, found, strict=True)}
                try:
                    plan = plan_append(
                        batch, checks, head=0, stored=lambda _, s=stored: s,
                        revision_of=revisions.__getitem__,
                    )  # fmt: skip
                except WrongExpectedRevisionError:
                    if not fresh:  # the cache may be behind another replica's appends
                        fresh = True
                        continue
                    if scanned:
                        raise
                    # Maybe a retry of a batch stored before (its check passed then):
                    # look the events up, beyond JetStream's duplicate window too.
                    stored, scanned = await self._stored_events(batch), True
                    plan = plan_append(
                        batch, checks, head=0, stored=lambda _, s=stored: s,
                        revision_of=revisions.__getitem__,
                    )  # fmt: skip
                if not plan.new_events:
                    return plan.result
                lasts = dict(zip(aggregates, found, strict=True))
                outcome = await self._publish(plan.new_events, lasts)
                if isinstance(outcome, list):  # the sequences of the new events
                    return self._result(batch, plan.new_events, outcome, stored)
                if outcome == "duplicate":
                    known = await self._stored_events(batch)
                    if known.keys() == stored.keys():
                        # JetStream knows an event id that none of the batch's aggregates
                        # holds: it is another aggregate's event.
                        unknown = next(e for e in plan.new_events if e[0].event_id not in known)
                        raise DuplicateEventError(unknown[0].event_id)
                    stored, scanned = known, True
                elif outcome == "busy":
                    await asyncio.sleep(0.01 * (attempt + 1))
                # "conflict": another writer took a revision meanwhile (or the cache was
                # behind); the next round re-reads the revisions and re-checks.
                fresh = True
            raise StoreUnavailableError(
                f"the append lost {_RETRIES} races with other writers in a row; try again"
            )

    async def _lasts(self, aggregates: list[str], *, fresh: bool) -> list[tuple[int, int]]:
        """(sequence, revision) of each aggregate's latest event: cached, or read (`fresh`).

        A cached value behind another replica's appends costs one refused publish (the
        expected-last-subject-sequence check), never a wrong revision.
        """
        missing = aggregates if fresh else [a for a in aggregates if a not in self._heads]
        if missing:
            read = await asyncio.gather(*map(self._last_of, missing))
            for aggregate, last in zip(missing, read, strict=True):
                self._heads[aggregate] = last
        for aggregate in aggregates:
            self._heads.move_to_end(aggregate)
        while len(self._heads) > _MAX_INDEXED_AGGREGATES * 10:
            self._heads.popitem(last=False)
        return [self._heads[a] for a in aggregates]

    def _lock(self, aggregate_id: str) -> asyncio.Lock:
        lock = self._locks.get(aggregate_id)
        if lock is None:
            lock = self._locks[aggregate_id] = asyncio.Lock()
        return lock

    def _result(
        self,
        batch: Sequence[ProposedEvent],
        new_events: list[tuple[ProposedEvent, Position]],
        sequences: list[int],
        stored: Mapping[str, tuple[bytes, Position]],
    ) -> AppendResult:
        assigned = {
            event.event_id: Position(seq, position.revision)
            for (event, position), seq in zip(new_events, sequences, strict=True)
        }
        for (event, position), seq in zip(new_events, sequences, strict=True):
            self._remember(event.aggregate_id, position.revision, seq)
            self._heads[event.aggregate_id] = (seq, position.revision)
        self._signal.advance(sequences[-1])
        return AppendResult(
            tuple(
                assigned[e.event_id] if e.event_id in assigned else stored[e.event_id][1]
                for e in batch
            ),
            already_recorded=False,
        )

    async def _publish(
        self, new_events: list[tuple[ProposedEvent, Position]], lasts: Mapping[str, tuple[int, int]]
    ) -> list[int] | str:
        """Publish the new events (one message, or one atomic batch).

        Returns their sequences, or "conflict", "duplicate" or "busy".
        """
        batch_id = uuid.uuid4().hex if len(new_events) > 1 else None
        checked: set[str] = set()
        replies: Any = None
        for number, (event, position) in enumerate(new_events, start=1):
            headers = {"Nats-Msg-Id": event.event_id, REVISION: str(position.revision)}
            if event.processing_id:
                headers[PROCESSING_ID] = event.processing_id
            if event.aggregate_id not in checked:
                checked.add(event.aggregate_id)
                headers["Nats-Expected-Last-Subject-Sequence"] = str(lasts[event.aggregate_id][0])
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = (
                    f"{self.prefix}.{event.aggregate_id}.*"
                )
            if batch_id is not None:
                headers["Nats-Batch-Id"] = batch_id
                headers["Nats-Batch-Sequence"] = str(number)
            subject = f"{self.prefix}.{event.aggregate_id}.{_type_token(event.event_type)}"
            if number < len(new_events):
                await self._nc.publish(subject, event.data, headers=headers)
                continue
            if batch_id is not None:
                headers["Nats-Batch-Commit"] = "1"
            replies = await self._request(subject, event.data, headers)
        ack = json.loads(replies.data or b"{}")
        error = ack.get("error")
        if error:
            code = int(error.get("err_code", 0))
            if code in _WRONG_LAST_SEQUENCE:
                return "conflict"
            if code == _DUPLICATE_IN_BATCH:
                return "duplicate"
            if code == _TOO_MANY_INFLIGHT or int(error.get("code", 0)) == 503:
                return "busy"
            raise StoreError(f"JetStream refused the append: {error.get('description', error)}")
        if ack.get("duplicate"):
            return "duplicate"
        last = int(ack["seq"])
        return list(range(last - len(new_events) + 1, last + 1))

    # --- reading ------------------------------------------------------------------------

    def _remember(self, aggregate_id: str, revision: int, seq: int) -> None:
        seqs = self._seqs.get(aggregate_id)
        if seqs is not None and len(seqs) == revision - 1:
            seqs.append(seq)
            self._seqs.move_to_end(aggregate_id)

    async def _aggregate_messages(self, aggregate_id: str, from_seq: int) -> Any:
        """Every message of an aggregate from a sequence on, in order, page by page."""
        subject = f"{self.prefix}.{aggregate_id}.*"
        start = from_seq
        while True:
            page, pending = await self._direct_batch(
                start, batch=1000, subject=subject, max_bytes=None
            )
            for message in page:
                yield message
            if not page or pending == 0:
                return
            start = page[-1].seq + 1

    async def _index(self, aggregate_id: str) -> list[int]:
        """The sequences of an aggregate's revisions 1..n (its index, extended to the log)."""
        seqs = self._seqs.get(aggregate_id)
        if seqs is None:
            seqs = []
            self._seqs[aggregate_id] = seqs
            if len(self._seqs) > _MAX_INDEXED_AGGREGATES:
                self._seqs.popitem(last=False)
        self._seqs.move_to_end(aggregate_id)
        start = seqs[-1] + 1 if seqs else 1
        async for message in self._aggregate_messages(aggregate_id, start):
            if message.revision == len(seqs) + 1:
                seqs.append(message.seq)
        return seqs

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
        try:
            aggregate_id = canonical_uuid(aggregate_id, "aggregate_id")
        except InvalidEventError:
            return AggregatePage([], b"")
        # The leader's latest revision, and an index (built by Direct Get) that has it.
        _, latest = await self._last_of(aggregate_id)
        deadline = time.monotonic() + _STALE_PATIENCE
        seqs = await self._index(aggregate_id)
        while len(seqs) < latest:  # the replica that answered is behind: ask again
            if time.monotonic() > deadline:
                raise StoreUnavailableError(
                    f"a replica of stream {self.stream} is behind its leader; try again"
                )
            await asyncio.sleep(0.05)
            seqs = await self._index(aggregate_id)
        if not seqs:
            return AggregatePage([], b"")
        from_revision = clamp_position(from_revision)
        if backwards:
            last = len(seqs) if from_revision == 0 else min(from_revision, len(seqs))
            if last < 1:
                return AggregatePage([], b"")
            wanted = range(last, max(0, last - limit), -1)
        else:
            first = max(1, from_revision)
            if first > len(seqs):
                return AggregatePage([], b"")
            wanted = range(first, min(len(seqs), first + limit - 1) + 1)
        low, high = min(wanted), max(wanted)
        subject = f"{self.prefix}.{aggregate_id}.*"
        messages: list[_Message] = []
        start = seqs[low - 1]
        while len(messages) < high - low + 1:
            page, _ = await self._direct_batch(
                start, batch=high - low + 1 - len(messages), subject=subject, max_bytes=None
            )
            messages.extend(m for m in page if low <= m.revision <= high)
            if not page:  # every revision up to `high` is stored: a replica behind
                if time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"a replica of stream {self.stream} is behind its leader; try again"
                    )
                await asyncio.sleep(0.05)
                continue
            start = page[-1].seq + 1
        if backwards:
            messages.reverse()
        records, size = [], 0
        for message in messages:
            record = message.record()
            size += len(record)
            if records and size > max_bytes:
                break
            records.append(record)
        blob = b"".join(records)
        return AggregatePage(parse_records(blob), blob)

    async def read_aggregate(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> list[RecordedEvent]:
        page = await self.read_aggregate_page(
            aggregate_id,
            from_revision=from_revision,
            backwards=backwards,
            limit=MAX_POSITION if limit is None else limit,
            max_bytes=MAX_POSITION if max_bytes is None else max_bytes,
        )
        return list(page.events)

    async def read_all(
        self,
        *,
        after_position: int = 0,
        filter: EventFilter | None = None,
        limit: int = 1000,
        max_bytes: int | None = None,
    ) -> ReadResult:
        self._check_open()
        after = clamp_position(after_position)
        wanted = filter or EventFilter()
        # Followed live (see `_follow_head`), the head is known without asking the leader.
        head = self._signal.head if self._live is not None else await self.head_position()
        if after >= head:
            return ReadResult([], max(head, after), head, b"")
        types = wanted.type_set
        if types is not None and not types:
            return ReadResult([], head, head, b"")
        # Read unfiltered (the stream has no gaps, which shows a replica behind; see
        # `_contiguous`) and filter here, page after page until `limit` events pass, the
        # bytes are spent, the head is reached, or _SCAN_PAGES pages were scanned.
        records: list[bytes] = []
        size, scanned = 0, after
        for _ in range(_SCAN_PAGES):
            batch = max(limit - len(records), 1) if wanted.is_empty else _SCAN_BATCH
            # JetStream counts a message's subject and headers too: ask for more, cut here.
            budget = None if max_bytes is None else max_bytes - size + batch * HEADER_ROOM
            page = await self._contiguous(scanned, head, batch, budget)
            full = False
            for message in page:
                if not self._passes(message, wanted, types):
                    scanned = message.seq
                    continue
                record = message.record()
                if max_bytes is not None and records and size + len(record) > max_bytes:
                    full = True  # cut short: resume after the last event kept
                    break
                scanned = message.seq
                size += len(record)
                records.append(record)
                if len(records) == limit:
                    full = True
                    break
            if full or not page or scanned >= head:
                break
        blob = b"".join(records)
        return ReadResult(parse_records(blob), scanned, max(head, scanned), blob)

    async def _contiguous(
        self, after: int, head: int, limit: int, max_bytes: int | None
    ) -> list[_Message]:
        """The log's messages after `after`, without a gap: at most `limit`, up to `head`.

        Direct Get is answered by any replica from its own state, which may be behind
        the leader (just after a node came back, or under lag). The stream has no gaps
        (deletes denied, no limits), so a page that skips a sequence, or ends before
        the head the leader reported, is such an answer: asked again, for up to
        _STALE_PATIENCE, and otherwise cut at its first gap, so that no reader ever
        steps over an event it did not get.
        """
        deadline = time.monotonic() + _STALE_PATIENCE
        while True:
            page, pending = await self._direct_batch(
                after + 1, batch=limit, subject=f"{self.prefix}.>", max_bytes=max_bytes
            )
            contiguous = 0
            for expected, message in enumerate(page, start=after + 1):
                if message.seq != expected:
                    break
                contiguous += 1
            end = after + contiguous
            whole = contiguous == len(page) and (contiguous == limit or end >= head or pending > 0)
            if whole or time.monotonic() > deadline:
                return page[:contiguous]
            await asyncio.sleep(0.05)

    @staticmethod
    def _passes(message: _Message, wanted: EventFilter, types: frozenset[int] | None) -> bool:
        if wanted.is_empty:
            return True
        _, aggregate, type_token = message.subject.split(".")[-3:]
        if wanted.aggregate_ids and aggregate not in wanted.aggregate_ids:
            return False
        if types is not None and not any(type_token == _type_token(t) for t in types):
            return False
        return not wanted.processing_ids or (
            message.headers.get(PROCESSING_ID, "") in wanted.processing_ids
        )

    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        self._check_open()
        await self._follow_head()
        return await self._signal.wait(after_position, timeout)

    async def _follow_head(self) -> None:
        """Learn of every append, by any replica: a headers-only ordered consumer from now."""
        if self._live is not None:
            return

        async def seen(message: Any) -> None:
            self._signal.advance(int(message.metadata.sequence.stream))

        self._live = await self._js.subscribe(
            f"{self.prefix}.>",
            stream=self.stream,
            cb=seen,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
            headers_only=True,
        )
        await self.head_position()  # what was appended before the consumer existed

    # --- snapshots ----------------------------------------------------------------------

    async def _snapshots(self) -> Any:
        bucket = f"{self.stream}_SNAPSHOTS"
        with _translated("opening the snapshot bucket"):
            try:
                return await self._js.object_store(bucket)
            except BucketNotFoundError:
                return await self._js.create_object_store(
                    bucket, config=js_api.ObjectStoreConfig(replicas=self.options.replicas)
                )

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        self._check_open()
        store = await self._snapshots()
        meta = js_api.ObjectMeta(name=name, description=str(position))
        with _translated("saving a snapshot"):
            await store.put(name, data, meta=meta)

    async def load_snapshot(self, name: str) -> Snapshot | None:
        self._check_open()
        store = await self._snapshots()
        try:
            with _translated("loading a snapshot"):
                result = await store.get(name)
        except StoreError as error:
            if isinstance(error.__cause__, ObjectNotFoundError):
                return None
            raise
        position = int(result.info.description or "0")
        return Snapshot(position, bytes(result.data or b""))

    # --- service state ------------------------------------------------------------------

    @property
    def state_stream(self) -> str:
        """The stream of the service's own state records (see `write_state`)."""
        return f"{self.stream}_STATE"

    @property
    def _state_base(self) -> str:
        # `$` is in no event prefix ([A-Za-z0-9_-]) and the stream name is unique in the
        # account, so these subjects overlap no log's and no other store's state.
        return f"$PE_STATE.{self.stream}"

    def _state_subject(self, key: str, chunk: int = 0) -> str:
        token = key.encode("ascii").hex()
        return (
            f"{self._state_base}.{token}" if chunk == 0 else f"{self._state_base}.{token}.{chunk}"
        )

    @property
    def max_state_chunk(self) -> int:
        """Bytes of a state value one message holds: the server's max_payload less headers."""
        return int(self._nc.max_payload) - HEADER_ROOM

    async def _state_ready(self, *, create: bool) -> bool:
        """Whether the state stream exists (created if `create`); checks the one found."""
        if self._state_checked:
            return True
        subjects = [f"{self._state_base}.>"]
        for _ in range(2):  # a second round when another replica created it meanwhile
            try:
                with _translated(f"reading stream {self.state_stream}"):
                    info = await self._js.stream_info(self.state_stream)
            except StoreError as error:
                if not isinstance(error.__cause__, NotFoundError):
                    raise
                if not create:
                    return False
                config = js_api.StreamConfig(
                    name=self.state_stream,
                    subjects=subjects,
                    storage=js_api.StorageType.FILE,
                    num_replicas=self.options.replicas,
                    max_msgs_per_subject=1,
                    allow_direct=True,
                    allow_atomic=True,
                    allow_msg_ttl=True,
                    deny_delete=True,
                )
                try:
                    with _translated(f"creating stream {self.state_stream}"):
                        await self._js.add_stream(config)
                except StoreError as error:
                    if getattr(error.__cause__, "err_code", None) == 10058:
                        continue
                    raise
                self._state_checked = True
                return True
            found = info.config
            problems = []
            if found.subjects != subjects:
                problems.append(f"subjects {found.subjects} (expected {subjects})")
            if found.max_msgs_per_subject != 1:
                problems.append(f"max_msgs_per_subject {found.max_msgs_per_subject} (expected 1)")
            if not found.allow_direct:
                problems.append("allow_direct is off")
            if not found.allow_atomic:
                problems.append("allow_atomic is off")
            if not found.allow_msg_ttl:
                problems.append("allow_msg_ttl is off")
            if (
                (found.max_age or 0) > 0
                or (found.max_msgs or -1) > 0
                or (found.max_bytes or -1) > 0
            ):
                problems.append("limits would delete records (max_age, max_msgs or max_bytes)")
            if found.retention not in (None, js_api.RetentionPolicy.LIMITS):
                problems.append(f"retention {found.retention} deletes records")
            if problems:
                raise StoreError(
                    f"stream {self.state_stream} cannot hold the service's state:"
                    f" {'; '.join(problems)}"
                )
            self._state_checked = True
            return True
        raise StoreUnavailableError(f"stream {self.state_stream} is being created; try again")

    def _state_messages(
        self, changes: Mapping[str, bytes | None]
    ) -> tuple[list[tuple[str, bytes, dict[str, str]]], list[str]]:
        """The messages of a write, and the keys whose chunk subjects may hold leftovers."""
        write = uuid.uuid4().hex
        size = self.max_state_chunk
        messages: list[tuple[str, bytes, dict[str, str]]] = []
        leftovers: list[str] = []
        for key, value in changes.items():
            if value is None:
                headers = {STATE_WRITE: write, STATE_OP: "DEL", "Nats-TTL": _STATE_MARKER_TTL}
                messages.append((self._state_subject(key), b"", headers))
                leftovers.append(key)
                continue
            data = bytes(value)
            parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
            messages.append(
                (
                    self._state_subject(key),
                    parts[0],
                    {STATE_WRITE: write, STATE_CHUNKS: str(len(parts))},
                )
            )
            for number, part in enumerate(parts[1:], start=1):
                messages.append((self._state_subject(key, number), part, {STATE_WRITE: write}))
            if len(parts) > 1:
                leftovers.append(key)
        for number, (_, _, headers) in enumerate(messages, start=1):
            headers[STATE_PART] = f"{number}/{len(messages)}"
        return messages, leftovers

    async def _publish_atomic(self, messages: Sequence[tuple[str, bytes, dict[str, str]]]) -> Any:
        """Publish messages as one JetStream atomic batch (one message: a plain publish).

        Returns the acknowledgement (parsed JSON), an error one included.
        """
        batch_id = uuid.uuid4().hex if len(messages) > 1 else None
        reply: Any = None
        for number, (subject, data, fields) in enumerate(messages, start=1):
            headers = dict(fields)
            if batch_id is not None:
                headers["Nats-Batch-Id"] = batch_id
                headers["Nats-Batch-Sequence"] = str(number)
            if number < len(messages):
                with _translated("publishing a batch"):
                    await self._nc.publish(subject, data, headers=headers)
                continue
            if batch_id is not None:
                headers["Nats-Batch-Commit"] = "1"
            reply = await self._request(subject, data, headers)
        return json.loads(reply.data or b"{}")

    async def write_state(self, changes: Mapping[str, bytes | None]) -> None:
        """Set or remove state records in one JetStream atomic batch: all or none.

        Layout: stream `<stream>_STATE` (the log's replicas, file storage, one message
        per subject), subject `$PE_STATE.<stream>.<hex of the key>` per record. A value
        larger than one message (the server's max_payload less HEADER_ROOM) is chunked:
        its first message says how many (`Pe-State-Chunks`) and the rest go to
        `<record subject>.<n>`, all in the same batch and marked with the write's id
        (`Pe-State-Write`), so a reader never mixes two writes. A removal is a marker
        message (`Pe-State-Op: DEL`) in the batch, which JetStream deletes after
        _STATE_MARKER_TTL (`Nats-TTL`). Chunks a write supersedes are purged after the
        batch is stored (a removed or chunked record's, by the writer; a record made
        shorter, by the next read_state that sees them): not atomic, but only data no
        record holds any more, which readers ignore meanwhile. At most MAX_BATCH
        messages per write: larger writes are refused, never split.

        Raises:
            StoreError: a bad key (nothing is written), more than MAX_BATCH messages in
                all (chunks included), or JetStream refused the batch (nothing written).
            StoreUnavailableError: JetStream did not answer (the write may or may not
                be stored; writing the same changes again is safe).
        """
        self._check_open()
        changes = check_state_changes(changes)
        if not changes:
            return
        size = self.max_state_chunk
        count = sum(1 if v is None else max(1, -(-len(v) // size)) for v in changes.values())
        if count > MAX_BATCH:
            raise StoreError(
                f"a state write of {count} messages ({len(changes)} records, values"
                f" chunked by {self.max_state_chunk:,} bytes): JetStream's atomic batch takes"
                f" at most {MAX_BATCH}"
            )
        messages, leftovers = self._state_messages(changes)
        await self._state_ready(create=True)
        for attempt in range(_RETRIES):
            ack = await self._publish_atomic(messages)
            error = ack.get("error")
            if not error:
                break
            if (
                int(error.get("err_code", 0)) == _TOO_MANY_INFLIGHT
                or int(error.get("code", 0)) == 503
            ):
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            raise StoreError(
                f"JetStream refused the state write: {error.get('description', error)}"
            )
        else:
            raise StoreUnavailableError("JetStream stayed too busy for a state write; try again")
        first = int(ack["seq"]) - len(messages) + 1
        await self._purge_leftovers(leftovers, first)

    async def _purge_leftovers(self, keys: list[str], before: int) -> None:
        """Best effort: drop the chunk subjects of `keys` older than sequence `before`."""

        async def purge(key: str) -> None:
            try:
                with _translated("purging old state chunks"):
                    await self._js.purge_stream(
                        self.state_stream, seq=before, subject=f"{self._state_subject(key)}.*"
                    )
            except StoreError as error:  # leftovers are ignored by readers; next time
                _log.debug("state chunks of %s not purged: %s", key, error)

        for start in range(0, len(keys), 64):
            await asyncio.gather(*map(purge, keys[start : start + 64]))

    async def read_state(
        self, prefix: str, *, after: str = "", limit: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Every record whose key starts with `prefix`, in key order: one consistent view.

        The state stream holds only live messages (one per subject), so reading it by
        sequence with batched Direct Get up to its last sequence, as the leader reported
        it, yields the state as of that sequence; unless a write replaced a record or a
        marker expired meanwhile (or a replica answered from behind), which shows as fewer
        messages than the leader counted: then it is read again.
        """
        self._check_open()
        if not await self._state_ready(create=False):
            return []
        api = f"$JS.API.DIRECT.GET.{self.state_stream}"
        deadline = time.monotonic() + _STATE_PATIENCE
        attempt = 0
        while True:
            with _translated("reading the state's head"):
                info = await self._js.stream_info(self.state_stream)
            last, count = int(info.state.last_seq), int(info.state.messages)
            if count == 0:
                return []
            found: list[_Message] = []
            start = max(1, int(info.state.first_seq))
            while True:
                page, pending = await self._direct_batch(
                    start,
                    batch=_SCAN_BATCH,
                    subject=f"{self._state_base}.>",
                    max_bytes=_STATE_PAGE_BYTES,
                    api=api,
                )
                found.extend(message for message in page if message.seq <= last)
                if not page or pending == 0 or page[-1].seq >= last:
                    break
                start = page[-1].seq + 1
            # JetStream stores a committed batch message by message: a view whose last
            # message is not its write's last is a write being applied.
            ends = found[-1] if found and found[-1].seq == last else None
            if len(found) == count and (ends is None or self._ends_write(ends)):
                view = self._state_view(found, prefix)
                if view is not None:
                    records, stale = view
                    if stale:
                        await self._purge_stale(stale, last)
                    # The whole stream is read for one consistent view; the page is cut here.
                    return state_page(records, after, limit)
            if time.monotonic() > deadline:
                raise StoreUnavailableError(
                    f"stream {self.state_stream} changed during every read for"
                    f" {_STATE_PATIENCE:.0f} s (or a replica is behind); try again"
                )
            attempt += 1
            await asyncio.sleep(min(0.01 * attempt, 0.2))

    @staticmethod
    def _ends_write(message: _Message) -> bool:
        number, _, total = message.headers.get(STATE_PART, "1/1").partition("/")
        return number == total

    async def _purge_stale(self, stale: dict[str, int], last: int) -> None:
        """Best effort: drop chunk subjects a write superseded (a shorter value's leftovers).

        `stale` maps a record's subject token to its live first message's sequence (0:
        none, a removal marker expired): chunks older than that are no record's.
        """

        async def purge(token: str, before: int) -> None:
            subject = f"{self._state_base}.{token}.*"
            try:
                with _translated("purging old state chunks"):
                    await self._js.purge_stream(self.state_stream, seq=before, subject=subject)
            except StoreError as error:
                _log.debug("old state chunks on %s not purged: %s", subject, error)

        items = list(stale.items())
        for start in range(0, len(items), 64):
            await asyncio.gather(
                *(purge(token, root or last + 1) for token, root in items[start : start + 64])
            )

    def _state_view(
        self, found: list[_Message], prefix: str
    ) -> tuple[list[tuple[str, bytes]], dict[str, int]] | None:
        """The live records under `prefix` in key order, and the tokens with stale chunks.

        None if a value's chunks are torn (replaced or purged while read: read again).
        """
        base = len(self._state_base) + 1
        wanted = prefix.encode("ascii", "replace").hex()
        roots: dict[str, _Message] = {}
        chunks: dict[tuple[str, int], _Message] = {}
        for message in found:
            token, _, number = message.subject[base:].partition(".")
            if not token.startswith(wanted):
                continue
            if number:
                chunks[token, int(number)] = message
            else:
                roots[token] = message
        stale: dict[str, int] = {}  # chunks older than their record's first message
        for (token, _), old in chunks.items():
            first = roots.get(token)
            if first is None or old.seq < first.seq:
                stale[token] = 0 if first is None else first.seq
        records: list[tuple[str, bytes]] = []
        for token, root in roots.items():
            if root.headers.get(STATE_OP) == "DEL":
                continue
            write = root.headers.get(STATE_WRITE)
            parts = [root.data]
            for index in range(1, int(root.headers.get(STATE_CHUNKS, "1"))):
                chunk = chunks.get((token, index))
                if chunk is None or chunk.headers.get(STATE_WRITE) != write:
                    return None
                parts.append(chunk.data)
            records.append((bytes.fromhex(token).decode("ascii"), b"".join(parts)))
        records.sort()
        return records, stale
