"""Event stores: one interface (`EventStore`), in-memory and SQLite backends, opened by URL."""

from __future__ import annotations

from pipeline_events.store.base import (
    AppendResult,
    DuplicateEventError,
    EventFilter,
    EventStore,
    ExpectedRevision,
    ExpectedState,
    InvalidEventError,
    Position,
    ProposedEvent,
    ReadResult,
    RecordedEvent,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
)
from pipeline_events.store.memory import MemoryEventStore
from pipeline_events.store.sqlite import SQLiteEventStore

__all__ = [
    "AppendResult",
    "DuplicateEventError",
    "EventFilter",
    "EventStore",
    "ExpectedRevision",
    "ExpectedState",
    "InvalidEventError",
    "MemoryEventStore",
    "Position",
    "ProposedEvent",
    "ReadResult",
    "RecordedEvent",
    "SQLiteEventStore",
    "StoreClosedError",
    "StoreError",
    "WrongExpectedRevisionError",
    "open_store",
]


async def open_store(url: str) -> EventStore:
    """Open a store by URL: `memory://`, `sqlite:///relative.db`, `sqlite:////absolute.db`.

    A `?durability=power` query on a SQLite URL fsyncs every commit.
    """
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    if parts.scheme == "memory":
        return MemoryEventStore()
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise StoreError(f"no file in store URL {url!r}")
        durability = parse_qs(parts.query).get("durability", ["process"])[0]
        if durability not in ("process", "power"):
            raise StoreError(f"durability must be 'process' or 'power', not {durability!r}")
        return await SQLiteEventStore.open(path, durability=durability)  # type: ignore[arg-type]
    raise StoreError(f"unsupported store URL {url!r}: use memory:// or sqlite:///PATH")
