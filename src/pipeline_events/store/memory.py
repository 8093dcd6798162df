"""In-memory event store: for tests and embedding. Same semantics as every backend, no durability."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from pipeline_events.store.base import (
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


class MemoryEventStore(EventStore):
    """Keeps every event in lists and dicts of this process."""

    def __init__(self) -> None:
        self._log: list[RecordedEvent] = []  # index = global position - 1
        self._indexed: list[ProposedEvent] = []  # what filters look at, beside _log
        self._records: list[bytes] = []  # index = global position - 1: base.encode_record
        self._by_id: dict[str, tuple[bytes, Position]] = {}  # event id -> (bytes, position)
        self._by_aggregate: dict[str, list[RecordedEvent]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._state: dict[str, bytes] = {}
        self._signal = HeadSignal()
        self._closed = False

    async def append(
        self,
        envelopes: Sequence[EventEnvelope | ProposedEvent],
        expected: Mapping[str, ExpectedRevision] | None = None,
    ) -> AppendResult:
        self._check_open()
        batch = proposed(envelopes)
        checks = normalise_expected(expected)
        # No await between planning and writing: the append is atomic on the event loop.
        plan = plan_append(
            batch,
            checks,
            head=len(self._log),
            stored=self._stored,
            revision_of=lambda aggregate: len(self._by_aggregate.get(aggregate, ())),
        )
        recorded_at = recorded_at_field(time.time_ns())
        for event, position in plan.new_events:
            # Kept as bytes, as SQLite keeps them, so reads relay the envelope as published.
            record = encode_record(event.data, *position, recorded_at)
            recorded = parse_records(record)[0]
            self._log.append(recorded)
            self._records.append(record)
            self._indexed.append(event)
            self._by_id[event.event_id] = (event.data, position)
            self._by_aggregate.setdefault(event.aggregate_id, []).append(recorded)
        self._signal.advance(len(self._log))
        return plan.result

    def _stored(self, batch: Sequence[ProposedEvent]) -> dict[str, tuple[bytes, Position]]:
        return {e.event_id: self._by_id[e.event_id] for e in batch if e.event_id in self._by_id}

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
        events = self._by_aggregate.get(canonical_uuid(aggregate_id, "aggregate_id"), [])
        from_revision = clamp_position(from_revision)
        if backwards:
            end = len(events) if from_revision == 0 else min(from_revision, len(events))
            selected = events[:end][::-1]
        else:
            selected = events[max(from_revision, 1) - 1 :]
        selected = selected[:limit] if limit is not None else list(selected)
        return self._within(selected, max_bytes)

    async def read_aggregate_page(
        self,
        aggregate_id: str,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int,
        max_bytes: int,
    ) -> AggregatePage:
        events = await self.read_aggregate(
            aggregate_id,
            from_revision=from_revision,
            backwards=backwards,
            limit=limit,
            max_bytes=max_bytes,
        )
        return AggregatePage(events, self._join(events))

    def _join(self, events: Sequence[RecordedEvent]) -> bytes:
        return b"".join(self._records[e.global_position - 1] for e in events)

    def _within(self, events: list[RecordedEvent], max_bytes: int | None) -> list[RecordedEvent]:
        """The longest prefix of `events` within `max_bytes` of records, at least one event."""
        if max_bytes is None:
            return events
        total = 0
        for count, recorded in enumerate(events):
            total += len(self._records[recorded.global_position - 1])
            if total > max_bytes and count > 0:
                return events[:count]
        return events

    async def read_all(
        self,
        *,
        after_position: int = 0,
        filter: EventFilter | None = None,
        limit: int = 1000,
        max_bytes: int | None = None,
    ) -> ReadResult:
        self._check_open()
        head = len(self._log)
        after_position = clamp_position(after_position)
        events: list[RecordedEvent] = []
        position = after_position
        budget = max_bytes
        for recorded, indexed in zip(
            self._log[after_position:], self._indexed[after_position:], strict=True
        ):
            if filter is None or filter.matches(indexed):
                if budget is not None:
                    budget -= len(self._records[recorded.global_position - 1])
                    if budget < 0 and events:  # full: resume at this event
                        return ReadResult(events, position, head, self._join(events))
                events.append(recorded)
                if len(events) == limit:
                    return ReadResult(events, recorded.global_position, head, self._join(events))
            position = recorded.global_position
        return ReadResult(events, max(head, after_position), head, self._join(events))

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def event_counts(self) -> dict[int, int] | None:
        self._check_open()
        counts: dict[int, int] = {}
        for event in self._indexed:
            counts[event.event_type] = counts.get(event.event_type, 0) + 1
        return counts

    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        self._check_open()
        return await self._signal.wait(after_position, timeout)

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        self._check_open()
        self._snapshots[name] = Snapshot(position, bytes(data))

    async def load_snapshot(self, name: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get(name)

    async def write_state(self, changes: Mapping[str, bytes | None]) -> None:
        self._check_open()
        for key, data in check_state_changes(changes).items():
            if data is None:
                self._state.pop(key, None)
            else:
                self._state[key] = bytes(data)

    async def read_state(
        self, prefix: str, *, after: str = "", limit: int | None = None
    ) -> list[tuple[str, bytes]]:
        self._check_open()
        found = sorted((k, v) for k, v in self._state.items() if k.startswith(prefix))
        return state_page(found, after, limit)

    async def close(self) -> None:
        self._closed = True
        self._signal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")


__all__ = ["MemoryEventStore"]
