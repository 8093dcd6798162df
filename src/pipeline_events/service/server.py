"""The gRPC EventService over an EventStore, and the server that hosts it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pipeline_events import __version__
from pipeline_events.projections import ProcessingStatus, messages
from pipeline_events.service.access_log import AccessLog
from pipeline_events.service.auth import (
    CALLER,
    Authenticator,
    AuthGuard,
    CallerLimits,
    pipeline_refusal,
)
from pipeline_events.service.errors import (
    RpcError,
    bad_request,
    details_status,
    error_info,
    from_store_error,
)
from pipeline_events.service.group_service import (
    GROUP_SERVICE_NAME,
    ConsumerGroupService,
    add_group_service,
)
from pipeline_events.service.groups import ConsumerGroups
from pipeline_events.service.interceptors import (
    DEFAULT_STALLED_STREAM_SECONDS,
    CallLimit,
    DecodeGuard,
    StalledStreams,
    Undecodable,
)
from pipeline_events.service.read_models import ReadModels
from pipeline_events.service.validation import validate, validate_publish
from pipeline_events.service.violations import ViolationRecorder, source_of
from pipeline_events.service.wire import (
    Received,
    field_bytes,
    keeping_bytes,
    length_delimited,
    varint_field,
)
from pipeline_events.store import (
    EventFilter,
    EventStore,
    ExpectedRevision,
    ExpectedState,
    ProposedEvent,
    StoreError,
)

if TYPE_CHECKING:
    from pipeline_events.service.metrics import Metrics

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
DEFAULT_PAGE = 1000  # ReadAggregate page size when the request says 0
DEFAULT_BATCH = 500  # events per subscription message when the request says 0
DEFAULT_CHECKPOINT_INTERVAL = 1000  # positions skipped by a filter between Checkpoints
DEFAULT_RUNS_PAGE = 100  # ListProcessingRuns page size when the request says 0
#: Read-your-writes: how long a state query waits for its min_position at most.
READ_YOUR_WRITES_SECONDS = 2.0
DEADLINE_MARGIN_SECONDS = 0.05  # answered this long before the caller's deadline
PIPELINE_NOT_FOUND = "PIPELINE_NOT_FOUND"  # ErrorInfo reasons of NOT_FOUND
PROCESSING_RUN_NOT_FOUND = "PROCESSING_RUN_NOT_FOUND"

# The limits that make "accepted" mean "readable" (README "Limits"):
#: Largest request and response message (a Publish of many events).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Largest envelope accepted, serialized: KurrentDB's and JetStream's 1 MiB default.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: Room a response needs besides one event's envelope (record and response framing).
EVENT_HEADROOM_BYTES = 64 * 1024
#: Records per ReadAggregate/Subscribe response, by size (a page holds at least one
#: event). With the default event limit, every response fits the 4 MiB a default
#: gRPC client of any language accepts.
PAGE_BYTES = 3 * 1024 * 1024
#: Unary calls and streams in flight at once; more are refused RESOURCE_EXHAUSTED.
DEFAULT_MAX_CALLS = 512
DEFAULT_MAX_STREAMS = 2048
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),  # ping idle connections every 30 s
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def _expected(check: service_pb2.ExpectedRevision) -> ExpectedRevision:
    case = check.WhichOneof("expected")
    if case == "revision":
        return check.revision
    return {"any": ExpectedState.ANY, "no_stream": ExpectedState.NO_STREAM}.get(
        case, ExpectedState.STREAM_EXISTS
    )


def publish_error(error: RpcError) -> service_pb2.PublishError:
    """A PublishStream rejection carrying what the status would have carried."""
    rejection = service_pb2.PublishError(code=error.status.code, message=error.status.message)
    for detail in error.status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            rejection.reason = info.reason
            rejection.metadata.update(info.metadata)
    return rejection


def _message(**content: Any) -> bytes:
    """A SubscribeResponse other than events, serialized (Subscribe answers in bytes)."""
    return service_pb2.SubscribeResponse(**content).SerializeToString()


class EventService(service_pb2_grpc.EventServiceServicer):
    """Implements every RPC of the contract's EventService over one store."""

    def __init__(
        self,
        store: EventStore,
        *,
        idle_wake_seconds: float = 5.0,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        page_bytes: int = PAGE_BYTES,
        read_models: ReadModels | None = None,
    ):
        self.store = store
        self.read_models = ReadModels(store) if read_models is None else read_models
        self.violations: ViolationRecorder | None = None  # set when callers need tokens
        self.max_event_bytes = max_event_bytes
        self.page_bytes = page_bytes
        self.stopping = asyncio.Event()  # set by begin_shutdown: streams end UNAVAILABLE
        self._idle_wake_seconds = idle_wake_seconds
        self.metrics: Metrics | None = None  # set by start_server when metrics are on
        self.groups: Any = None  # the ConsumerGroups, set by start_server (GetServerInfo)
        self.subscriptions = 0  # Subscribe streams open now
        # Events appended through this service since it started, by EventType value
        # (GetServerInfo's counts on a store that cannot count its log).
        self.appended_by_type: Counter[int] = Counter()

    def begin_shutdown(self) -> None:
        """End every subscription (UNAVAILABLE, so clients resume elsewhere)."""
        self.stopping.set()

    async def _publish(
        self,
        received: Received[service_pb2.PublishRequest] | Received[service_pb2.PublishStreamRequest],
        events_field: int,
    ) -> service_pb2.PublishResponse:
        """Validate and append one publish request (parsed, with its bytes).

        Raises:
            RpcError: the request was refused; nothing was stored.
        """
        request = received.message
        # Each envelope exactly as sent: it is stored, and served back, as these bytes.
        sent = field_bytes(received.data, events_field)
        validate_publish(request, sent, self.max_event_bytes)
        expected = {check.aggregate_id: _expected(check) for check in request.expected_revisions}
        try:
            batch = [ProposedEvent.of(e, raw) for e, raw in zip(request.events, sent, strict=True)]
            started = time.perf_counter()
            try:
                result = await self.store.append(batch, expected)
            finally:
                if self.metrics is not None:
                    self.metrics.store_appended(time.perf_counter() - started)
        except StoreError as error:
            raise from_store_error(error) from error
        if not result.already_recorded:
            self.appended_by_type.update(event.event_type for event in batch)
            if self.metrics is not None:
                self.metrics.appended(batch)
        return service_pb2.PublishResponse(
            positions=[
                service_pb2.EventPosition(global_position=p.global_position, revision=p.revision)
                for p in result.positions
            ],
            already_recorded=result.already_recorded,
        )

    async def Publish(self, request: Received[service_pb2.PublishRequest], context):
        try:
            return await self._publish(request, events_field=1)
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())

    async def PublishStream(self, request_iterator, context):
        async for request in request_iterator:
            if isinstance(request, Undecodable):  # answered like a rejected batch; goes on
                if self.metrics is not None:
                    self.metrics.validation_refused("PublishStream")
                error = publish_error(request.rpc_error())
                yield service_pb2.PublishStreamResponse(batch_id=0, error=error)
                continue
            batch_id = request.message.batch_id
            try:
                published = await self._publish(request, events_field=2)
            except RpcError as error:
                if self.metrics is not None and error.status.code == code_pb2.INVALID_ARGUMENT:
                    self.metrics.validation_refused("PublishStream")  # the stream goes on
                yield service_pb2.PublishStreamResponse(
                    batch_id=batch_id, error=publish_error(error)
                )
            else:
                yield service_pb2.PublishStreamResponse(batch_id=batch_id, published=published)

    async def ReadAggregate(self, request, context) -> bytes:
        try:
            validate(request)
            page = await self.store.read_aggregate_page(
                request.aggregate_id,
                from_revision=request.from_revision,
                backwards=request.backwards,
                limit=request.limit or DEFAULT_PAGE,
                max_bytes=self.page_bytes,
            )
            # Read after the page, so it is at least the page's last revision.
            latest = await self.store.read_aggregate(request.aggregate_id, backwards=True, limit=1)
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())
        except StoreError as error:
            await context.abort_with_status(from_store_error(error).grpc_status())
        last_revision = latest[0].revision if latest else 0
        # Revisions are contiguous from 1, so where the next page starts follows from
        # the page's last event, whether its count or its bytes ended it.
        next_revision = 0
        if page.events:
            end = page.events[-1].revision
            if request.backwards and end > 1:
                next_revision = end - 1
            elif not request.backwards and end < last_revision:
                next_revision = end + 1
        # ReadAggregateResponse, written by hand: `events` (field 1) is the records as
        # stored, each already an `events` entry; then the two revisions.
        return page.records + varint_field(2, next_revision) + varint_field(3, last_revision)

    async def Subscribe(self, request, context):
        try:
            validate(request)
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())
        self.subscriptions += 1
        try:
            async for message in self._subscription(request):
                yield message
        except StoreError as error:
            await context.abort_with_status(from_store_error(error).grpc_status())
        finally:
            self.subscriptions -= 1
        if self.stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def _subscription(self, request: service_pb2.SubscribeRequest) -> AsyncIterator[bytes]:
        """Catch up from the store, then follow it live, always reading by position.

        Reading by position is what makes the hand-over gap- and duplicate-free,
        and it bounds memory: one page per subscriber, read only when gRPC has
        taken the previous message (a slow reader simply reads from further back).
        """
        wanted = request.filter
        event_filter = EventFilter.of(
            event_types=list(wanted.event_types),
            categories=list(wanted.categories),
            aggregate_ids=list(wanted.aggregate_ids),
            processing_ids=list(wanted.processing_ids),
        )
        batch_size = request.max_batch_size or DEFAULT_BATCH
        interval = request.checkpoint_interval or DEFAULT_CHECKPOINT_INTERVAL
        start = request.WhichOneof("start")
        if start == "from_end":
            position = await self.store.head_position()
        elif start == "after_position":
            position = request.after_position
        else:
            position = 0
        reported = position  # the last position the client has been told about
        live = False
        while not self.stopping.is_set():
            page = await self.store.read_all(
                after_position=position,
                filter=event_filter,
                limit=batch_size,
                max_bytes=self.page_bytes,
            )
            if page.events:
                # SubscribeResponse.events (field 1), an EventBatch: the records as stored.
                yield length_delimited(1, page.records)
                reported = page.events[-1].global_position
            position = page.scanned_to
            behind = position < page.head  # more was committed than this page held
            if behind and live:
                live = False
                yield _message(fell_behind=service_pb2.FellBehind(position=reported))
            if position - reported >= interval:
                reported = position
                yield _message(checkpoint=service_pb2.Checkpoint(position=position))
            if not behind:
                if not live:
                    live = True
                    yield _message(caught_up=service_pb2.CaughtUp(position=position))
                await self._wait_for_events(position)

    async def _wait_for_events(self, position: int) -> None:
        waiting = asyncio.ensure_future(
            self.store.wait_for_append(position, self._idle_wake_seconds)
        )
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()

    # --- state queries --------------------------------------------------------------------

    async def _models_at(self, min_position: int, context: grpc.aio.ServicerContext) -> int:
        """Wait (briefly) for the read models to reach `min_position`; their position.

        Raises:
            RpcError: UNAVAILABLE with a RetryInfo while the first catch-up is folding.
        """
        models = self.read_models
        wait = READ_YOUR_WRITES_SECONDS
        remaining = context.time_remaining()
        if remaining is not None:  # answer before the caller's deadline passes
            wait = min(wait, max(0.0, remaining - DEADLINE_MARGIN_SECONDS))
        if models.ready and min_position <= models.position:
            # Nothing to wait for (no store round trip), but the appends the read models
            # are gathering are folded first, as they would have been at once.
            return await models.settle(wait)
        head = await self.store.head_position()  # a position beyond the head is not waited for
        position = await models.wait(min(min_position, head), wait)
        if not models.ready:
            delay = duration_pb2.Duration(seconds=1)
            raise RpcError(
                details_status(
                    code_pb2.UNAVAILABLE,
                    f"the read models are being rebuilt: folded to position {position} of"
                    f" {models.caught_up_to}; retry shortly",
                    error_details_pb2.RetryInfo(retry_delay=delay),
                )
            )
        return position

    @staticmethod
    def _not_found(what: str, id_: str, position: int, reason: str) -> RpcError:
        return error_info(
            code_pb2.NOT_FOUND,
            f"no {what} {id_} in the log (folded up to position {position})",
            reason,
            position=str(position),
        )

    async def GetPipelineState(self, request, context):
        try:
            validate(request)
            position = await self._models_at(request.min_position, context)
            state = self.read_models.pipeline(uuid.UUID(request.pipeline_id))
            if state is None:
                raise self._not_found("pipeline", request.pipeline_id, position, PIPELINE_NOT_FOUND)
            response = service_pb2.GetPipelineStateResponse(position=position)
            response.state.CopyFrom(messages.pipeline_to_proto(state))
            messages.fit(response.state, self.page_bytes)
            return response
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())

    async def GetProcessingState(self, request, context):
        try:
            validate(request)
            position = await self._models_at(request.min_position, context)
            state = self.read_models.run(uuid.UUID(request.processing_id))
            if state is None:
                raise self._not_found(
                    "processing run", request.processing_id, position, PROCESSING_RUN_NOT_FOUND
                )
            caller = CALLER.get()  # a run names its pipeline only in its state
            if caller is not None and not caller.may_touch([str(state.pipeline_id)]):
                if self.violations is not None:
                    self.violations.note("permission_denied", source_of(context), caller.name)
                if self.metrics is not None:
                    self.metrics.security_refused("permission_denied")
                raise pipeline_refusal(caller)
            response = service_pb2.GetProcessingStateResponse(position=position)
            response.state.CopyFrom(messages.run_to_proto(state))
            messages.fit(response.state, self.page_bytes)  # a state always fits an answer
            return response
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())

    async def ListProcessingRuns(self, request, context):
        try:
            validate(request)
            before = _parse_page_token(request.page_token)
            position = await self._models_at(request.min_position, context)
            page, next_before = self.read_models.runs_page(
                pipeline_id=uuid.UUID(request.pipeline_id) if request.pipeline_id else None,
                statuses=[ProcessingStatus(number) for number in request.statuses],
                page_size=request.page_size or DEFAULT_RUNS_PAGE,
                before_position=before,
            )
            response = service_pb2.ListProcessingRunsResponse(position=position)
            size = 0
            for run in page:  # bounded by bytes too (long paths): at least one run
                summary = messages.summary_to_proto(run)
                size += summary.ByteSize() + 8
                if size > self.page_bytes and response.runs:
                    next_before = page[len(response.runs) - 1].first_position
                    break
                response.runs.append(summary)
            if next_before is not None:
                response.next_page_token = f"{_TOKEN_PREFIX}{next_before}"
            return response
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())

    async def GetServerInfo(self, request, context):
        from pipeline_events.service.metrics import store_backend, store_size_bytes

        try:
            head = await self.store.head_position()
            counts = await self.store.event_counts()
        except StoreError as error:
            await context.abort_with_status(from_store_error(error).grpc_status())
        exact = counts is not None
        if counts is None:
            counts = dict(self.appended_by_type)
        models = self.read_models
        await models.settle(READ_YOUR_WRITES_SECONDS)  # the appends gathering, folded
        statuses = Counter(int(run.status) for run in models.states.runs.values())
        response = service_pb2.GetServerInfoResponse(
            server_version=__version__,
            store_backend=store_backend(self.store),
            store_size_bytes=store_size_bytes(self.store),
            head_position=head,
            events_by_type=[
                service_pb2.EventTypeCount(event_type=t, count=n) for t, n in sorted(counts.items())
            ],
            events_by_type_exact=exact,
            pipelines=len(models.states.pipelines),
            runs_by_status=[
                service_pb2.RunStatusCount(status=s, count=n) for s, n in sorted(statuses.items())
            ],
            position=models.position,
            open_subscriptions=self.subscriptions,
        )
        runtimes = [] if self.groups is None else list(self.groups.groups.values())
        for runtime in sorted(runtimes, key=lambda r: r.name):
            shown = runtime.describe(head)
            response.consumer_groups.add(
                name=shown.name, lag=max(0, shown.head - shown.checkpoint), parked=shown.parked,
                members=shown.members, in_flight=shown.in_flight,
                waiting_retry=shown.waiting_retry,
            )  # fmt: skip
        return response


_TOKEN_PREFIX = "runs-before-"


def _parse_page_token(token: str) -> int | None:
    """The first position a page of runs ends before (None: the first page).

    Raises:
        RpcError: INVALID_ARGUMENT, not a token this service gave.
    """
    if not token:
        return None
    digits = token.removeprefix(_TOKEN_PREFIX)
    if digits == token or not digits.isascii() or not digits.isdigit() or len(digits) > 20:
        raise bad_request([("page_token", "not a page token of ListProcessingRuns")])
    return int(digits)


def _add_event_service(service: EventService, server: grpc.aio.Server) -> None:
    """Register the EventService as the generated code would, except where it works in bytes.

    Publish and PublishStream keep their requests' bytes beside the parsed message
    (each envelope is stored exactly as sent); ReadAggregate and Subscribe answer in
    bytes (the stored records, relayed). Every other message is (de)serialized by the
    official bindings.
    """
    raw = None  # grpc passes bytes through when a serializer is None
    handlers = {
        "Publish": grpc.unary_unary_rpc_method_handler(
            service.Publish,
            keeping_bytes(service_pb2.PublishRequest),
            service_pb2.PublishResponse.SerializeToString,
        ),
        "PublishStream": grpc.stream_stream_rpc_method_handler(
            service.PublishStream,
            keeping_bytes(service_pb2.PublishStreamRequest),
            service_pb2.PublishStreamResponse.SerializeToString,
        ),
        "ReadAggregate": grpc.unary_unary_rpc_method_handler(
            service.ReadAggregate, service_pb2.ReadAggregateRequest.FromString, raw
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe, service_pb2.SubscribeRequest.FromString, raw
        ),
        "GetPipelineState": grpc.unary_unary_rpc_method_handler(
            service.GetPipelineState,
            service_pb2.GetPipelineStateRequest.FromString,
            service_pb2.GetPipelineStateResponse.SerializeToString,
        ),
        "GetProcessingState": grpc.unary_unary_rpc_method_handler(
            service.GetProcessingState,
            service_pb2.GetProcessingStateRequest.FromString,
            service_pb2.GetProcessingStateResponse.SerializeToString,
        ),
        "ListProcessingRuns": grpc.unary_unary_rpc_method_handler(
            service.ListProcessingRuns,
            service_pb2.ListProcessingRunsRequest.FromString,
            service_pb2.ListProcessingRunsResponse.SerializeToString,
        ),
        "GetServerInfo": grpc.unary_unary_rpc_method_handler(
            service.GetServerInfo,
            service_pb2.GetServerInfoRequest.FromString,
            service_pb2.GetServerInfoResponse.SerializeToString,
        ),
    }
    missing = set(service_pb2.DESCRIPTOR.services_by_name["EventService"].methods_by_name)
    assert missing == set(handlers), f"RPCs without a handler: {missing - set(handlers)}"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


@dataclass
class RunningServer:
    """A started server: its port, the service, the health servicer and the call limit."""

    server: grpc.aio.Server
    port: int
    service: EventService
    health: health.aio.HealthServicer
    call_limit: CallLimit
    groups: ConsumerGroups

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop: NOT_SERVING first, end subscriptions, finish in-flight calls."""
        for name in ("", SERVICE_NAME, GROUP_SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.begin_shutdown()
        await self.server.stop(grace)
        await self.groups.close()  # their checkpoints, before the store closes
        if self.service.violations is not None:
            await self.service.violations.close()  # the refusals counted since the last flush
        await self.service.read_models.close()  # its snapshot, before the store closes


async def start_server(
    store: EventStore,
    *,
    listen: str = "127.0.0.1:0",
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_calls: int = DEFAULT_MAX_CALLS,
    max_streams: int = DEFAULT_MAX_STREAMS,
    credentials: grpc.ServerCredentials | None = None,
    authenticator: Authenticator | None = None,
    reflection_on: bool = True,
    caller_limits: CallerLimits | None = None,
    stalled_stream_seconds: float = DEFAULT_STALLED_STREAM_SECONDS,
    access_log: AccessLog | None = None,
    metrics: Metrics | None = None,
) -> RunningServer:
    """Build, bind and start a server hosting the EventService, health and reflection.

    Raises:
        ValueError: a limit that would let the server accept what it cannot send back.
        OSError: the address cannot be listened on (in use, or not this host's).
    """
    if not 0 < max_event_bytes <= max_message_bytes - EVENT_HEADROOM_BYTES:
        raise ValueError(
            f"the largest event must be between 1 and {max_message_bytes - EVENT_HEADROOM_BYTES:,}"
            f" bytes ({EVENT_HEADROOM_BYTES // 1024} KiB under the message limit), not"
            f" {max_event_bytes:,}"
        )
    store_limit = getattr(store, "max_event_bytes", None)  # NATS: the server's max_payload
    if store_limit is not None and max_event_bytes > store_limit:
        if max_event_bytes != DEFAULT_MAX_EVENT_BYTES:
            raise ValueError(
                f"the largest event must be at most {store_limit:,} bytes on this store"
                f" (its server's message limit), not {max_event_bytes:,}"
            )
        max_event_bytes = store_limit  # the default, lowered to what the store can hold
    call_limit = CallLimit(max_calls, max_streams)
    violations = None if authenticator is None else ViolationRecorder(store)
    server = grpc.aio.server(
        interceptors=[
            # Outermost: it sees every refusal (it wraps StalledStreams' writing handlers).
            *([] if access_log is None else [access_log]),
            StalledStreams(stalled_stream_seconds),  # outermost but the log: it does the writing
            # Outside the others: it sees every call's final status, refusals included.
            *([] if metrics is None else [metrics.interceptor()]),
            call_limit,
            # Outside the decoding: a caller without a token learns nothing else.
            *(
                []
                if authenticator is None
                else [
                    AuthGuard(
                        authenticator,
                        violations,
                        caller_limits or CallerLimits(),
                        on_refusal=None if metrics is None else metrics.security_refused,
                    )
                ]
            ),
            DecodeGuard(tolerant_streams=[f"/{SERVICE_NAME}/PublishStream"]),
        ],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # One server per port: without this, a second server binds the same port
            # silently and clients are split between two stores.
            ("grpc.so_reuseport", 0),
            # gRPC cancels calls that wait, unseen by the handlers, beyond 1,000 (and
            # 3,000); let ten times as many reach CallLimit, which answers RESOURCE_EXHAUSTED
            # with a retry delay instead of a CANCELLED that says nothing.
            ("grpc.server.max_pending_requests", 10_000),
            ("grpc.server.max_pending_requests_hard_limit", 20_000),
            *KEEPALIVE_OPTIONS,
        ],
    )
    service = EventService(
        store, max_event_bytes=max_event_bytes, page_bytes=min(PAGE_BYTES, max_message_bytes // 2)
    )
    _add_event_service(service, server)
    groups = ConsumerGroups(store, service.page_bytes)
    service.groups = groups
    if metrics is not None:
        service.metrics = metrics
        metrics.attach(service, groups, call_limit)
    add_group_service(ConsumerGroupService(groups, service.stopping), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection_on:
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                GROUP_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as error:  # grpc says "Failed to bind to address ..."
        raise OSError(
            f"cannot listen on {listen}: the address is in use or not available"
        ) from error
    if port == 0:
        raise OSError(f"cannot listen on {listen}: the address is in use or not available")
    await service.read_models.start()  # loads the snapshot; folds the rest in the background
    await groups.start()  # every group from its stored checkpoint
    if violations is not None:
        await violations.start()
    service.violations = violations
    await server.start()
    for name in ("", SERVICE_NAME, GROUP_SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, service, health_servicer, call_limit, groups)
