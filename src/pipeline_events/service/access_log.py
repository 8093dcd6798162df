"""The access log: one line per refused or failed call, and per slow unary call.

`AccessLog` is a server interceptor, the outermost one (so it sees the refusals of
the limits and of the token check too). A call that ends OK logs nothing, unless it
is a unary call slower than `slow_call_ms`; a stream that ends OK, or that its client
cancels, logs nothing. Any other end is one line (logger `pipeline_events.access`)
with the method, the status code, the peer, the duration and, with `--auth`, the
principal, as fields of the record (`--log-format json` shows them as JSON fields).

Lines are rate-limited: at most `rate` in any second for each (method, code) (and for
each method's slow calls). What is held back is counted, and said in one summary line
per (method, code) every `summary_seconds`, and when the server stops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from pipeline_events.service.auth import CALLER
from pipeline_events.service.interceptors import _behavior_field, _CachingInterceptor

log = logging.getLogger("pipeline_events.access")

DEFAULT_SLOW_CALL_MS = 1000
DEFAULT_RATE = 10  # lines per second per (method, code)
SUMMARY_SECONDS = 10.0
#: Codes that say the server failed, not the caller: logged at ERROR.
SERVER_FAULTS = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
)
_DETAILS_CHARS = 300


class AccessLog(_CachingInterceptor):
    """Logs the calls that fail or are refused, and the slow unary calls; rate-limited.

    Args:
        slow_call_ms: a unary call that takes longer is logged (0: every unary call).
        rate: lines per second for one (method, code) before they are counted instead.
        summary_seconds: how often the count of held-back lines is logged.
    """

    def __init__(
        self,
        slow_call_ms: float = DEFAULT_SLOW_CALL_MS,
        rate: int = DEFAULT_RATE,
        summary_seconds: float = SUMMARY_SECONDS,
    ) -> None:
        super().__init__()
        self.stopping = False  # set when the server begins a graceful stop
        if rate < 1:
            raise ValueError(f"the access log's rate must be at least 1 line a second, not {rate}")
        self.slow_seconds = slow_call_ms / 1000
        self.rate = rate
        self.summary_seconds = summary_seconds
        self._recent: dict[tuple[str, str], deque[float]] = {}  # key -> last lines' times
        self._suppressed: dict[tuple[str, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        field = _behavior_field(handler)
        behavior = getattr(handler, field)
        unary = not handler.request_streaming and not handler.response_streaming
        ended = self._ended

        if inspect.isasyncgenfunction(behavior):

            async def streaming(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException as error:
                    ended(method, context, start, error, unary)
                    raise
                ended(method, context, start, None, unary)

            return handler._replace(**{field: streaming})  # type: ignore[attr-defined]

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                response = await behavior(request, context)
            except BaseException as error:
                ended(method, context, start, error, unary)
                raise
            ended(method, context, start, None, unary)
            return response

        return handler._replace(**{field: call})  # type: ignore[attr-defined]

    def _ended(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        start: float,
        error: BaseException | None,
        unary: bool,
    ) -> None:
        seconds = time.perf_counter() - start
        try:
            code = _code(context, error)
            if code is None:
                return  # cancelled by its client (or by the server's stop)
            if code is grpc.StatusCode.UNAVAILABLE and self.stopping and not unary:
                return  # a stream the server's graceful stop ended: clients resume elsewhere
            if code is grpc.StatusCode.OK:
                if unary and seconds > self.slow_seconds:
                    self._line(logging.WARNING, "slow", method, code, context, seconds, error)
                return
            level = logging.ERROR if code in SERVER_FAULTS else logging.WARNING
            self._line(level, "failed", method, code, context, seconds, error)
        except Exception:  # the log must never fail a call
            log.exception("access log: could not log a call to %s", method)

    def _line(
        self,
        level: int,
        kind: str,
        method: str,
        code: grpc.StatusCode,
        context: grpc.aio.ServicerContext,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        key = (method, "SLOW" if kind == "slow" else code.name)
        if not self._admit(key):
            return
        peer = context.peer() or "unknown"
        principal = CALLER.get()
        fields: dict[str, Any] = {
            "access": kind,
            "method": method,
            "code": code.name,
            "peer": peer,
            "duration_ms": round(seconds * 1000, 3),
        }
        if principal is not None:
            fields["principal"] = principal.name
        if kind == "slow":
            fields["slow_call_ms"] = self.slow_seconds * 1000
        details = _details(context, error)
        if details:
            fields["details"] = details
        what = "slow call" if kind == "slow" else "call"
        text = f"{what} {method} {code.name} in {seconds * 1000:.1f} ms from {peer}"
        if principal is not None:
            text += f" as {principal.name}"
        if details and kind != "slow":
            text += f": {details}"
        log.log(level, "%s", text, extra=fields)

    def _admit(self, key: tuple[str, str]) -> bool:
        """Whether a line for `key` may be logged now; if not, it is counted.

        At most `rate` lines in any second: the times of the last `rate` lines are kept.
        """
        now = time.monotonic()
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=self.rate)
        if len(recent) < self.rate or now - recent[0] >= 1.0:
            recent.append(now)
            return True
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._timer = loop.call_later(self.summary_seconds, self._summary_due)
        return False

    def _summary_due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Log the count of the lines held back since the last summary, one line per key."""
        suppressed, self._suppressed = self._suppressed, {}
        for (method, code), count in suppressed.items():
            log.warning(
                "%s %s: %d more similar lines suppressed in the last %g s",
                method, code, count, self.summary_seconds,
                extra={"access": "suppressed", "method": method, "code": code,
                       "suppressed": count},
            )  # fmt: skip

    def close(self) -> None:
        """At the server's stop: the last summary, now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode | None:
    """The status the call ends with; None for a call its client cancelled."""
    if isinstance(error, GeneratorExit):
        return None  # closed by whoever iterated it: the call ends elsewhere
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return None
    code = context.code()
    if isinstance(code, int):  # some grpc versions keep the C core's number
        code = next((c for c in grpc.StatusCode if c.value[0] == code), None)
    if error is not None and not isinstance(error, grpc.aio.AbortError):
        # An exception the handler let out: gRPC answers UNKNOWN (unless a code was set).
        return code if code not in (None, grpc.StatusCode.OK) else grpc.StatusCode.UNKNOWN
    if code is None:
        return grpc.StatusCode.OK
    if code is grpc.StatusCode.CANCELLED and context.cancelled():
        return None
    return code


def _details(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    try:
        details = context.details() or ""
    except Exception:
        details = ""
    if not details and error is not None and not isinstance(error, grpc.aio.AbortError):
        details = f"{type(error).__name__}: {error}"
    if isinstance(details, bytes):
        details = details.decode("utf-8", "replace")
    details = " ".join(str(details).split())
    return details[:_DETAILS_CHARS]
