"""`pipeline-events run`, `runs` and `pipeline` against a real server over real SQLite.

The server is a `pipeline-events serve` process; the demo is published through the
CLI, then the commands run in this process (`cli.main`, fast) or, where the exit
status and stderr matter, as processes.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from adaptive_pipeline.events.v1 import state_pb2
from google.protobuf import json_format

from pipeline_events import cli, reports
from pipeline_events.client import EventClient
from pipeline_events.demo import simulate
from pipeline_events.projections import ProcessingStatus, Replayed, messages, replay
from tests.service.conftest import CLI, ServerProcess, start_server_process, stop_process

SEED = 7


@dataclass
class Demo:
    server: ServerProcess
    head: int  # the log's last position after the demo
    local: Replayed  # the demo's events folded here


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    path: Path = tmp_path_factory.mktemp("state") / "events.db"
    server = start_server_process(f"sqlite:///{path}")
    try:
        result = subprocess.run(
            [CLI, "demo", "--pipelines", "2", "--runs", "4", "--seed", str(SEED), "--json",
             "--target", server.target],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        local = replay(e for events in simulate(2, 4, seed=SEED) for e in events)
        assert json.loads(result.stdout)["events"] == local.last_position
        with EventClient(server.target) as client:  # the read models have folded it all
            client.runs(limit=1, min_position=local.last_position)
        yield Demo(server, local.last_position, local)
    finally:
        assert stop_process(server.process) == 0


def main(capsys: pytest.CaptureFixture[str], demo: Demo, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process; its status, stdout and stderr."""
    status = cli.main([*args, "--target", demo.server.target])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def process(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--target", target, "--timeout", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def lines(stdout: str) -> list[dict[str, Any]]:
    """JSON Lines of run summaries, with the contract's field names to compare by."""
    return [as_message(line, state_pb2.ProcessingRunSummary) for line in stdout.splitlines()]


def as_message(text: str, message_type: Any) -> dict[str, Any]:
    """One line of the CLI's proto3 JSON (lowerCamelCase, as tail --json), parsed by the
    contract's message and given back with its field names (snake_case)."""
    document = json.loads(text)
    assert all("_" not in key for key in document)  # proto3 JSON names, as tail writes them
    return contract(json_format.ParseDict(document, message_type()))


def newest_first(demo: Demo) -> list[Any]:
    """The demo's runs as a local replay sees them, newest (highest first position) first."""
    return sorted(demo.local.runs.values(), key=lambda run: -run.first_position)


def contract(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_runs_json_lists_the_demos_runs_newest_first_as_the_contract_says(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    # --min-position: the read models have folded the whole demo before answering.
    status, out, err = main(capsys, demo, "runs", "--json", "--min-position", str(demo.head))
    assert (status, err) == (0, "")
    runs = lines(out)
    expected = newest_first(demo)
    assert len(runs) == len(expected) == 8
    assert [(run["processing_id"], run["status"]) for run in runs] == [
        (str(state.processing_id), f"PROCESSING_STATUS_{state.status.name}") for state in expected
    ]
    # Everything but the times (occurred_at is the moment each simulation ran).
    assert [
        (run["pipeline_id"], run["input_path"], int(run["chunks_processed"]),
         int(run["first_position"]), int(run["last_position"]), run.get("error_code", ""))
        for run in runs
    ] == [
        (str(s.pipeline_id), s.input_path, s.chunks_processed, s.first_position,
         s.last_position, s.error_code)
        for s in expected
    ]  # fmt: skip
    positions = [int(run["first_position"]) for run in runs]
    assert positions == sorted(positions, reverse=True)
    with EventClient(demo.server.target) as client:
        assert runs == [contract(reports.summary_message(s)) for s in client.runs()]
        # ... and the server's own summaries of its states, as ListProcessingRuns makes them.
        assert runs == [
            contract(messages.summary_to_proto(client.run_state(run["processing_id"])))
            for run in runs
        ]


def test_runs_filters_by_status_and_pipeline_and_limits(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = newest_first(demo)
    failed = [str(s.processing_id) for s in expected if s.status is ProcessingStatus.FAILED]
    status, out, _ = main(capsys, demo, "runs", "--json", "--status", "failed")
    assert status == 0 and len(failed) == 2
    assert [run["processing_id"] for run in lines(out)] == failed
    assert {run["status"] for run in lines(out)} == {"PROCESSING_STATUS_FAILED"}

    ended = [
        str(s.processing_id) for s in expected
        if s.status in (ProcessingStatus.FAILED, ProcessingStatus.CANCELLED)
    ]  # fmt: skip
    _, out, _ = main(capsys, demo, "runs", "--json", "--status", "failed", "--status", "cancelled")
    assert [run["processing_id"] for run in lines(out)] == ended

    pipeline = expected[-1].pipeline_id  # the first pipeline: its runs are the oldest
    of_pipeline = [str(s.processing_id) for s in expected if s.pipeline_id == pipeline]
    _, out, _ = main(capsys, demo, "runs", "--json", "--pipeline", str(pipeline))
    assert [run["processing_id"] for run in lines(out)] == of_pipeline
    assert len(of_pipeline) == 4

    _, out, _ = main(capsys, demo, "runs", "--json", "--limit", "3")
    assert [run["processing_id"] for run in lines(out)] == [
        str(s.processing_id) for s in expected[:3]
    ]


def test_runs_table_for_people_and_none_found(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = main(capsys, demo, "runs")
    assert (status, err) == (0, "")
    assert out.splitlines()[0].strip() == "8 runs"
    for state in newest_first(demo):
        line = next(line for line in out.splitlines() if str(state.processing_id) in line)
        assert str(state.pipeline_id) in line
        assert f" {state.status.name.lower()} " in line
        assert state.input_path in line

    nobody = str(uuid.uuid4())
    assert main(capsys, demo, "runs", "--pipeline", nobody) == (0, "no runs\n", "")
    assert main(capsys, demo, "runs", "--pipeline", nobody, "--json") == (0, "", "")


def test_run_shows_each_stage_and_the_status(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    for state in demo.local.runs.values():
        status, out, err = main(capsys, demo, "run", str(state.processing_id))
        assert (status, err) == (0, "")
        assert out.startswith(f"processing run {state.processing_id}\n")
        header = dict(  # the run and pipeline lines
            line.split() for line in out.split("\n\n")[0].splitlines()[1:3]
        )
        assert header == {"run": str(state.processing_id), "pipeline": str(state.pipeline_id)}
        status_line = next(line for line in out.splitlines() if line.startswith("status "))
        assert status_line.split(None, 1)[1].strip() == state.status.name.lower()
        for name, stage in state.stages.items():
            row = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
            assert f" {stage.status.name.lower()} " in row
            assert f" {stage.chunks_processed} " in row
        if state.status is ProcessingStatus.FAILED:
            assert "E_STAGE: stage" in out and "E_KEY: key material unavailable" in out


def test_run_json_is_the_runs_state_message(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    run = next(s for s in demo.local.runs.values() if s.pause_count)
    status, out, err = main(capsys, demo, "run", str(run.processing_id), "--json")
    assert (status, err) == (0, "")
    assert out.count("\n") == 1  # one line
    with EventClient(demo.server.target) as client:
        assert as_message(out, state_pb2.ProcessingRunState) == contract(
            messages.run_to_proto(client.run_state(run.processing_id))
        )
    state = as_message(out, state_pb2.ProcessingRunState)
    assert state["pause_count"] == 1
    assert [stage["stage_name"] for stage in state["stages"]] == list(run.stages)


def test_pipeline_shows_its_name_and_run_counts(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    for pipeline in demo.local.pipelines.values():
        status, out, err = main(capsys, demo, "pipeline", str(pipeline.pipeline_id))
        assert (status, err) == (0, "")
        shown = {
            label: value
            for label, value in (
                line.rsplit(None, 1) for line in out.splitlines()
                if line.startswith(("name ", "runs ", "status "))
            )
        }  # fmt: skip
        assert shown == {
            "name": pipeline.pipeline_name,
            "status": pipeline.status.name.lower(),
            "runs started": "4",
            "runs completed": "2",
            "runs failed": "1",
            "runs cancelled": "1",
        }
        status, out, _ = main(capsys, demo, "pipeline", str(pipeline.pipeline_id), "--json")
        with EventClient(demo.server.target) as client:
            served = client.pipeline_state(pipeline.pipeline_id)
        state = as_message(out, state_pb2.PipelineState)
        assert state == contract(messages.pipeline_to_proto(served))
        assert state["pipeline_name"] == pipeline.pipeline_name


@pytest.mark.parametrize(
    ("command", "message"),
    [("run", "no processing run {id} in the log (folded up to position "),
     ("pipeline", "no pipeline {id} in the log (folded up to position ")],
)  # fmt: skip
def test_an_unknown_id_is_one_line_and_status_1(demo: Demo, command: str, message: str) -> None:
    unknown = str(uuid.uuid4())
    result = process(demo.server.target, command, unknown)
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        f"pipeline-events {command}: " + message.format(id=unknown) + f"{demo.head})"
    ]


def test_read_models_behind_min_position_is_one_line_and_status_1(
    demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(next(iter(demo.local.runs)))
    status, out, err = main(capsys, demo, "run", run, "--min-position", str(demo.head + 10**9))
    assert (status, out) == (1, "")
    assert err.splitlines() == [
        f"pipeline-events run: GetProcessingState: the projections at {demo.server.target} had "
        f"folded the log to position {demo.head}, not yet to {demo.head + 10**9}"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "not-a-uuid"], "argument processing_id: expected a UUID, not 'not-a-uuid'"),
        (["pipeline", "42"], "argument pipeline_id: expected a UUID, not '42'"),
        (["runs", "--pipeline", "x"], "argument --pipeline: expected a UUID, not 'x'"),
        (["runs", "--status", "done"], "argument --status: invalid choice: 'done'"),
        (["runs", "--limit", "0"], "argument --limit: expected a whole number >= 1, not '0'"),
        (["run", str(uuid.UUID(int=1)), "--min-position", "-1"],
         "argument --min-position: expected a position >= 0, not '-1'"),
    ],
)  # fmt: skip
def test_a_malformed_argument_is_a_usage_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--target", "127.0.0.1:1"])
    captured = capsys.readouterr()
    assert (exit_.value.code, captured.out) == (2, "")
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"pipeline-events {args[0]}: error: {message}")


@pytest.mark.parametrize("command", [["run", str(uuid.UUID(int=1))], ["runs"]])
def test_an_unreachable_service_is_one_line_and_status_2(command: list[str]) -> None:
    result = process("127.0.0.1:1", *command)
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1
    assert "cannot reach the event service at 127.0.0.1:1" in result.stderr


def reports_of(capsys: pytest.CaptureFixture[str], target: str, head: int) -> list[str]:
    """`runs --json`, then `run ID --json` and `pipeline ID --json` of everything listed."""

    def show(*args: str) -> str:
        assert cli.main([*args, "--json", "--target", target]) == 0
        return capsys.readouterr().out

    listed = show("runs", "--limit", "1000", "--min-position", str(head))
    runs = [json.loads(line) for line in listed.splitlines()]
    pipelines = sorted({run["pipelineId"] for run in runs})
    return [
        listed,
        *(show("run", run["processingId"]) for run in runs),
        *(show("pipeline", pipeline) for pipeline in pipelines),
    ]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_demos_runs_are_answered_the_same_after_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    # SIGTERM: the snapshot saved at shutdown and nothing to fold; kill -9: no snapshot
    # (fewer than 10,000 events), the read models rebuilt from the log.
    url = f"sqlite:///{tmp_path}/events.db"
    server = start_server_process(url)
    try:
        assert cli.main(["demo", "--pipelines", "2", "--runs", "4", "--seed", "3",
                         "--target", server.target]) == 0  # fmt: skip
        capsys.readouterr()
        head = replay(e for events in simulate(2, 4, seed=3) for e in events).last_position
        before = reports_of(capsys, server.target, head)
        assert len(before) == 1 + 8 + 2
    finally:
        stop_process(server.process, signum)
    with sqlite3.connect(tmp_path / "events.db") as connection:
        saved = connection.execute("SELECT position FROM snapshots").fetchall()
    assert saved == ([(head,)] if signum == signal.SIGTERM else [])
    server = start_server_process(url)
    try:
        assert reports_of(capsys, server.target, head) == before
    finally:
        assert stop_process(server.process) == 0
