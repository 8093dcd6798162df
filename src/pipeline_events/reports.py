"""The read models as reports for people, and their summaries as the contract's messages.

Pure functions from the projections' states to rich renderables (what `pipeline-events
run`, `runs` and `pipeline` print) and to state.proto messages, and from consumer groups
and their parked events to tables and JSON (`group`, `parked`): no I/O, no client,
no clock. Text is `Text`, never markup: ids, paths and error messages hold brackets.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from adaptive_pipeline.events.v1 import state_pb2
from google.protobuf import timestamp_pb2
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipeline_events import adapter, domain
from pipeline_events.codecs import proto_json
from pipeline_events.consumer import ConsumerGroup, ParkedEvent
from pipeline_events.projections import (
    Anomaly,
    PipelineState,
    PipelineStatus,
    ProcessingRunState,
    ProcessingStatus,
    RunSummary,
    StageState,
)
from pipeline_events.timestamps import NanoDatetime

__all__ = [
    "GROUP_COLUMNS",
    "NONE",
    "PARKED_COLUMNS",
    "RUN_COLUMNS",
    "STAGE_COLUMNS",
    "as_json",
    "filter_summary",
    "group_json",
    "group_report",
    "groups_table",
    "parked_json",
    "parked_table",
    "pipeline_report",
    "rfc3339",
    "run_report",
    "runs_table",
    "summary_message",
]

NONE = "-"  # a value not known (yet)
STAGE_COLUMNS = ("stage", "type", "status", "chunks", "bytes", "time ms", "started", "ended",
                 "duration", "error")  # fmt: skip
RUN_COLUMNS = ("run", "pipeline", "status", "input", "started", "ended", "chunks", "anomalies",
               "error")  # fmt: skip
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


# --- values ---------------------------------------------------------------------------------


def event_summary(event: domain.Event | domain.UnknownEvent) -> str:
    """A short description of what happened, for one line of a table."""
    if isinstance(event, domain.UnknownEvent):
        return f"{len(event.envelope_bytes)} bytes of an unknown event type"
    fields = []
    for name in event.own_fields():
        value = getattr(event, name)
        if value is None or name in (
            "processing_id",
            "security_context",
            "metrics",
            "partial_metrics",
        ):
            continue
        if isinstance(value, uuid.UUID):
            value = str(value)[:8]
        elif isinstance(value, bytes):
            value = f"{len(value)} bytes"
        elif isinstance(value, tuple):
            value = ", ".join(map(str, value))
        elif hasattr(value, "name") and not isinstance(value, str):
            value = value.name.lower()
        fields.append(f"{name}={value}")
    metrics = getattr(event, "metrics", None) or getattr(event, "partial_metrics", None)
    if metrics is not None:
        fields.append(f"progress={metrics.bytes_processed}/{metrics.bytes_total} bytes")
    return " ".join(fields)


def status_name(status: ProcessingStatus | PipelineStatus | Any) -> str:
    """`completed`, `not started`: an enum member's name for people."""
    return status.name.lower().replace("_", " ")


def format_time(value: _dt.datetime | None) -> str:
    """`2023-11-14 22:13:20.123Z` (UTC, to the millisecond), or - when unknown."""
    if value is None:
        return NONE
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def format_duration(value: _dt.timedelta | int | None) -> str:
    """`840 ms`, `12.345 s`, `3 min 04.500 s`, `2 h 05 min 10 s` (an int is nanoseconds)."""
    if value is None:
        return NONE
    nanos = value if isinstance(value, int) else value // _dt.timedelta(microseconds=1) * 1000
    millis = nanos / 1e6
    if millis < 1000:
        return f"{millis:.0f} ms" if millis >= 1 or nanos == 0 else f"{millis:.3f} ms"
    seconds = nanos / 1e9
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:06.3f} s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours} h {minutes:02d} min {int(seconds):02d} s"


def format_size(size: int) -> str:
    """`512 B`, `4.0 KiB`, `12.0 MiB` (binary units)."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def _exact_size(size: int) -> str:
    return f"{format_size(size)} ({size:,} bytes)" if size >= 1024 else format_size(size)


def _error(code: str, message: str) -> str:
    return ": ".join(part for part in (code, message) if part)


def _or_none(value: object) -> str:
    return NONE if value is None or value == "" else str(value)


# --- building blocks ------------------------------------------------------------------------


def _fields(rows: Iterable[tuple[str, str]]) -> Table:
    """Label and value, one per line (labels dim)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in rows:
        grid.add_row(Text(label), Text(value))
    return grid


def _table(columns: Sequence[str], title: str | None = None, numeric: Sequence[str] = ()) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left")
    return table


def _heading(text: str) -> Text:
    return Text(text, style="bold underline")


def _anomalies(anomalies: Sequence[Anomaly]) -> RenderableType:
    if not anomalies:
        return Text("no anomalies")
    table = _table(("kind", "position", "event", "description"), numeric=("position",))
    for anomaly in anomalies:
        table.add_row(
            Text(str(anomaly.kind)),
            Text(str(anomaly.position)),
            Text(anomaly.event_type),
            Text(anomaly.description),
        )
    return table


# --- one processing run ---------------------------------------------------------------------


def _run_fields(state: ProcessingRunState) -> list[tuple[str, str]]:
    paths = f"{state.input_path or NONE} → {state.output_path or NONE}"
    sizes = f"{_exact_size(state.file_size)} → " + (
        _exact_size(state.output_size) if state.output_size else NONE
    )
    paused = format_duration(state.paused_ns)
    if state.paused_since is not None:
        paused += f" (paused since {format_time(state.paused_since)})"
    rows = [
        ("run", str(state.processing_id)),
        ("pipeline", str(state.pipeline_id)),
        ("status", status_name(state.status)),
        ("input → output", paths),
        ("file size → output size", sizes),
        ("started", format_time(state.started_at)),
        ("ended", format_time(state.ended_at)),
        ("duration", format_duration(state.duration_ns)),
        ("active duration", format_duration(state.active_ns)),
        ("time paused", paused),
        ("pauses / resumes", f"{state.pause_count} / {state.resume_count}"),
    ]
    if state.status is ProcessingStatus.CANCELLED:
        by = f" (by {state.cancelled_by})" if state.cancelled_by else ""
        rows.append(("cancel reason", (state.error_message or NONE) + by))
    elif state.status is ProcessingStatus.PAUSED:
        rows.append(("pause reason", state.error_message or NONE))
    elif state.error_code or state.error_message:
        rows.append(("error", _error(state.error_code, state.error_message)))
    if state.failed_stage is not None:
        rows.append(("failed stage", state.failed_stage))
    context = state.security_context
    if context is not None and context.user_id:
        rows.append(("user", context.user_id))
    rows.append(("events folded", f"{state.events_folded} (last position {state.last_position})"))
    return rows


def _stage_row(stage: StageState) -> list[Text]:
    values = [
        stage.stage_name,
        stage.stage_type or NONE,
        status_name(stage.status),
        str(stage.chunks_processed),
        format_size(stage.bytes_processed),
        str(stage.processing_time_ms),
        format_time(stage.started_at),
        format_time(stage.ended_at),
        format_duration(stage.duration_ns),
        _error(stage.error_code, stage.error_message) or NONE,
    ]
    return [Text(value) for value in values]


def _stages(state: ProcessingRunState) -> RenderableType:
    if not state.stages:
        return Text("no stages")
    table = _table(STAGE_COLUMNS, numeric=("chunks", "bytes", "time ms"))
    for stage in state.stages.values():
        table.add_row(*_stage_row(stage))
    return table


def _part(done: int, total: int, size: bool = False) -> str:
    shown = format_size if size else str
    if not total:
        return shown(done)
    return f"{shown(done)} of {shown(total)} ({done / total:.0%})"


def _metrics(metrics: domain.ProcessingMetrics | None) -> RenderableType:
    if metrics is None:
        return Text("no metrics reported")
    duration = metrics.processing_duration
    ratio = metrics.compression_ratio
    return _fields(
        [
            ("bytes processed", _part(metrics.bytes_processed, metrics.bytes_total, size=True)),
            ("chunks processed", _part(metrics.chunks_processed, metrics.chunks_total)),
            ("throughput", f"{format_size(round(metrics.throughput_bytes_per_second))}/s"),
            ("processing time", NONE if duration is None else format_duration(
                duration.secs * 1_000_000_000 + duration.nanos)),
            ("compression ratio", NONE if ratio is None else f"{ratio:.3f}"),
            ("errors / warnings", f"{metrics.error_count} / {metrics.warning_count}"),
        ]
    )  # fmt: skip


def _exhaustion(event: domain.ResourceExhausted) -> str:
    return (
        f"{format_time(event.occurred_at)}  {event.resource_type}: {event.current_usage} of "
        f"limit {event.limit}, {event.action_taken}"
    )


def _violation(event: domain.SecurityViolation) -> str:
    who = [f"user {event.user_id}"] if event.user_id else []
    who += [f"from {event.source_ip}"] if event.source_ip else []
    suffix = f" ({', '.join(who)})" if who else ""
    return (
        f"{format_time(event.occurred_at)}  {status_name(event.severity)} "
        f"{event.violation_type}: {event.description}{suffix}"
    )


def _events(title: str, lines: list[str]) -> list[RenderableType]:
    return [Text(f"{title}: {len(lines)}"), *(Text(f"  {line}") for line in lines)]


def _transitions(state: ProcessingRunState) -> RenderableType:
    if not state.transitions:
        return Text("no transitions")
    table = _table(("status", "position", "time"), numeric=("position",))
    for transition in state.transitions:
        table.add_row(
            Text(status_name(transition.status)),
            Text(str(transition.position)),
            Text(format_time(transition.occurred_at)),
        )
    return table


def run_report(state: ProcessingRunState) -> Group:
    """A processing run for people: header, stages, metrics, operational events,
    anomalies and transitions."""
    return Group(
        _heading(f"processing run {state.processing_id}"),
        _fields(_run_fields(state)),
        Text(""),
        _heading(f"stages ({len(state.stages)})"),
        _stages(state),
        Text(""),
        _heading("latest metrics"),
        _metrics(state.metrics),
        Text(""),
        *_events("resource exhaustions", [_exhaustion(e) for e in state.exhaustions]),
        *_events("security violations", [_violation(e) for e in state.violations]),
        Text(""),
        _heading(f"anomalies ({len(state.anomalies)})"),
        _anomalies(state.anomalies),
        Text(""),
        _heading("transitions"),
        _transitions(state),
    )


# --- runs -----------------------------------------------------------------------------------


def _summary_row(summary: RunSummary) -> list[Text]:
    values = [
        str(summary.processing_id),
        str(summary.pipeline_id),
        status_name(summary.status),
        summary.input_path or NONE,
        format_time(summary.started_at),
        format_time(summary.ended_at),
        str(summary.chunks_processed),
        str(summary.anomaly_count),
        summary.error_code or NONE,
    ]
    return [Text(value) for value in values]


def runs_table(summaries: Sequence[RunSummary], title: str | None = None) -> Table:
    """Runs as a table, one row each, in the order given (the service's: newest first)."""
    table = _table(RUN_COLUMNS, title, numeric=("chunks", "anomalies"))
    for summary in summaries:
        table.add_row(*_summary_row(summary))
    return table


def _set_time(target: Any, value: _dt.datetime | None) -> None:
    if value is not None:
        instant = NanoDatetime.from_datetime(value)
        target.seconds = instant.epoch_seconds
        target.nanos = instant.nanosecond


def summary_message(summary: RunSummary) -> state_pb2.ProcessingRunSummary:
    """The contract's message of a run summary (what ListProcessingRuns answered)."""
    message = state_pb2.ProcessingRunSummary(
        processing_id=str(summary.processing_id),
        pipeline_id=str(summary.pipeline_id),
        status=state_pb2.ProcessingStatus.ValueType(summary.status),
        input_path=summary.input_path,
        chunks_processed=summary.chunks_processed,
        anomaly_count=summary.anomaly_count,
        first_position=summary.first_position,
        last_position=summary.last_position,
        error_code=summary.error_code,
    )
    _set_time(message.started_at, summary.started_at)
    _set_time(message.ended_at, summary.ended_at)
    return message


def as_json(message: Any) -> dict[str, Any]:
    """A state.proto message as proto3 JSON (lowerCamelCase names, as `tail --json` writes)."""
    return proto_json.message_to_dict(message)


# --- one pipeline ---------------------------------------------------------------------------


def _by(who: str | None, when: _dt.datetime | None) -> str:
    return f"{who or 'unknown'} at {format_time(when)}"


def _pipeline_fields(state: PipelineState) -> list[tuple[str, str]]:
    active = state.active_processing_ids
    rows = [
        ("pipeline", str(state.pipeline_id)),
        ("name", state.pipeline_name or NONE),
        ("status", status_name(state.status)),
        ("stages", str(state.stage_count)),
        ("created", _by(state.created_by, state.created_at)),
        ("updated", format_time(state.updated_at)),
    ]
    if state.status is PipelineStatus.DELETED:
        rows.append(("deleted", _by(state.deleted_by, state.deleted_at)))
    rows += [
        ("runs started", str(state.runs_started)),
        ("runs completed", str(state.runs_completed)),
        ("runs failed", str(state.runs_failed)),
        ("runs cancelled", str(state.runs_cancelled)),
        ("active runs", f"{len(active)}" + "".join(f"\n{run}" for run in active)),
        ("security violations", str(state.security_violations)),
        ("revision", f"{state.revision} (last position {state.last_position})"),
    ]
    return rows


def _history(state: PipelineState) -> RenderableType:
    if not state.history:
        return Text("no changes")
    table = _table(("revision", "time", "changes", "by"), numeric=("revision",))
    for change in state.history:
        table.add_row(
            Text(str(change.revision)),
            Text(format_time(change.occurred_at)),
            Text("; ".join(change.changes) or NONE),
            Text(_or_none(change.updated_by)),
        )
    return table


def pipeline_report(state: PipelineState) -> Group:
    """A pipeline for people: its definition, its runs by outcome, its changes and anomalies."""
    return Group(
        _heading(f"pipeline {state.pipeline_name or state.pipeline_id}"),
        _fields(_pipeline_fields(state)),
        Text(""),
        _heading(f"change history ({len(state.history)})"),
        _history(state),
        Text(""),
        _heading(f"anomalies ({len(state.anomalies)})"),
        _anomalies(state.anomalies),
    )


# --- consumer groups ------------------------------------------------------------------------

GROUP_COLUMNS = ("name", "members", "checkpoint", "head", "lag", "in flight", "waiting retry",
                 "parked", "filter")  # fmt: skip
PARKED_COLUMNS = ("position", "event id", "type", "pipeline", "deliveries", "parked at",
                  "reason")  # fmt: skip


def rfc3339(value: _dt.datetime) -> str:
    """A time as proto3 JSON writes a Timestamp (`2026-12-01T12:32:15.536Z`, UTC)."""
    instant = NanoDatetime.from_datetime(value)
    stamp = timestamp_pb2.Timestamp(seconds=instant.epoch_seconds, nanos=instant.nanosecond)
    return stamp.ToJsonString()


def _type_names(numbers: Iterable[int]) -> list[str]:
    return [adapter.event_type_name(number) for number in numbers]


def _category_names(numbers: Iterable[int]) -> list[str]:
    names = []
    for number in numbers:
        try:
            names.append(domain.EventCategory(number).name.lower())
        except ValueError:
            names.append(f"unknown({number})")
    return names


def _seconds(value: float) -> str:
    return f"{value:g} s"


def filter_summary(group: ConsumerGroup) -> str:
    """`types=ChunkProcessed categories=stage pipelines=2`, or `every event`."""
    parts = []
    if group.event_types:
        parts.append("types=" + ",".join(_type_names(group.event_types)))
    if group.categories:
        parts.append("categories=" + ",".join(_category_names(group.categories)))
    for label, ids in (("pipelines", group.pipeline_ids), ("runs", group.processing_ids)):
        if len(ids) == 1:
            parts.append(f"{label[:-1]}={ids[0]}")
        elif ids:
            parts.append(f"{label}={len(ids)}")
    return " ".join(parts) or "every event"


def groups_table(groups: Sequence[ConsumerGroup], title: str | None = None) -> Table:
    """Consumer groups as a table, one row each, in the order given (the service's: by name)."""
    table = _table(
        GROUP_COLUMNS, title,
        numeric=("members", "checkpoint", "head", "lag", "in flight", "waiting retry", "parked"),
    )  # fmt: skip
    for group in groups:
        values = [group.name, group.members, group.checkpoint, group.head, group.lag,
                  group.in_flight, group.waiting_retry, group.parked, filter_summary(group)]  # fmt: skip
        table.add_row(*(Text(str(value)) for value in values))
    return table


def _group_fields(group: ConsumerGroup) -> list[tuple[str, str]]:
    settings = group.settings

    def listed(values: Sequence[str]) -> str:
        return "\n".join(values) if values else "all"

    return [
        ("group", group.name),
        ("created", format_time(group.created_at)),
        ("members", str(group.members)),
        ("started after position", str(group.start_after)),
        ("checkpoint", str(group.checkpoint)),
        ("head", str(group.head)),
        ("lag", str(group.lag)),
        ("in flight", str(group.in_flight)),
        ("waiting retry", str(group.waiting_retry)),
        ("parked", str(group.parked)),
        ("event types", listed(_type_names(group.event_types))),
        ("categories", listed(_category_names(group.categories))),
        ("pipelines", listed(group.pipeline_ids)),
        ("runs", listed(group.processing_ids)),
        ("max deliveries", str(settings.max_deliveries)),
        ("backoff", ", ".join(_seconds(s) for s in settings.backoff) or NONE),
        ("ack timeout", _seconds(settings.ack_timeout)),
        ("max in flight", str(settings.max_in_flight)),
    ]


def group_report(group: ConsumerGroup) -> Table:
    """One consumer group for people: its progress, filter and settings."""
    return _fields(_group_fields(group))


def group_json(group: ConsumerGroup) -> dict[str, Any]:
    """A consumer group for machines: every field, always present (`lag` included)."""
    settings = group.settings
    return {
        "name": group.name,
        "created_at": rfc3339(group.created_at),
        "members": group.members,
        "start_after": group.start_after,
        "checkpoint": group.checkpoint,
        "head": group.head,
        "lag": group.lag,
        "in_flight": group.in_flight,
        "waiting_retry": group.waiting_retry,
        "parked": group.parked,
        "filter": {
            "event_types": _type_names(group.event_types),
            "categories": _category_names(group.categories),
            "pipeline_ids": list(group.pipeline_ids),
            "processing_ids": list(group.processing_ids),
        },
        "settings": {
            "max_deliveries": settings.max_deliveries,
            "backoff_seconds": list(settings.backoff),
            "ack_timeout_seconds": settings.ack_timeout,
            "max_in_flight": settings.max_in_flight,
        },
    }


def _parked_values(parked: ParkedEvent) -> list[str]:
    envelope = parked.event.envelope
    return [
        str(parked.event.global_position),
        envelope.event_id,
        adapter.event_type_name(envelope.event_type),
        envelope.aggregate_id,
        str(parked.deliveries),
        format_time(parked.parked_at),
        parked.reason or NONE,
    ]


def parked_table(parked: Sequence[ParkedEvent], title: str | None = None) -> Table:
    """A group's parked events, one row each, in position order."""
    table = _table(PARKED_COLUMNS, title, numeric=("position", "deliveries"))
    for event in parked:
        table.add_row(*(Text(value) for value in _parked_values(event)))
    return table


def parked_json(parked: ParkedEvent, event: dict[str, Any]) -> dict[str, Any]:
    """A parked event for machines; `event` is its RecordedEvent's proto3 JSON (as tail's)."""
    envelope = parked.event.envelope
    return {
        "position": parked.event.global_position,
        "event_id": envelope.event_id,
        "event_type": adapter.event_type_name(envelope.event_type),
        "pipeline_id": envelope.aggregate_id,
        "deliveries": parked.deliveries,
        "parked_at": rfc3339(parked.parked_at),
        "reason": parked.reason,
        "attempts": [
            {"delivered_at": rfc3339(a.delivered_at), "member": a.member, "outcome": a.outcome}
            for a in parked.attempts
        ],
        "event": event,
    }


# --- the server (`info`) --------------------------------------------------------------------


def info_report(info: Any) -> Group:
    """A `client.ServerInfo` for people: the server, its events, runs and consumer groups."""
    size = _exact_size(info.store_size_bytes) if info.store_size_bytes else NONE
    server = _fields(
        [
            ("version", info.server_version),
            ("store", f"{info.store_backend}, {size}"),
            ("head position", str(info.head_position)),
            ("read models at", str(info.position)),
            ("pipelines", str(info.pipelines)),
            ("open subscriptions", str(info.open_subscriptions)),
        ]
    )
    total = sum(info.events_by_type.values())
    scope = "" if info.events_by_type_exact else ", appended since the server started"
    events = _table(("type", "events"), numeric=("events",))
    for name, count in sorted(info.events_by_type.items(), key=lambda item: (-item[1], item[0])):
        events.add_row(Text(name), Text(str(count)))
    runs = _table(("status", "runs"), numeric=("runs",))
    for name, count in info.runs_by_status.items():
        runs.add_row(Text(name), Text(str(count)))
    groups = _table(
        ("name", "lag", "parked", "members", "in flight", "waiting retry"),
        numeric=("lag", "parked", "members", "in flight", "waiting retry"),
    )
    for group in info.consumer_groups:
        values = (group.name, group.lag, group.parked, group.members, group.in_flight,
                  group.waiting_retry)  # fmt: skip
        groups.add_row(*(Text(str(value)) for value in values))
    return Group(
        _heading("server"),
        server,
        Text(""),
        _heading(f"events by type ({total}{scope})"),
        events if info.events_by_type else Text(NONE),
        Text(""),
        _heading(f"runs by status ({sum(info.runs_by_status.values())})"),
        runs if info.runs_by_status else Text(NONE),
        Text(""),
        _heading(f"consumer groups ({len(info.consumer_groups)})"),
        groups if info.consumer_groups else Text(NONE),
    )


def info_json(info: Any) -> dict[str, Any]:
    """A `client.ServerInfo` as one JSON object (its fields; groups as a list of objects)."""
    import dataclasses

    data = dataclasses.asdict(info)
    data["consumer_groups"] = [dataclasses.asdict(g) for g in info.consumer_groups]
    return data
