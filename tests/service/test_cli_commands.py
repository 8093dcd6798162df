"""The client commands of the CLI against a real `pipeline-events serve` process."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_events import adapter, domain
from pipeline_events.codecs import rust_json
from pipeline_events.demo import simulate
from tests.service.conftest import CLI, ServerProcess, start_server_process


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_server_process("memory://")
    yield process
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(30) == 0


def run(server: ServerProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--target", server.target], input=stdin,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_demo_publishes_every_event_type_and_history_and_status_see_them(
    server: ServerProcess,
) -> None:
    before = json.loads(run(server, "status", "--json").stdout)
    result = run(server, "demo", "--pipelines", "2", "--runs", "4", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["by_type"]) == set(domain.EVENT_TYPES)
    expected = [e for events in simulate(2, 4, seed=3) for e in events]
    assert summary["events"] == len(expected)

    after = json.loads(run(server, "status", "--json").stdout)
    assert after == {
        "target": server.target, "health": "SERVING",
        "head_position": before["head_position"] + len(expected),
    }  # fmt: skip
    # The simulation is seeded, so the first pipeline's events are known in advance.
    first = [e for e in expected if e.pipeline_id == expected[0].pipeline_id]
    history = run(server, "history", str(first[0].pipeline_id), "--json")
    lines = [json.loads(line) for line in history.stdout.splitlines()]
    assert [line["revision"] for line in lines] == list(range(1, len(first) + 1))
    assert [line["envelope"]["eventType"] for line in lines] == [
        "EVENT_TYPE_" + adapter.PAYLOAD_CASES[type(e)].upper() for e in first
    ]
    table = run(server, "history", str(first[0].pipeline_id))
    assert f"{len(first)} events" in table.stdout and "ProcessingPaused" in table.stdout


def test_publish_reads_rust_json_lines_and_reports_bad_ones(
    server: ServerProcess, tmp_path: Path
) -> None:
    pipeline = domain.PipelineCreated.new(uuid.uuid4(), "from-rust", 3)
    lines = [
        rust_json.encode(pipeline),
        "{not json",
        rust_json.encode(domain.PipelineDeleted.new(pipeline.pipeline_id)),
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = run(server, "publish", str(source), "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["published"] == 2
    assert "line 2: " in result.stderr
    history = run(server, "history", str(pipeline.pipeline_id), "--json")
    assert [json.loads(line)["envelope"]["eventId"] for line in history.stdout.splitlines()] == [
        str(pipeline.event_id), json.loads(lines[2])["PipelineDeleted"]["event_id"],
    ]  # fmt: skip


def test_tail_follows_live_with_filters_until_interrupted(server: ServerProcess) -> None:
    # Start after the current head, so it does not matter whether tail has
    # subscribed before the demo publishes.
    head = json.loads(run(server, "status", "--json").stdout)["head_position"]
    tail = subprocess.Popen(
        [CLI, "tail", "--target", server.target, "--from", str(head), "--type", "PipelineCreated",
         "--json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()
    try:
        result = run(server, "demo", "--pipelines", "3", "--runs", "1", "--json")
        assert result.returncode == 0, result.stderr
        seen = [json.loads(lines.get(timeout=60)) for _ in range(3)]
        assert {line["envelope"]["eventType"] for line in seen} == {"EVENT_TYPE_PIPELINE_CREATED"}
        assert head < seen[0]["position"] < seen[1]["position"] < seen[2]["position"]
    finally:
        tail.send_signal(signal.SIGINT)
        assert tail.wait(30) == 0


def test_client_commands_say_clearly_when_nothing_listens() -> None:
    for command in (["status"], ["history", "6513270e-269e-4d37-b2a7-4de452e6b438"], ["demo"]):
        result = subprocess.run(
            [CLI, *command, "--target", "127.0.0.1:1", "--timeout", "2"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "cannot reach the event service at 127.0.0.1:1" in result.stderr
        assert "Traceback" not in result.stderr
