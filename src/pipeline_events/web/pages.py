"""The console's HTML: pure functions from the read models' states to escaped markup.

Everything shown comes from producers (names, paths, reasons), so every value goes
through `esc` (or `table`, which escapes each cell); markup is only ever written
here, never taken from data. No inline script or style: the Content-Security-Policy
allows only the committed files under /static/.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline_events import domain
from pipeline_events.projections import PipelineState, ProcessingRunState
from pipeline_events.reports import format_duration, format_size, format_time, status_name

NAV = [("/", "live tail"), ("/pipelines", "pipelines"), ("/runs", "runs"), ("/groups", "groups")]


def esc(value: object) -> str:
    """A value as HTML text (quotes escaped too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


class Markup(str):
    """HTML written here (not escaped again by `table`)."""


def link(href: str, text: object) -> Markup:
    return Markup(f'<a href="{esc(href)}">{esc(text)}</a>')


def badge(status: str) -> Markup:
    return Markup(
        f'<span class="status status-{esc(status.replace(" ", "-"))}">{esc(status)}</span>'
    )


def table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], *, id_: str = "", empty: str = "none"
) -> str:
    """A table; cells are escaped unless they are Markup."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if isinstance(c, Markup) else esc(c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(columns)}" class="empty">{esc(empty)}</td></tr>'
    ident = f' id="{esc(id_)}"' if id_ else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody{ident}>{body}</tbody></table>"


def fields(rows: Iterable[tuple[str, object]]) -> str:
    """Label/value pairs as a definition list."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f'<dl class="fields">{items}</dl>'


def page(title: str, body: str, *, current: str = "", script: str = "", user: str = "") -> str:
    """A whole page around `body` (already escaped markup)."""
    nav = "".join(
        f'<a href="{href}"{" class=current" if href == current else ""}>{esc(text)}</a>'
        for href, text in NAV
    )
    who = ""
    if user:
        who = (
            f'<form method="post" action="/logout" class="logout"><span>{esc(user)}</span>'
            '<button type="submit">log out</button></form>'
        )
    scripts = f'<script src="/static/{esc(script)}" defer></script>' if script else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · pipeline-events</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        f"{scripts}</head><body>"
        f'<header><span class="brand">pipeline-events</span><nav>{nav}</nav>{who}</header>'
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>\n"
    )


def message_page(title: str, text: str, **kwargs: Any) -> str:
    return page(title, f'<p class="message">{esc(text)}</p>', **kwargs)


def login_page(next_path: str, error: str = "") -> str:
    problem = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f"{problem}<p>This server takes bearer tokens (<code>pipeline-events token create</code>)."
        " The console needs one with the subscriber or admin role, for every pipeline.</p>"
        '<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>token <input type="password" name="token" autocomplete="off" required'
        ' autofocus></label> <button type="submit">log in</button></form>'
    )
    return page("Log in", body)


# --- the pages ----------------------------------------------------------------------------


def tail_page(
    pipelines: Sequence[PipelineState],
    chosen_types: Sequence[str],
    chosen_pipeline: str,
    stream_url: str,
    head: int,
    **kwargs: Any,
) -> str:
    types = "".join(
        f'<option value="{esc(t)}"{" selected" if t in chosen_types else ""}>{esc(t)}</option>'
        for t in domain.EVENT_TYPES
    )
    options = "".join(
        f'<option value="{esc(p.pipeline_id)}"'
        f"{' selected' if str(p.pipeline_id) == chosen_pipeline else ''}>"
        f"{esc(p.pipeline_name or '(unnamed)')} ({esc(str(p.pipeline_id)[:8])})</option>"
        for p in pipelines
    )
    body = (
        '<form method="get" action="/" class="filters">'
        f'<label>event type <select name="type" multiple size="4">{types}</select></label>'
        '<label>pipeline <select name="pipeline"><option value="">every pipeline</option>'
        f"{options}</select></label>"
        '<button type="submit">filter</button> <a href="/">clear</a></form>'
        '<p class="live"><span id="state">connecting…</span> · '
        '<span id="count">0</span> events received · last position '
        f'<span id="position">-</span> · log head at load {head}</p>'
        + table(
            ["position", "time", "event", "pipeline", "run", "details"],
            [],
            id_="tail",
            empty="waiting for events…",
        ).replace("<table>", f'<table class="tail" data-stream="{esc(stream_url)}">', 1)
    )
    return page("Live tail", body, current="/", script="tail.js", **kwargs)


def pipelines_page(pipelines: Sequence[PipelineState], **kwargs: Any) -> str:
    rows = [
        [
            Markup(link(f"/runs?pipeline={p.pipeline_id}", p.pipeline_name or "(unnamed)")),
            p.pipeline_id,
            badge(status_name(p.status)),
            p.stage_count,
            p.runs_started,
            len(p.active_processing_ids),
            p.runs_completed,
            p.runs_failed,
            p.runs_cancelled,
            p.security_violations,
            p.anomaly_count,
            format_time(p.updated_at),
        ]
        for p in pipelines
    ]
    columns = [
        "name",
        "id",
        "status",
        "stages",
        "runs",
        "active",
        "completed",
        "failed",
        "cancelled",
        "violations",
        "anomalies",
        "updated",
    ]
    return page(
        "Pipelines", table(columns, rows, empty="no pipelines yet"), current="/pipelines", **kwargs
    )


def runs_page(
    runs: Sequence[ProcessingRunState], names: dict[uuid.UUID, str], title: str, **kwargs: Any
) -> str:
    rows = [
        [
            Markup(link(f"/runs/{r.processing_id}", r.processing_id)),
            names.get(r.pipeline_id, str(r.pipeline_id)[:8]),
            badge(status_name(r.status)),
            r.input_path,
            format_time(r.started_at),
            format_time(r.ended_at),
            r.chunks_processed,
            r.anomaly_count,
            r.error_code or "-",
        ]
        for r in runs
    ]
    columns = [
        "run",
        "pipeline",
        "status",
        "input",
        "started",
        "ended",
        "chunks",
        "anomalies",
        "error",
    ]
    return page(title, table(columns, rows, empty="no runs yet"), current="/runs", **kwargs)


def run_page(run: ProcessingRunState, pipeline_name: str, **kwargs: Any) -> str:
    status = status_name(run.status)
    summary = fields(
        [
            ("pipeline", f"{pipeline_name} ({run.pipeline_id})"),
            ("input → output", f"{run.input_path} → {run.output_path}"),
            ("file size", format_size(run.file_size)),
            ("started", format_time(run.started_at)),
            ("ended", format_time(run.ended_at)),
            ("duration", format_duration(run.duration)),
            ("time paused", format_duration(run.paused_time)),
            ("pauses / resumes", f"{run.pause_count} / {run.resume_count}"),
            ("error", ": ".join(x for x in (run.error_code, run.error_message) if x) or "-"),
            ("failed stage", run.failed_stage or "-"),
            ("events folded", f"{run.events_folded} (last position {run.last_position})"),
        ]
    )
    stages = table(
        ["stage", "type", "status", "chunks", "bytes", "time ms", "started", "ended", "error"],
        [
            [
                s.stage_name,
                s.stage_type,
                badge(status_name(s.status)),
                s.chunks_processed,
                format_size(s.bytes_processed),
                s.processing_time_ms,
                format_time(s.started_at),
                format_time(s.ended_at),
                ": ".join(x for x in (s.error_code, s.error_message) if x) or "-",
            ]
            for s in run.stages.values()
        ],
        id_="stages",
        empty="no stages yet",
    )
    metrics = run.metrics
    metric_rows: list[tuple[str, object]] = []
    if metrics is not None:
        metric_rows = [
            (
                "bytes processed",
                f"{format_size(metrics.bytes_processed)} of {format_size(metrics.bytes_total)}",
            ),
            ("chunks processed", f"{metrics.chunks_processed} of {metrics.chunks_total}"),
            ("throughput", f"{format_size(int(metrics.throughput_bytes_per_second))}/s"),
            ("errors / warnings", f"{metrics.error_count} / {metrics.warning_count}"),
        ]
    violations = table(
        ["time", "severity", "type", "description", "user", "source"],
        [
            [
                format_time(v.occurred_at),
                status_name(v.severity),
                v.violation_type,
                v.description,
                v.user_id or "-",
                v.source_ip or "-",
            ]
            for v in run.violations
        ],
        empty="no security violations",
    )
    exhaustions = table(
        ["time", "resource", "used", "limit", "action"],
        [
            [
                format_time(x.occurred_at),
                x.resource_type,
                x.current_usage,
                x.limit,
                x.action_taken,
            ]
            for x in run.exhaustions
        ],
        empty="no resource exhaustions",
    )
    anomalies = table(
        ["position", "event", "description"],
        [[a.position, a.event_type, a.description] for a in run.anomalies],
        empty="no anomalies",
    )
    transitions = table(
        ["status", "position", "time"],
        [[status_name(t.status), t.position, format_time(t.occurred_at)] for t in run.transitions],
    )
    body = (
        f'<p class="run" data-api="/api/runs/{esc(run.processing_id)}">{badge(status)}'
        f" <code>{esc(run.processing_id)}</code></p>{summary}"
        f"<h2>Stages ({len(run.stages)})</h2>"
        '<svg id="timeline" class="chart" role="img" aria-label="stage timeline"></svg>'
        f"{stages}"
        "<h2>Chunk throughput</h2>"
        '<svg id="throughput" class="chart" role="img" aria-label="chunk throughput"></svg>'
        f"<h2>Latest metrics</h2>{fields(metric_rows) if metric_rows else '<p>none yet</p>'}"
        f"<h2>Security violations ({run.security_violations})</h2>{violations}"
        f"<h2>Resource exhaustions ({run.resource_exhaustions})</h2>{exhaustions}"
        f"<h2>Anomalies ({run.anomaly_count})</h2>{anomalies}"
        f"<h2>Transitions</h2>{transitions}"
    )
    return page(
        f"Run {str(run.processing_id)[:8]}", body, current="/runs", script="run.js", **kwargs
    )


def groups_page(groups: Sequence[dict[str, Any]], **kwargs: Any) -> str:
    rows = [
        [
            g["name"],
            g["members"],
            g["checkpoint"],
            g["head"],
            g["lag"],
            g["in_flight"],
            g["waiting_retry"],
            g["parked"],
            g["filter_summary"],
        ]
        for g in groups
    ]
    columns = [
        "group",
        "members",
        "checkpoint",
        "head",
        "lag",
        "in flight",
        "waiting retry",
        "parked",
        "filter",
    ]
    body = table(columns, rows, empty="no consumer groups")
    for g in groups:
        if not g["parked_events"]:
            continue
        body += f"<h2>Parked in {esc(g['name'])} ({g['parked']})</h2>" + table(
            ["position", "event id", "event", "pipeline", "deliveries", "parked", "reason"],
            [
                [
                    p["position"],
                    p["event_id"],
                    p["event_type"],
                    p["pipeline_id"],
                    p["deliveries"],
                    p["parked_at"],
                    p["reason"],
                ]
                for p in g["parked_events"]
            ],
        )
    return page("Consumer groups", body, current="/groups", **kwargs)
