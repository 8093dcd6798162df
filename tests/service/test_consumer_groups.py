"""Consumer groups on the SQLite store (the contract in groups_contract.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline_events.store import EventStore, SQLiteEventStore
from tests.service.groups_contract import ConsumerGroupContract


class TestSQLiteConsumerGroups(ConsumerGroupContract):
    async def make_store(self, tmp_path: Path) -> EventStore:
        return await SQLiteEventStore.open(tmp_path / "events.db")
