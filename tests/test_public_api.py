"""The public API is pinned: a change here is a deliberate, reviewed change."""

from __future__ import annotations

import pipeline_events.store
from pipeline_events.codecs import rust_json

STORE = [
    "AggregatePage", "AppendResult", "DuplicateEventError", "EventFilter", "EventStore", "ExpectedRevision",
    "ExpectedState", "InvalidEventError", "MemoryEventStore", "Position", "ProposedEvent", "ReadResult",
    "RecordedEvent", "SQLiteEventStore", "Snapshot", "StoreClosedError", "StoreError", "StoreLockedError",
    "WrongExpectedRevisionError", "open_store", "parse_store_url",
]  # fmt: skip


def test_store_exports() -> None:
    assert sorted(pipeline_events.store.__all__) == STORE
    assert all(hasattr(pipeline_events.store, name) for name in STORE)


def test_rust_json_exports() -> None:
    assert rust_json.__all__ == ["decode", "encode"]
