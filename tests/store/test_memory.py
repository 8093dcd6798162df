"""The in-memory backend passes the store contract."""

from pathlib import Path

from pipeline_events.store import EventStore, MemoryEventStore
from tests.store.contract import EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    async def make_store(self, tmp_path: Path) -> EventStore:
        return MemoryEventStore()

    # Nothing of an in-memory store outlives it, state records included.
    test_state_survives_reopening = None
