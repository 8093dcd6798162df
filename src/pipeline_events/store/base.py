"""The event store interface, its value types and errors, and the append rules every backend shares.

Positions and revisions count from 1; 0 means "none" (an empty log, a stream
that does not exist yet), as in the contract's RecordedEvent.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2

from pipeline_events.errors import PipelineEventsError

EventEnvelope = envelope_pb2.EventEnvelope
_EventBatch = service_pb2.EventBatch
_PAYLOAD_CASES = {
    f.name: f.number - 100 for f in EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}

#: The largest position or revision a store can hold (SQLite's INTEGER is a signed 64-bit
#: integer). Requests may carry any uint64: larger values are clamped to this, so a read
#: from beyond the head is simply empty.
MAX_POSITION = (1 << 63) - 1

# EventCategory value -> the EventType values in it (the seed's grouping).
CATEGORY_TYPES: dict[int, frozenset[int]] = {
    1: frozenset({1, 2, 3}),
    2: frozenset({4, 5, 6, 7, 8, 9}),
    3: frozenset({10, 11, 12}),
    4: frozenset({13, 14, 15, 16}),
}


class ExpectedState(enum.Enum):
    """Expected-revision checks other than an exact revision."""

    ANY = "any"  # no check
    NO_STREAM = "no_stream"  # the aggregate has no events yet (same as revision 0)
    STREAM_EXISTS = "stream_exists"  # the aggregate has at least one event


#: An expected revision: an ExpectedState or the exact latest revision (0 = no stream).
ExpectedRevision = ExpectedState | int


class StoreError(PipelineEventsError):
    """Base of the store's errors."""


class InvalidEventError(StoreError, ValueError):
    """An envelope the store cannot record (missing or malformed ids)."""


class WrongExpectedRevisionError(StoreError):
    """An aggregate's revision is not what the append expected; nothing was appended."""

    def __init__(self, aggregate_id: str, expected: ExpectedRevision, actual: int):
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual
        shown = expected.value if isinstance(expected, ExpectedState) else expected
        super().__init__(f"aggregate {aggregate_id}: expected revision {shown}, actual {actual}")


class DuplicateEventError(StoreError):
    """An event id is already stored with different content; nothing was appended."""

    def __init__(self, event_id: str):
        self.event_id = event_id
        super().__init__(f"event {event_id} is already stored with different content")


class StoreClosedError(StoreError, RuntimeError):
    """The store was closed."""


class Position(NamedTuple):
    """Where an event is stored (a named tuple: one is made per appended event)."""

    global_position: int
    revision: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Positions of an appended batch, in request order."""

    positions: tuple[Position, ...]
    already_recorded: bool  # every event was a retry of one already stored


#: An event as stored: the contract's own RecordedEvent message (envelope,
#: global_position, revision, recorded_at). Stores hand out the message type
#: clients receive, so a read page is parsed in one call (see `parse_records`)
#: and relayed without copying field by field.
RecordedEvent = envelope_pb2.RecordedEvent


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    if value < _TABLED:
        return _VARINTS[value]
    if value < 1 << 21:  # global positions, for a good while: three bytes
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 1 << 28:
        return bytes(
            ((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80,
             ((value >> 14) & 0x7F) | 0x80, value >> 21)
        )  # fmt: skip
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints of 0..16383 (one or two bytes), looked up: lengths and revisions are almost always here.
_TABLED = 1 << 14
_VARINTS = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(_TABLED)]


def clamp_position(value: int) -> int:
    """A position or revision from a request (any uint64), within what a store can hold."""
    return value if value <= MAX_POSITION else MAX_POSITION


def recorded_at_field(recorded_at_ns: int) -> bytes:
    """RecordedEvent field 4 (a Timestamp), encoded; one per append, shared by its events."""
    seconds, nanos = divmod(recorded_at_ns, 1_000_000_000)
    body = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(nanos) if nanos else b""
    )
    return b"\x22" + varint(len(body)) + body


def encode_record(data: bytes, position: int, revision: int, recorded_at: bytes) -> bytes:
    """One stored event as an EventBatch `events` entry: field 1, length, RecordedEvent.

    Byte-identical to the deterministic serialization of the RecordedEvent (fields
    in number order), so a run of records concatenated is a serialized EventBatch.
    `recorded_at` is `recorded_at_field(ns)`.
    """
    size = len(data)
    body = b"".join(
        (b"\x0a", _VARINTS[size] if size < _TABLED else varint(size), data,
         b"\x10", varint(position),
         b"\x18", _VARINTS[revision] if revision < _TABLED else varint(revision),
         recorded_at)
    )  # fmt: skip
    size = len(body)
    return b"\x0a" + (_VARINTS[size] if size < _TABLED else varint(size)) + body


def read_varint(buffer: bytes, offset: int) -> tuple[int, int]:
    """(value, offset after it) of the varint at `offset`."""
    value, shift = 0, 0
    while True:
        byte = buffer[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def record_envelope(record: bytes) -> bytes:
    """The envelope bytes inside an `encode_record` record, exactly as appended."""
    _, offset = read_varint(record, 1)  # outer tag, then the record's length
    length, offset = read_varint(record, offset + 1)  # envelope tag, then its length
    return record[offset : offset + length]


def parse_records(blob: bytes | None) -> Sequence[RecordedEvent]:
    """Concatenated records (a serialized EventBatch) as RecordedEvent messages, in one parse."""
    if not blob:
        return []
    return _EventBatch.FromString(blob).events


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A server-side filter: OR within a field, AND across fields; an empty field keeps all."""

    event_types: frozenset[int] = frozenset()
    categories: frozenset[int] = frozenset()
    aggregate_ids: frozenset[str] = frozenset()
    processing_ids: frozenset[str] = frozenset()

    @property
    def type_set(self) -> frozenset[int] | None:
        """EventType values that pass both the type and the category conditions; None: any."""
        types: frozenset[int] | None = self.event_types or None
        if self.categories:
            in_categories = frozenset().union(*(CATEGORY_TYPES.get(c, ()) for c in self.categories))
            types = in_categories if types is None else types & in_categories
        return types

    @property
    def is_empty(self) -> bool:
        """True when the filter keeps every event."""
        return not (
            self.event_types or self.categories or self.aggregate_ids or self.processing_ids
        )

    def matches(self, event: ProposedEvent) -> bool:
        """Whether an event (its indexed fields) passes the filter."""
        types = self.type_set
        return (
            (types is None or event.event_type in types)
            and (not self.aggregate_ids or event.aggregate_id in self.aggregate_ids)
            and (not self.processing_ids or event.processing_id in self.processing_ids)
        )

    @classmethod
    def of(
        cls,
        *,
        event_types: Sequence[int] = (),
        categories: Sequence[int] = (),
        aggregate_ids: Sequence[str] = (),
        processing_ids: Sequence[str] = (),
    ) -> EventFilter:
        """A filter from sequences; ids are normalised to canonical lowercase UUID text."""
        return cls(
            frozenset(event_types),
            frozenset(categories),
            frozenset(canonical_uuid(i, "aggregate_ids") for i in aggregate_ids),
            frozenset(canonical_uuid(i, "processing_ids") for i in processing_ids),
        )


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A page of the global log."""

    events: Sequence[RecordedEvent]
    # Every position up to here was considered (matching or not): resume after it.
    scanned_to: int
    # The last global position when the page was read; scanned_to < head: more to read.
    head: int
    # The page's records exactly as stored, concatenated: a serialized EventBatch. The
    # server relays these bytes, so every envelope goes back exactly as it was published.
    records: bytes = b""


class AggregatePage(NamedTuple):
    """A page of one aggregate's events, and their records exactly as stored (see ReadResult)."""

    events: Sequence[RecordedEvent]
    records: bytes


def uuid_parts(text: str, what: str) -> tuple[str, bytes]:
    """(lowercase hyphenated text, 16 bytes) of any UUID text upstream accepts, parsed once."""
    # Fast path: the hyphenated layout every encoder writes; fromhex checks the digits.
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        digits = text.replace("-", "")
        try:
            blob = bytes.fromhex(digits)
        except ValueError:
            blob = b""
        if len(blob) == 16 and len(digits) == 32:  # fromhex alone would skip spaces
            return (text if text.islower() or text.isdigit() else text.lower()), blob
    try:
        parsed = uuid.UUID(text)
    except (ValueError, TypeError, AttributeError) as error:
        raise InvalidEventError(f"{what}: not a UUID: {text!r}") from error
    return str(parsed), parsed.bytes


def canonical_uuid(text: str, what: str) -> str:
    """Lowercase hyphenated form of any UUID text upstream accepts."""
    return uuid_parts(text, what)[0]


_CASES_WITH_PROCESSING_ID = frozenset(
    f.name
    for f in EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if "processing_id" in f.message_type.fields_by_name
)
_KNOWN_IDS: dict[str, tuple[str, bytes]] = {}  # recent aggregate and processing ids, parsed


def _repeated_uuid_parts(text: str, what: str) -> tuple[str, bytes]:
    """uuid_parts for ids that recur from event to event (a pipeline's, a run's): cached."""
    parts = _KNOWN_IDS.get(text)
    if parts is None:
        if len(_KNOWN_IDS) >= 4096:
            _KNOWN_IDS.clear()
        parts = _KNOWN_IDS[text] = uuid_parts(text, what)
    return parts


class ProposedEvent(NamedTuple):
    """An envelope prepared for appending: its ids (text and bytes, parsed once) and exact bytes."""

    event_id: str
    aggregate_id: str
    event_type: int
    processing_id: str  # "" when the event has none
    data: bytes
    event_blob: bytes
    aggregate_blob: bytes
    processing_blob: bytes | None

    @classmethod
    def of(cls, envelope: EventEnvelope, data: bytes | None = None) -> ProposedEvent:
        """Extract what the store indexes.

        Args:
            envelope: the envelope.
            data: its bytes exactly as a producer sent them (the server passes them,
                so they are stored and served back unchanged); None: the envelope's
                deterministic serialization.
        """
        case = envelope.WhichOneof("payload")
        processing_id, processing_blob = "", None
        if case in _CASES_WITH_PROCESSING_ID:
            processing_id = getattr(envelope, case).processing_id
            if processing_id:
                processing_id, processing_blob = _repeated_uuid_parts(
                    processing_id, "processing_id"
                )
        event_id, event_blob = uuid_parts(envelope.event_id, "event_id")
        aggregate_id, aggregate_blob = _repeated_uuid_parts(envelope.aggregate_id, "aggregate_id")
        return cls(
            event_id, aggregate_id, envelope.event_type, processing_id,
            envelope.SerializeToString(deterministic=True) if data is None else data,
            event_blob, aggregate_blob, processing_blob,
        )  # fmt: skip


@dataclass(slots=True)
class AppendPlan:
    """What one append writes, decided by `plan_append`."""

    result: AppendResult
    new_events: list[tuple[ProposedEvent, Position]] = field(default_factory=list)


def plan_append(
    batch: Sequence[ProposedEvent],
    expected: Mapping[str, ExpectedRevision],
    *,
    head: int,
    stored: Callable[[Sequence[ProposedEvent]], Mapping[str, tuple[bytes, Position]]],
    revision_of: Callable[[str], int],
) -> AppendPlan:
    """The rules of an append, shared by every backend (run inside its atomic section).

    - an event id stored with the same envelope is a retry: it keeps its original
      position and is not written again (the same bytes, or other bytes that
      parse to the same envelope: a producer in another language may order map
      entries differently); with another envelope it is a conflict;
    - expected revisions are checked only for aggregates that get new events,
      so retrying a batch that succeeded succeeds;
    - new events get the next global positions and contiguous revisions.

    Args:
        head: the current last global position.
        stored: looks up which of the batch's events are already stored:
            event id -> (stored envelope bytes, position).
        revision_of: an aggregate's current latest revision (0: no events).

    Raises:
        InvalidEventError, DuplicateEventError, WrongExpectedRevisionError.
    """
    if len({event.event_id for event in batch}) != len(batch):
        raise InvalidEventError("the same event id appears twice in one batch")
    existing = stored(batch)
    fresh: Sequence[ProposedEvent] = batch
    if existing:  # a retry, or a conflict: keep the stored positions of stored ids
        fresh = []
        for event in batch:
            if event.event_id in existing:
                if not same_envelope(existing[event.event_id][0], event.data):
                    raise DuplicateEventError(event.event_id)
            else:
                fresh.append(event)
        if not fresh:
            positions = tuple(existing[event.event_id][1] for event in batch)
            return AppendPlan(AppendResult(positions, already_recorded=True))

    revisions: dict[str, int] = {}
    for event in fresh:
        if event.aggregate_id not in revisions:
            actual = revision_of(event.aggregate_id)
            check = expected.get(event.aggregate_id, ExpectedState.ANY)
            if not _satisfies(check, actual):
                raise WrongExpectedRevisionError(event.aggregate_id, check, actual)
            revisions[event.aggregate_id] = actual
    new_events = []
    next_position = head
    for event in fresh:
        next_position += 1
        revision = revisions[event.aggregate_id] = revisions[event.aggregate_id] + 1
        new_events.append((event, Position(next_position, revision)))
    if existing:
        assigned = {event.event_id: position for event, position in new_events}
        positions = tuple(
            existing[e.event_id][1] if e.event_id in existing else assigned[e.event_id]
            for e in batch
        )
    else:
        positions = tuple(position for _, position in new_events)
    return AppendPlan(AppendResult(positions, already_recorded=False), new_events)


def same_envelope(stored: bytes, proposed: bytes) -> bool:
    """Whether two envelope encodings are the same envelope (the same bytes, or equal once
    parsed: field order, map order and varint forms may differ between encoders)."""
    if stored == proposed:
        return True
    try:
        return EventEnvelope.FromString(stored) == EventEnvelope.FromString(proposed)
    except Exception:  # undecodable: then only the bytes could have said "the same"
        return False


def _satisfies(expected: ExpectedRevision, actual: int) -> bool:
    if expected is ExpectedState.ANY:
        return True
    if expected is ExpectedState.NO_STREAM:
        return actual == 0
    if expected is ExpectedState.STREAM_EXISTS:
        return actual > 0
    return actual == expected


def proposed(events: Sequence[EventEnvelope | ProposedEvent]) -> list[ProposedEvent]:
    """The batch as ProposedEvents (envelopes are serialized and their ids parsed)."""
    return [e if type(e) is ProposedEvent else ProposedEvent.of(e) for e in events]  # type: ignore[arg-type]


def normalise_expected(
    expected: Mapping[str, ExpectedRevision] | None,
) -> dict[str, ExpectedRevision]:
    """Expected revisions keyed by canonical aggregate id."""
    if not expected:
        return {}
    normalised: dict[str, ExpectedRevision] = {}
    for aggregate_id, check in expected.items():
        if not isinstance(check, ExpectedState) and (not isinstance(check, int) or check < 0):
            raise InvalidEventError(
                f"expected revision for {aggregate_id} must be >= 0 or an ExpectedState"
            )
        normalised[_repeated_uuid_parts(aggregate_id, "expected revision aggregate id")[0]] = check
    return normalised


class HeadSignal:
    """The last committed global position, and a way to wait for it to move (event-loop side)."""

    def __init__(self, head: int = 0) -> None:
        self.head = head
        self.closed = False
        self._advanced = asyncio.Event()

    def advance(self, head: int) -> None:
        """Record a new head and wake every waiter."""
        if head > self.head:
            self.head = head
            self._wake()

    def close(self) -> None:
        """Wake every waiter for good."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def wait(self, after_position: int, timeout: float | None) -> int:
        """Wait until the head passes `after_position`, the timeout, or close; return the head."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.head <= after_position and not self.closed:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._advanced.wait(), remaining)
            except TimeoutError:
                break
        return self.head


class Snapshot(NamedTuple):
    """A read model's saved state: its bytes, as of a global position of the log."""

    position: int
    data: bytes


#: Longest state key; keys are printable ASCII without spaces (they name NATS subjects).
MAX_STATE_KEY = 512
_STATE_KEY_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"
)


def state_page(
    records: list[tuple[str, bytes]], after: str, limit: int | None
) -> list[tuple[str, bytes]]:
    """`read_state`'s page of records already in key order (for stores that read them all)."""
    check_state_limit(limit)
    if after:
        records = [record for record in records if record[0] > after]
    return records if limit is None else records[:limit]


def check_state_changes(changes: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """`write_state`'s changes checked (keys, values bytes or None) and copied, before any
    store changes anything: a bad one raises StoreError and nothing is written."""
    checked: dict[str, bytes | None] = {}
    for key, data in changes.items():
        check_state_key(key)
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"state record {key!r}: bytes or None, not {type(data).__name__}")
        checked[key] = None if data is None else bytes(data)
    return checked


def check_state_limit(limit: int | None) -> None:
    """`read_state`'s limit: None, or an int >= 0."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise StoreError(f"a state page's limit is None or an int >= 0, not {limit!r}")


def check_state_key(key: str) -> str:
    """`key` if it may name a state record (ASCII letters, digits, `._-/`, at most 512)."""
    if not key or len(key) > MAX_STATE_KEY or not _STATE_KEY_CHARACTERS.issuperset(key):
        raise StoreError(f"state key {key[:80]!r}: 1-{MAX_STATE_KEY} of [A-Za-z0-9._/-]")
    return key


class EventStore(abc.ABC):
    """An append-only event log, per aggregate and global. All methods are coroutines."""

    @abc.abstractmethod
    async def append(
        self,
        envelopes: Sequence[EventEnvelope | ProposedEvent],
        expected: Mapping[str, ExpectedRevision] | None = None,
    ) -> AppendResult:
        """Append a batch atomically (all or nothing); see `plan_append` for the rules.

        Each item is an envelope, or the `ProposedEvent.of(envelope)` of one made
        ahead of time (its bytes and parsed ids), which the store takes as it is.
        """

    @abc.abstractmethod
    async def read_aggregate(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> list[RecordedEvent]:
        """One aggregate's events from `from_revision` (inclusive; 0: the first forwards,
        the latest backwards) in the chosen direction.

        `max_bytes` bounds the page by the size of its records (each event framed as
        an EventBatch entry, exactly as a response carries it); the first event is
        always returned, whatever its size, so a page is never empty while events remain.
        """

    @abc.abstractmethod
    async def read_aggregate_page(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int,
        max_bytes: int,
    ) -> AggregatePage:
        """A page of `read_aggregate`, with its records exactly as stored (for relaying)."""

    @abc.abstractmethod
    async def read_all(
        self,
        *,
        after_position: int = 0,
        filter: EventFilter | None = None,
        limit: int = 1000,
        max_bytes: int | None = None,
    ) -> ReadResult:
        """Events with a global position greater than `after_position` that pass the filter.

        `max_bytes` bounds the page as in `read_aggregate` (at least one event).
        """

    @abc.abstractmethod
    async def head_position(self) -> int:
        """The last global position (0: empty)."""

    @abc.abstractmethod
    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        """Wait until the head passes `after_position` (or the timeout); return the head."""

    @abc.abstractmethod
    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        """Keep the snapshot `name` (replacing the one saved before): `data` as of `position`.

        Snapshots are derived data beside the log (read models' states); they are
        never part of it, and losing one only costs a rebuild from the log.
        """

    @abc.abstractmethod
    async def load_snapshot(self, name: str) -> Snapshot | None:
        """The snapshot `name` saved last (None: there is none)."""

    @abc.abstractmethod
    async def write_state(self, changes: Mapping[str, bytes | None]) -> None:
        """Set (bytes) or remove (None) records of the service's own state, all or none.

        State records (consumer groups: their settings, checkpoints and parked events)
        live beside the log, never in it; unlike snapshots they are not derived, so the
        store keeps them as durably as its events. Keys are `check_state_key`'s.
        """

    @abc.abstractmethod
    async def read_state(
        self, prefix: str, *, after: str = "", limit: int | None = None
    ) -> list[tuple[str, bytes]]:
        """State records whose key starts with `prefix`, in key order: those whose key
        sorts after `after` (if given), at most `limit` of them (None: all)."""

    async def event_counts(self) -> dict[int, int] | None:
        """Events in the log by EventType value (None: this store cannot count them
        cheaply; the default)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release resources; pending appends are finished first."""

    async def __aenter__(self) -> EventStore:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
