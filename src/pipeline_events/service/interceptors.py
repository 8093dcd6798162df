"""Server interceptors: what every RPC gets before its handler runs.

- `DecodeGuard`: request bytes that do not parse are answered INVALID_ARGUMENT
  with a short message, logged as one rate-limited line. gRPC's own answer is
  UNKNOWN and a traceback per call. A stream whose handler opts in
  (`tolerant_streams`) receives an `Undecodable` item instead and carries on.
- `CallLimit`: bounds the calls in flight (unary calls and streams apart).
  One more is answered RESOURCE_EXHAUSTED with a google.rpc.RetryInfo, before
  gRPC would shed calls on its own as CANCELLED. Health checks are never
  limited: an operator must see a busy server as busy, not as down.
- `StalledStreams`: a stream whose client has not taken a response for a
  while is ended RESOURCE_EXHAUSTED (the client reads that status after what
  gRPC had already queued for it).

They wrap the method handlers that the services registered. The wrapped
handlers are cached per method, so a call costs one dictionary lookup here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2

from pipeline_events.service.errors import ERROR_DOMAIN, RpcError, details_status

_log = logging.getLogger("pipeline_events.server")
_HEALTH_PREFIX = "/" + health_pb2.DESCRIPTOR.services_by_name["Health"].full_name + "/"
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
TOO_MANY_CALLS = "TOO_MANY_CALLS"
STREAM_STALLED = "STREAM_STALLED"
DEFAULT_STALLED_STREAM_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request message whose bytes did not parse, in place of the message."""

    type_name: str
    error: str

    def rpc_error(self) -> RpcError:
        """The INVALID_ARGUMENT status that answers it."""
        # protobuf says "Error parsing message with type 'T': reason"; the type is said once.
        reason = self.error.rsplit(": ", 1)[-1]
        message = f"the request bytes are not a valid {self.type_name} message: {reason}"
        return RpcError(details_status(code_pb2.INVALID_ARGUMENT, message))


class RateLimitedLog:
    """Logs at most one line per `interval` seconds, counting the lines it held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = -float("inf")
        self._held_back = 0

    def warning(self, message: str, *args: object) -> None:
        """Log a warning now, or count it if one was logged within the interval."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held_back += 1
            return
        if self._held_back:
            message += f" (and {self._held_back} more like it since the last line)"
        self._held_back, self._last = 0, now
        _log.warning(message, *args)


def _behavior_field(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming:
        return "stream_stream" if handler.response_streaming else "stream_unary"
    return "unary_stream" if handler.response_streaming else "unary_unary"


def _wrap_behavior(
    handler: grpc.RpcMethodHandler,
    before: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    after: Callable[[], None] | None = None,
) -> grpc.RpcMethodHandler:
    """The handler with `before(request, context)` run first; it returns the request to use.

    `after` runs when the call ends, however it ends (only if `before` returned).
    """
    field = _behavior_field(handler)
    behavior = getattr(handler, field)

    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            request = await before(request, context)
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                if after is not None:
                    after()

        return handler._replace(**{field: streaming})  # type: ignore[attr-defined]

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request = await before(request, context)
        try:
            return await behavior(request, context)
        finally:
            if after is not None:
                after()

    return handler._replace(**{field: call})  # type: ignore[attr-defined]


class _CachingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler once (`wrap`), then serves the wrapped one from a cache."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = await continuation(handler_call_details)
        wrapped = None if handler is None else self.wrap(method, handler)
        if handler is not None:  # an unknown method stays uncached (any name may be tried)
            self._handlers[method] = wrapped
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve `method` with."""
        raise NotImplementedError


class DecodeGuard(_CachingInterceptor):
    """Answers undecodable request bytes INVALID_ARGUMENT instead of gRPC's UNKNOWN.

    Args:
        tolerant_streams: methods whose handlers take `Undecodable` items from their
            request stream and answer them themselves (the stream goes on).
    """

    def __init__(self, tolerant_streams: Iterable[str] = ()) -> None:
        super().__init__()
        self._tolerant = frozenset(tolerant_streams)
        self._log = RateLimitedLog()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        if parse is None:
            return handler
        # A message class's FromString, or a function that says which type it parses.
        message_type = getattr(parse, "message_type", None) or getattr(parse, "__self__", None)
        descriptor = getattr(message_type, "DESCRIPTOR", None)
        type_name = descriptor.full_name if descriptor is not None else "request"
        log = self._log

        def tolerant_parse(data: bytes) -> Any:
            try:
                return parse(data)
            except Exception as error:  # DecodeError, RecursionError...: the bytes' fault
                log.warning("%s: undecodable request (%s)", method, error)
                return Undecodable(type_name, str(error) or type(error).__name__)

        handler = handler._replace(request_deserializer=tolerant_parse)  # type: ignore[attr-defined]
        if handler.request_streaming:
            if method in self._tolerant:
                return handler
            return _wrap_behavior(handler, _refusing_undecodable_items)
        return _wrap_behavior(handler, _refusing_undecodable)


async def _refusing_undecodable(request: Any, context: grpc.aio.ServicerContext) -> Any:
    if isinstance(request, Undecodable):
        await context.abort_with_status(request.rpc_error().grpc_status())
    return request


async def _refusing_undecodable_items(
    requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    async def checked() -> AsyncIterator[Any]:
        async for request in requests:
            yield await _refusing_undecodable(request, context)

    return checked()


class CallLimit(_CachingInterceptor):
    """Bounds the calls in flight; one more is answered RESOURCE_EXHAUSTED with RetryInfo.

    Args:
        max_calls: unary calls in flight at once.
        max_streams: streaming calls (subscriptions, publish streams) open at once.
        retry_after: the delay the refusal suggests, in seconds.
    """

    def __init__(self, max_calls: int, max_streams: int, retry_after: float = 0.05) -> None:
        super().__init__()
        self.max_calls = max_calls
        self.max_streams = max_streams
        self.calls = 0
        self.streams = 0
        self._retry_after = retry_after
        self._log = RateLimitedLog()

    def _refusal(self, what: str, limit: int) -> RpcError:
        seconds, fraction = divmod(self._retry_after, 1)
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=int(seconds), nanos=int(fraction * 1e9))
        )
        info = error_details_pb2.ErrorInfo(
            reason=TOO_MANY_CALLS, domain=ERROR_DOMAIN, metadata={"limit": str(limit)}
        )
        message = f"the server has {limit} {what} in flight, its limit; retry shortly"
        return RpcError(details_status(code_pb2.RESOURCE_EXHAUSTED, message, retry, info))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(_HEALTH_PREFIX):
            return handler
        streaming = handler.request_streaming or handler.response_streaming
        attribute, what = ("streams", "streams") if streaming else ("calls", "calls")
        limit = self.max_streams if streaming else self.max_calls
        refusal = self._refusal(what, limit).grpc_status()

        async def admit(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if getattr(self, attribute) >= limit:
                self._log.warning("%s refused: %d %s in flight", method, limit, what)
                await context.abort_with_status(refusal)
            setattr(self, attribute, getattr(self, attribute) + 1)
            return request

        def release() -> None:
            setattr(self, attribute, getattr(self, attribute) - 1)

        return _wrap_behavior(handler, admit, release)


class StalledStreams(_CachingInterceptor):
    """Ends a stream whose client takes no response for `seconds`: RESOURCE_EXHAUSTED.

    A response waits in `context.write` until HTTP/2 flow control lets it out, so a
    write that does not finish means the client stopped reading (a live subscription
    with nothing to send writes nothing and is never ended). gRPC Python cannot reset a
    single HTTP/2 stream: the status is queued behind the bytes already waiting, and the
    call, with its stream slot (CallLimit, the caller's limit), ends only when the client
    reads them or goes away. The stream limits therefore still bound what clients that
    never read can hold; this deadline tells them why they were dropped, and stops
    their handlers. The status carries a RetryInfo: the project's clients resume the
    subscription from the last position they read.

    Must be the outermost interceptor: it turns the handlers' async generators into
    writes it can time.
    """

    def __init__(self, seconds: float = DEFAULT_STALLED_STREAM_SECONDS) -> None:
        super().__init__()
        self.seconds = seconds
        self._log = RateLimitedLog()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = _behavior_field(handler)
        behavior = getattr(handler, field)
        if not handler.response_streaming or not inspect.isasyncgenfunction(behavior):
            return handler
        refusal = RpcError(
            details_status(
                code_pb2.RESOURCE_EXHAUSTED,
                f"the client took no response for {self.seconds:g} s: the server ended the"
                " stream (read faster, or resume from the last position read)",
                # Retry at once: a resumed stream starts over with an empty window.
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration()),
                error_details_pb2.ErrorInfo(
                    reason=STREAM_STALLED, domain=ERROR_DOMAIN,
                    metadata={"seconds": f"{self.seconds:g}"},
                ),
            )
        ).grpc_status()  # fmt: skip

        async def call(request: Any, context: grpc.aio.ServicerContext) -> None:
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            stalled = False

            def stall() -> None:
                nonlocal stalled
                stalled = True
                task.cancel()  # interrupts the write; gRPC still holds what it queued

            responses = behavior(request, context)
            try:
                async for response in responses:
                    # A timer per write, not a task per write: a few µs on the hot path.
                    timer = loop.call_later(self.seconds, stall)
                    try:
                        await context.write(response)
                    except asyncio.CancelledError:
                        if not stalled:
                            raise  # the client cancelled, or the server stops
                        task.uncancel()
                        self._log.warning("%s: ended a stream whose client stopped reading", method)
                        await context.abort_with_status(refusal)
                    finally:
                        timer.cancel()
            finally:
                await responses.aclose()

        return handler._replace(**{field: call})  # type: ignore[attr-defined]
