"""`pipeline-events serve`: open the store, serve until SIGTERM/SIGINT, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from pipeline_events.service.server import start_server
from pipeline_events.store import open_store

log = logging.getLogger("pipeline_events.server")

DEFAULT_STORE = "sqlite:///./pipeline-events.db"
DEFAULT_LISTEN = "127.0.0.1:50051"


async def serve(
    store_url: str = DEFAULT_STORE, listen: str = DEFAULT_LISTEN, grace: float = 10.0
) -> None:
    """Run the EventService until a signal; in-flight publishes finish before exit."""
    store = await open_store(store_url)
    try:
        running = await start_server(store, listen=listen)
    except BaseException:
        await store.close()
        raise
    host = listen.rsplit(":", 1)[0]
    # One line, always printed: where it listens and what it stores (tests read the port here).
    log.info("listening on %s:%d, store %s", host, running.port, store_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down: health NOT_SERVING, finishing in-flight calls")
    await running.stop(grace)
    await store.close()
    log.info("stopped")
