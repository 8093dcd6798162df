"""A consumer-group member in a process of its own, for tests that kill it.

    python -m tests.service.group_worker TARGET GROUP STUCK_EVENT_ID DIRECTORY

Runs a sync `EventClient.consume(GROUP, handler)` (one handler at a time). Every event
but STUCK_EVENT_ID is handled at once: its id is appended to DIRECTORY/handled (one per
line, flushed) and the handler returns (an ack). For STUCK_EVENT_ID the handler writes
DIRECTORY/stuck (the delivery count) and sleeps for ever: the test then kills this process.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from pipeline_events.client import Delivery, EventClient


def main(target: str, group: str, stuck: str, directory: Path) -> None:
    handled = (directory / "handled").open("a", encoding="utf-8")

    def handler(delivery: Delivery) -> None:
        if delivery.event.event_id == stuck:
            marker = directory / "stuck.tmp"
            marker.write_text(str(delivery.delivery_count))
            marker.rename(directory / "stuck")  # appears whole
            threading.Event().wait()  # never returns: killed here
        handled.write(delivery.event.event_id + "\n")
        handled.flush()

    with EventClient(target) as client:
        client.consume(group, handler, member_name="doomed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]))
