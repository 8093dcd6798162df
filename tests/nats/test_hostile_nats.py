"""The hostile-input suite (tests/service/test_hostile.py) against a server on JetStream:
everything accepted is read back byte for byte, every rejection changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipeline_events.service.server import RunningServer, start_server
from pipeline_events.store import open_store
from tests.nats.test_store_contract import store_url
from tests.nats_support import NatsServer
from tests.service.test_hostile import RPCS, fuzz_service

INPUTS = 400  # per RPC: a round trip to JetStream costs more than one to a SQLite file


@pytest.fixture
async def running(nats_server_module: NatsServer) -> AsyncIterator[RunningServer]:
    store = await open_store(store_url(nats_server_module))
    server = await start_server(store)
    yield server
    await server.stop(0)
    await store.close()


@pytest.mark.parametrize("rpc", RPCS)
async def test_hostile_inputs_do_not_break_the_service_on_jetstream(
    rpc: str, running: RunningServer
) -> None:
    await fuzz_service(rpc, running, INPUTS)
