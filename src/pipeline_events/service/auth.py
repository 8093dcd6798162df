"""Token authentication with roles: who may call which RPC, on which pipelines.

The principals are a TOML file (`serve --auth FILE`, re-read on SIGHUP):

    [[principal]]
    name = "ingest"
    token_id = "k3J9xQ2m"
    token_hash = "scrypt$16384$8$1$<salt, base64>$<hash, base64>"
    roles = ["publisher"]
    pipelines = ["5bc8fbbc-0667-4ad1-9c80-317fa3b1799d"]   # optional: only these

`pipeline-events token create NAME --role ROLE` makes a token
(`pe_<token_id>_<secret>`) and prints it once, with the lines to add. A caller
sends it as `authorization: Bearer <token>` metadata. The token id picks the
principal, so an unknown token costs nothing; a known id is checked against
its scrypt hash (about 60 ms, off the event loop, at most two at a time) once,
and the token's SHA-256 is then remembered until the file is re-read. A token id
gets at most FAILED_CHECKS failed (or pending) checks per FAILED_CHECK_WINDOW
seconds; beyond that, secrets not already verified for it are refused without
hashing, so a flood of guesses costs the server a bounded amount of scrypt and
good callers (their tokens already verified) are not slowed by it.

Per-principal limits may be set in the file (`max_streams`, `publish_rate`);
the server's `--max-streams-per-caller` and `--publish-rate` are the defaults.

Roles: `publisher` (Publish, PublishStream), `subscriber` (ReadAggregate,
Subscribe and the state queries), `admin` (everything). A missing, malformed or
unknown token is UNAUTHENTICATED; a known one without the role, or naming a
pipeline outside its list, is PERMISSION_DENIED. Health is always open.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import hashlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from adaptive_pipeline.events.v1 import consumer_group_pb2
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2

from pipeline_events.service.errors import ERROR_DOMAIN, RpcError, details_status, error_info
from pipeline_events.service.interceptors import Undecodable
from pipeline_events.service.tls import peer_identity
from pipeline_events.service.violations import ViolationRecorder, source_of
from pipeline_events.service.wire import Received
from pipeline_events.tokens import TOKEN, AuthFileError, Principal, load_principals, verify_secret

_log = logging.getLogger(__name__)

_GROUP_RPCS = frozenset(
    consumer_group_pb2.DESCRIPTOR.services_by_name["ConsumerGroupService"].methods_by_name
)
#: The services whose calls need a token (health and reflection stay open).
SERVICES = (
    "/adaptive_pipeline.events.v1.EventService/",
    "/adaptive_pipeline.events.v1.ConsumerGroupService/",
)
#: The principal of the call being served (None: the server takes no tokens). Set by
#: AuthGuard; the servicer reads it where a request names no pipeline itself (a run).
CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("caller", default=None)
_MAX_REMEMBERED = 10_000  # verified (and refused) token digests kept
FAILED_CHECKS = 10  # scrypt checks a token id may fail per window...
FAILED_CHECK_WINDOW = 10.0  # ...of this many seconds
UNAUTHENTICATED = "UNAUTHENTICATED"  # ErrorInfo reasons
PERMISSION_DENIED = "PERMISSION_DENIED"


def _refusal(code: int, message: str, reason: str) -> RpcError:
    return error_info(code, message, reason)


def pipeline_refusal(principal: Principal, hint: str = "") -> RpcError:
    """PERMISSION_DENIED: a pipeline outside the principal's list."""
    return _refusal(
        code_pb2.PERMISSION_DENIED,
        f"{principal.name} may not touch these pipelines{hint}",
        PERMISSION_DENIED,
    )


DEFAULT_STREAMS_PER_PRINCIPAL = 64


@dataclass(frozen=True, slots=True)
class CallerLimits:
    """What one principal may hold at once, and how fast it may publish."""

    streams: int = DEFAULT_STREAMS_PER_PRINCIPAL  # Subscribe and PublishStream calls open
    publish_rate: float | None = None  # events per second (a burst of one second); None: any


class _Bucket:
    """A token bucket: `rate` per second, holding at most `rate` (one second of burst)."""

    __slots__ = ("level", "rate", "stamp")

    def __init__(self, rate: float):
        self.rate = rate
        self.level = rate
        self.stamp = time.monotonic()

    def take(self, count: int) -> float:
        """Take `count`; 0.0 if it could, else the seconds until it could."""
        now = time.monotonic()
        self.level = min(self.rate, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= count:
            self.level -= count
            return 0.0
        return (count - self.level) / self.rate


@dataclass
class Authenticator:
    """The principals and what is known of their tokens; `reload()` re-reads the file."""

    path: Path
    principals: dict[str, Principal] = field(default_factory=dict)
    _verified: OrderedDict[bytes, Principal | None] = field(default_factory=OrderedDict)
    _checking: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    # Set when a principal with open streams is removed: those streams end.
    _revoked: dict[str, asyncio.Event] = field(default_factory=dict)
    # Per token id: when its checks that did not succeed (failed or still running) began.
    _attempts: dict[str, deque[float]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Authenticator:
        """Read the principals file (AuthFileError: the server does not start)."""
        return cls(path, load_principals(path))

    def reload(self) -> bool:
        """Re-read the file: forgets verified tokens, ends streams of removed principals."""
        try:
            principals = load_principals(self.path)
        except AuthFileError as error:
            _log.error("auth reload failed, the current principals stay: %s", error)
            return False
        self.principals = principals
        self._verified.clear()
        kept = {p.name for p in principals.values()}
        for name in [n for n in self._revoked if n not in kept]:
            self._revoked.pop(name).set()
        _log.info("principals re-read: %d", len(principals))
        return True

    async def principal(self, metadata: Iterable[tuple[str, Any]]) -> Principal:
        """The caller's principal, from its bearer token.

        Raises:
            RpcError: UNAUTHENTICATED.
        """
        header = next((v for k, v in metadata if k == "authorization"), None)
        if not isinstance(header, str) or not header.startswith("Bearer "):
            raise _refusal(
                code_pb2.UNAUTHENTICATED, "a bearer token is required (authorization metadata)",
                UNAUTHENTICATED,
            )  # fmt: skip
        token = header.removeprefix("Bearer ").strip()
        match = TOKEN.fullmatch(token)
        principal = self.principals.get(match[1]) if match else None
        if principal is None:
            raise _refusal(code_pb2.UNAUTHENTICATED, "unknown token", UNAUTHENTICATED)
        digest = hashlib.sha256(token.encode()).digest()
        if digest not in self._verified:
            assert match is not None
            attempt = self._begin_check(principal.token_id)
            async with self._checking:  # scrypt is slow on purpose: two at a time, off the loop
                good = await asyncio.to_thread(verify_secret, match[2], principal.token_hash)
            if good:
                with contextlib.suppress(ValueError):  # unless already older than the window
                    self._attempts[principal.token_id].remove(attempt)
            self._verified[digest] = principal if good else None
            while len(self._verified) > _MAX_REMEMBERED:
                self._verified.popitem(last=False)
        known = self._verified[digest]
        if known is None or self.principals.get(known.token_id) is not known:
            raise _refusal(code_pb2.UNAUTHENTICATED, "unknown token", UNAUTHENTICATED)
        return known

    def _begin_check(self, token_id: str) -> float:
        """Count one more check of `token_id`'s secret; refuse it if too many failed.

        Raises:
            RpcError: UNAUTHENTICATED, without hashing.
        """
        now = time.monotonic()
        attempts = self._attempts.setdefault(token_id, deque())
        while attempts and attempts[0] < now - FAILED_CHECK_WINDOW:
            attempts.popleft()
        if len(attempts) >= FAILED_CHECKS:
            raise _refusal(
                code_pb2.UNAUTHENTICATED,
                f"too many failed attempts with this token id; retry in {FAILED_CHECK_WINDOW:g} s",
                UNAUTHENTICATED,
            )
        attempts.append(now)
        return now

    def revoked(self, principal: Principal) -> asyncio.Event:
        """An event set when `principal` is removed from the file (its streams then end)."""
        event = self._revoked.get(principal.name)
        if event is None:
            event = self._revoked[principal.name] = asyncio.Event()
        return event


def _pipelines_of(rpc: str, request: Any) -> list[str]:
    """The pipelines a request names (for principals limited to some)."""
    if isinstance(request, Undecodable):
        return []  # refused as INVALID_ARGUMENT next, whoever sends it
    message = request.message if isinstance(request, Received) else request
    if rpc in ("Publish", "PublishStream"):
        return [e.aggregate_id for e in message.events]
    if rpc == "ReadAggregate":
        return [message.aggregate_id]
    if rpc == "Subscribe":
        return list(message.filter.aggregate_ids) or ["*"]  # unfiltered: every pipeline
    if rpc in ("GetPipelineState", "ListProcessingRuns"):
        return [message.pipeline_id or "*"]
    if rpc == "GetServerInfo":
        return ["*"]  # counts and groups of every pipeline
    if rpc in _GROUP_RPCS:
        # A group may carry any pipeline's events: only principals allowed every
        # pipeline use groups.
        return ["*"]
    return []


class AuthGuard(grpc.aio.ServerInterceptor):
    """Checks every EventService call's token, role and pipelines; health stays open.

    Every refusal is counted by `violations`, which records them as SecurityViolation
    events.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        violations: ViolationRecorder | None = None,
        limits: CallerLimits | None = None,
        on_refusal: Callable[[str], None] | None = None,
    ):
        self.auth = authenticator
        self.violations = violations
        self.on_refusal = on_refusal  # called with each refusal's kind (metrics)
        self.limits = limits or CallerLimits()
        self._open: Counter[str] = Counter()  # open streams by principal
        self._buckets: dict[str, _Bucket] = {}

    def _publish_allowed(self, principal: Principal, events: int) -> None:
        """Refuse a publish over the principal's rate (RESOURCE_EXHAUSTED, with RetryInfo
        when waiting helps).

        Raises:
            RpcError: RESOURCE_EXHAUSTED.
        """
        rate = principal.publish_rate or self.limits.publish_rate
        if rate is None or events == 0:
            return
        if events > rate:
            raise RpcError(
                details_status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"a batch of {events} events is more than {principal.name} may publish at"
                    f" once ({rate:g} events per second); send smaller batches",
                )
            )
        bucket = self._buckets.get(principal.name)
        if bucket is None or bucket.rate != rate:  # new, or its rate changed on reload
            bucket = self._buckets[principal.name] = _Bucket(rate)
        wait = bucket.take(events)
        if wait:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(datetime.timedelta(seconds=wait))
            raise RpcError(
                details_status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"{principal.name} publishes faster than {rate:g} events per second;"
                    f" retry in {wait:.2f} s",
                    error_details_pb2.RetryInfo(retry_delay=delay),
                    error_details_pb2.ErrorInfo(
                        reason="PUBLISH_RATE",
                        domain=ERROR_DOMAIN,
                        metadata={"principal": principal.name, "rate": f"{rate:g}"},
                    ),
                )
            )

    @contextlib.contextmanager
    def _stream_slot(self, principal: Principal) -> Iterator[None]:
        """Hold one of the principal's stream slots (RESOURCE_EXHAUSTED when none is free)."""
        if self._open[principal.name] >= (principal.max_streams or self.limits.streams):
            raise RpcError(
                details_status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"{principal.name} has {self._open[principal.name]} streams open, the most"
                    f" one caller may; close one first",
                )
            )
        self._open[principal.name] += 1
        try:
            yield
        finally:
            self._open[principal.name] -= 1

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(SERVICES):
            return handler
        rpc = method.rpartition("/")[2]
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming_requests(rpc, handler.stream_stream),
                handler.request_deserializer, handler.response_serializer,
            )  # fmt: skip
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming_response(rpc, handler.unary_stream),
                handler.request_deserializer, handler.response_serializer,
            )  # fmt: skip
        return grpc.unary_unary_rpc_method_handler(
            self._unary(rpc, handler.unary_unary),
            handler.request_deserializer, handler.response_serializer,
        )  # fmt: skip

    async def _admit(self, rpc: str, request: Any, context: Any) -> Principal:
        try:
            principal = await self.auth.principal(context.invocation_metadata() or ())
        except RpcError:
            self._note("unauthenticated", context, None)
            raise
        if not principal.may_call(rpc):
            self._note("permission_denied", context, principal)
            raise _refusal(
                code_pb2.PERMISSION_DENIED,
                f"{principal.name} may not call {rpc} (roles: {', '.join(sorted(principal.roles))})",
                PERMISSION_DENIED,
            )
        if request is not None and principal.pipelines:
            named = _pipelines_of(rpc, request)
            if "*" in named or not principal.may_touch(named):
                self._note("permission_denied", context, principal)
                hint = " (name them: this principal is limited to some)" if "*" in named else ""
                raise pipeline_refusal(principal, hint)
        return principal

    def _note(self, kind: str, context: Any, principal: Principal | None) -> None:
        if self.on_refusal is not None:
            self.on_refusal(kind)
        if self.violations is not None:
            # Who: the token's principal, else the verified client certificate (mutual TLS).
            user = principal.name if principal else peer_identity(context)
            self.violations.note(kind, source_of(context), user)

    def _unary(self, rpc: str, behavior: Any) -> Any:
        async def call(request: Any, context: Any) -> Any:
            try:
                principal = await self._admit(rpc, request, context)
                if rpc == "Publish" and isinstance(request, Received):
                    self._publish_allowed(principal, len(request.message.events))
            except RpcError as error:
                await context.abort_with_status(error.grpc_status())
            CALLER.set(principal)  # this call's task only
            return await behavior(request, context)

        return call

    async def _served(
        self, principal: Principal, responses: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """A stream's responses in one of the principal's slots, until its token is revoked."""
        revoked = self.auth.revoked(principal)
        try:
            with self._stream_slot(principal):
                async for response in _until(revoked, responses):
                    yield response
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())
        if revoked.is_set():
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the token was revoked")

    def _streaming_response(self, rpc: str, behavior: Any) -> Any:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                principal = await self._admit(rpc, request, context)
            except RpcError as error:
                await context.abort_with_status(error.grpc_status())
            async for response in self._served(principal, behavior(request, context), context):
                yield response

        return call

    def _streaming_requests(self, rpc: str, behavior: Any) -> Any:
        async def call(requests: Any, context: Any) -> AsyncIterator[Any]:
            try:
                principal = await self._admit(rpc, None, context)
            except RpcError as error:
                await context.abort_with_status(error.grpc_status())

            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if principal.pipelines and not principal.may_touch(_pipelines_of(rpc, request)):
                        self._note("permission_denied", context, principal)
                        raise pipeline_refusal(principal)
                    if isinstance(request, Received):
                        self._publish_allowed(principal, len(request.message.events))
                    yield request

            async for response in self._served(principal, behavior(checked(), context), context):
                yield response

        return call


async def _until(revoked: asyncio.Event, responses: Any) -> AsyncIterator[Any]:
    """The responses of a stream until `revoked` is set (then the stream stops at once,
    even while it waits for events to send)."""
    iterator = responses.__aiter__()
    stop = asyncio.ensure_future(revoked.wait())
    try:
        while True:
            step = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            try:
                yield step.result()
            except StopAsyncIteration:
                return
    finally:
        stop.cancel()
        with contextlib.suppress(Exception):
            await iterator.aclose()
