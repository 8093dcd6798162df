"""Prometheus metrics of a running server (`prometheus-client`), on a registry of its own.

`Metrics()` owns a `CollectorRegistry` with the process and platform collectors
(memory, CPU, file descriptors, Python version) and the service's own metrics;
`start_server(..., metrics=metrics)` adds its interceptor and its scrape-time
collector, and `metrics.serve_http("127.0.0.1:9464")` exposes the text format.

What is counted as it happens:

- `pipeline_events_rpcs_total{service,method,code}`: every call's end with its
  final status (refusals by the limits, tokens and decoding included, since the
  interceptor sits outside them); `pipeline_events_rpc_duration_seconds{service,method}`
  unary calls until their answer; `pipeline_events_stream_duration_seconds{service,method}`
  streams (Subscribe, PublishStream, Consume) from their start to their end.
- `pipeline_events_validation_refusals_total{method}`: INVALID_ARGUMENT answers, and
  PublishStream batches rejected INVALID_ARGUMENT (the stream goes on).
- `pipeline_events_security_refusals_total{kind}`: `unauthenticated`, `permission_denied`.
- `pipeline_events_events_appended_total{event_type}`, `pipeline_events_append_batch_events`
  (a histogram of batch sizes), `pipeline_events_store_append_duration_seconds{backend}`
  (each `store.append` of a publish: SQLite's commit, or JetStream's acknowledgement).

What is read at scrape time (`ServerCollector`; `collect()` runs on the HTTP
server's thread, so it cannot await the store):

- `pipeline_events_store_head_position`: the log's head as this process last
  knew it. SQLite: the writer's committed head (`_head`, exact). Other stores:
  the highest position the read models have folded or a consumer group has
  seen, which lags the head by the read models' coalescing (a few ms) at most
  while the server is the only writer, and more when other replicas write (NATS).
- `pipeline_events_read_model_position`, `pipeline_events_read_models_ready`,
  `pipeline_events_subscriptions_open`, `pipeline_events_calls_in_flight{kind}`,
  `pipeline_events_store_size_bytes` (SQLite file and WAL), `pipeline_events_server_info`.
- Per consumer group (`GroupRuntime.describe`): `..._lag_events` (head - checkpoint),
  `..._checkpoint_position`, `..._in_flight_events`, `..._waiting_retry_events`,
  `..._parked_events`, `..._members`; and `pipeline_events_consumer_groups`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline_events import __version__, adapter, domain
from pipeline_events.service.interceptors import _behavior_field, _CachingInterceptor

if TYPE_CHECKING:
    from pipeline_events.service.groups import ConsumerGroups
    from pipeline_events.service.interceptors import CallLimit
    from pipeline_events.service.server import EventService
    from pipeline_events.store import ProposedEvent

PREFIX = "pipeline_events"
#: Unary latencies: from half a millisecond (a state query) to ten seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Stream lifetimes: from a tenth of a second to a day.
STREAM_BUCKETS = (0.1, 1, 10, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600)
#: Events per append (a Publish's batch; the contract allows up to 10,000).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _code_name(code: Any, default: str = "OK") -> str:
    """A status code's name (`context.code()` may give a StatusCode, an int or None)."""
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODE_NAMES.get(code, str(code))
    return str(code)


def store_backend(store: object) -> str:
    """`sqlite`, `nats` or `memory` (another store: its class name, lower case)."""
    name = type(store).__name__
    for known in ("sqlite", "nats", "memory"):
        if name.lower().startswith(known):
            return known
    return name.lower()


def store_size_bytes(store: object) -> int:
    """The store's bytes on disk where known (SQLite: the file and its WAL); else 0."""
    path = getattr(store, "path", None)
    if store_backend(store) != "sqlite" or not isinstance(path, str) or path == ":memory:":
        return 0
    size = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL yet, or the file just moved
            size += os.stat(name).st_size
    return size


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {listen!r}")
    return host.strip("[]"), int(port)


class Metrics:
    """The server's metrics, on their own registry (never the process-wide default)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, fds
        PlatformCollector(registry=self.registry)  # python_info
        GCCollector(registry=self.registry)
        r = self.registry
        self.rpcs = Counter(
            f"{PREFIX}_rpcs", "RPCs ended, by service, method and status code",
            ["service", "method", "code"], registry=r,
        )  # fmt: skip
        self.rpc_duration = Histogram(
            f"{PREFIX}_rpc_duration_seconds", "Unary RPCs' time until their answer",
            ["service", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.stream_duration = Histogram(
            f"{PREFIX}_stream_duration_seconds", "Streaming RPCs' time from start to end",
            ["service", "method"], buckets=STREAM_BUCKETS, registry=r,
        )  # fmt: skip
        self.validation_refusals = Counter(
            f"{PREFIX}_validation_refusals", "Requests refused INVALID_ARGUMENT, by method",
            ["method"], registry=r,
        )  # fmt: skip
        self.security_refusals = Counter(
            f"{PREFIX}_security_refusals", "Calls refused for their token, by kind",
            ["kind"], registry=r,
        )  # fmt: skip
        for kind in ("unauthenticated", "permission_denied"):
            self.security_refusals.labels(kind)  # present (0) before the first refusal
        self.events_appended = Counter(
            f"{PREFIX}_events_appended", "Events appended to the log, by event type",
            ["event_type"], registry=r,
        )  # fmt: skip
        self.append_batch = Histogram(
            f"{PREFIX}_append_batch_events", "Events per append (a publish's batch)",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.store_append_duration = Histogram(
            f"{PREFIX}_store_append_duration_seconds",
            "store.append's time per publish (SQLite's commit, JetStream's acknowledgement)",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._collector: ServerCollector | None = None
        self._backend = "unknown"
        self._http: Any = None

    # --- hooks the server calls -----------------------------------------------------------

    def interceptor(self) -> MetricsInterceptor:
        """The server interceptor counting every call (add it after StalledStreams)."""
        return MetricsInterceptor(self)

    def appended(self, batch: Sequence[ProposedEvent]) -> None:
        """A publish's batch was appended (not a retry of one already stored)."""
        counts: dict[int, int] = {}
        for event in batch:
            counts[event.event_type] = counts.get(event.event_type, 0) + 1
        for event_type, count in counts.items():
            # Types this version does not know share one series: a producer must not
            # be able to add a series per number it sends.
            known = 1 <= event_type <= len(domain.EVENT_CLASSES)
            name = adapter.event_type_name(event_type) if known else "Unknown"
            self.events_appended.labels(name).inc(count)
        self.append_batch.observe(len(batch))

    def store_appended(self, seconds: float) -> None:
        """One `store.append` of a publish took `seconds` (whatever its outcome)."""
        self.store_append_duration.labels(self._backend).observe(seconds)

    def validation_refused(self, method: str) -> None:
        self.validation_refusals.labels(method).inc()

    def security_refused(self, kind: str) -> None:
        """A refused caller: `unauthenticated` or `permission_denied`."""
        self.security_refusals.labels(kind).inc()

    def attach(
        self, service: EventService, groups: ConsumerGroups, call_limit: CallLimit | None = None
    ) -> None:
        """Read these running objects at scrape time (replaces objects attached before)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._backend = store_backend(service.store)
        self._collector = ServerCollector(service, groups, call_limit)
        self.registry.register(self._collector)

    # --- exposition -----------------------------------------------------------------------

    def serve_http(self, listen: str) -> int:
        """Serve the text format on `HOST:PORT` (port 0: any free one) from a daemon
        thread; the bound port.

        Raises:
            OSError: the address is in use or not this host's.
            ValueError: not HOST:PORT.
        """
        host, port = _split(listen)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving HTTP (if it was)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def scrape(self) -> bytes:
        """The text format, as an HTTP scrape would get it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsInterceptor(_CachingInterceptor):
    """Counts each call's end by service, method and final status; times it.

    Unary calls are timed until their answer (`pipeline_events_rpc_duration_seconds`),
    streams from start to end (`pipeline_events_stream_duration_seconds`). The status
    is the one the call ended with: an abort's code (a refusal by an interceptor inside
    this one, or the handler's), CANCELLED when the client went away, UNKNOWN for an
    exception, else what the handler set (OK by default).
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, rpc = method.lstrip("/").rpartition("/")
        metrics = self.metrics
        counted = metrics.rpcs
        invalid = metrics.validation_refusals.labels(rpc)
        field = _behavior_field(handler)
        behavior = getattr(handler, field)
        streaming = handler.request_streaming or handler.response_streaming
        timing = (metrics.stream_duration if streaming else metrics.rpc_duration).labels(
            service, rpc
        )

        def ended(code: str, started: float) -> None:
            timing.observe(time.perf_counter() - started)
            counted.labels(service, rpc, code).inc()
            if code == "INVALID_ARGUMENT":
                invalid.inc()

        def failed(error: BaseException, context: grpc.aio.ServicerContext) -> str:
            if isinstance(error, asyncio.CancelledError | GeneratorExit):
                return _code_name(_context_code(context), "CANCELLED")
            if isinstance(error, grpc.aio.AbortError):
                return _code_name(_context_code(context), "UNKNOWN")
            return "UNKNOWN"

        if inspect.isasyncgenfunction(behavior):

            async def streams(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                started = time.perf_counter()
                code = None
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as error:
                    code = failed(error, context)
                    raise
                finally:
                    ended(code or _code_name(_context_code(context)), started)

            return handler._replace(**{field: streams})  # type: ignore[attr-defined]

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = None
            try:
                return await behavior(request, context)
            except BaseException as error:
                code = failed(error, context)
                raise
            finally:
                ended(code or _code_name(_context_code(context)), started)

        return handler._replace(**{field: call})  # type: ignore[attr-defined]


def _context_code(context: grpc.aio.ServicerContext) -> Any:
    try:
        return context.code()
    except Exception:  # an older grpc, or a context without it
        return None


class ServerCollector(Collector):
    """Reads the running server's objects at scrape time (see the module's notes)."""

    def __init__(
        self, service: EventService, groups: ConsumerGroups, call_limit: CallLimit | None
    ) -> None:
        self.service = service
        self.groups = groups
        self.call_limit = call_limit

    def head(self) -> int:
        """The log's head as last known (the module's notes say how)."""
        known = [self.service.read_models.position]
        store_head = getattr(self.service.store, "_head", None)
        if isinstance(store_head, int):
            known.append(store_head)
        known.extend(runtime.head for runtime in list(self.groups.groups.values()))
        return max(known)

    def collect(self) -> Iterable[Metric]:
        # On the HTTP thread while the loop changes these objects: a dictionary that
        # changes size while read is read again.
        for attempt in range(3):
            try:
                return list(self._metrics())
            except RuntimeError:
                if attempt == 2:
                    raise
        return []

    def _metrics(self) -> Iterator[Metric]:
        service, models = self.service, self.service.read_models
        head = self.head()
        backend = store_backend(service.store)
        yield InfoMetricFamily(
            f"{PREFIX}_server", "The server's version and store backend",
            value={"version": __version__, "backend": backend},
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_store_head_position", "The log's last global position, as last known",
            value=head,
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_store_size_bytes", "The store's bytes on disk (SQLite: file and WAL)",
            value=store_size_bytes(service.store),
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_read_model_position", "How far the read models have folded the log",
            value=models.position,
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_read_models_ready", "1 once the log as it was at start is folded",
            value=1 if models.ready else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_subscriptions_open", "Subscribe streams open now",
            value=service.subscriptions,
        )  # fmt: skip
        if self.call_limit is not None:
            calls = GaugeMetricFamily(
                f"{PREFIX}_calls_in_flight", "Calls in flight (the server's call limit counts)",
                labels=["kind"],
            )  # fmt: skip
            calls.add_metric(["unary"], self.call_limit.calls)
            calls.add_metric(["stream"], self.call_limit.streams)
            yield calls
        runtimes = list(self.groups.groups.values())
        yield GaugeMetricFamily(
            f"{PREFIX}_consumer_groups", "Consumer groups on this server", value=len(runtimes)
        )
        families = {
            name: GaugeMetricFamily(f"{PREFIX}_consumer_group_{name}", text, labels=["group"])
            for name, text in (
                ("lag_events", "Positions between the group's checkpoint and the log's head"),
                ("checkpoint_position", "The group's checkpoint"),
                ("in_flight_events", "Events delivered and not answered yet"),
                ("waiting_retry_events", "Failed events waiting out their backoff"),
                ("parked_events", "Events parked"),
                ("members", "Members connected now"),
            )
        }
        for runtime in runtimes:
            shown = runtime.describe(head)
            values = {
                "lag_events": max(0, shown.head - shown.checkpoint),
                "checkpoint_position": shown.checkpoint,
                "in_flight_events": shown.in_flight,
                "waiting_retry_events": shown.waiting_retry,
                "parked_events": shown.parked,
                "members": shown.members,
            }
            for name, value in values.items():
                families[name].add_metric([shown.name], value)
        yield from families.values()
