"""`pipeline-events info` and `info --json` against real server processes."""

from __future__ import annotations

import json
import subprocess
from collections import Counter

from pipeline_events import __version__
from pipeline_events.client import EventClient
from pipeline_events.demo import simulate
from pipeline_events.projections import replay
from tests.service.conftest import CLI, ServerProcess

SEED = 11


def info(server: ServerProcess, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "info", "--target", server.target, *options],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_info_reports_the_sqlite_servers_numbers(server_process: ServerProcess) -> None:
    batches = list(simulate(2, 3, seed=SEED))
    local = replay(e for events in batches for e in events)
    with EventClient(server_process.target) as client:
        for events in batches:
            client.publish(events)
        client.create_group("audit", start="start")  # no members: it lags by the whole log
        client.runs(limit=1, min_position=local.last_position)  # folded
        answer = client.server_info()
    head = local.last_position
    types = Counter(type(e).__name__ for events in batches for e in events)
    statuses = Counter(run.status.name.lower() for run in local.runs.values())

    assert answer.head_position == head
    assert answer.events_by_type == dict(types)

    result = info(server_process, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["server_version"] == __version__
    assert data["store_backend"] == "sqlite"
    assert data["store_size_bytes"] > 0
    assert data["head_position"] == head
    assert data["position"] == head
    assert data["events_by_type"] == dict(types)
    assert data["events_by_type_exact"] is True
    assert data["pipelines"] == len(local.pipelines) == 2
    assert data["runs_by_status"] == dict(statuses)
    assert sum(data["runs_by_status"].values()) == 6
    assert data["open_subscriptions"] == 0
    assert data["consumer_groups"] == [
        {"name": "audit", "lag": head, "parked": 0, "members": 0, "in_flight": 0,
         "waiting_retry": 0}
    ]  # fmt: skip

    text = info(server_process)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"version             {__version__}" in out
    assert "sqlite" in out and f"head position       {head}" in out
    assert f"events by type ({head})" in out
    assert "runs by status (6)" in out and "consumer groups (1)" in out
    for name, count in types.items():
        assert any(line.split() == [name, str(count)] for line in out.splitlines()), name
    assert any(line.split()[:2] == ["audit", str(head)] for line in out.splitlines())


def test_info_on_a_memory_store(memory_server: ServerProcess) -> None:
    result = info(memory_server, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["store_backend"], data["store_size_bytes"]) == ("memory", 0)
    assert data["events_by_type_exact"] is True


def test_info_of_an_unreachable_server_is_one_line() -> None:
    result = subprocess.run(
        [CLI, "info", "--target", "127.0.0.1:1", "--timeout", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
