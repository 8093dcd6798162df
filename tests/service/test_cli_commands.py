"""The client commands of the CLI against a real `pipeline-events serve` process."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from pipeline_events import adapter, domain
from pipeline_events.codecs import proto_json, rust_json
from pipeline_events.commands import COLUMNS
from pipeline_events.demo import simulate
from tests.service.conftest import CLI, ServerProcess, stop_process

# Runs the CLI with SIGINT at its default disposition, whatever this process inherited:
# exec keeps an ignored signal ignored, and Python installs its KeyboardInterrupt
# handler only where SIGINT is not ignored.
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.fixture(scope="module")
def server(memory_server: ServerProcess) -> ServerProcess:
    return memory_server


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
    assert [int(line["revision"]) for line in lines] == list(range(1, len(first) + 1))
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


def _follow(command: list[str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """Start a CLI process whose stdout lines arrive in a queue."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    return process, lines


def test_tail_follows_live_with_filters_until_terminated(server: ServerProcess) -> None:
    # Start after the current head, so it does not matter whether tail has
    # subscribed before the demo publishes.
    head = json.loads(run(server, "status", "--json").stdout)["head_position"]
    tail, lines = _follow(
        [CLI, "tail", "--target", server.target, "--from", str(head), "--type", "PipelineCreated",
         "--json"],
    )  # fmt: skip
    try:
        result = run(server, "demo", "--pipelines", "3", "--runs", "1", "--json")
        assert result.returncode == 0, result.stderr
        seen = [json.loads(lines.get(timeout=60)) for _ in range(3)]
        assert {line["envelope"]["eventType"] for line in seen} == {"EVENT_TYPE_PIPELINE_CREATED"}
        positions = [int(line["globalPosition"]) for line in seen]
        assert head < positions[0] < positions[1] < positions[2]
    finally:
        # SIGTERM, not SIGINT: a test run started in the background (`pytest &` from a
        # script) hands its children an ignored SIGINT, and tail would never see it.
        assert stop_process(tail) == 0


def test_tail_stops_on_ctrl_c(server: ServerProcess) -> None:
    tail, lines = _follow(
        [sys.executable, "-c", WITH_SIGINT, CLI, "tail", "--target", server.target],
    )  # fmt: skip
    try:
        assert lines.get(timeout=60).split() == COLUMNS  # the header: tail is running
    finally:
        assert stop_process(tail, signal.SIGINT) == 0


def test_tail_until_caught_up_with_category_and_processing_filters(
    server: ServerProcess,
) -> None:
    result = run(server, "demo", "--pipelines", "1", "--runs", "3", "--seed", "11", "--json")
    assert result.returncode == 0, result.stderr
    (events,) = simulate(1, 3, seed=11)
    runs = list(dict.fromkeys(e.processing_id for e in events if hasattr(e, "processing_id")))
    wanted = [
        e for e in events
        if getattr(e, "processing_id", None) in runs[:2]
        and e.category == domain.EventCategory.PROCESSING
    ]  # fmt: skip
    tail = run(
        server, "tail", "--from", "start", "--until-caught-up", "--json",
        "--category", "EVENT_CATEGORY_processing",
        "--processing-id", str(runs[0]), "--processing-id", str(runs[1]),
    )  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    envelopes = [
        proto_json.from_dict(json.loads(line)["envelope"]) for line in tail.stdout.splitlines()
    ]
    assert [adapter.event_type_name(e.event_type) for e in envelopes] == [
        e.event_type for e in wanted
    ]
    assert [getattr(e, e.WhichOneof("payload")).processing_id for e in envelopes] == [
        str(e.processing_id) for e in wanted
    ]
    typed = run(
        server, "tail", "--from", "start", "--until-caught-up",
        "--pipeline", str(events[0].pipeline_id),
        "--type", "processing_started", "--type", "EVENT_TYPE_PROCESSING_PAUSED",
    )  # fmt: skip
    assert typed.returncode == 0, typed.stderr
    rows = [line.split("  ")[3] for line in typed.stdout.splitlines()[1:]]
    assert rows == [
        e.event_type for e in events if e.event_type in ("ProcessingStarted", "ProcessingPaused")
    ]


def test_history_pages_from_a_revision_backwards_and_limited(server: ServerProcess) -> None:
    result = run(server, "demo", "--pipelines", "1", "--runs", "1", "--seed", "12", "--json")
    assert result.returncode == 0, result.stderr
    (events,) = simulate(1, 1, seed=12)
    pipeline = str(events[0].pipeline_id)

    def revisions(*options: str) -> list[int]:
        history = run(server, "history", pipeline, "--json", *options)
        assert history.returncode == 0, history.stderr
        return [int(json.loads(line)["revision"]) for line in history.stdout.splitlines()]

    last = len(events)
    assert revisions() == list(range(1, last + 1))
    assert revisions("--from-revision", "3", "--limit", "4") == [3, 4, 5, 6]
    assert revisions("--backwards", "--limit", "3") == [last, last - 1, last - 2]
    assert revisions("--backwards", "--from-revision", "2") == [2, 1]
    table = run(server, "history", pipeline, "--from-revision", str(last + 5))
    assert table.stdout == f"pipeline {pipeline} has no events from revision {last + 5}\n"


def test_publishing_the_same_file_again_says_nothing_new_was_stored(
    server: ServerProcess, tmp_path: Path
) -> None:
    pipeline = domain.PipelineCreated.new(uuid.uuid4(), "again", 3)
    deleted = domain.PipelineDeleted.new(pipeline.pipeline_id)
    source = tmp_path / "events.jsonl"
    source.write_text(rust_json.encode(pipeline) + "\n" + rust_json.encode(deleted) + "\n")
    first = run(server, "publish", str(source))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("published 2 events (positions ")
    again = run(server, "publish", str(source))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "all 2 events were already stored; nothing new\n"
    # One new event after them, one event per batch: counted batch by batch.
    more = domain.PipelineCreated.new(uuid.uuid4(), "more", 1)
    with source.open("a") as handle:
        handle.write(rust_json.encode(more) + "\n")
    mixed = run(server, "publish", str(source), "--batch", "1", "--json")
    assert mixed.returncode == 0, mixed.stderr
    summary = json.loads(mixed.stdout)
    assert (summary["published"], summary["already_stored"]) == (1, 2)
    assert summary["first"] == summary["last"]


def test_publish_maps_a_rejected_batch_to_its_input_line_and_stops(
    server: ServerProcess, tmp_path: Path
) -> None:
    pipeline = uuid.uuid4()
    good = [adapter.to_envelope(domain.PipelineCreated.new(pipeline, f"p{n}", 1)) for n in range(7)]
    bad = adapter.to_envelope(domain.PipelineCreated.new(uuid.uuid4(), "no time", 1))
    bad.ClearField("occurred_at")
    lines = [proto_json.encode(e) for e in good[:5]] + [proto_json.encode(bad)]
    lines += [proto_json.encode(e) for e in good[5:]]
    source = tmp_path / "events.jsonl"
    # Batches of 2: lines 1-2 and 3-4 are stored, 5-6 hold the bad event on line 6.
    source.write_text("\n".join(lines) + "\n")
    result = run(server, "publish", str(source), "--format", "proto-json", "--batch", "2")
    assert result.returncode == 1
    assert result.stderr.startswith("line 6: occurred_at: ")
    assert "Traceback" not in result.stderr
    stored = json.loads(run(server, "history", str(pipeline), "--json").stdout.splitlines()[0])
    first = int(stored["globalPosition"])
    assert result.stdout.startswith(
        f"stored lines 1-4 (positions {first}..{first + 3}); line 6 rejected: occurred_at: "
    )
    assert result.stdout.endswith(
        "; nothing of its batch (lines 5-6) was stored, and nothing after it was sent\n"
    )
    history = run(server, "history", str(pipeline), "--json")
    assert len(history.stdout.splitlines()) == 4


def test_client_commands_say_clearly_when_nothing_listens() -> None:
    for command in (["status"], ["history", "6513270e-269e-4d37-b2a7-4de452e6b438"], ["demo"]):
        result = subprocess.run(
            [CLI, *command, "--target", "127.0.0.1:1", "--timeout", "2"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "cannot reach the event service at 127.0.0.1:1" in result.stderr
        assert "Traceback" not in result.stderr
