"""Consumer groups on the NATS JetStream store, against a real nats-server (the contract in
tests/service/groups_contract.py): group state goes through the store's write_state."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_events.store import EventStore, open_store
from tests.nats.test_store_contract import store_url
from tests.nats_support import NatsServer
from tests.service.groups_contract import ConsumerGroupContract


class TestNatsConsumerGroups(ConsumerGroupContract):
    @pytest.fixture(autouse=True)
    def _server(self, nats_server_module: NatsServer) -> None:
        self.server = nats_server_module

    async def make_store(self, tmp_path: Path) -> EventStore:
        # A fresh stream (and subject prefix) per test: an empty store.
        return await open_store(store_url(self.server))
