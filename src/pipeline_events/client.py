"""Clients of the EventService, async and sync: publish, read history, and resuming subscriptions."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import random
import threading
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

import grpc
from adaptive_pipeline.events.v1 import (
    consumer_group_pb2,
    consumer_group_pb2_grpc,
    envelope_pb2,
    service_pb2,
    service_pb2_grpc,
)
from google.rpc import error_details_pb2, status_pb2

from pipeline_events import adapter, consumer, domain
from pipeline_events.consumer import (
    GROUP_RPC_METHODS,
    ConsumerGroup,
    Delivery,
    GroupSettings,
    ParkedEvent,
    WorkerStats,
)
from pipeline_events.errors import DecodeError, PipelineEventsError
from pipeline_events.projections import messages
from pipeline_events.projections.pipeline import PipelineState
from pipeline_events.projections.processing_run import (
    ProcessingRunState,
    ProcessingStatus,
    RunSummary,
)
from pipeline_events.store import ExpectedRevision, ExpectedState, Position
from pipeline_events.timestamps import NanoDatetime

EventEnvelope = envelope_pb2.EventEnvelope
_S = TypeVar("_S")
#: What `publish` accepts per event: a domain event (converted by the adapter) or an envelope.
Publishable: TypeAlias = domain.Event | domain.UnknownEvent | EventEnvelope
#: Where a subscription starts: "start", "end", or after this global position.
StartPosition: TypeAlias = Literal["start", "end"] | int

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # the server's limit; a full page of events can pass 4 MiB
MAX_PAGE_SIZE = 10_000  # the contract's bound on ReadAggregateRequest.limit
DEFAULT_RUNS_PAGE = 100  # the contract's default page_size of ListProcessingRuns
#: A run status as the CLI spells it (`ProcessingStatus` names, lower case).
RunStatusName: TypeAlias = Literal["running", "paused", "completed", "failed", "cancelled"]

#: Every RPC of the contract's EventService -> the method of both clients that calls it.
RPC_METHODS: dict[str, str] = {
    "Publish": "publish",
    "PublishStream": "publish_stream",
    "ReadAggregate": "read_aggregate",
    "Subscribe": "subscribe",
    "GetPipelineState": "get_pipeline_state",
    "GetProcessingState": "get_processing_state",
    "ListProcessingRuns": "list_processing_runs",
    "GetServerInfo": "server_info",
}

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Detect a dead connection under an idle subscription; the server allows a ping every 10 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff grows to 120 s by default, and while it waits every call
    # fails at once: cap it so that our retries find a restarted server quickly.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

# Publish is idempotent by event id and the other unary RPCs only read, so retrying any of
# them on these codes is safe. CANCELLED reaches a unary call only from the server's side
# (a cancellation of our own ends the task instead). RESOURCE_EXHAUSTED is retried only
# when the server says when (a RetryInfo: too many calls in flight); without one it is a
# limit the request itself breaks, and trying again cannot help.
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_RECONNECTABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request, as google.rpc.BadRequest reports it."""

    field: str  # e.g. `events[0].event_id`
    description: str


class ClientError(PipelineEventsError):
    """A call to the EventService failed.

    Attributes:
        code: the gRPC status code.
        target: the address the client called.
        reason: the google.rpc.ErrorInfo reason, "" when there was none.
        metadata: the ErrorInfo metadata.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        target: str = "",
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.target = target
        self.reason = reason
        self.metadata = dict(metadata or {})


class InvalidArgumentError(ClientError, ValueError):
    """The request breaks the schema's rules (INVALID_ARGUMENT); nothing was stored.

    Attributes:
        field_violations: every violation the server listed.
    """

    def __init__(self, message: str, *, field_violations: Sequence[FieldViolation] = (), **kw: Any):
        super().__init__(message, **kw)
        self.field_violations = list(field_violations)


class WrongExpectedRevisionError(ClientError, RuntimeError):
    """An aggregate's revision was not the expected one (FAILED_PRECONDITION); nothing was stored.

    Attributes:
        aggregate_id: the aggregate whose check failed.
        expected: the check, an ExpectedState or a revision.
        actual: the aggregate's revision at the time (0: no events).
    """

    def __init__(
        self,
        message: str,
        *,
        aggregate_id: str,
        expected: ExpectedRevision,
        actual: int,
        **kw: Any,
    ):
        super().__init__(message, **kw)
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual


class DuplicateEventError(ClientError, ValueError):
    """An event id is already stored with other content (ALREADY_EXISTS); nothing was stored.

    Attributes:
        event_id: the conflicting event id.
    """

    def __init__(self, message: str, *, event_id: str, **kw: Any):
        super().__init__(message, **kw)
        self.event_id = event_id


class NotFoundError(ClientError, LookupError):
    """A state query about an unknown id (NOT_FOUND)."""


class ServiceUnavailableError(ClientError, ConnectionError):
    """The service could not be reached (UNAVAILABLE), after retrying."""


class DeadlineExceededError(ClientError, TimeoutError):
    """The service did not answer within the timeout (DEADLINE_EXCEEDED), after retrying."""


class PermissionDeniedError(ClientError, PermissionError):
    """The caller was rejected (UNAUTHENTICATED or PERMISSION_DENIED)."""


class ResourceExhaustedError(ClientError, RuntimeError):
    """The request is over one of the server's limits (RESOURCE_EXHAUSTED)."""


class UnimplementedError(ClientError, NotImplementedError):
    """The server does not implement this RPC (yet) (UNIMPLEMENTED)."""


class ProjectionBehindError(ClientError, TimeoutError):
    """A state query's `min_position` was not reached within the server's wait.

    Attributes:
        position: how far the server's projections had folded the log.
        min_position: the position asked for.
    """

    def __init__(self, message: str, *, position: int, min_position: int, **kw: Any):
        super().__init__(message, **kw)
        self.position = position
        self.min_position = min_position


_ERROR_CLASSES: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}


def _parse_expected(text: str) -> ExpectedRevision:
    try:
        return ExpectedState(text)
    except ValueError:
        return int(text) if text.isdigit() else ExpectedState.ANY


def make_error(
    code: grpc.StatusCode,
    message: str,
    *,
    target: str,
    rpc: str = "",
    reason: str = "",
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[FieldViolation] = (),
    attempts: int = 1,
) -> ClientError:
    """The ClientError for a status (code, message and google.rpc details).

    Args:
        code: the status code.
        message: the server's message (or gRPC's, for a transport failure).
        target: the address called, named in the messages of transport failures.
        rpc: the RPC's name, for messages.
        reason: ErrorInfo reason.
        metadata: ErrorInfo metadata.
        violations: BadRequest field violations.
        attempts: how many times the call was tried.
    """
    metadata = dict(metadata or {})
    common: dict[str, Any] = {
        "code": code,
        "target": target,
        "reason": reason,
        "metadata": metadata,
    }
    tries = f" (tried {attempts} times)" if attempts > 1 else ""
    if reason == "WRONG_EXPECTED_REVISION":
        return WrongExpectedRevisionError(
            message,
            aggregate_id=metadata.get("aggregate_id", ""),
            expected=_parse_expected(metadata.get("expected", "")),
            actual=int(metadata.get("actual", "0") or 0),
            **common,
        )
    if reason == "DUPLICATE_EVENT_ID_CONFLICT":
        return DuplicateEventError(message, event_id=metadata.get("event_id", ""), **common)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(message, field_violations=violations, **common)
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the event service at {target}{tries}: {message}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"{rpc or 'the call'} to the event service at {target} timed out{tries}"
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        message = (
            f"the event service at {target} does not implement {rpc or 'this call'}: {message}"
        )
    return _ERROR_CLASSES.get(code, ClientError)(message, **common)


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in an error's trailing metadata (sync and aio errors alike)."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == _STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def retry_wait(
    error: grpc.RpcError,
    failures: int,
    policy: RetryPolicy,
    retryable: frozenset[grpc.StatusCode] = _RETRYABLE,
) -> float | None:
    """Seconds to wait before trying a failed call again; None: do not retry.

    Args:
        error: the failed attempt.
        failures: failed attempts so far, this one included.
        policy: the retry policy.
        retryable: codes retried with the policy's backoff; RESOURCE_EXHAUSTED with a
            google.rpc.RetryInfo (the server's overload answer) is retried after its delay.
    """
    if policy.exhausted(failures):
        return None
    code = error.code()  # type: ignore[attr-defined]
    if code in retryable:
        return policy.backoff(failures)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        status = _status_of(error)
        for detail in status.details if status is not None else ():
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return max(info.retry_delay.ToTimedelta().total_seconds(), policy.backoff(failures))
    return None


def error_from_rpc(
    error: grpc.RpcError, *, target: str, rpc: str, attempts: int = 1
) -> ClientError:
    """The ClientError of a failed gRPC call, with its google.rpc details parsed."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or code.name  # type: ignore[attr-defined]
    reason, metadata, violations = "", {}, []
    status = _status_of(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad_request):
            violations = [
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            ]
    return make_error(
        code, message, target=target, rpc=rpc, reason=reason, metadata=metadata,
        violations=violations, attempts=attempts,
    )  # fmt: skip


# --- values ---------------------------------------------------------------------------------


class RecordedEvent:
    """A stored event as the service returns it (read-only).

    Attributes:
        envelope: the event's envelope, exactly as stored.
        global_position: its position in the global log.
        revision: its revision within its aggregate.
        recorded_at: when the store recorded it (a NanoDatetime).
        event: the decoded domain event.

    `recorded_at` and `event` are decoded on first access, so a subscriber that reads
    only envelopes or positions pays for neither (a catch-up of many events spends
    most of its time there otherwise).
    """

    __slots__ = ("_envelope", "_event", "_position", "_recorded_at", "_revision", "_stamp")

    def __init__(
        self,
        envelope: EventEnvelope,
        global_position: int,
        revision: int,
        recorded_at: NanoDatetime,
    ):
        self._envelope, self._position, self._revision = envelope, global_position, revision
        self._recorded_at: NanoDatetime | None = recorded_at
        self._stamp: Any = None
        self._event: domain.Event | domain.UnknownEvent | None = None

    @classmethod
    def from_proto(cls, message: envelope_pb2.RecordedEvent) -> RecordedEvent:
        """Wrap a RecordedEvent message (its recorded_at is decoded when first read)."""
        recorded = cls.__new__(cls)
        recorded._envelope = message.envelope
        recorded._position = message.global_position
        recorded._revision = message.revision
        recorded._stamp = message.recorded_at
        recorded._recorded_at = None
        recorded._event = None
        return recorded

    @property
    def envelope(self) -> EventEnvelope:
        return self._envelope

    @property
    def global_position(self) -> int:
        return self._position

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def recorded_at(self) -> NanoDatetime:
        """When the store recorded the event.

        Raises:
            DecodeError: it is not a representable time.
        """
        if self._recorded_at is None:
            stamp = self._stamp
            try:
                self._recorded_at = NanoDatetime.from_seconds_nanos(stamp.seconds, stamp.nanos)
            except (ValueError, OverflowError) as error:
                raise DecodeError(
                    f"not a representable time: {error}", field="recorded_at"
                ) from error
        return self._recorded_at

    @property
    def event(self) -> domain.Event | domain.UnknownEvent:
        """The domain event (decoded on first access).

        Raises:
            DecodeError: the envelope breaks the schema.
        """
        if self._event is None:
            self._event = adapter.from_envelope(self._envelope)
        return self._event

    @property
    def event_id(self) -> str:
        """The event id."""
        return self._envelope.event_id

    @property
    def pipeline_id(self) -> str:
        """The aggregate (pipeline) id."""
        return self._envelope.aggregate_id

    def _key(self) -> tuple[Any, ...]:
        return (self._envelope, self._position, self._revision, self.recorded_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # an envelope message is not hashable

    def __repr__(self) -> str:
        return (
            f"RecordedEvent(global_position={self._position}, revision={self._revision},"
            f" event_id={self._envelope.event_id!r}, event_type={self._envelope.event_type})"
        )


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Where a published batch was stored.

    Attributes:
        positions: one per event, in request order.
        already_recorded: every event was already stored (a retry); nothing was appended.
    """

    positions: tuple[Position, ...]
    already_recorded: bool

    @classmethod
    def from_proto(cls, message: service_pb2.PublishResponse) -> PublishResult:
        """Wrap a PublishResponse."""
        return cls(
            tuple(Position(p.global_position, p.revision) for p in message.positions),
            message.already_recorded,
        )


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group's progress, in short (`group()` has the rest)."""

    name: str
    lag: int  # positions between its checkpoint and the log's head
    parked: int
    members: int
    in_flight: int
    waiting_retry: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """GetServerInfo's answer: what the server holds and serves.

    Attributes:
        events_by_type: by seed event name ("ChunkProcessed"; `Unknown(N)` for a type
            this schema lacks); the whole log when `events_by_type_exact`, else (NATS)
            the events appended through the server since it started.
        runs_by_status: by status name, lower case ("running", "not_started"...).
        position: how far the read models had folded the log (pipelines, runs).
    """

    server_version: str
    store_backend: str
    store_size_bytes: int
    head_position: int
    events_by_type: dict[str, int]
    events_by_type_exact: bool
    pipelines: int
    runs_by_status: dict[str, int]
    position: int
    open_subscriptions: int
    consumer_groups: tuple[GroupInfo, ...]

    @classmethod
    def from_proto(cls, message: service_pb2.GetServerInfoResponse) -> ServerInfo:
        """Wrap a GetServerInfoResponse."""

        def status_name(number: int) -> str:
            try:
                return ProcessingStatus(number).name.lower()
            except ValueError:
                return f"unknown({number})"

        return cls(
            server_version=message.server_version,
            store_backend=message.store_backend,
            store_size_bytes=message.store_size_bytes,
            head_position=message.head_position,
            events_by_type={
                adapter.event_type_name(c.event_type): c.count for c in message.events_by_type
            },
            events_by_type_exact=message.events_by_type_exact,
            pipelines=message.pipelines,
            runs_by_status={status_name(c.status): c.count for c in message.runs_by_status},
            position=message.position,
            open_subscriptions=message.open_subscriptions,
            consumer_groups=tuple(
                GroupInfo(g.name, g.lag, g.parked, g.members, g.in_flight, g.waiting_retry)
                for g in message.consumer_groups
            ),
        )


@dataclass(frozen=True, slots=True)
class PublishBatch:
    """One batch for `publish_stream`, with optional expected revisions."""

    events: Sequence[Publishable]
    expected: Mapping[str | uuid.UUID, ExpectedRevision] | None = None


@dataclass(frozen=True, slots=True)
class PublishAck:
    """The answer to one batch of `publish_stream`: a result or the error that rejected it.

    Attributes:
        batch_id: the batch's number, counting from 1 in the order the batches were sent.
        result: where the batch was stored; None when it was rejected.
        error: why it was rejected (nothing of it was stored); None when it was stored.
    """

    batch_id: int
    result: PublishResult | None = None
    error: ClientError | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts.

    Attributes:
        max_attempts: attempts in all (the first one included); None retries forever.
        initial_backoff: the first wait, in seconds.
        max_backoff: the longest wait, in seconds.
        multiplier: growth of the wait per failed attempt.
    """

    max_attempts: int | None = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def exhausted(self, failures: int) -> bool:
        """Whether `failures` failed attempts use up the policy."""
        return self.max_attempts is not None and failures >= self.max_attempts

    def backoff(self, failures: int) -> float:
        """The wait after the `failures`-th consecutive failure."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (failures - 1))
        # Between half and all of the ceiling: clients that lost the same server do not
        # come back in lockstep, yet none hammers it with near-zero waits.
        return ceiling * random.uniform(0.5, 1.0)


#: Unary calls: a few attempts, about 0.7 s of waiting in all.
DEFAULT_RETRY = RetryPolicy()
#: Subscriptions that have received something: reconnect forever, at most 5 s apart.
DEFAULT_RECONNECT = RetryPolicy(max_attempts=None)


# --- requests -------------------------------------------------------------------------------


def _envelopes(
    events: Iterable[Publishable] | Publishable,
    *,
    correlation_id: str,
    causation_id: str,
    metadata: Mapping[str, str] | None,
) -> list[EventEnvelope]:
    if isinstance(events, EventEnvelope | domain.Event | domain.UnknownEvent):
        events = [events]
    envelopes = []
    for event in events:
        if isinstance(event, EventEnvelope):
            envelopes.append(event)
        elif isinstance(event, domain.Event | domain.UnknownEvent):
            envelope = adapter.to_envelope(
                event, correlation_id=correlation_id, causation_id=causation_id, metadata=metadata
            )
            envelopes.append(envelope)
        else:
            raise TypeError(f"cannot publish {type(event).__name__}: not an event or envelope")
    return envelopes


def _expected_revisions(
    expected: Mapping[str | uuid.UUID, ExpectedRevision] | None,
) -> list[service_pb2.ExpectedRevision]:
    checks = []
    for aggregate_id, check in (expected or {}).items():
        message = service_pb2.ExpectedRevision(aggregate_id=str(aggregate_id))
        if isinstance(check, ExpectedState):
            getattr(message, check.value).SetInParent()
        elif isinstance(check, int) and not isinstance(check, bool) and check >= 0:
            message.revision = check
        else:
            raise InvalidArgumentError(
                f"expected revision of {aggregate_id}: {check!r} is neither an ExpectedState "
                "nor a revision >= 0",
                field_violations=[FieldViolation("expected_revisions", "invalid check")],
                code=grpc.StatusCode.INVALID_ARGUMENT,
            )
        checks.append(message)
    return checks


def _publish_request(
    events: Iterable[Publishable] | Publishable,
    expected: Mapping[str | uuid.UUID, ExpectedRevision] | None,
    correlation_id: str,
    causation_id: str,
    metadata: Mapping[str, str] | None,
) -> service_pb2.PublishRequest:
    return service_pb2.PublishRequest(
        events=_envelopes(
            events, correlation_id=correlation_id, causation_id=causation_id, metadata=metadata
        ),
        expected_revisions=_expected_revisions(expected),
    )


class _StreamRequests:
    """Numbers and builds PublishStream requests, and keeps the error that ended them.

    gRPC turns an exception raised by a request iterator into a bare cancellation, so the
    iterator ends the requests instead and the error is raised once the batches already
    sent are acknowledged.
    """

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._error: Exception | None = None

    def build(self, batch: PublishBatch | Iterable[Publishable]) -> Any:
        """The request of the next batch."""
        if not isinstance(batch, PublishBatch):
            batch = PublishBatch(list(batch))
        return service_pb2.PublishStreamRequest(
            batch_id=next(self._numbers),
            events=_envelopes(batch.events, correlation_id="", causation_id="", metadata=None),
            expected_revisions=_expected_revisions(batch.expected),
        )

    def failed(self, error: Exception) -> None:
        """Keep the error that ended the requests."""
        self._error = error

    def raise_failure(self) -> None:
        """Raise the kept error, if any."""
        if self._error is not None:
            raise self._error


def _ack(response: service_pb2.PublishStreamResponse, target: str) -> PublishAck:
    if response.WhichOneof("result") == "published":
        return PublishAck(response.batch_id, result=PublishResult.from_proto(response.published))
    rejection = response.error
    error = make_error(
        _CODES_BY_NUMBER.get(rejection.code, grpc.StatusCode.UNKNOWN), rejection.message,
        target=target, rpc="PublishStream", reason=rejection.reason,
        metadata=dict(rejection.metadata),
    )  # fmt: skip
    return PublishAck(response.batch_id, error=error)


def _event_type(value: int | str | type[domain.Event]) -> int:
    if isinstance(value, type):
        value = value.__name__
    return adapter.event_type_number(value) if isinstance(value, str) else int(value)


def _category(value: int | str) -> int:
    return int(domain.EventCategory[value.upper()] if isinstance(value, str) else value)


def _filter(
    event_types: Iterable[int | str | type[domain.Event]],
    categories: Iterable[int | str],
    pipeline_ids: Iterable[str | uuid.UUID],
    processing_ids: Iterable[str | uuid.UUID],
) -> service_pb2.EventFilter:
    return service_pb2.EventFilter(
        event_types=[_event_type(t) for t in event_types],
        categories=[_category(c) for c in categories],
        aggregate_ids=[str(i) for i in pipeline_ids],
        processing_ids=[str(i) for i in processing_ids],
    )


class _PageReader:
    """Follows ReadAggregate's next_revision from page to page, up to an overall limit."""

    def __init__(
        self,
        pipeline_id: str | uuid.UUID,
        from_revision: int,
        backwards: bool,
        limit: int | None,
        page_size: int,
    ):
        self.request = service_pb2.ReadAggregateRequest(
            aggregate_id=str(pipeline_id), from_revision=from_revision, backwards=backwards
        )
        self.remaining = limit
        self.page_size = page_size
        self.done = limit == 0

    def next_request(self) -> service_pb2.ReadAggregateRequest:
        """The request for the next page."""
        size, remaining = self.page_size, self.remaining
        if remaining is not None and remaining <= MAX_PAGE_SIZE and (size == 0 or remaining < size):
            size = remaining
        self.request.limit = size
        return self.request

    def accept(self, response: service_pb2.ReadAggregateResponse) -> list[RecordedEvent]:
        """The page's events; advances to the next page or marks the end."""
        events = [RecordedEvent.from_proto(e) for e in response.events]
        if self.remaining is not None:
            events = events[: self.remaining]
            self.remaining -= len(events)
        following = response.next_revision
        # A next_revision that does not move would loop forever: treat it as the end.
        stuck = following == self.request.from_revision and self.request.from_revision != 0
        self.done = following == 0 or stuck or not events or self.remaining == 0
        self.request.from_revision = following
        return events


class _Cursor:
    """A subscription's request and its position: the last global position it has considered."""

    def __init__(
        self,
        start: StartPosition,
        event_filter: service_pb2.EventFilter,
        max_batch_size: int,
        checkpoint_interval: int,
    ):
        if start == "start":
            self.position: int | None = 0
        elif start == "end":
            self.position = None  # known from the first CaughtUp
        elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            self.position = start
        else:
            raise ValueError(
                f"from_position must be 'start', 'end' or a position >= 0, not {start!r}"
            )
        self.filter = event_filter
        self.max_batch_size = max_batch_size
        self.checkpoint_interval = checkpoint_interval
        self.live = False

    def request(self) -> service_pb2.SubscribeRequest:
        """Where to (re)start: after the position, or at the end while none is known."""
        request = service_pb2.SubscribeRequest(
            filter=self.filter,
            max_batch_size=self.max_batch_size,
            checkpoint_interval=self.checkpoint_interval,
        )
        if self.position is None:
            request.from_end.SetInParent()
        else:
            request.after_position = self.position
        return request

    def advance(self, position: int) -> None:
        """Move the position forwards (never backwards)."""
        self.position = position if self.position is None else max(self.position, position)


ProgressCallback: TypeAlias = Callable[[int], Any]


# --- consumer groups (shared by both clients) -----------------------------------------------


def _group_request(
    name: str,
    start: StartPosition,
    event_filter: service_pb2.EventFilter,
    settings: GroupSettings,
) -> consumer_group_pb2.CreateConsumerGroupRequest:
    request = consumer_group_pb2.CreateConsumerGroupRequest(
        name=name, settings=settings.to_proto(event_filter)
    )
    if start == "start":
        request.from_start.SetInParent()
    elif start == "end":
        request.from_end.SetInParent()
    elif isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        request.after_position = start
    else:
        raise ValueError(f"start must be 'start', 'end' or a position >= 0, not {start!r}")
    return request


def _consume_reconnect(
    first: RetryPolicy, policy: RetryPolicy
) -> Callable[[grpc.RpcError, int, bool], float | None]:
    """How long a worker waits to rejoin after its stream failed (None: it raises).

    Until it has joined once, a worker retries like a unary call (`first`), so a wrong
    target fails fast; after that it follows `policy` (forever by default).
    """

    def wait(error: grpc.RpcError, failures: int, joined: bool) -> float | None:
        return retry_wait(error, failures, policy if joined else first, _RECONNECTABLE)

    return wait


class _ParkedPages:
    """ListParkedEvents pages until `limit` events (None: every one)."""

    def __init__(self, group: str, limit: int | None):
        self.group, self.limit = group, limit
        self.found: list[ParkedEvent] = []
        self.after = 0
        self.done = limit is not None and limit <= 0

    def next_request(self) -> consumer_group_pb2.ListParkedEventsRequest:
        room = 1000 if self.limit is None else min(self.limit - len(self.found), 1000)
        return consumer_group_pb2.ListParkedEventsRequest(
            group=self.group, after_position=self.after, limit=room
        )

    def accept(self, response: consumer_group_pb2.ListParkedEventsResponse) -> None:
        self.found.extend(
            ParkedEvent.from_proto(p, RecordedEvent.from_proto) for p in response.events
        )
        self.after = response.next_after_position
        self.done = not self.after or (self.limit is not None and len(self.found) >= self.limit)


def _check_concurrency(concurrency: int) -> None:
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")


# --- async client ---------------------------------------------------------------------------


class AsyncSubscription:
    """Async iterator over a subscription's events; reconnects and resumes by itself.

    Each event is delivered once, in global-position order: after a lost connection the
    subscription resumes after the last position it has considered, and skips any event
    at or before it. Use it as an async context manager (or call `aclose`) to end it.

    Attributes:
        reconnects: how many times it has reconnected.
    """

    def __init__(
        self,
        client: AsyncEventClient,
        cursor: _Cursor,
        *,
        reconnect: RetryPolicy,
        on_checkpoint: ProgressCallback | None,
        on_caught_up: ProgressCallback | None,
    ):
        self._client = client
        self._cursor = cursor
        self._reconnect = reconnect
        self._on_checkpoint = on_checkpoint
        self._on_caught_up = on_caught_up
        self.reconnects = 0
        self._events = self._run()

    @property
    def position(self) -> int | None:
        """The last position considered: the last event delivered, or a later checkpoint.

        Store it to resume later with `subscribe(from_position=position)`. None until a
        subscription from "end" has heard from the server.
        """
        return self._cursor.position

    @property
    def live(self) -> bool:
        """Whether the subscription has caught up and now receives events as they are stored."""
        return self._cursor.live

    def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        return self._events  # the generator itself: no extra await per event

    async def __anext__(self) -> RecordedEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """End the subscription (cancels the call)."""
        await self._events.aclose()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _notify(self, callback: ProgressCallback | None, position: int) -> None:
        if callback is not None and inspect.isawaitable(result := callback(position)):
            await result

    async def _run(self) -> AsyncIterator[RecordedEvent]:
        cursor = self._cursor
        from_proto = RecordedEvent.from_proto
        connected = False  # a subscription that never got through fails like any call
        failures = 0
        while True:
            stub = await self._client._get_stub()
            call = stub.Subscribe(cursor.request(), metadata=self._client.metadata)
            try:
                async for message in call:
                    connected, failures = True, 0
                    kind = message.WhichOneof("content")
                    if kind == "events":
                        for item in message.events.events:
                            position = item.global_position  # read once: a upb call
                            if cursor.position is None or position > cursor.position:  # is_new
                                cursor.position = position  # advance
                                yield from_proto(item)
                    elif kind == "checkpoint":
                        cursor.advance(message.checkpoint.position)
                        await self._notify(self._on_checkpoint, message.checkpoint.position)
                    elif kind == "caught_up":
                        cursor.advance(message.caught_up.position)
                        cursor.live = True
                        await self._notify(self._on_caught_up, message.caught_up.position)
                    elif kind == "fell_behind":
                        cursor.live = False
                return  # the server ended the stream without an error
            except grpc.aio.AioRpcError as error:
                failures += 1
                policy = self._reconnect if connected else self._client.retry
                wait = retry_wait(error, failures, policy, _RECONNECTABLE)
                if wait is None:
                    raise error_from_rpc(
                        error, target=self._client.target, rpc="Subscribe", attempts=failures
                    ) from error
            finally:
                call.cancel()
            cursor.live = False
            self.reconnects += 1
            await asyncio.sleep(wait)


class AsyncEventClient:
    """Async client of the EventService (grpc.aio); use it as an async context manager.

    Unary calls retry on UNAVAILABLE, DEADLINE_EXCEEDED, a server-side CANCELLED and an
    overload refusal (RESOURCE_EXHAUSTED with a RetryInfo) with backoff (`retry`); every
    attempt has its own `timeout`. Failures raise a ClientError subclass.

    Args:
        target: the server's HOST:PORT.
        timeout: seconds per attempt of a unary call; None waits forever.
        channel: a grpc.aio channel to use instead of opening one (the client does not close it).
        credentials: TLS credentials; None opens an insecure channel.
        retry: the retry policy of unary calls.
        token: a bearer token for a server with `--auth` (`pipeline-events token create`).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        token: str | None = None,
    ):
        self.target = target
        self.timeout = timeout
        self.retry = retry
        #: Sent with every call: the bearer token (`serve --auth`), if any.
        self.metadata = None if not token else (("authorization", f"Bearer {token}"),)
        self._credentials = credentials
        self._channel = channel
        self._owns_channel = channel is None
        self._stub: service_pb2_grpc.EventServiceStub | None = None
        self._group_stub: consumer_group_pb2_grpc.ConsumerGroupServiceStub | None = None

    async def _get_group_stub(self) -> consumer_group_pb2_grpc.ConsumerGroupServiceStub:
        if self._group_stub is None:
            await self._get_stub()
            self._group_stub = consumer_group_pb2_grpc.ConsumerGroupServiceStub(self._channel)
        return self._group_stub

    async def _get_stub(self) -> service_pb2_grpc.EventServiceStub:
        # The channel binds to the running loop, so it is opened on first use, not in __init__.
        if self._stub is None:
            if self._channel is None:
                if self._credentials is None:
                    self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
                else:
                    self._channel = grpc.aio.secure_channel(
                        self.target, self._credentials, options=CHANNEL_OPTIONS
                    )
            self._stub = service_pb2_grpc.EventServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel if the client opened it."""
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None
        self._stub = None
        self._group_stub = None

    async def __aenter__(self) -> AsyncEventClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _unary(self, rpc: str, request: Any) -> Any:
        stub = await (self._get_group_stub() if rpc in GROUP_RPC_METHODS else self._get_stub())
        method = getattr(stub, rpc)
        failures = 0
        while True:
            try:
                return await method(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                failures += 1
                wait = retry_wait(error, failures, self.retry)
                if wait is None:
                    raise error_from_rpc(
                        error, target=self.target, rpc=rpc, attempts=failures
                    ) from error
            await asyncio.sleep(wait)

    async def publish(
        self,
        events: Iterable[Publishable] | Publishable,
        *,
        expected: Mapping[str | uuid.UUID, ExpectedRevision] | None = None,
        correlation_id: str = "",
        causation_id: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Append a batch atomically; retried safely, as the server deduplicates by event id.

        Args:
            events: domain events and/or envelopes (or a single one), appended in order.
            expected: per pipeline id, the revision its stream must have (an ExpectedState
                or an exact revision, 0 = no stream); pipelines not listed are not checked.
            correlation_id: set on the envelopes built from domain events.
            causation_id: set on the envelopes built from domain events.
            metadata: set on the envelopes built from domain events.

        Returns:
            The events' positions, and whether the whole batch had been stored already.

        Raises:
            InvalidArgumentError: a rule of the schema is broken (see `field_violations`).
            WrongExpectedRevisionError: an expected revision did not hold.
            DuplicateEventError: an event id is stored with different content.
            ServiceUnavailableError: the server could not be reached.
        """
        request = _publish_request(events, expected, correlation_id, causation_id, metadata)
        return PublishResult.from_proto(await self._unary("Publish", request))

    async def publish_stream(
        self, batches: AsyncIterable[PublishBatch | Iterable[Publishable]]
    ) -> AsyncIterator[PublishAck]:
        """Publish batches over one PublishStream call, yielding one ack per batch in order.

        A rejected batch yields an ack with its error and does not end the stream. The call
        is not retried: after a ServiceUnavailableError, re-send the batches without an ack
        (safe, as publishing is idempotent by event id).

        Args:
            batches: PublishBatch values, or plain sequences of events/envelopes.
        """
        requests = _StreamRequests()

        async def each() -> AsyncIterator[service_pb2.PublishStreamRequest]:
            try:
                async for batch in batches:
                    yield requests.build(batch)
            except Exception as error:
                requests.failed(error)

        call = (await self._get_stub()).PublishStream(each(), metadata=self.metadata)
        try:
            async for response in call:
                yield _ack(response, self.target)
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, target=self.target, rpc="PublishStream") from error
        finally:
            call.cancel()
        requests.raise_failure()

    async def _pages(
        self,
        pipeline_id: str | uuid.UUID,
        from_revision: int,
        backwards: bool,
        limit: int | None,
        page_size: int,
    ) -> AsyncIterator[list[RecordedEvent]]:
        reader = _PageReader(pipeline_id, from_revision, backwards, limit, page_size)
        while not reader.done:
            yield reader.accept(await self._unary("ReadAggregate", reader.next_request()))

    async def read_aggregate(
        self,
        pipeline_id: str | uuid.UUID,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
        page_size: int = 0,
    ) -> list[RecordedEvent]:
        """Read a pipeline's events, following the pages to the end.

        Args:
            pipeline_id: the pipeline (aggregate) id.
            from_revision: the first revision to read (inclusive); 0 is the first event
                forwards, the latest backwards.
            backwards: newest first.
            limit: the most events to return in all; None returns every one.
            page_size: events per ReadAggregate call; 0 uses the server's default.
        """
        events: list[RecordedEvent] = []
        async for page in self._pages(pipeline_id, from_revision, backwards, limit, page_size):
            events.extend(page)
        return events

    async def history(
        self, pipeline_id: str | uuid.UUID, *, page_size: int = 0
    ) -> AsyncIterator[domain.Event | domain.UnknownEvent]:
        """A pipeline's domain events, oldest first, read page by page as they are consumed."""
        async for page in self._pages(pipeline_id, 0, False, None, page_size):
            for recorded in page:
                yield recorded.event

    def subscribe(
        self,
        *,
        from_position: StartPosition = "start",
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        max_batch_size: int = 0,
        checkpoint_interval: int = 0,
        on_checkpoint: ProgressCallback | None = None,
        on_caught_up: ProgressCallback | None = None,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
    ) -> AsyncSubscription:
        """Subscribe to the global log; the result is an async iterator of RecordedEvents.

        Only events are yielded. Progress without events comes through the callbacks (each
        called with the position, awaited when it returns an awaitable) and the
        subscription's `position` and `live` attributes.

        On UNAVAILABLE (a lost connection, a server shutting down) the subscription
        reconnects with backoff, `after_position` set to its position, so no event is
        missed or repeated. Until it has received its first message it retries like a
        unary call (the client's `retry`), so a wrong target fails fast with
        ServiceUnavailableError; after that it follows `reconnect` (forever by default).
        Any other error ends the iteration with its ClientError.

        Args:
            from_position: "start", "end" (only events stored from now on), or a global
                position to continue after (e.g. a stored `position`).
            event_types: keep these types (EventType numbers, names such as
                "ChunkProcessed", or domain classes).
            categories: keep these categories (EventCategory values or names).
            pipeline_ids: keep these pipelines.
            processing_ids: keep these processing runs.
            max_batch_size: most events per server message; 0: the server's default.
            checkpoint_interval: positions a filter may skip between checkpoints; 0: default.
            on_checkpoint: called with the position of each Checkpoint.
            on_caught_up: called with the position when the subscription turns live.
            reconnect: the reconnect policy once connected.
        """
        cursor = _Cursor(
            from_position,
            _filter(event_types, categories, pipeline_ids, processing_ids),
            max_batch_size,
            checkpoint_interval,
        )
        return AsyncSubscription(
            self, cursor, reconnect=reconnect, on_checkpoint=on_checkpoint,
            on_caught_up=on_caught_up,
        )  # fmt: skip

    async def pipeline_state(
        self, pipeline_id: str | uuid.UUID, *, min_position: int = 0
    ) -> PipelineState:
        """A pipeline's current state, from the server's projections.

        Args:
            pipeline_id: the pipeline.
            min_position: read-your-writes: wait (up to the server's 2 s) until the
                projections have folded the log up to here, e.g. a Publish's last position.

        Raises:
            NotFoundError: the pipeline is unknown (at the projections' position).
            ProjectionBehindError: `min_position` was not reached in time.
        """
        response = await self.get_pipeline_state(pipeline_id, min_position=min_position)
        _caught_up(self.target, "GetPipelineState", response.position, min_position)
        return _decoded(messages.pipeline_from_proto, response.state, self.target)

    async def run_state(
        self, processing_id: str | uuid.UUID, *, min_position: int = 0
    ) -> ProcessingRunState:
        """A processing run's current state, from the server's projections.

        Raises:
            NotFoundError: the run is unknown (at the projections' position).
            ProjectionBehindError: `min_position` was not reached in time.
        """
        response = await self.get_processing_state(processing_id, min_position=min_position)
        _caught_up(self.target, "GetProcessingState", response.position, min_position)
        return _decoded(messages.run_from_proto, response.state, self.target)

    async def runs(
        self,
        *,
        pipeline_id: str | uuid.UUID | None = None,
        statuses: Iterable[ProcessingStatus | RunStatusName | int] = (),
        limit: int | None = DEFAULT_RUNS_PAGE,
        page_size: int = DEFAULT_RUNS_PAGE,
        min_position: int = 0,
    ) -> list[RunSummary]:
        """Runs, newest first, of one pipeline or all, in any of `statuses` (none: all).

        Pages through ListProcessingRuns until `limit` runs (None: every run).

        Raises:
            ValueError: an unknown status name, or a negative limit.
            ProjectionBehindError: `min_position` was not reached in time.
        """
        request = _list_runs_request(pipeline_id, statuses, page_size, "", min_position)
        pages = _RunPages(request, limit)
        while not pages.done:
            response = await self._unary("ListProcessingRuns", pages.next_request())
            pages.accept(response, self.target)
        return pages.found

    async def get_pipeline_state(
        self, pipeline_id: str | uuid.UUID, *, min_position: int = 0
    ) -> service_pb2.GetPipelineStateResponse:
        """GetPipelineState's raw answer: the state's message and the projections' position.

        Raises:
            NotFoundError: the pipeline is unknown.
        """
        request = service_pb2.GetPipelineStateRequest(
            pipeline_id=str(pipeline_id), min_position=min_position
        )
        return await self._unary("GetPipelineState", request)

    async def get_processing_state(
        self, processing_id: str | uuid.UUID, *, min_position: int = 0
    ) -> service_pb2.GetProcessingStateResponse:
        """GetProcessingState's raw answer: the state's message and the projections' position.

        Raises:
            NotFoundError: the run is unknown.
        """
        request = service_pb2.GetProcessingStateRequest(
            processing_id=str(processing_id), min_position=min_position
        )
        return await self._unary("GetProcessingState", request)

    async def list_processing_runs(
        self, request: service_pb2.ListProcessingRunsRequest
    ) -> service_pb2.ListProcessingRunsResponse:
        """One raw page of ListProcessingRuns (`runs` pages for you)."""
        return await self._unary("ListProcessingRuns", request)

    async def server_info(self) -> ServerInfo:
        """The server's version, store, head, counts, subscriptions and groups."""
        response = await self._unary("GetServerInfo", service_pb2.GetServerInfoRequest())
        return ServerInfo.from_proto(response)

    # --- consumer groups ------------------------------------------------------------------

    async def create_group(
        self,
        name: str,
        *,
        start: StartPosition = "start",
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        settings: GroupSettings | None = None,
    ) -> tuple[ConsumerGroup, bool]:
        """Create a consumer group; (the group, False) when it exists with these settings.

        Args:
            name: letters, digits, `.`, `_`, `-` (1-200, starting with a letter or digit).
            start: "start", "end" (events from now on), or a global position to start after;
                it applies only when the group is created.
            event_types, categories, pipeline_ids, processing_ids: the group's filter.
            settings: deliveries, backoff, ack timeout, events in flight per member.

        Raises:
            ClientError: ALREADY_EXISTS (reason CONSUMER_GROUP_EXISTS) with other settings.
        """
        event_filter = _filter(event_types, categories, pipeline_ids, processing_ids)
        response = await self._unary(
            "CreateConsumerGroup",
            _group_request(name, start, event_filter, settings or GroupSettings()),
        )
        return ConsumerGroup.from_proto(response.group), response.created

    async def update_group(
        self,
        name: str,
        *,
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        settings: GroupSettings | None = None,
    ) -> ConsumerGroup:
        """Replace a group's filter and settings (its checkpoint and parked events stay)."""
        event_filter = _filter(event_types, categories, pipeline_ids, processing_ids)
        request = consumer_group_pb2.UpdateConsumerGroupRequest(
            name=name, settings=(settings or GroupSettings()).to_proto(event_filter)
        )
        return ConsumerGroup.from_proto((await self._unary("UpdateConsumerGroup", request)).group)

    async def delete_group(self, name: str) -> None:
        """Delete a group with its checkpoint and parked events."""
        await self._unary(
            "DeleteConsumerGroup", consumer_group_pb2.DeleteConsumerGroupRequest(name=name)
        )

    async def groups(self) -> list[ConsumerGroup]:
        """Every consumer group, by name."""
        response = await self._unary(
            "ListConsumerGroups", consumer_group_pb2.ListConsumerGroupsRequest()
        )
        return [ConsumerGroup.from_proto(group) for group in response.groups]

    async def group(self, name: str) -> ConsumerGroup:
        """One group and its progress.

        Raises:
            NotFoundError: no such group.
        """
        request = consumer_group_pb2.GetConsumerGroupRequest(name=name)
        return ConsumerGroup.from_proto((await self._unary("GetConsumerGroup", request)).group)

    async def parked(self, group: str, *, limit: int | None = None) -> list[ParkedEvent]:
        """A group's parked events in position order (every one, or the first `limit`)."""
        pages = _ParkedPages(group, limit)
        while not pages.done:
            pages.accept(await self._unary("ListParkedEvents", pages.next_request()))
        return pages.found

    async def replay_parked(self, group: str, event_ids: Iterable[str] = ()) -> int:
        """Give parked events (all, or the ones named) back to the group; how many."""
        request = consumer_group_pb2.ReplayParkedEventsRequest(
            group=group, event_ids=consumer.ids_of(event_ids)
        )
        return (await self._unary("ReplayParkedEvents", request)).replayed  # type: ignore[no-any-return]

    async def discard_parked(self, group: str, event_ids: Iterable[str] = ()) -> int:
        """Drop parked events (all, or the ones named) for good; how many."""
        request = consumer_group_pb2.DiscardParkedEventsRequest(
            group=group, event_ids=consumer.ids_of(event_ids)
        )
        return (await self._unary("DiscardParkedEvents", request)).discarded  # type: ignore[no-any-return]

    async def consume(
        self,
        group: str,
        handler: Callable[[Delivery], Awaitable[Any]],
        *,
        concurrency: int = 1,
        max_in_flight: int = 0,
        member_name: str = "",
        stop: asyncio.Event | None = None,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
    ) -> WorkerStats:
        """Handle a group's events until `stop` is set (or the task is cancelled).

        Each delivery is given to `handler` (at most `concurrency` at once). Returning acks
        it; raising nacks it with the exception's text, to be retried after the group's
        backoff and parked after its max deliveries; `consumer.ParkEvent` parks it now and
        `consumer.SkipEvent` drops it. On stop, the handlers running finish and their
        answers are sent before the stream closes. A lost connection rejoins (`reconnect`);
        what was not acknowledged is delivered again.

        Raises:
            NotFoundError: no such group (also when it is deleted while consuming).
        """
        _check_concurrency(concurrency)
        stub = await self._get_group_stub()
        stats = WorkerStats()
        try:
            return await consumer.run_async_worker(
                lambda requests: stub.Consume(requests, metadata=self.metadata),
                consumer._start(group, max_in_flight, member_name),
                handler,
                concurrency=concurrency,
                stop=stop or asyncio.Event(),
                wrap=RecordedEvent.from_proto,
                reconnect_wait=_consume_reconnect(self.retry, reconnect),
                stats=stats,
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, target=self.target, rpc="Consume") from error


# --- state queries (shared by both clients) -------------------------------------------------


def _statuses(statuses: Iterable[ProcessingStatus | RunStatusName | int]) -> list[int]:
    """Status filters as the contract's numbers (names as the CLI spells them)."""
    numbers = []
    for status in statuses:
        if isinstance(status, str):
            try:
                status = ProcessingStatus[status.upper()]
            except KeyError:
                raise ValueError(f"not a run status: {status!r}") from None
        numbers.append(int(status))
    return sorted(set(numbers))


def _list_runs_request(
    pipeline_id: str | uuid.UUID | None,
    statuses: Iterable[ProcessingStatus | RunStatusName | int],
    page_size: int,
    page_token: str,
    min_position: int,
) -> service_pb2.ListProcessingRunsRequest:
    return service_pb2.ListProcessingRunsRequest(
        pipeline_id="" if pipeline_id is None else str(pipeline_id),
        statuses=_statuses(statuses),
        page_size=page_size,
        page_token=page_token,
        min_position=min_position,
    )


def _caught_up(target: str, rpc: str, position: int, min_position: int) -> None:
    if position < min_position:
        raise ProjectionBehindError(
            f"{rpc}: the projections at {target} had folded the log to position {position},"
            f" not yet to {min_position}",
            position=position,
            min_position=min_position,
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            target=target,
        )


def _decoded(convert: Callable[[Any], _S], message: Any, target: str) -> _S:
    try:
        return convert(message)
    except DecodeError as error:
        raise ClientError(
            f"the event service at {target} answered a state this client cannot read: {error}",
            code=grpc.StatusCode.INTERNAL,
            target=target,
        ) from error


class _RunPages:
    """The paging of `runs`: requests until the limit or the last page (one for each client)."""

    def __init__(self, request: service_pb2.ListProcessingRunsRequest, limit: int | None):
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.request = request
        self.limit = limit
        self.found: list[RunSummary] = []
        self.done = limit == 0

    def next_request(self) -> service_pb2.ListProcessingRunsRequest:
        if self.limit is not None:
            wanted = self.limit - len(self.found)
            self.request.page_size = min(wanted, self.request.page_size or DEFAULT_RUNS_PAGE)
        return self.request

    def accept(self, response: service_pb2.ListProcessingRunsResponse, target: str) -> None:
        _caught_up(target, "ListProcessingRuns", response.position, self.request.min_position)
        self.request.min_position = 0  # reached: later pages need not wait
        for message in response.runs:
            self.found.append(_decoded(messages.summary_from_proto, message, target))
        self.request.page_token = response.next_page_token
        full = self.limit is not None and len(self.found) >= self.limit
        self.done = full or not response.next_page_token


# --- sync client ----------------------------------------------------------------------------


class Subscription:
    """Iterator over a subscription's events; reconnects and resumes by itself.

    The sync twin of AsyncSubscription. `close` may be called from another thread; the
    iteration then ends.

    Attributes:
        reconnects: how many times it has reconnected.
    """

    def __init__(
        self,
        client: EventClient,
        cursor: _Cursor,
        *,
        reconnect: RetryPolicy,
        on_checkpoint: ProgressCallback | None,
        on_caught_up: ProgressCallback | None,
    ):
        self._client = client
        self._cursor = cursor
        self._reconnect = reconnect
        self._on_checkpoint = on_checkpoint
        self._on_caught_up = on_caught_up
        self._closed = threading.Event()
        self._call: Any = None
        self.reconnects = 0
        self._events = self._run()

    @property
    def position(self) -> int | None:
        """The last position considered (see AsyncSubscription.position)."""
        return self._cursor.position

    @property
    def live(self) -> bool:
        """Whether the subscription has caught up and now receives events as they are stored."""
        return self._cursor.live

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RecordedEvent:
        if self._closed.is_set():  # the generator may still hold the rest of a batch
            raise StopIteration
        return next(self._events)

    def close(self) -> None:
        """End the subscription (cancels the call); safe from any thread."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> Iterator[RecordedEvent]:
        cursor = self._cursor
        from_proto = RecordedEvent.from_proto
        connected = False
        failures = 0
        while not self._closed.is_set():
            self._call = call = self._client._stub.Subscribe(
                cursor.request(), metadata=self._client.metadata
            )
            if self._closed.is_set():  # closed while the call was being made
                call.cancel()
            try:
                for message in call:
                    connected, failures = True, 0
                    kind = message.WhichOneof("content")
                    if kind == "events":
                        for item in message.events.events:
                            position = item.global_position  # read once: a upb call
                            if cursor.position is None or position > cursor.position:  # is_new
                                cursor.position = position  # advance
                                yield from_proto(item)
                    elif kind == "checkpoint":
                        cursor.advance(message.checkpoint.position)
                        if self._on_checkpoint is not None:
                            self._on_checkpoint(message.checkpoint.position)
                    elif kind == "caught_up":
                        cursor.advance(message.caught_up.position)
                        cursor.live = True
                        if self._on_caught_up is not None:
                            self._on_caught_up(message.caught_up.position)
                    elif kind == "fell_behind":
                        cursor.live = False
                return
            except grpc.RpcError as error:
                if self._closed.is_set():
                    return
                failures += 1
                policy = self._reconnect if connected else self._client.retry
                wait = retry_wait(error, failures, policy, _RECONNECTABLE)
                if wait is None:
                    raise error_from_rpc(
                        error, target=self._client.target, rpc="Subscribe", attempts=failures
                    ) from error
            finally:
                call.cancel()
            cursor.live = False
            self.reconnects += 1
            self._closed.wait(wait)


class EventClient:
    """Sync client of the EventService (a plain grpc channel); use it as a context manager.

    Same methods, arguments and errors as AsyncEventClient, without `await`.

    Args:
        target: the server's HOST:PORT.
        timeout: seconds per attempt of a unary call; None waits forever.
        channel: a grpc channel to use instead of opening one (the client does not close it).
        credentials: TLS credentials; None opens an insecure channel.
        retry: the retry policy of unary calls.
        token: a bearer token for a server with `--auth` (`pipeline-events token create`).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        channel: grpc.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        token: str | None = None,
    ):
        self.target = target
        self.timeout = timeout
        self.retry = retry
        #: Sent with every call: the bearer token (`serve --auth`), if any.
        self.metadata = None if not token else (("authorization", f"Bearer {token}"),)
        self._owns_channel = channel is None
        if channel is None:
            if credentials is None:
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        self._channel = channel
        self._stub = service_pb2_grpc.EventServiceStub(channel)
        self._group_stub = consumer_group_pb2_grpc.ConsumerGroupServiceStub(channel)

    def close(self) -> None:
        """Close the channel if the client opened it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, rpc: str, request: Any) -> Any:
        method = getattr(self._group_stub if rpc in GROUP_RPC_METHODS else self._stub, rpc)
        failures = 0
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.RpcError as error:
                failures += 1
                wait = retry_wait(error, failures, self.retry)
                if wait is None:
                    raise error_from_rpc(
                        error, target=self.target, rpc=rpc, attempts=failures
                    ) from error
            time.sleep(wait)

    def publish(
        self,
        events: Iterable[Publishable] | Publishable,
        *,
        expected: Mapping[str | uuid.UUID, ExpectedRevision] | None = None,
        correlation_id: str = "",
        causation_id: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Append a batch atomically (see AsyncEventClient.publish)."""
        request = _publish_request(events, expected, correlation_id, causation_id, metadata)
        return PublishResult.from_proto(self._unary("Publish", request))

    def publish_stream(
        self, batches: Iterable[PublishBatch | Iterable[Publishable]]
    ) -> Iterator[PublishAck]:
        """Publish batches over one PublishStream call (see AsyncEventClient.publish_stream)."""
        requests = _StreamRequests()

        def each() -> Iterator[service_pb2.PublishStreamRequest]:
            try:
                for batch in batches:
                    yield requests.build(batch)
            except Exception as error:
                requests.failed(error)

        call = self._stub.PublishStream(each(), metadata=self.metadata)
        try:
            for response in call:
                yield _ack(response, self.target)
        except grpc.RpcError as error:
            raise error_from_rpc(error, target=self.target, rpc="PublishStream") from error
        finally:
            call.cancel()
        requests.raise_failure()

    def _pages(
        self,
        pipeline_id: str | uuid.UUID,
        from_revision: int,
        backwards: bool,
        limit: int | None,
        page_size: int,
    ) -> Iterator[list[RecordedEvent]]:
        reader = _PageReader(pipeline_id, from_revision, backwards, limit, page_size)
        while not reader.done:
            yield reader.accept(self._unary("ReadAggregate", reader.next_request()))

    def read_aggregate(
        self,
        pipeline_id: str | uuid.UUID,
        *,
        from_revision: int = 0,
        backwards: bool = False,
        limit: int | None = None,
        page_size: int = 0,
    ) -> list[RecordedEvent]:
        """Read a pipeline's events, following the pages (see AsyncEventClient.read_aggregate)."""
        pages = self._pages(pipeline_id, from_revision, backwards, limit, page_size)
        return [event for page in pages for event in page]

    def history(
        self, pipeline_id: str | uuid.UUID, *, page_size: int = 0
    ) -> Iterator[domain.Event | domain.UnknownEvent]:
        """A pipeline's domain events, oldest first, read page by page as they are consumed."""
        for page in self._pages(pipeline_id, 0, False, None, page_size):
            for recorded in page:
                yield recorded.event

    def subscribe(
        self,
        *,
        from_position: StartPosition = "start",
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        max_batch_size: int = 0,
        checkpoint_interval: int = 0,
        on_checkpoint: ProgressCallback | None = None,
        on_caught_up: ProgressCallback | None = None,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
    ) -> Subscription:
        """Subscribe to the global log; an iterator of RecordedEvents that resumes by itself.

        See AsyncEventClient.subscribe; callbacks are called synchronously.
        """
        cursor = _Cursor(
            from_position,
            _filter(event_types, categories, pipeline_ids, processing_ids),
            max_batch_size,
            checkpoint_interval,
        )
        return Subscription(
            self, cursor, reconnect=reconnect, on_checkpoint=on_checkpoint,
            on_caught_up=on_caught_up,
        )  # fmt: skip

    def pipeline_state(
        self, pipeline_id: str | uuid.UUID, *, min_position: int = 0
    ) -> PipelineState:
        """A pipeline's current state (see AsyncEventClient.pipeline_state)."""
        response = self.get_pipeline_state(pipeline_id, min_position=min_position)
        _caught_up(self.target, "GetPipelineState", response.position, min_position)
        return _decoded(messages.pipeline_from_proto, response.state, self.target)

    def run_state(
        self, processing_id: str | uuid.UUID, *, min_position: int = 0
    ) -> ProcessingRunState:
        """A processing run's current state (see AsyncEventClient.run_state)."""
        response = self.get_processing_state(processing_id, min_position=min_position)
        _caught_up(self.target, "GetProcessingState", response.position, min_position)
        return _decoded(messages.run_from_proto, response.state, self.target)

    def runs(
        self,
        *,
        pipeline_id: str | uuid.UUID | None = None,
        statuses: Iterable[ProcessingStatus | RunStatusName | int] = (),
        limit: int | None = DEFAULT_RUNS_PAGE,
        page_size: int = DEFAULT_RUNS_PAGE,
        min_position: int = 0,
    ) -> list[RunSummary]:
        """Runs, newest first (see AsyncEventClient.runs)."""
        request = _list_runs_request(pipeline_id, statuses, page_size, "", min_position)
        pages = _RunPages(request, limit)
        while not pages.done:
            pages.accept(self._unary("ListProcessingRuns", pages.next_request()), self.target)
        return pages.found

    def get_pipeline_state(
        self, pipeline_id: str | uuid.UUID, *, min_position: int = 0
    ) -> service_pb2.GetPipelineStateResponse:
        """GetPipelineState's raw answer (see AsyncEventClient.get_pipeline_state)."""
        request = service_pb2.GetPipelineStateRequest(
            pipeline_id=str(pipeline_id), min_position=min_position
        )
        return self._unary("GetPipelineState", request)

    def get_processing_state(
        self, processing_id: str | uuid.UUID, *, min_position: int = 0
    ) -> service_pb2.GetProcessingStateResponse:
        """GetProcessingState's raw answer (see AsyncEventClient.get_processing_state)."""
        request = service_pb2.GetProcessingStateRequest(
            processing_id=str(processing_id), min_position=min_position
        )
        return self._unary("GetProcessingState", request)

    def list_processing_runs(
        self, request: service_pb2.ListProcessingRunsRequest
    ) -> service_pb2.ListProcessingRunsResponse:
        """One raw page of ListProcessingRuns (see AsyncEventClient.list_processing_runs)."""
        return self._unary("ListProcessingRuns", request)

    def server_info(self) -> ServerInfo:
        """The server's version, store, head, counts, subscriptions and groups."""
        return ServerInfo.from_proto(
            self._unary("GetServerInfo", service_pb2.GetServerInfoRequest())
        )

    # --- consumer groups (see AsyncEventClient for the arguments) -------------------------

    def create_group(
        self,
        name: str,
        *,
        start: StartPosition = "start",
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        settings: GroupSettings | None = None,
    ) -> tuple[ConsumerGroup, bool]:
        """Create a consumer group; (the group, False) when it exists with these settings."""
        event_filter = _filter(event_types, categories, pipeline_ids, processing_ids)
        response = self._unary(
            "CreateConsumerGroup",
            _group_request(name, start, event_filter, settings or GroupSettings()),
        )
        return ConsumerGroup.from_proto(response.group), response.created

    def update_group(
        self,
        name: str,
        *,
        event_types: Iterable[int | str | type[domain.Event]] = (),
        categories: Iterable[int | str] = (),
        pipeline_ids: Iterable[str | uuid.UUID] = (),
        processing_ids: Iterable[str | uuid.UUID] = (),
        settings: GroupSettings | None = None,
    ) -> ConsumerGroup:
        """Replace a group's filter and settings (its checkpoint and parked events stay)."""
        event_filter = _filter(event_types, categories, pipeline_ids, processing_ids)
        request = consumer_group_pb2.UpdateConsumerGroupRequest(
            name=name, settings=(settings or GroupSettings()).to_proto(event_filter)
        )
        return ConsumerGroup.from_proto(self._unary("UpdateConsumerGroup", request).group)

    def delete_group(self, name: str) -> None:
        """Delete a group with its checkpoint and parked events."""
        self._unary("DeleteConsumerGroup", consumer_group_pb2.DeleteConsumerGroupRequest(name=name))

    def groups(self) -> list[ConsumerGroup]:
        """Every consumer group, by name."""
        response = self._unary("ListConsumerGroups", consumer_group_pb2.ListConsumerGroupsRequest())
        return [ConsumerGroup.from_proto(group) for group in response.groups]

    def group(self, name: str) -> ConsumerGroup:
        """One group and its progress (NotFoundError: no such group)."""
        request = consumer_group_pb2.GetConsumerGroupRequest(name=name)
        return ConsumerGroup.from_proto(self._unary("GetConsumerGroup", request).group)

    def parked(self, group: str, *, limit: int | None = None) -> list[ParkedEvent]:
        """A group's parked events in position order (every one, or the first `limit`)."""
        pages = _ParkedPages(group, limit)
        while not pages.done:
            pages.accept(self._unary("ListParkedEvents", pages.next_request()))
        return pages.found

    def replay_parked(self, group: str, event_ids: Iterable[str] = ()) -> int:
        """Give parked events (all, or the ones named) back to the group; how many."""
        request = consumer_group_pb2.ReplayParkedEventsRequest(
            group=group, event_ids=consumer.ids_of(event_ids)
        )
        return self._unary("ReplayParkedEvents", request).replayed  # type: ignore[no-any-return]

    def discard_parked(self, group: str, event_ids: Iterable[str] = ()) -> int:
        """Drop parked events (all, or the ones named) for good; how many."""
        request = consumer_group_pb2.DiscardParkedEventsRequest(
            group=group, event_ids=consumer.ids_of(event_ids)
        )
        return self._unary("DiscardParkedEvents", request).discarded  # type: ignore[no-any-return]

    def consume(
        self,
        group: str,
        handler: Callable[[Delivery], Any],
        *,
        concurrency: int = 1,
        max_in_flight: int = 0,
        member_name: str = "",
        stop: threading.Event | None = None,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
    ) -> WorkerStats:
        """Handle a group's events on `concurrency` threads until `stop` is set.

        As AsyncEventClient.consume: returning acks, raising nacks (ParkEvent parks,
        SkipEvent drops); on stop the running handlers finish and answer first.
        """
        _check_concurrency(concurrency)
        stats = WorkerStats()
        try:
            return consumer.run_sync_worker(
                lambda requests: self._group_stub.Consume(requests, metadata=self.metadata),
                consumer._start(group, max_in_flight, member_name),
                handler,
                concurrency=concurrency,
                stop=stop or threading.Event(),
                wrap=RecordedEvent.from_proto,
                reconnect_wait=_consume_reconnect(self.retry, reconnect),
                stats=stats,
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error, target=self.target, rpc="Consume") from error


__all__ = [
    "DEFAULT_RECONNECT",
    "DEFAULT_RETRY",
    "GROUP_RPC_METHODS",
    "RPC_METHODS",
    "AsyncEventClient",
    "AsyncSubscription",
    "ClientError",
    "ConsumerGroup",
    "DeadlineExceededError",
    "Delivery",
    "DuplicateEventError",
    "EventClient",
    "ExpectedState",
    "FieldViolation",
    "GroupSettings",
    "InvalidArgumentError",
    "NotFoundError",
    "ParkedEvent",
    "PermissionDeniedError",
    "Position",
    "ProjectionBehindError",
    "PublishAck",
    "PublishBatch",
    "PublishResult",
    "RecordedEvent",
    "ResourceExhaustedError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "Subscription",
    "UnimplementedError",
    "WorkerStats",
    "WrongExpectedRevisionError",
    "error_from_rpc",
    "make_error",
    "retry_wait",
]
