"""The console's aiohttp application, in the event loop of the gRPC server it shows.

It reads the running server's objects directly: the live tail streams from the
store as Subscribe does (read_all after a position, then wait_for_append), one
page at a time per client and only once the client has taken the previous one;
the pages and /api/ answer from the read models and the consumer groups.

With an Authenticator (the server's `--auth`), every page but /login and /static/
needs the same bearer token the gRPC service takes: an `Authorization: Bearer`
header, or the HttpOnly, SameSite=Strict `token` cookie the login form sets. The
console shows every pipeline, so the token needs the subscriber or admin role and no
pipeline restriction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from adaptive_pipeline.events.v1 import consumer_group_pb2
from aiohttp import web

from pipeline_events import adapter, domain
from pipeline_events.consumer import ConsumerGroup
from pipeline_events.errors import DecodeError
from pipeline_events.projections import ProcessingRunState, ProcessingStatus
from pipeline_events.reports import (
    event_summary,
    filter_summary,
    group_json,
    rfc3339,
    status_name,
)
from pipeline_events.service.auth import Authenticator
from pipeline_events.service.errors import RpcError
from pipeline_events.service.server import RunningServer
from pipeline_events.store import EventFilter, StoreError
from pipeline_events.web import pages

_log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STREAM_PAGE = 200  # events per read of a live tail (one page in flight per client)
MAX_STREAMS = 100  # live tails open at once; more are answered 503
HEARTBEAT_SECONDS = 10.0  # an idle tail writes a comment this often (and so notices a gone client)
TAIL_BACKLOG = 100  # positions before the head a tail page starts from
RUNS_SHOWN = 200  # runs on /runs
CHART_CHUNKS = 5000  # ChunkProcessed events of one run read for its chart, at most
PARKED_SHOWN = 50  # parked events listed per group
COOKIE = "token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# Who the request's token belongs to (web.RequestKey from aiohttp 3.13; a plain key before).
_PRINCIPAL: Any = web.RequestKey("principal", str) if hasattr(web, "RequestKey") else "principal"
_CHUNK_TYPE = adapter.event_type_number("ChunkProcessed")


@dataclass
class Console:
    """A started console: its port; `stop()` ends the live tails and closes it."""

    runner: web.AppRunner
    port: int
    stopping: asyncio.Event

    async def stop(self) -> None:
        self.stopping.set()
        await self.runner.cleanup()


async def start_console(
    running: RunningServer, listen: str, *, authenticator: Authenticator | None = None
) -> Console:
    """Serve the console on `listen` (HOST:PORT; port 0 picks one) beside `running`.

    Raises:
        ValueError: `listen` is not HOST:PORT.
        OSError: the address cannot be listened on.
    """
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"the console's address must be HOST:PORT, not {listen!r}")
    stopping = asyncio.Event()
    app = _ConsoleApp(running, authenticator, stopping).build()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port_text), reuse_port=False)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        raise OSError(
            f"cannot listen on {listen} (web console): {error.strerror or error}"
        ) from error
    port = runner.addresses[0][1]
    return Console(runner, port, stopping)


# --- what the pages show, as JSON ----------------------------------------------------------


def _time(value: Any) -> str | None:
    return None if value is None else rfc3339(value)


def run_json(run: ProcessingRunState, pipeline_name: str) -> dict[str, Any]:
    metrics = run.metrics
    return {
        "processing_id": str(run.processing_id),
        "pipeline_id": str(run.pipeline_id),
        "pipeline_name": pipeline_name,
        "status": status_name(run.status),
        "input_path": run.input_path,
        "output_path": run.output_path,
        "file_size": run.file_size,
        "started_at": _time(run.started_at),
        "ended_at": _time(run.ended_at),
        "duration_ns": run.duration_ns,
        "paused_ns": run.paused_ns,
        "pause_count": run.pause_count,
        "resume_count": run.resume_count,
        "error_code": run.error_code,
        "error_message": run.error_message,
        "failed_stage": run.failed_stage,
        "chunks_processed": run.chunks_processed,
        "events_folded": run.events_folded,
        "first_position": run.first_position,
        "last_position": run.last_position,
        "stages": [
            {
                "stage_name": s.stage_name,
                "stage_type": s.stage_type,
                "status": status_name(s.status),
                "chunks_processed": s.chunks_processed,
                "bytes_processed": s.bytes_processed,
                "processing_time_ms": s.processing_time_ms,
                "started_at": _time(s.started_at),
                "ended_at": _time(s.ended_at),
                "error_code": s.error_code,
                "error_message": s.error_message,
            }
            for s in run.stages.values()
        ],
        "metrics": None
        if metrics is None
        else {
            "bytes_processed": metrics.bytes_processed,
            "bytes_total": metrics.bytes_total,
            "chunks_processed": metrics.chunks_processed,
            "chunks_total": metrics.chunks_total,
            "throughput_bytes_per_second": metrics.throughput_bytes_per_second,
            "error_count": metrics.error_count,
            "warning_count": metrics.warning_count,
        },
        "security_violations": run.security_violations,
        "violations": [
            {
                "occurred_at": rfc3339(v.occurred_at),
                "severity": status_name(v.severity),
                "violation_type": v.violation_type,
                "description": v.description,
                "user_id": v.user_id,
                "source_ip": v.source_ip,
            }
            for v in run.violations
        ],
        "resource_exhaustions": run.resource_exhaustions,
        "exhaustions": [
            {
                "occurred_at": rfc3339(x.occurred_at),
                "resource_type": x.resource_type,
                "current_usage": x.current_usage,
                "limit": x.limit,
                "action_taken": x.action_taken,
            }
            for x in run.exhaustions
        ],
        "anomaly_count": run.anomaly_count,
        "anomalies": [
            {
                "kind": a.kind.value,
                "position": a.position,
                "event_type": a.event_type,
                "description": a.description,
            }
            for a in run.anomalies
        ],
        "transitions": [
            {
                "status": status_name(t.status),
                "position": t.position,
                "occurred_at": rfc3339(t.occurred_at),
            }
            for t in run.transitions
        ],
    }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _wants_html(request: web.Request) -> bool:
    return not request.path.startswith(("/api/", "/events/"))


def _local_path(value: str) -> str:
    """`value` if it is a path of this site (never another site's address), else /."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


class _ConsoleApp:
    def __init__(
        self, running: RunningServer, authenticator: Authenticator | None, stopping: asyncio.Event
    ):
        self.running = running
        self.store = running.service.store
        self.models = running.service.read_models
        self.authenticator = authenticator
        self.stopping = stopping
        self.streams = 0

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth])
        app.router.add_get("/", self.tail)
        app.router.add_get("/events/stream", self.stream)
        app.router.add_get("/pipelines", self.pipelines)
        app.router.add_get("/runs", self.runs)
        app.router.add_get("/runs/{id}", self.run)
        app.router.add_get("/groups", self.groups)
        app.router.add_get("/api/pipelines", self.api_pipelines)
        app.router.add_get("/api/runs", self.api_runs)
        app.router.add_get("/api/runs/{id}", self.api_run)
        app.router.add_get("/api/groups", self.api_groups)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_static("/static", STATIC)
        return app

    # --- middlewares ------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Security headers on every answer; errors as a page (or JSON under /api/)."""
        try:
            response = await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            text = error.text if error.text and not error.text.startswith(str(error.status)) else ""
            text = text or {404: "There is nothing at this address."}.get(
                error.status, error.reason
            )
            if _wants_html(request):
                response = _html(
                    pages.message_page(f"{error.status} {error.reason}", text), error.status
                )
            else:
                response = _json({"error": text, "status": error.status}, error.status)
        except Exception:  # a bug: logged once, answered as a page like any other error
            _log.exception("web console: %s %s failed", request.method, request.path)
            text = "The console failed to answer this; the server log says why."
            if _wants_html(request):
                response = _html(pages.message_page("500 Internal Server Error", text), 500)
            else:
                response = _json({"error": text, "status": 500}, 500)
        if not response.prepared:
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.authenticator is None or request.path in ("/login", "/logout"):
            return await handler(request)
        if request.path.startswith("/static/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        token = token or request.cookies.get(COOKIE, "")
        if not token:
            if _wants_html(request) and request.method == "GET":
                raise web.HTTPSeeOther(f"/login?next={quote(str(request.rel_url), safe='/')}")
            raise web.HTTPUnauthorized(text="a bearer token is required (see /login)")
        problem, name = await self._refusal(token)
        if problem:
            if _wants_html(request):
                page = pages.page(
                    "401 Unauthorized",
                    f'<p class="message">{pages.esc(problem)}'
                    '</p><p><a href="/login">log in</a></p>',
                )
                return _html(page, 401)
            raise web.HTTPUnauthorized(text=problem)
        request[_PRINCIPAL] = name
        return await handler(request)

    async def _refusal(self, token: str) -> tuple[str, str]:
        """Why the token may not see the console ("" when it may), and whose it is."""
        assert self.authenticator is not None
        try:
            principal = await self.authenticator.principal([("authorization", f"Bearer {token}")])
        except RpcError as error:
            return f"the token was refused: {error.status.message}", ""
        if not principal.may_call("Subscribe") or principal.pipelines:
            return (
                f"{principal.name} may not use the console: it needs the subscriber or admin"
                " role, for every pipeline"
            ), principal.name
        return "", principal.name

    def _user(self, request: web.Request) -> str:
        return str(request.get(_PRINCIPAL, ""))

    # --- login ------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return _html(pages.login_page(_local_path(request.query.get("next", "/"))))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        next_path = _local_path(str(form.get("next", "/")))
        if self.authenticator is None:
            raise web.HTTPSeeOther(next_path)
        problem = (await self._refusal(token))[0] if token else "a token is required"
        if problem:
            return _html(pages.login_page(next_path, problem), 401)
        response = web.Response(status=303, headers={"Location": next_path})
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- the live tail ----------------------------------------------------------------

    def _filter(self, request: web.Request) -> tuple[EventFilter, list[str], str]:
        types = [t for t in request.query.getall("type", []) if t]
        unknown = [t for t in types if t not in domain.EVENT_TYPES]
        if unknown:
            raise web.HTTPBadRequest(
                text=f"unknown event type {unknown[0]!r}; the types are"
                f" {', '.join(domain.EVENT_TYPES)}"
            )
        pipeline = request.query.get("pipeline", "")
        try:
            pipeline = str(uuid.UUID(pipeline)) if pipeline else ""
        except ValueError:
            raise web.HTTPBadRequest(text=f"not a pipeline id: {pipeline!r}") from None
        event_filter = EventFilter.of(
            event_types=[adapter.event_type_number(t) for t in types],
            aggregate_ids=[pipeline] if pipeline else [],
        )
        return event_filter, types, pipeline

    async def tail(self, request: web.Request) -> web.Response:
        _, types, pipeline = self._filter(request)
        head = await self.store.head_position()
        query = "&".join(
            [f"type={t}" for t in types] + ([f"pipeline={pipeline}"] if pipeline else [])
        )
        after = max(0, head - TAIL_BACKLOG)
        url = f"/events/stream?after={after}" + (f"&{query}" if query else "")
        pipelines = sorted(self.models.states.pipelines.values(), key=lambda p: p.pipeline_name)
        return _html(
            pages.tail_page(pipelines, types, pipeline, url, head, user=self._user(request))
        )

    def _event_json(self, message: Any) -> dict[str, Any]:
        envelope = message.envelope
        try:
            event = adapter.from_envelope(envelope)
        except DecodeError as error:
            return {
                "position": message.global_position,
                "revision": message.revision,
                "type": adapter.event_type_name(envelope.event_type),
                "pipeline_id": envelope.aggregate_id,
                "pipeline_name": "",
                "processing_id": None,
                "time": None,
                "details": f"cannot decode this event: {error}",
            }
        pipeline = self.models.pipeline(event.pipeline_id)
        run = getattr(event, "processing_id", None)
        return {
            "position": message.global_position,
            "revision": message.revision,
            "type": event.event_type,
            "pipeline_id": str(event.pipeline_id),
            "pipeline_name": "" if pipeline is None else pipeline.pipeline_name,
            "processing_id": None if run is None else str(run),
            "time": rfc3339(event.occurred_at),
            "details": event_summary(event),
        }

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: every event after `after` passing the filter, then live."""
        event_filter, _, _ = self._filter(request)
        start = request.headers.get("Last-Event-ID") or request.query.get("after", "")
        if start == "end":
            position = await self.store.head_position()
        elif start.isascii() and start.isdigit():  # "²".isdigit() too, but not int()
            position = int(start)
        elif not start:
            position = 0
        else:
            raise web.HTTPBadRequest(text=f"after must be a position or end, not {start!r}")
        if self.streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_STREAMS} live tails are open already")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff",
            }
        )
        self.streams += 1
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            async for chunk in self._follow(position, event_filter):
                await response.write(chunk)  # waits while the client is behind
        except (ConnectionResetError, StoreError):
            pass  # the client went, or the store closed with the server
        finally:
            self.streams -= 1
        return response

    async def _follow(self, position: int, event_filter: EventFilter) -> AsyncIterator[bytes]:
        stopping = self.running.service.stopping
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while not (self.stopping.is_set() or stopping.is_set()):
            page = await self.store.read_all(
                after_position=position,
                filter=event_filter,
                limit=STREAM_PAGE,
                max_bytes=self.running.service.page_bytes,
            )
            if page.events:
                last_write = loop.time()
                yield b"".join(
                    b"id: %d\ndata: %s\n\n"
                    % (message.global_position, orjson.dumps(self._event_json(message)))
                    for message in page.events
                )
            position = max(position, page.scanned_to)
            if position >= page.head:
                await self._wait(position)
            # By the clock, not by idleness: a filter that matches nothing on a busy log
            # must notice a gone client too (a write to it fails).
            if loop.time() - last_write >= HEARTBEAT_SECONDS:
                last_write = loop.time()
                yield b": idle\n\n"

    async def _wait(self, position: int) -> bool:
        """Wait for an append after `position`, a stop, or the heartbeat; True: appended."""
        appended = asyncio.ensure_future(self.store.wait_for_append(position, HEARTBEAT_SECONDS))
        stops = [
            asyncio.ensure_future(e.wait()) for e in (self.stopping, self.running.service.stopping)
        ]
        try:
            await asyncio.wait({appended, *stops}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (appended, *stops):
                task.cancel()
        if appended.done() and not appended.cancelled() and appended.exception() is None:
            return appended.result() > position
        return False

    # --- pipelines and runs -----------------------------------------------------------

    def _pipelines(self) -> list[Any]:
        return sorted(
            self.models.states.pipelines.values(), key=lambda p: (p.pipeline_name, p.pipeline_id)
        )

    def _names(self) -> dict[uuid.UUID, str]:
        return {p.pipeline_id: p.pipeline_name for p in self.models.states.pipelines.values()}

    async def pipelines(self, request: web.Request) -> web.Response:
        return _html(pages.pipelines_page(self._pipelines(), user=self._user(request)))

    async def api_pipelines(self, request: web.Request) -> web.Response:
        return _json(
            {
                "position": self.models.position,
                "pipelines": [
                    {
                        "pipeline_id": str(p.pipeline_id),
                        "pipeline_name": p.pipeline_name,
                        "status": status_name(p.status),
                        "stage_count": p.stage_count,
                        "runs_started": p.runs_started,
                        "runs_completed": p.runs_completed,
                        "runs_failed": p.runs_failed,
                        "runs_cancelled": p.runs_cancelled,
                        "active_processing_ids": [str(r) for r in p.active_processing_ids],
                        "security_violations": p.security_violations,
                        "anomaly_count": p.anomaly_count,
                        "updated_at": _time(p.updated_at),
                    }
                    for p in self._pipelines()
                ],
            }
        )

    def _runs(self, request: web.Request) -> tuple[list[ProcessingRunState], str]:
        pipeline_text = request.query.get("pipeline", "")
        statuses = []
        for text in request.query.getall("status", []):
            try:
                statuses.append(ProcessingStatus[text.upper().replace(" ", "_")])
            except KeyError:
                raise web.HTTPBadRequest(text=f"unknown run status {text!r}") from None
        try:
            pipeline = uuid.UUID(pipeline_text) if pipeline_text else None
        except ValueError:
            raise web.HTTPBadRequest(text=f"not a pipeline id: {pipeline_text!r}") from None
        runs, _ = self.models.runs_page(
            pipeline_id=pipeline, statuses=statuses, page_size=RUNS_SHOWN, before_position=None
        )
        title = "Runs"
        if pipeline is not None:
            state = self.models.pipeline(pipeline)
            title = f"Runs of {state.pipeline_name if state else pipeline}"
        return runs, title

    async def runs(self, request: web.Request) -> web.Response:
        runs, title = self._runs(request)
        return _html(pages.runs_page(runs, self._names(), title, user=self._user(request)))

    async def api_runs(self, request: web.Request) -> web.Response:
        runs, _ = self._runs(request)
        names = self._names()
        return _json(
            {
                "position": self.models.position,
                "runs": [
                    {
                        "processing_id": str(r.processing_id),
                        "pipeline_id": str(r.pipeline_id),
                        "pipeline_name": names.get(r.pipeline_id, ""),
                        "status": status_name(r.status),
                        "input_path": r.input_path,
                        "started_at": _time(r.started_at),
                        "ended_at": _time(r.ended_at),
                        "chunks_processed": r.chunks_processed,
                        "anomaly_count": r.anomaly_count,
                        "error_code": r.error_code,
                    }
                    for r in runs
                ],
            }
        )

    def _run(self, request: web.Request) -> ProcessingRunState:
        text = request.match_info["id"]
        try:
            run = self.models.run(uuid.UUID(text))
        except ValueError:
            raise web.HTTPNotFound(text=f"{text!r} is not a processing run id") from None
        if run is None and not self.models.ready:  # after a restart: it may be in the log
            raise web.HTTPServiceUnavailable(
                text=f"the read models are being rebuilt: folded to position"
                f" {self.models.position} of {self.models.caught_up_to}; retry shortly"
            )
        if run is None:
            raise web.HTTPNotFound(
                text=f"no processing run {text} in the log (folded up to position"
                f" {self.models.position})"
            )
        return run

    def _pipeline_name(self, run: ProcessingRunState) -> str:
        pipeline = self.models.pipeline(run.pipeline_id)
        return "" if pipeline is None else pipeline.pipeline_name

    async def run(self, request: web.Request) -> web.Response:
        run = self._run(request)
        return _html(pages.run_page(run, self._pipeline_name(run), user=self._user(request)))

    async def api_run(self, request: web.Request) -> web.Response:
        run = self._run(request)
        data = run_json(run, self._pipeline_name(run))
        data["chunks"] = await self._chunks(run)
        return _json(data)

    async def _chunks(self, run: ProcessingRunState) -> list[dict[str, Any]]:
        """The run's ChunkProcessed events in log order, for its throughput chart.

        `t_ms` is the run's processing time so far (the sum of chunk times): producers
        report what each chunk took, not always when it was processed.
        """
        event_filter = EventFilter.of(
            event_types=[_CHUNK_TYPE], processing_ids=[str(run.processing_id)]
        )
        position = max(0, run.first_position - 1)
        chunks: list[dict[str, Any]] = []
        elapsed = 0
        while len(chunks) < CHART_CHUNKS and position < run.last_position:
            page = await self.store.read_all(
                after_position=position,
                filter=event_filter,
                limit=min(1000, CHART_CHUNKS - len(chunks)),
            )
            for message in page.events:
                if message.global_position > run.last_position:
                    break
                with contextlib.suppress(DecodeError):
                    chunk = adapter.from_envelope(message.envelope)
                    if isinstance(chunk, domain.ChunkProcessed):
                        elapsed += chunk.processing_time_ms
                        seconds = chunk.processing_time_ms / 1000
                        chunks.append(
                            {
                                "position": message.global_position,
                                "stage_name": chunk.stage_name,
                                "chunk_sequence": chunk.chunk_sequence,
                                "chunk_size": chunk.chunk_size,
                                "processing_time_ms": chunk.processing_time_ms,
                                "t_ms": elapsed,
                                "bytes_per_second": chunk.chunk_size / seconds if seconds else None,
                            }
                        )
            if page.scanned_to <= position:
                break
            position = page.scanned_to
        return chunks

    # --- consumer groups --------------------------------------------------------------

    async def _groups(self) -> list[dict[str, Any]]:
        head = await self.store.head_position()
        shown = []
        for name in sorted(self.running.groups.groups):
            runtime = self.running.groups.groups.get(name)
            if runtime is None:  # deleted meanwhile
                continue
            group = ConsumerGroup.from_proto(runtime.describe(head))
            data = group_json(group)
            data["filter_summary"] = filter_summary(group)
            parked = []
            if runtime.parked:
                records = await runtime.parked_records(limit=PARKED_SHOWN)
                for position, raw in records:
                    item = consumer_group_pb2.ParkedEvent.FromString(raw)
                    envelope = item.event.envelope
                    parked.append(
                        {
                            "position": position,
                            "event_id": envelope.event_id,
                            "event_type": adapter.event_type_name(envelope.event_type),
                            "pipeline_id": envelope.aggregate_id,
                            "deliveries": item.deliveries,
                            "parked_at": item.parked_at.ToJsonString(),
                            "reason": item.reason,
                        }
                    )
            data["parked_events"] = parked
            shown.append(data)
        return shown

    async def groups(self, request: web.Request) -> web.Response:
        return _html(pages.groups_page(await self._groups(), user=self._user(request)))

    async def api_groups(self, request: web.Request) -> web.Response:
        return _json({"groups": await self._groups()})
