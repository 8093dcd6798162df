"""`pipeline-events group ...` and `parked ...` as processes against a real server.

The server is one `pipeline-events serve --store memory://` process for the module;
each test names its own groups. Parked events are made with the Python client: a
group that parks after one delivery, an event of a pipeline of its own, and a worker
whose handler fails.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_events import domain
from pipeline_events.client import EventClient, GroupSettings
from pipeline_events.consumer import Delivery
from tests.service.conftest import CLI, ServerProcess


@pytest.fixture(scope="module")
def server(memory_server: ServerProcess) -> ServerProcess:
    return memory_server


@pytest.fixture
def name() -> str:
    """A group name no other test uses."""
    return f"cli-{uuid.uuid4().hex[:12]}"


def run(server: ServerProcess | str, *args: str) -> subprocess.CompletedProcess[str]:
    target = server if isinstance(server, str) else server.target
    result = subprocess.run(
        [CLI, *args, "--target", target, "--timeout", "5"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(server: ServerProcess, *args: str) -> str:
    result = run(server, *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def as_json(server: ServerProcess, *args: str) -> Any:
    """One JSON document (`json.loads` of the whole output)."""
    return json.loads(ok(server, *args, "--json"))


def json_lines(server: ServerProcess, *args: str) -> list[Any]:
    return [json.loads(line) for line in ok(server, *args, "--json").splitlines()]


def failure(server: ServerProcess | str, *args: str) -> tuple[int, str]:
    """The exit status and the one line of stderr of a command that fails (stdout empty)."""
    result = run(server, *args)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return result.returncode, lines[0]


def rfc3339(text: str) -> dt.datetime:
    assert text.endswith("Z") and "T" in text
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- groups ---------------------------------------------------------------------------------

PIPELINE = str(uuid.uuid4())
RUN = str(uuid.uuid4())
CREATE = ["--type", "ChunkProcessed", "--type", "stage_failed", "--category", "processing",
          "--pipeline", PIPELINE, "--run", RUN, "--max-deliveries", "3", "--backoff", "0.5,2",
          "--ack-timeout", "12.5", "--max-in-flight", "7"]  # fmt: skip


def test_create_then_again_with_the_same_settings_then_with_others(
    server: ServerProcess, name: str
) -> None:
    created = as_json(server, "group", "create", name, *CREATE)
    assert created["created"] is True
    group = created["group"]
    assert group["name"] == name
    assert group["filter"] == {
        "event_types": ["ChunkProcessed", "StageFailed"], "categories": ["processing"],
        "pipeline_ids": [PIPELINE], "processing_ids": [RUN],
    }  # fmt: skip
    assert group["settings"] == {
        "max_deliveries": 3, "backoff_seconds": [0.5, 2.0], "ack_timeout_seconds": 12.5,
        "max_in_flight": 7,
    }  # fmt: skip
    assert group["start_after"] == group["checkpoint"] == 0
    assert abs(rfc3339(group["created_at"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)

    again = ok(server, "group", "create", name, *CREATE)
    assert again.splitlines()[0] == f"consumer group {name!r} already exists with these settings:"
    assert as_json(server, "group", "create", name, *CREATE)["created"] is False

    status, line = failure(server, "group", "create", name, "--max-deliveries", "4")
    assert status == 1
    assert line.startswith(f"pipeline-events group create: consumer group {name!r} exists with")


def test_create_from_the_end_starts_after_the_head(server: ServerProcess, name: str) -> None:
    head = json.loads(ok(server, "status", "--json"))["head_position"]
    text = ok(server, "group", "create", name, "--start", "end")
    assert text.splitlines()[0] == f"consumer group {name!r} created"
    group = as_json(server, "group", "info", name)
    assert group["start_after"] >= head
    assert group["settings"] == {  # the server's defaults, filled in
        "max_deliveries": 5, "backoff_seconds": [1.0, 5.0, 30.0], "ack_timeout_seconds": 30.0,
        "max_in_flight": 100,
    }  # fmt: skip
    assert group["filter"] == {
        "event_types": [], "categories": [], "pipeline_ids": [], "processing_ids": []
    }  # fmt: skip


def test_list_and_info_in_text_and_json(server: ServerProcess, name: str) -> None:
    ok(server, "group", "create", name, *CREATE)
    ok(server, "group", "create", name + "-all", "--start", "3")
    listed = {group["name"]: group for group in json_lines(server, "group", "list")}
    mine, other = listed[name], listed[name + "-all"]
    assert other["start_after"] == other["checkpoint"] == 3
    for group in (mine, other):
        assert set(group) == {
            "name", "created_at", "members", "start_after", "checkpoint", "head", "lag",
            "in_flight", "waiting_retry", "parked", "filter", "settings",
        }  # fmt: skip
        assert group["lag"] == max(group["head"] - group["checkpoint"], 0)
        assert (group["members"], group["in_flight"], group["parked"]) == (0, 0, 0)
    names = [group["name"] for group in json_lines(server, "group", "list")]
    assert names == sorted(names)

    table = ok(server, "group", "list")
    header = next(line for line in table.splitlines() if "checkpoint" in line)
    assert header.split() == ["name", "members", "checkpoint", "head", "lag", "in", "flight",
                              "waiting", "retry", "parked", "filter"]  # fmt: skip
    row = next(line for line in table.splitlines() if line.split()[:1] == [name])
    assert "types=ChunkProcessed,StageFailed categories=processing" in row
    assert f"pipeline={PIPELINE} run={RUN}" in row
    row = next(line for line in table.splitlines() if line.split()[:1] == [name + "-all"])
    assert row.split()[1:3] == ["0", "3"] and row.rstrip().endswith("every event")

    moving = ("head", "lag")  # the log's head when answered
    info = as_json(server, "group", "info", name)
    assert {k: v for k, v in info.items() if k not in moving} == {
        k: v for k, v in mine.items() if k not in moving
    }
    text = ok(server, "group", "info", name)
    lines = text.splitlines()
    assert lines[0] == f"consumer group {name!r}"
    fields = dict(_field(line) for line in lines[1:] if line[:1].strip())
    assert fields["group"] == name
    assert fields["max deliveries"] == "3"
    assert fields["backoff"] == "0.5 s, 2 s"
    assert fields["ack timeout"] == "12.5 s"
    assert fields["max in flight"] == "7"
    assert fields["event types"] == "ChunkProcessed"  # then StageFailed on the next line
    assert fields["categories"] == "processing"
    assert fields["pipelines"] == PIPELINE and fields["runs"] == RUN
    assert "StageFailed" in text


def _field(line: str) -> tuple[str, str]:
    label, _, value = line.strip().partition("  ")
    return label.strip(), value.strip()


def test_update_changes_what_is_given_and_keeps_the_rest(server: ServerProcess, name: str) -> None:
    ok(server, "group", "create", name, *CREATE)
    updated = as_json(server, "group", "update", name, "--max-deliveries", "9",
                      "--category", "stage")  # fmt: skip
    assert updated["settings"] == {
        "max_deliveries": 9, "backoff_seconds": [0.5, 2.0], "ack_timeout_seconds": 12.5,
        "max_in_flight": 7,
    }  # fmt: skip
    assert updated["filter"] == {
        "event_types": ["ChunkProcessed", "StageFailed"], "categories": ["stage"],
        "pipeline_ids": [PIPELINE], "processing_ids": [RUN],
    }  # fmt: skip
    assert as_json(server, "group", "info", name)["settings"]["max_deliveries"] == 9
    text = ok(server, "group", "update", name, "--every-event", "--backoff", "3")
    assert text.splitlines()[0] == f"consumer group {name!r} updated"
    group = as_json(server, "group", "info", name)
    assert group["filter"] == {
        "event_types": [], "categories": [], "pipeline_ids": [], "processing_ids": []
    }  # fmt: skip
    assert group["settings"]["backoff_seconds"] == [3.0]
    assert group["settings"]["max_deliveries"] == 9


def test_delete_then_the_group_is_gone(server: ServerProcess, name: str) -> None:
    ok(server, "group", "create", name)
    assert as_json(server, "group", "delete", name) == {"name": name, "deleted": True}
    assert name not in [group["name"] for group in json_lines(server, "group", "list")]
    for command in (["group", "info", name], ["group", "delete", name],
                    ["group", "update", name, "--max-deliveries", "2"],
                    ["parked", "list", name], ["parked", "replay", name],
                    ["parked", "discard", name, "--all"]):  # fmt: skip
        status, line = failure(server, *command)
        assert status == 1
        assert line == f"pipeline-events {command[0]} {command[1]}: no consumer group {name!r}"
    ok(server, "group", "create", name)
    assert ok(server, "group", "delete", name) == (
        f"deleted consumer group {name!r} with its checkpoint and parked events\n"
    )


def test_no_groups_yet_or_none_left_is_said(server: ServerProcess) -> None:
    # Another module's server could hold groups; this one may too: only the text is checked.
    table = ok(server, "group", "list")
    assert table == "no consumer groups\n" or "consumer group" in table.splitlines()[0]


# --- parked events --------------------------------------------------------------------------


def _park(server: ServerProcess, group: str, count: int) -> list[str]:
    """`count` events of a new pipeline, parked by `group` (max one delivery); their ids."""
    pipeline = uuid.uuid4()
    with EventClient(server.target) as client:
        client.create_group(
            group, pipeline_ids=[pipeline], settings=GroupSettings(max_deliveries=1)
        )
        events = [domain.PipelineCreated.new(pipeline, "parked", 1)]
        events += [domain.PipelineUpdated.new(pipeline, (f"change {n}",)) for n in range(count - 1)]
        client.publish(events)
        stop = threading.Event()

        def fail(delivery: Delivery) -> None:
            raise RuntimeError(f"cannot handle {delivery.event.event_id}")

        worker = threading.Thread(target=lambda: client.consume(group, fail, stop=stop))
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while client.group(group).parked < count:
                assert time.monotonic() < deadline, client.group(group)
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join(30)
        assert not worker.is_alive()
    return [str(event.event_id) for event in events]


@pytest.fixture
def parked(server: ServerProcess, name: str) -> Iterator[list[str]]:
    yield _park(server, name, 3)


def test_parked_list_in_text_and_json(server: ServerProcess, name: str, parked: list[str]) -> None:
    listed = json_lines(server, "parked", "list", name)
    assert [event["event_id"] for event in listed] == parked
    positions = [event["position"] for event in listed]
    assert positions == sorted(positions)
    first = listed[0]
    assert first["event_type"] == "PipelineCreated"
    assert first["deliveries"] == 1
    assert first["reason"] == f"RuntimeError: cannot handle {parked[0]}"
    rfc3339(first["parked_at"])
    assert [a["outcome"] for a in first["attempts"]] == [first["reason"]]
    rfc3339(first["attempts"][0]["delivered_at"])
    # The event as `tail --json` writes it: the contract's RecordedEvent.
    assert first["event"]["envelope"]["eventId"] == parked[0]
    assert int(first["event"]["globalPosition"]) == first["position"]
    assert first["pipeline_id"] == first["event"]["envelope"]["aggregateId"]

    assert [e["event_id"] for e in json_lines(server, "parked", "list", name, "--limit", "2")] == (
        parked[:2]
    )
    table = ok(server, "parked", "list", name)
    lines = table.splitlines()
    assert lines[0] == f"consumer group {name!r}: 3 parked events"
    assert lines[1].split() == ["position", "event", "id", "type", "pipeline", "deliveries",
                                "parked", "at", "reason"]  # fmt: skip
    rows = [line.split() for line in lines if any(i in line for i in parked)]
    assert [row[1] for row in rows] == parked
    assert [row[0] for row in rows] == [str(p) for p in positions]
    assert rows[0][2:5] == ["PipelineCreated", first["pipeline_id"], "1"]
    assert " ".join(rows[0]).endswith(f"RuntimeError: cannot handle {parked[0]}")
    assert as_json(server, "group", "info", name)["parked"] == 3


def _handle_until(server: ServerProcess, group: str, parked: int) -> list[str]:
    """Run a worker that succeeds until `group` holds `parked` parked events; what it got."""
    handled: list[str] = []
    with EventClient(server.target) as client:
        stop = threading.Event()
        worker = threading.Thread(
            target=lambda: client.consume(
                group, lambda d: handled.append(str(d.event.event_id)), stop=stop
            )
        )
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while client.group(group).parked != parked:
                assert time.monotonic() < deadline, client.group(group)
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join(30)
        assert not worker.is_alive()
    return handled


def test_parked_replay_some_then_all(server: ServerProcess, name: str, parked: list[str]) -> None:
    assert as_json(server, "parked", "replay", name, parked[0]) == {"group": name, "replayed": 1}
    # A replayed event stays parked until a member has handled it.
    assert _handle_until(server, name, parked=2) == parked[:1]
    assert [e["event_id"] for e in json_lines(server, "parked", "list", name)] == parked[1:]
    assert as_json(server, "parked", "replay", name, str(uuid.uuid4()))["replayed"] == 0

    assert ok(server, "parked", "replay", name) == (
        f"replayed 2 parked events of consumer group {name!r}\n"
    )
    assert sorted(_handle_until(server, name, parked=0)) == sorted(parked[1:])
    assert ok(server, "parked", "list", name) == f"consumer group {name!r} has no parked events\n"
    assert json_lines(server, "parked", "list", name) == []
    assert as_json(server, "parked", "replay", name)["replayed"] == 0


def test_parked_discard_needs_ids_or_all(
    server: ServerProcess, name: str, parked: list[str]
) -> None:
    status, line = failure(server, "parked", "discard", name)
    assert status == 2
    assert line.startswith("pipeline-events parked discard: error: name the events to discard, "
                           "or --all")  # fmt: skip
    status, line = failure(server, "parked", "discard", name, parked[0], "--all")
    assert status == 2 and "not both" in line
    assert len(json_lines(server, "parked", "list", name)) == 3  # nothing was discarded

    assert as_json(server, "parked", "discard", name, parked[1]) == {
        "group": name, "discarded": 1,
    }  # fmt: skip
    assert [e["event_id"] for e in json_lines(server, "parked", "list", name)] == [
        parked[0], parked[2],
    ]  # fmt: skip
    assert ok(server, "parked", "discard", name, "--all") == (
        f"discarded 2 parked events of consumer group {name!r}\n"
    )
    assert json_lines(server, "parked", "list", name) == []
    assert as_json(server, "group", "info", name)["parked"] == 0


# --- mistakes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["group", "create", "bad name"], "argument name: expected a group name (1-200 of "),
        (["group", "create", "_lead"], "expected a group name"),
        (["group", "info", "x" * 201], "argument name: expected a group name"),
        (["group", "create", "g", "--start", "soon"], "argument --start: expected start, end "
         "or a position >= 0, not 'soon'"),
        (["group", "create", "g", "--type", "Bogus"], "argument --type: unknown event type "
         "'Bogus'"),
        (["group", "create", "g", "--category", "x"], "argument --category: unknown event "
         "category 'x'"),
        (["group", "create", "g", "--pipeline", "p1"], "argument --pipeline: expected a UUID"),
        (["group", "update", "g", "--run", "r1"], "argument --run/--processing-id: expected a UUID"),
        (["group", "create", "g", "--max-deliveries", "0"], "argument --max-deliveries: "
         "expected a whole number from 1 to 1000, not '0'"),
        (["group", "create", "g", "--max-deliveries", "1001"], "from 1 to 1000, not '1001'"),
        (["group", "update", "g", "--max-in-flight", "10001"], "argument --max-in-flight: "
         "expected a whole number from 1 to 10000"),
        (["group", "create", "g", "--backoff", "1,soon"], "argument --backoff: expected seconds "
         "from 0 to 86400, not 'soon' (in '1,soon')"),
        (["group", "create", "g", "--backoff", "-1"], "argument --backoff: expected seconds"),
        (["group", "create", "g", "--backoff", ",".join(["1"] * 33)], "at most 32"),
        (["group", "create", "g", "--ack-timeout", "0"], "argument --ack-timeout: expected "
         "seconds from 0.001 to 86400, not '0'"),
        (["group", "create", "g", "--ack-timeout", "nan"], "argument --ack-timeout"),
        (["group", "update", "g", "--start", "end"], "unrecognized arguments: --start end"),
        (["group", "frobnicate"], "argument ACTION: invalid choice: 'frobnicate'"),
        (["parked", "list", "g", "--limit", "0"], "argument --limit: expected a whole number"),
        (["parked", "replay", "g", "not-an-id"], "argument EVENT_ID: expected a UUID"),
        (["parked", "discard", "g"], "name the events to discard, or --all"),
    ],
)  # fmt: skip
def test_a_bad_argument_is_a_usage_error(args: list[str], message: str) -> None:
    status, line = failure("127.0.0.1:1", *args)
    assert status == 2
    # Unrecognized arguments are the top-level parser's: `pipeline-events: error: ...`.
    assert line.startswith(f"pipeline-events {args[0]}" if "unrecognized" not in message
                           else "pipeline-events: error: ")  # fmt: skip
    assert ": error: " in line and message in line


@pytest.mark.parametrize(
    "command",
    [["group", "list"], ["group", "info", "g"], ["group", "create", "g"],
     ["group", "delete", "g"], ["parked", "list", "g"], ["parked", "discard", "g", "--all"]],
)  # fmt: skip
def test_an_unreachable_service_is_one_line_and_status_2(command: list[str]) -> None:
    status, line = failure("127.0.0.1:1", *command)
    assert status == 2
    assert "cannot reach the event service at 127.0.0.1:1" in line
