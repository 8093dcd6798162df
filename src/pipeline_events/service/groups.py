"""Consumer groups: subscriptions the server keeps for the members sharing them, with
acknowledgements, redelivery with backoff, and parked events.

Built on the store interface, so every backend has the same semantics: a group's
settings and checkpoint, and each parked event, are service-state records
(`EventStore.write_state`), written together in one atomic write so a checkpoint is
never stored past an event whose parking is not. The rest lives in memory and is
rebuilt from the checkpoint after a restart: delivery is at least once.

One `GroupRuntime` per group runs one dispatcher task. It reads the log after the
last position it read (at most `MAX_OUTSTANDING` events ahead of the checkpoint, so
memory is bounded), hands each event to the member with room, and times every
delivery (ack timeout) and every failed event's backoff. Everything runs on the
event loop: acks and nacks change plain dictionaries and wake the task.

The events parking records (ResourceExhausted on `GROUPS_PIPELINE`) are never
delivered to a group unless its filter names that pipeline: a group whose handler
fails everything would otherwise park its own parking events for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from pipeline_events import adapter, domain
from pipeline_events.service.errors import RpcError, bad_request, error_info
from pipeline_events.service.wire import field_bytes, length_delimited, varint_field
from pipeline_events.store import (
    EventFilter,
    EventStore,
    ExpectedState,
    StoreError,
    WrongExpectedRevisionError,
)

_log = logging.getLogger(__name__)

CONSUMER_GROUP_NOT_FOUND = "CONSUMER_GROUP_NOT_FOUND"  # ErrorInfo reasons
CONSUMER_GROUP_EXISTS = "CONSUMER_GROUP_EXISTS"
#: The pipeline (aggregate) parking events go to, one "run" (processing id) per group.
GROUPS_PIPELINE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pipeline-events:consumer-groups")
GROUPS_PIPELINE_NAME = "pipeline-events consumer groups"
_GROUPS_PIPELINE_ID = str(GROUPS_PIPELINE)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
MAX_GROUPS = 1000
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_BACKOFF_MS = (1_000, 5_000, 30_000)
DEFAULT_ACK_TIMEOUT_MS = 30_000
DEFAULT_MAX_IN_FLIGHT = 100
#: Events a group reads past its oldest event not done, at most: what memory one stuck
#: event (failing with a long backoff) can cost, and how far the others may run ahead.
MAX_OUTSTANDING = 10_000
READ_PAGE = 500  # events per store read
CHECKPOINT_SECONDS = 0.2  # the stored checkpoint lags the live one by about this much
ATTEMPTS_KEPT = 32  # delivery history kept per parked event
PARKED_PAGE = 100  # parked records read (or removed) per store call
MAX_REPLAY = 10_000  # parked events one ReplayParkedEvents gives back at most
_GROUP_KEY = "group/"
_PARKED_KEY = "parked/"


def group_key(name: str) -> str:
    return f"{_GROUP_KEY}{name}"


def parked_prefix(name: str) -> str:
    return f"{_PARKED_KEY}{name}/"


def parked_key(name: str, position: int) -> str:
    return f"{parked_prefix(name)}{position:020d}"


def not_found(name: str) -> RpcError:
    return error_info(
        code_pb2.NOT_FOUND, f"no consumer group {name!r}", CONSUMER_GROUP_NOT_FOUND, group=name
    )


def check_name(name: str, field_name: str = "name") -> str:
    """`name` if it may name a new group; otherwise INVALID_ARGUMENT."""
    if not NAME.fullmatch(name):
        raise bad_request(
            [(field_name, "1-200 of A-Z a-z 0-9 . _ -, starting with a letter or digit")]
        )
    return name


def effective(settings: pb.ConsumerGroupSettings) -> pb.ConsumerGroupSettings:
    """`settings` with every default filled in (what a group shows and compares)."""
    filled = pb.ConsumerGroupSettings()
    filled.CopyFrom(settings)
    filled.max_deliveries = settings.max_deliveries or DEFAULT_MAX_DELIVERIES
    if not settings.backoff_ms:
        filled.backoff_ms.extend(DEFAULT_BACKOFF_MS)
    filled.ack_timeout_ms = settings.ack_timeout_ms or DEFAULT_ACK_TIMEOUT_MS
    filled.max_in_flight = settings.max_in_flight or DEFAULT_MAX_IN_FLIGHT
    return filled


def _now_timestamp() -> timestamp_pb2.Timestamp:
    return _timestamp(time.time_ns())


def _timestamp(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class Outstanding:
    """One event read by a group and not done yet (acked, skipped or parked)."""

    __slots__ = (
        "attempts",
        "deadline",
        "deliveries",
        "done",
        "event_id",
        "member",
        "position",
        "record",
        "replayed",
        "sent",
        "turn",
    )  # fmt: skip

    def __init__(self, position: int, event_id: str, record: bytes, replayed: bool = False):
        self.position = position
        self.event_id = event_id
        self.record = record  # the RecordedEvent's bytes exactly as stored
        self.replayed = replayed  # a parked event given back (at or before the checkpoint)
        self.deliveries = 0
        self.member: Member | None = None  # who holds it now
        self.sent = False  # the member's stream has carried it
        self.deadline = 0.0
        self.turn = 0  # bumped by every hand-out and release: stale timers are ignored
        self.done = False
        # (delivered at, ns since the epoch; member; outcome, "" while it is held): protos
        # are built only for a parking (a Timestamp per delivery costs more than the rest).
        self.attempts: list[list[Any]] = []


def _refillable(member: Member) -> bool:
    return member.room > 0 and (member.room >= member.max_in_flight // 4 or not member.held)


class Member:
    """One Consume stream: what it holds, and the events waiting to be sent to it."""

    def __init__(self, member_id: str, name: str, max_in_flight: int):
        self.id = member_id
        self.name = name
        self.max_in_flight = max_in_flight
        self.held: dict[int, Outstanding] = {}  # by position; sent or about to be
        self.unsent: list[Outstanding] = []
        self.wake = asyncio.Event()
        self.ended: RpcError | None = None  # set: the stream ends with this status
        self.left = False  # it said Leave: what it holds goes back uncounted

    @property
    def room(self) -> int:
        return self.max_in_flight - len(self.held)

    def end(self, error: RpcError) -> None:
        if self.ended is None:
            self.ended = error
        self.wake.set()

    def take(self, page_bytes: int) -> list[bytes]:
        """ConsumeResponse messages (serialized) carrying what waits to be sent."""
        messages: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for item in self.unsent:
            if item.member is not self or item.done or item.sent:
                continue  # acked, taken back, or listed twice (redelivered to it) meanwhile
            item.sent = True
            delivery = length_delimited(
                1, length_delimited(1, item.record) + varint_field(2, item.deliveries)
            )
            if chunk and size + len(delivery) > page_bytes:
                messages.append(length_delimited(2, b"".join(chunk)))
                chunk, size = [], 0
            chunk.append(delivery)
            size += len(delivery)
        if chunk:
            messages.append(length_delimited(2, b"".join(chunk)))
        self.unsent = []
        return messages


@dataclass
class GroupRuntime:
    """One group's live state and its dispatcher."""

    store: EventStore
    record: pb.ConsumerGroup  # what is stored: name, settings, start, checkpoint, created
    page_bytes: int
    parked: dict[int, str] = field(default_factory=dict)  # position -> event id

    def __post_init__(self) -> None:
        self.name = self.record.name
        self.checkpoint = self.record.checkpoint
        self.stored_checkpoint = self.checkpoint
        self.read_to = self.checkpoint  # every event up to here has been read
        self.head = self.checkpoint
        self.outstanding: dict[int, Outstanding] = {}
        self.order: deque[int] = deque()  # positions read, oldest first (not replayed ones)
        self.by_id: dict[str, Outstanding] = {}
        self.ready: deque[Outstanding] = deque()
        # A heap of (due, tie-breaker, turn, event): an entry whose turn is no longer the
        # event's is stale and skipped. Ack timeouts need no timers of their own: each
        # member's `held` is in delivery order, so its first entry expires first.
        self.retries: list[tuple[float, int, int, Outstanding]] = []
        self._ties = itertools.count()
        self.members: dict[str, Member] = {}
        self.writes: dict[str, bytes | None] = {}  # state changes not stored yet
        self.parkings: list[domain.DomainEvent] = []  # their events, appended with them
        self.wake = asyncio.Event()
        self.last_flush = 0.0
        # One flush at a time: a reader of parked records flushes first, and must not
        # find the state half-way through the dispatcher's own flush.
        self._flushing = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._ids = itertools.count(1)
        self.configure(self.record.settings)

    def configure(self, settings: pb.ConsumerGroupSettings) -> None:
        self.record.settings.CopyFrom(effective(settings))
        s = self.record.settings
        self.max_deliveries = s.max_deliveries
        self.backoff = [ms / 1000 for ms in s.backoff_ms]
        self.ack_timeout = s.ack_timeout_ms / 1000
        self.max_in_flight = s.max_in_flight
        f = s.filter
        self.filter = EventFilter.of(
            event_types=list(f.event_types),
            categories=list(f.categories),
            aggregate_ids=list(f.aggregate_ids),
            processing_ids=list(f.processing_ids),
        )
        self.skip_own = _GROUPS_PIPELINE_ID not in f.aggregate_ids
        for member in self.members.values():
            member.max_in_flight = min(member.max_in_flight, self.max_in_flight)
        self.wake.set()

    # --- what callers see -------------------------------------------------------------

    def describe(self, head: int = 0) -> pb.ConsumerGroup:
        """The group with its progress; `head`: the log's head if the caller knows it."""
        self.head = max(self.head, head)
        shown = pb.ConsumerGroup()
        shown.CopyFrom(self.record)
        shown.checkpoint = self.checkpoint
        shown.head = self.head
        shown.in_flight = sum(len(m.held) for m in self.members.values())
        shown.waiting_retry = sum(
            1 for _, _, turn, o in self.retries if o.turn == turn and not o.done
        )
        shown.parked = len(self.parked)
        shown.members = len(self.members)
        return shown

    def join(self, max_in_flight: int, name: str) -> Member:
        member_id = f"{self.name}-{next(self._ids)}"
        limit = min(max_in_flight or self.max_in_flight, self.max_in_flight)
        member = Member(member_id, name or member_id, limit)
        self.members[member_id] = member
        self.wake.set()
        return member

    def leave(self, member: Member, *, counted: bool = True) -> None:
        """The member's stream ended: what it held goes to the others.

        `counted` False (it said Leave, or the server is stopping): its deliveries are
        not held against the events, so a restart never parks an event. A delivery that
        never reached the member is not counted either way.
        """
        if self.members.pop(member.id, None) is None:
            return
        outcome = "member left" if counted else "handed back"
        for item in list(member.held.values()):
            delivered = item.sent
            self._release(item, outcome)
            if counted and delivered:
                self._failed(item, outcome, retry_now=True)
            else:
                item.deliveries -= 1
                item.attempts.pop()
                self.ready.appendleft(item)
        self.wake.set()

    def ack(self, event_ids: Iterable[str]) -> None:
        """Done, whoever acknowledges them (a late ack of a redelivered event counts too)."""
        for event_id in event_ids:
            item = self.by_id.get(event_id)
            if item is not None:
                self._release(item)
                self._done(item)
        self.wake.set()

    def nack(self, member: Member, event_ids: Iterable[str], action: int, reason: str) -> None:
        for event_id in event_ids:
            item = self.by_id.get(event_id)
            if item is None or item.member is not member:
                continue  # not this member's to fail (any more)
            self._release(item, reason)
            if action == pb.NACK_ACTION_SKIP:
                self._done(item)
            elif action == pb.NACK_ACTION_PARK:
                self._park(item, reason or "parked by the handler")
            else:
                self._failed(item, reason or "failed")
        self.wake.set()

    # --- the dispatcher ---------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"consumer-group {self.name}")

    async def stop(self, error: RpcError | None = None) -> None:
        """End the dispatcher (and every member's stream with `error`), storing progress."""
        self.closed = True
        for member in self.members.values():
            if error is not None:
                member.end(error)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if error is None:  # deleted groups store nothing more
            with contextlib.suppress(StoreError):
                await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            try:
                await self._step(loop)
            except StoreError as error:
                _log.warning("consumer group %s: %s (retrying in 1 s)", self.name, error)
                await asyncio.sleep(1.0)
            except Exception:  # a bug must not freeze the group silently
                _log.exception("consumer group %s: dispatcher failed (retrying in 1 s)", self.name)
                await asyncio.sleep(1.0)

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        self.wake.clear()
        now = loop.time()
        self._expire(now)
        self._due_retries(now)
        room = sum(max(m.room, 0) for m in self.members.values())
        ahead = len(self.order)  # events read since the oldest one not done
        if room > len(self.ready) and ahead < MAX_OUTSTANDING:
            await self._read(min(READ_PAGE, MAX_OUTSTANDING - ahead))
        self._dispatch(now)
        self._advance()
        moved = self.checkpoint != self.stored_checkpoint
        if self.writes or (moved and now - self.last_flush >= CHECKPOINT_SECONDS):
            await self.flush()
        # Events wanted: room for them, and within the read-ahead bound (past it, waiting
        # for an append or returning at once would spin the loop: it waits for a wake).
        wanted = room > len(self.ready) and len(self.order) < MAX_OUTSTANDING
        await self._wait(loop, wanted)

    async def _read(self, limit: int) -> None:
        page = await self.store.read_all(
            after_position=self.read_to,
            filter=self.filter,
            limit=limit,
            max_bytes=self.page_bytes,
        )
        self.head = max(self.head, page.head)
        records = field_bytes(page.records, 1) if page.events else []
        for event, record in zip(page.events, records, strict=True):
            if self.skip_own and event.envelope.aggregate_id == _GROUPS_PIPELINE_ID:
                continue
            item = Outstanding(event.global_position, event.envelope.event_id, record)
            self.outstanding[item.position] = item
            self.order.append(item.position)
            self.by_id[item.event_id] = item
            self.ready.append(item)
        self.read_to = page.scanned_to

    def _dispatch(self, now: float) -> None:
        """Hand ready events out, round robin over the members with room.

        A member is refilled once a quarter of its window is free (or it holds nothing),
        so deliveries and acks travel in batches rather than one event per message.
        """
        members = [m for m in self.members.values() if m.ended is None and _refillable(m)]
        wall_ns = time.time_ns()
        while self.ready and members:
            for member in list(members):
                if not self.ready:
                    break
                item = self.ready.popleft()
                if item.done:
                    continue
                item.member = member
                item.sent = False
                item.deliveries += 1
                item.turn += 1
                item.deadline = now + self.ack_timeout
                item.attempts.append([wall_ns, member.name, ""])
                member.held[item.position] = item
                member.unsent.append(item)
                member.wake.set()
                if member.room <= 0:
                    members.remove(member)

    def _expire(self, now: float) -> None:
        for member in list(self.members.values()):
            while member.held:
                item = next(iter(member.held.values()))
                if item.deadline > now:
                    break
                self._release(item, "ack timeout")
                self._failed(item, "ack timeout")

    def _next_timeout(self) -> float | None:
        firsts = [next(iter(m.held.values())).deadline for m in self.members.values() if m.held]
        return min(firsts) if firsts else None

    def _due_retries(self, now: float) -> None:
        due = []
        while self.retries and self.retries[0][0] <= now:
            _, _, turn, item = heapq.heappop(self.retries)
            if item.turn == turn and not item.done:
                due.append(item)
        self.ready.extendleft(reversed(due))  # before new events: the checkpoint moves on

    async def _wait(self, loop: asyncio.AbstractEventLoop, want_events: bool) -> None:
        if self.wake.is_set() or (want_events and self.read_to < self.head):
            return  # more to do now (the head may have been learnt elsewhere: describe)
        next_retry = self.retries[0][0] if self.retries else None
        due = [t for t in (self._next_timeout(), next_retry) if t is not None]
        delay: float | None = min(due) - loop.time() if due else None
        if self.checkpoint != self.stored_checkpoint:
            delay = CHECKPOINT_SECONDS if delay is None else min(delay, CHECKPOINT_SECONDS)
        waits = {asyncio.ensure_future(self.wake.wait())}
        appended = None
        if want_events:
            appended = asyncio.ensure_future(self.store.wait_for_append(self.read_to, 5.0))
            waits.add(appended)
        try:
            await asyncio.wait(
                waits, timeout=None if delay is None else max(delay, 0.0),
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if appended is not None and appended.done():
                self.head = max(self.head, appended.result())
        finally:
            for task in waits:
                task.cancel()
        if not self.members and not self.wake.is_set() and self.read_to >= self.head:
            # Nobody to deliver to: learn the head now and then, for `describe`.
            with contextlib.suppress(StoreError):
                self.head = max(self.head, await self.store.head_position())

    # --- outcomes ---------------------------------------------------------------------

    def _release(self, item: Outstanding, outcome: str = "acknowledged") -> None:
        """Take the event back from its member, noting how the delivery ended."""
        member = item.member
        if member is not None:
            member.held.pop(item.position, None)
            if item.attempts and not item.attempts[-1][2]:
                item.attempts[-1][2] = outcome
            item.member = None
            item.turn += 1

    def _failed(self, item: Outstanding, reason: str, *, retry_now: bool = False) -> None:
        if item.deliveries >= self.max_deliveries:
            self._park(item, reason)
            return
        delay = 0.0 if retry_now else self.backoff[min(item.deliveries, len(self.backoff)) - 1]
        if delay <= 0:
            self.ready.appendleft(item)
        else:
            due = asyncio.get_running_loop().time() + delay
            heapq.heappush(self.retries, (due, next(self._ties), item.turn, item))

    def _done(self, item: Outstanding, *, parking: bool = False) -> None:
        if item.done:
            return
        item.done = True
        self.outstanding.pop(item.position, None)
        if self.by_id.get(item.event_id) is item:
            del self.by_id[item.event_id]
        if item.replayed and not parking:  # its parked record goes only now
            self.parked.pop(item.position, None)
            self.writes[parked_key(self.name, item.position)] = None

    def _park(self, item: Outstanding, reason: str) -> None:
        parked = pb.ParkedEvent(
            reason=reason[:4096],
            parked_at=_now_timestamp(),
            attempts=[
                pb.DeliveryAttempt(delivered_at=_timestamp(at), member=name, outcome=outcome)
                for at, name, outcome in item.attempts[-ATTEMPTS_KEPT:]
            ],
            deliveries=item.deliveries,
        )
        # The record exactly as stored (field 1), before the rest: parsing either way.
        self.writes[parked_key(self.name, item.position)] = (
            length_delimited(1, item.record) + parked.SerializeToString()
        )
        self.parked[item.position] = item.event_id
        self.parkings.append(
            domain.ResourceExhausted.new(
                GROUPS_PIPELINE,
                uuid.uuid5(GROUPS_PIPELINE, self.name),
                "consumer_group_deliveries",
                item.deliveries,
                self.max_deliveries,
                f"consumer group {self.name} parked event {item.event_id} (position"
                f" {item.position}) after {item.deliveries} deliveries: {reason}"[:65536],
            )
        )
        self._done(item, parking=True)  # a replayed event's record is replaced, not removed

    def _advance(self) -> None:
        """The checkpoint: the position before the oldest event not done (replays aside)."""
        order = self.order
        while order and order[0] not in self.outstanding:
            order.popleft()
        self.checkpoint = max(self.checkpoint, order[0] - 1 if order else self.read_to)

    async def flush(self) -> None:
        """Store the checkpoint with the parkings and removals made since the last flush."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        self._advance()
        writes, self.writes = self.writes, {}
        parkings, self.parkings = self.parkings, []
        checkpoint = self.checkpoint
        stored = pb.ConsumerGroup()
        stored.CopyFrom(self.record)
        stored.checkpoint = checkpoint
        writes.pop(group_key(self.name), None)
        writes[group_key(self.name)] = stored.SerializeToString()  # last, see below
        try:
            if parkings:
                await _record_parkings(self.store, parkings)
            # In writes of PARKED_PAGE records (a NATS batch holds 1,000 messages), the
            # checkpoint last: never stored past a parking that is not. Written again
            # after a failure, the records that did land are simply the same again.
            changes = list(writes.items())
            for start in range(0, len(changes), PARKED_PAGE):
                await self.store.write_state(dict(changes[start : start + PARKED_PAGE]))
        except StoreError:
            writes.pop(group_key(self.name))
            self.writes = {**writes, **self.writes}  # again next time, newest last
            self.parkings = parkings + self.parkings
            raise
        self.stored_checkpoint = checkpoint
        self.last_flush = asyncio.get_running_loop().time()

    # --- parked events ----------------------------------------------------------------

    async def parked_records(
        self, after_position: int = 0, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        """(position, ParkedEvent as stored) in position order: after `after_position`, at
        most `limit` (the store reads only that page)."""
        await self.flush()
        prefix = parked_prefix(self.name)
        after = parked_key(self.name, after_position) if after_position else ""
        return [
            (int(key.removeprefix(prefix)), data)
            for key, data in await self.store.read_state(prefix, after=after, limit=limit)
        ]

    def chosen(self, event_ids: Sequence[str]) -> list[int]:
        """Positions of the parked events named (every one when none is)."""
        if not event_ids:
            return sorted(self.parked)
        wanted = set(event_ids)
        return sorted(p for p, event_id in self.parked.items() if event_id in wanted)

    async def replay(self, event_ids: Sequence[str]) -> int:
        """Give parked events back (at most MAX_REPLAY per call: what memory it may take)."""
        positions = set(self.chosen(event_ids)) - set(self.outstanding)
        replayed, after = 0, 0
        while positions and replayed < MAX_REPLAY:
            page = await self.parked_records(after, limit=PARKED_PAGE)
            if not page:
                break
            for position, data in page:
                if position not in positions or replayed >= MAX_REPLAY:
                    continue
                record = field_bytes(data, 1)[0]
                item = Outstanding(position, self.parked[position], record, replayed=True)
                self.outstanding[position] = item
                self.by_id[item.event_id] = item
                self.ready.append(item)
                positions.discard(position)
                replayed += 1
            after = page[-1][0]
        self.wake.set()
        return replayed

    async def discard(self, event_ids: Sequence[str]) -> int:
        positions = [p for p in self.chosen(event_ids) if p not in self.outstanding]
        for position in positions:
            del self.parked[position]
            self.writes[parked_key(self.name, position)] = None
        await self.flush()
        return len(positions)


async def _record_parkings(store: EventStore, parkings: list[domain.DomainEvent]) -> None:
    """Append the parkings' events, creating the groups' pipeline the first time."""
    created = domain.PipelineCreated.new(
        GROUPS_PIPELINE, GROUPS_PIPELINE_NAME, 0, "pipeline-events"
    )
    with contextlib.suppress(WrongExpectedRevisionError):  # it exists already
        await store.append(
            [adapter.to_envelope(created)], {str(GROUPS_PIPELINE): ExpectedState.NO_STREAM}
        )
    envelopes = [adapter.to_envelope(event) for event in parkings]
    for start in range(0, len(envelopes), PARKED_PAGE):
        await store.append(envelopes[start : start + PARKED_PAGE])


class ConsumerGroups:
    """Every group of one store: created, loaded at start, and served."""

    def __init__(self, store: EventStore, page_bytes: int):
        self.store = store
        self.page_bytes = page_bytes
        self.groups: dict[str, GroupRuntime] = {}

    async def start(self) -> None:
        """Load every group with its checkpoint and parked events; start the dispatchers."""
        parked: dict[str, dict[int, str]] = {}
        after = ""
        while page := await self.store.read_state(_PARKED_KEY, after=after, limit=PARKED_PAGE):
            for key, data in page:  # a page at a time: parked events may be large
                name, _, position = key.removeprefix(_PARKED_KEY).rpartition("/")
                event_id = pb.ParkedEvent.FromString(data).event.envelope.event_id
                parked.setdefault(name, {})[int(position)] = event_id
            after = page[-1][0]
        for _key, data in await self.store.read_state(_GROUP_KEY):
            record = pb.ConsumerGroup.FromString(data)
            runtime = GroupRuntime(self.store, record, self.page_bytes, parked.get(record.name, {}))
            self.groups[record.name] = runtime
            runtime.start()

    async def close(self) -> None:
        for runtime in self.groups.values():
            await runtime.stop()

    def get(self, name: str) -> GroupRuntime:
        runtime = self.groups.get(name)
        if runtime is None:
            raise not_found(name)
        return runtime

    async def create(self, request: pb.CreateConsumerGroupRequest) -> tuple[pb.ConsumerGroup, bool]:
        name = check_name(request.name)
        settings = effective(request.settings)
        existing = self.groups.get(name)
        if existing is not None:
            if existing.record.settings == settings:
                return existing.describe(), False
            raise error_info(
                code_pb2.ALREADY_EXISTS,
                f"consumer group {name!r} exists with other settings (UpdateConsumerGroup"
                " changes them)",
                CONSUMER_GROUP_EXISTS,
                group=name,
            )
        if len(self.groups) >= MAX_GROUPS:
            raise error_info(
                code_pb2.RESOURCE_EXHAUSTED,
                f"this server holds {MAX_GROUPS} consumer groups, the most it may",
                "TOO_MANY_CONSUMER_GROUPS",
            )
        start = request.WhichOneof("start")
        if start == "from_end":
            start_after = await self.store.head_position()
        else:
            start_after = request.after_position if start == "after_position" else 0
        record = pb.ConsumerGroup(
            name=name, settings=settings, start_after=start_after, checkpoint=start_after,
            created_at=_now_timestamp(),
        )  # fmt: skip
        if name in self.groups:  # created by a concurrent call while the head was read
            return await self.create(request)
        runtime = GroupRuntime(self.store, record, self.page_bytes)
        self.groups[name] = runtime
        try:
            await self.store.write_state({group_key(name): record.SerializeToString()})
        except StoreError:
            del self.groups[name]
            raise
        runtime.start()
        return runtime.describe(), True

    async def update(self, name: str, settings: pb.ConsumerGroupSettings) -> pb.ConsumerGroup:
        runtime = self.get(name)
        runtime.configure(settings)
        await runtime.flush()
        return runtime.describe()

    async def delete(self, name: str) -> None:
        runtime = self.get(name)
        del self.groups[name]
        await runtime.stop(not_found(name))
        try:
            # Its parked records a page at a time (one write holds at most PARKED_PAGE),
            # then the group: stopped half-way, the group is still there to delete again.
            while page := await self.store.read_state(parked_prefix(name), limit=PARKED_PAGE):
                await self.store.write_state(dict.fromkeys(key for key, _ in page))
            await self.store.write_state({group_key(name): None})
        except StoreError:
            # Still stored: served again as stored, so the caller's retry finds it.
            record = pb.ConsumerGroup()
            record.CopyFrom(runtime.record)
            record.checkpoint = runtime.stored_checkpoint
            again = GroupRuntime(self.store, record, self.page_bytes, runtime.parked)
            self.groups[name] = again
            again.start()
            raise
