"""In-memory event store: for tests and embedding. Same semantics as every backend, no durability."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

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
    canonical_uuid,
    clamp_position,
    framed_size,
    normalise_expected,
    plan_append,
    proposed,
)


class MemoryEventStore(EventStore):
    """Keeps every event in lists and dicts of this process."""

    def __init__(self) -> None:
        self._log: list[RecordedEvent] = []  # index = global position - 1
        self._indexed: list[ProposedEvent] = []  # what filters look at, beside _log
        self._sizes: dict[int, int] = {}  # global position -> record bytes (see base.framed_size)
        self._by_id: dict[str, tuple[bytes, Position]] = {}  # event id -> (bytes, position)
        self._by_aggregate: dict[str, list[RecordedEvent]] = {}
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
        now = divmod(time.time_ns(), 1_000_000_000)
        for event, position in plan.new_events:
            recorded = RecordedEvent(
                global_position=position.global_position,
                revision=position.revision,
                recorded_at=Timestamp(seconds=now[0], nanos=now[1]),
            )
            recorded.envelope.MergeFromString(event.data)
            self._log.append(recorded)
            self._sizes[position.global_position] = framed_size(recorded.ByteSize())
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

    def _within(self, events: list[RecordedEvent], max_bytes: int | None) -> list[RecordedEvent]:
        """The longest prefix of `events` within `max_bytes` of records, at least one event."""
        if max_bytes is None:
            return events
        total = 0
        for count, recorded in enumerate(events):
            total += self._sizes[recorded.global_position]
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
                    budget -= self._sizes[recorded.global_position]
                    if budget < 0 and events:  # full: resume at this event
                        return ReadResult(events, position, head)
                events.append(recorded)
                if len(events) == limit:
                    return ReadResult(events, recorded.global_position, head)
            position = recorded.global_position
        return ReadResult(events, max(head, after_position), head)

    async def head_position(self) -> int:
        self._check_open()
        return len(self._log)

    async def wait_for_append(self, after_position: int, timeout: float | None = None) -> int:
        self._check_open()
        return await self._signal.wait(after_position, timeout)

    async def close(self) -> None:
        self._closed = True
        self._signal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")


__all__ = ["MemoryEventStore"]
