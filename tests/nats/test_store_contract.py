"""The NATS JetStream backend passes the store contract, against a real nats-server."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline_events.store import EventStore, open_store
from tests.nats_support import NatsServer
from tests.store.contract import EventStoreContract


def store_url(server: NatsServer, **options: str) -> str:
    """A fresh stream (and subject prefix) on `server`: an empty store."""
    name = uuid.uuid4().hex[:12]
    query = "&".join(
        f"{k}={v}" for k, v in {"stream": f"S{name}", "prefix": f"p{name}", **options}.items()
    )
    return f"{server.url}?{query}"


class TestNatsEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server_module: NatsServer) -> None:
        self.server = nats_server_module

    async def make_store(self, tmp_path: Path) -> EventStore:
        # One stream per test directory, as SQLite keeps one file there: opened again
        # (test_state_survives_reopening), it is the same store.
        urls: dict[Path, str] = self.__dict__.setdefault("_urls", {})
        return await open_store(urls.setdefault(tmp_path, store_url(self.server)))
