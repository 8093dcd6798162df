"""Fixtures running real nats-server processes (see tests/nats_support.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nats_support import NatsServer, start_server, stop_all


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh single JetStream node for one test, stopped afterwards."""
    server = start_server(tmp_path / "nats")
    try:
        yield server
    finally:
        stop_all([server])


@pytest.fixture(scope="module")
def nats_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream node shared by a test module, stopped afterwards."""
    server = start_server(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        stop_all([server])
