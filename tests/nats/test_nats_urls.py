"""nats:// store URLs: every option parsed or refused in one line, and `serve` on a store it
cannot open (no server there, a stream that cannot hold a log) fails with one line."""

from __future__ import annotations

import asyncio
import re

import nats
import pytest

from pipeline_events.store import StoreError, open_store, parse_store_url
from tests.nats_support import NatsServer, free_port
from tests.service.test_cli_errors import serve_fails


def test_a_nats_url_names_servers_and_options() -> None:
    scheme, options = parse_store_url(
        "nats://10.0.0.1:4222,10.0.0.2:4222?stream=EVENTS&replicas=3&prefix=pe&duplicate_window=600"
    )
    assert scheme == "nats"
    assert options == {
        "servers": ("nats://10.0.0.1:4222", "nats://10.0.0.2:4222"),
        "stream": "EVENTS", "replicas": 3, "prefix": "pe", "duplicate_window": 600.0,
    }  # fmt: skip
    assert parse_store_url("nats://h:1")[1] == {
        "servers": ("nats://h:1",), "replicas": 1, "duplicate_window": 120.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("nats://", "names no server"),
        ("nats://host", "'host' is not HOST:PORT"),
        ("nats://h:99999", "is not HOST:PORT"),
        ("nats://h:1/events", "takes no path"),
        ("nats://h:1?replicas=7", "replicas must be 1 to 5"),
        ("nats://h:1?stream=a.b", "stream must be 1-64 letters"),
        ("nats://h:1?prefix=a>", "prefix must be 1-64 letters"),
        ("nats://h:1?duplicate_window=soon", "duplicate_window is in seconds"),
        ("nats://h:1?duplicate_window=0", "1 s to 7 days"),
        ("nats://h:1?color=red", "unknown option 'color'"),
    ],
)
def test_a_bad_nats_url_is_one_precise_error(url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=re.escape(problem)):
        parse_store_url(url)


def test_serve_without_a_nats_server_there_says_so() -> None:
    port = free_port()
    line = serve_fails("--store", f"nats://127.0.0.1:{port}", "--listen", "127.0.0.1:0")
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in line


async def test_a_stream_that_would_delete_events_is_refused(nats_server: NatsServer) -> None:
    connection = await nats.connect(nats_server.url)
    try:
        await connection.jetstream().add_stream(name="AGED", subjects=["aged.>"], max_age=60)
    finally:
        await connection.close()
    with pytest.raises(StoreError, match="limits would delete events"):
        await asyncio.wait_for(open_store(f"{nats_server.url}?stream=AGED&prefix=aged"), 30)
