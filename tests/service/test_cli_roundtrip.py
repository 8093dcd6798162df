"""Export a store with `tail --json` and import it into another with `publish`.

`tail --from start --until-caught-up --json` writes the contract's RecordedEvent
JSON; `publish --format proto-json` takes the envelope out of each line. Piped
together they copy a store: the same event ids in the same order, the same
envelope bytes (the positions are the new store's).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_events import domain
from pipeline_events.client import EventClient, RecordedEvent
from tests.service.conftest import CLI, ServerProcess, start_server_process, stop_process


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A SQLite server to copy from and an empty in-memory one to copy into."""
    with contextlib.ExitStack() as stack:
        source = start_server_process(f"sqlite:///{tmp_path}/source.db")
        stack.callback(stop_process, source.process)
        copy = start_server_process("memory://")
        stack.callback(stop_process, copy.process)
        yield source, copy


def read_everything(target: str) -> list[RecordedEvent]:
    """Every stored event, in log order."""
    with EventClient(target) as client:
        subscription = client.subscribe(
            from_position="start", on_caught_up=lambda _: subscription.close()
        )
        with subscription:
            return list(subscription)


def export_import(source: ServerProcess, copy: ServerProcess) -> str:
    """`tail ... --json --target SOURCE | publish --format proto-json - --target COPY`."""
    tail = subprocess.Popen(
        [CLI, "tail", "--from", "start", "--until-caught-up", "--json", "--target", source.target],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        publish = subprocess.Popen(
            [CLI, "publish", "--format", "proto-json", "-", "--target", copy.target],
            stdin=tail.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert tail.stdout is not None
            tail.stdout.close()  # publish holds the pipe now
            stdout, stderr = publish.communicate(timeout=120)
        finally:
            publish_status = stop_process(publish)
        assert publish_status == 0, stderr
        assert tail.wait(60) == 0
    finally:
        stop_process(tail)
    return stdout


def test_tail_piped_into_publish_copies_a_store_exactly(
    stores: tuple[ServerProcess, ServerProcess],
) -> None:
    source, copy = stores
    demo = subprocess.run(
        [CLI, "demo", "--target", source.target, "--seed", "21", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    # Envelope metadata too: correlation, causation and a map (serialized by key).
    with EventClient(source.target) as client:
        created = domain.PipelineCreated.new(uuid.uuid4(), "with-metadata", 2, "carol")
        client.publish(
            [created], correlation_id=str(uuid.uuid4()), causation_id=str(uuid.uuid4()),
            metadata={"tenant": "acme", "a": "first by key", "ünïcode": "✓"},
        )  # fmt: skip
    original = read_everything(source.target)

    summary = export_import(source, copy)

    assert summary == f"published {len(original)} events (positions 1..{len(original)})\n"
    copied = read_everything(copy.target)
    assert [e.event_id for e in copied] == [e.event_id for e in original]
    assert [e.envelope.SerializeToString(deterministic=True) for e in copied] == [
        e.envelope.SerializeToString(deterministic=True) for e in original
    ]
    assert [e.revision for e in copied] == [e.revision for e in original]

    # A second copy stores nothing new, and says so.
    again = export_import(source, copy)
    assert again == f"all {len(original)} events were already stored; nothing new\n"
    assert len(read_everything(copy.target)) == len(original)
