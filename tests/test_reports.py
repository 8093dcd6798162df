"""The reports of `pipeline-events run`, `runs` and `pipeline`, rendered without a server."""

from __future__ import annotations

import datetime as dt
import io
import re
import uuid
from typing import Any

import pytest
from rich.console import Console

from pipeline_events import domain, reports
from pipeline_events.projections import (
    ProcessingRunState,
    RunSummary,
    messages,
    replay,
)
from tests.projections.builders import PIPELINE, RUN, STAGE, event, numbered


def render(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def field(output: str, label: str) -> str:
    """The value a report shows for `label` (the rest of the line that starts with it)."""
    for line in output.splitlines():
        if re.match(rf"{re.escape(label)}\s\s", line):
            return line[len(label) :].strip()
    raise AssertionError(f"no {label!r} in:\n{output}")


def row(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def run_of(*events: domain.Event) -> ProcessingRunState:
    return replay(numbered(list(events))).runs[RUN]


def test_a_completed_run_after_a_pause_shows_its_times_and_metrics() -> None:
    metrics = domain.ProcessingMetrics(
        bytes_processed=3 << 20, bytes_total=4 << 20, chunks_processed=3, chunks_total=4,
        throughput_bytes_per_second=2 << 20, compression_ratio=0.25, error_count=1,
        warning_count=2, processing_duration=domain.Duration(1, 500_000_000),
    )  # fmt: skip
    state = run_of(
        event(domain.PipelineCreated, 0),
        event(domain.ProcessingStarted, 1),
        event(domain.StageStarted, 1.5),
        event(domain.ChunkProcessed, 2),
        event(domain.ProcessingPaused, 3),
        event(domain.ProcessingResumed, 5.5),
        event(domain.StageCompleted, 6),
        event(domain.MetricsUpdated, 6.5, metrics=metrics),
        event(domain.ProcessingCompleted, 7, metrics=metrics, output_size=2048),
    )
    output = render(reports.run_report(state))
    assert field(output, "run") == str(RUN)
    assert field(output, "pipeline") == str(PIPELINE)
    assert field(output, "status") == "completed"
    assert field(output, "input → output") == "/in/a.csv → /out/a.adapipe"
    assert (
        field(output, "file size → output size") == "4.0 KiB (4,096 bytes) → 2.0 KiB (2,048 bytes)"
    )
    assert field(output, "started") == "2023-11-14 22:13:21.000Z"
    assert field(output, "ended") == "2023-11-14 22:13:27.000Z"
    assert field(output, "duration") == "6.000 s"
    assert field(output, "active duration") == "3.500 s"
    assert field(output, "time paused") == "2.500 s"
    assert field(output, "pauses / resumes") == "1 / 1"
    assert field(output, "user") == "alice"
    assert "error" not in output.split("stages (1)")[0]
    assert row(output, "compress") == [
        "compress", "compression", "completed", "1", "4.0 KiB", "40",
        "2023-11-14 22:13:21.500Z", "2023-11-14 22:13:26.000Z", "4.500 s", "-",
    ]  # fmt: skip
    assert field(output, "bytes processed") == "3.0 MiB of 4.0 MiB (75%)"
    assert field(output, "chunks processed") == "3 of 4 (75%)"
    assert field(output, "throughput") == "2.0 MiB/s"
    assert field(output, "processing time") == "1.500 s"
    assert field(output, "compression ratio") == "0.250"
    assert field(output, "errors / warnings") == "1 / 2"
    assert "no anomalies" in output
    assert [row(output, status)[1:] for status in ("running", "paused", "completed")] == [
        ["2", "2023-11-14 22:13:21.000Z"],
        ["5", "2023-11-14 22:13:23.000Z"],
        ["9", "2023-11-14 22:13:27.000Z"],
    ]


def test_a_paused_run_shows_its_open_pause_and_reason() -> None:
    state = run_of(
        event(domain.ProcessingStarted, 0),
        event(domain.ProcessingPaused, 1),
        event(domain.ProcessingResumed, 2),
        event(domain.ProcessingPaused, 4, reason="disk full"),
    )
    output = render(reports.run_report(state))
    assert field(output, "status") == "paused"
    assert field(output, "time paused") == "1.000 s (paused since 2023-11-14 22:13:24.000Z)"
    assert field(output, "pauses / resumes") == "2 / 1"
    assert field(output, "pause reason") == "disk full"
    assert field(output, "ended") == field(output, "duration") == "-"
    assert field(output, "active duration") == "-"


def test_a_failed_stage_shows_its_error_and_the_run_its_own() -> None:
    state = run_of(
        event(domain.ProcessingStarted, 0),
        event(domain.StageStarted, 0.25),
        event(domain.ChunkProcessed, 0.5),
        event(domain.StageFailed, 0.75),
        event(domain.ProcessingFailed, 1),
        event(domain.ResourceExhausted, 1.5),  # after the end: an anomaly, still shown
    )
    output = render(reports.run_report(state))
    assert field(output, "status") == "failed"
    assert field(output, "error") == "E_STAGE: stage compress failed"
    assert field(output, "failed stage") == "compress"
    assert row(output, "compress")[2:4] == ["failed", "1"]
    assert row(output, "compress")[-1] == "E_KEY: key material unavailable"
    assert field(output, "duration") == "1.000 s"
    assert "no metrics reported" in output
    assert "resource exhaustions: 0" in output
    assert "anomalies (1)" in output
    assert row(output, "after_end") == [
        "after_end", "6", "ResourceExhausted", "after_end: the run is failed",
    ]  # fmt: skip


def test_operational_events_and_anomalies_each_get_a_line() -> None:
    state = run_of(
        event(domain.ChunkProcessed, 0),  # before the start: not_started, stage_not_started
        event(domain.ProcessingStarted, 1),
        event(domain.ProcessingResumed, 2),  # never paused
        event(domain.ResourceExhausted, 3),
        event(domain.SecurityViolation, 4),
        event(domain.ProcessingCancelled, 5),
    )
    output = render(reports.run_report(state))
    assert field(output, "status") == "cancelled"
    assert field(output, "cancel reason") == "superseded (by bob)"
    assert "resource exhaustions: 1" in output
    assert "  2023-11-14 22:13:23.000Z  memory: 9 of limit 8, throttled" in output
    assert "security violations: 1" in output
    assert (
        "  2023-11-14 22:13:24.000Z  high unauthorized_access: read without permission "
        "(user mallory)" in output
    )
    assert "anomalies (3)" in output
    assert [row(output, kind)[:3] for kind in ("not_started", "stage_not_started")] == [
        ["not_started", "1", "ChunkProcessed"],
        ["stage_not_started", "1", "ChunkProcessed"],
    ]
    assert row(output, "resume_without_pause")[1] == "3"
    # The stage seen only through its chunk: no type, no start.
    assert row(output, "compress")[:4] == ["compress", "-", "not started", "1"]


def test_a_run_never_started_renders_with_what_little_is_known() -> None:
    state = ProcessingRunState(processing_id=RUN, pipeline_id=PIPELINE)
    output = render(reports.run_report(state))
    assert field(output, "status") == "not started"
    assert field(output, "started") == field(output, "ended") == "-"
    assert field(output, "input → output") == "- → -"
    assert field(output, "time paused") == "0 ms"
    assert "no stages" in output and "no metrics reported" in output
    assert "no transitions" in output and "no anomalies" in output
    assert "user" not in output


def test_text_from_the_log_is_never_markup() -> None:
    state = run_of(
        event(domain.ProcessingStarted, 0, input_path="/in/[bold]x[/bold].csv"),
        event(domain.ProcessingFailed, 1, error_message="[red]boom", error_code="E_[1]"),
    )
    output = render(reports.run_report(state))
    assert field(output, "input → output") == "/in/[bold]x[/bold].csv → /out/a.adapipe"
    assert field(output, "error") == "E_[1]: [red]boom"


def test_the_pipeline_report_shows_its_definition_runs_and_changes() -> None:
    other = uuid.UUID(int=0x3001)
    replayed = replay(
        numbered([
            event(domain.PipelineCreated, 0),
            event(domain.PipelineUpdated, 1, changes=("a", "b")),
            event(domain.ProcessingStarted, 2),
            event(domain.ProcessingStarted, 3, processing_id=other),
            event(domain.ProcessingCompleted, 4),
            event(domain.SecurityViolation, 5),
            event(domain.PipelineDeleted, 6),
            event(domain.PipelineUpdated, 7),  # after the deletion: an anomaly
        ])
    )  # fmt: skip
    output = render(reports.pipeline_report(replayed.pipelines[PIPELINE]))
    assert output.startswith("pipeline ingest\n")
    assert field(output, "name") == "ingest"
    assert field(output, "status") == "deleted"
    assert field(output, "stages") == "2"
    assert field(output, "created") == "alice at 2023-11-14 22:13:20.000Z"
    assert field(output, "deleted") == "carol at 2023-11-14 22:13:26.000Z"
    assert field(output, "updated") == "2023-11-14 22:13:27.000Z"
    counts = [field(output, f"runs {what}") for what in ("started", "completed", "failed")]
    assert counts == ["2", "1", "0"]
    lines = output.splitlines()
    active = next(n for n, line in enumerate(lines) if line.startswith("active runs"))
    assert field(output, "active runs") == "1"
    assert lines[active + 1].strip() == str(other)  # the ids, one a line under the count
    assert field(output, "security violations") == "1"
    assert row(output, "2") == ["2", "2023-11-14 22:13:21.000Z", "a; b", "bob"]
    assert "anomalies (1)" in output and "after_delete" in output


def test_the_runs_table_has_a_row_per_run_in_the_order_given() -> None:
    states = replay(
        numbered([
            event(domain.ProcessingStarted, 0),
            event(domain.ProcessingFailed, 1, error_code="E_IO"),
            event(domain.ProcessingStarted, 2, processing_id=STAGE, input_path="/in/b.csv"),
        ])
    ).runs  # fmt: skip
    summaries = [RunSummary.of(states[STAGE]), RunSummary.of(states[RUN])]
    output = render(reports.runs_table(summaries, title="2 runs"))
    assert output.splitlines()[0].strip() == "2 runs"
    lines = [line for line in output.splitlines() if re.match(r" ?[0-9a-f]{8}-", line)]
    assert [line.split()[0] for line in lines] == [str(STAGE), str(RUN)]
    assert row(output, str(STAGE)) == [
        str(STAGE), str(PIPELINE), "running", "/in/b.csv", "2023-11-14 22:13:22.000Z", "-",
        "0", "0", "-",
    ]  # fmt: skip
    assert row(output, str(RUN))[2] == "failed" and row(output, str(RUN))[-1] == "E_IO"


@pytest.mark.parametrize("started", [True, False])
def test_a_summary_is_the_contracts_message_of_the_run(started: bool) -> None:
    events = [event(domain.ChunkProcessed, 0), event(domain.ProcessingCompleted, 1)]
    if started:
        events.insert(0, event(domain.ProcessingStarted, 0))
    state = run_of(*events)
    assert (state.started_at is not None) is started
    message = reports.summary_message(RunSummary.of(state))
    assert message == messages.summary_to_proto(state)
    as_json = reports.as_json(message)
    assert as_json["status"] == "PROCESSING_STATUS_COMPLETED"
    assert as_json["chunksProcessed"] == "1"  # uint64: a string in proto3 JSON
    assert as_json["endedAt"] == "2023-11-14T22:13:21Z"
    assert ("startedAt" in as_json) is started


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (250_000, "0.250 ms"),
        (840_000_000, "840 ms"),
        (12_345_000_000, "12.345 s"),
        (dt.timedelta(minutes=3, seconds=4.5), "3 min 04.500 s"),
        (dt.timedelta(hours=2, minutes=5, seconds=10), "2 h 05 min 10 s"),
    ],
)
def test_durations_read_naturally(value: Any, text: str) -> None:
    assert reports.format_duration(value) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 << 20, "3.0 MiB"), (5 << 40, "5.0 TiB")],
)
def test_sizes_use_binary_units(size: int, text: str) -> None:
    assert reports.format_size(size) == text
