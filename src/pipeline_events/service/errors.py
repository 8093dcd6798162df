"""gRPC statuses with google.rpc details, built from validation failures and store errors."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from pipeline_events.store import (
    DuplicateEventError,
    ExpectedState,
    InvalidEventError,
    StoreClosedError,
    StoreError,
    WrongExpectedRevisionError,
)

#: ErrorInfo.domain of every error this service reports.
ERROR_DOMAIN = "adaptive_pipeline.events.v1"
WRONG_EXPECTED_REVISION = "WRONG_EXPECTED_REVISION"
DUPLICATE_EVENT_ID_CONFLICT = "DUPLICATE_EVENT_ID_CONFLICT"


class RpcError(Exception):
    """A gRPC status to end an RPC with (code, message and google.rpc details)."""

    def __init__(self, status: status_pb2.Status):
        super().__init__(status.message)
        self.status = status

    @property
    def code(self) -> int:
        """The google.rpc code."""
        return self.status.code

    def grpc_status(self) -> grpc.Status:
        """The status as grpc.aio's `abort_with_status` takes it."""
        return rpc_status.to_status(self.status)


def details_status(code: int, message: str, *details: object) -> status_pb2.Status:
    """A google.rpc.Status with each detail message packed into an Any."""
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return status_pb2.Status(code=code, message=message, details=packed)


def bad_request(violations: list[tuple[str, str]]) -> RpcError:
    """INVALID_ARGUMENT with one BadRequest field violation per (field path, description)."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
    )
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    return RpcError(
        details_status(code_pb2.INVALID_ARGUMENT, f"{first[0]}: {first[1]}{more}", detail)
    )


def error_info(code: int, message: str, reason: str, **metadata: str) -> RpcError:
    """A status carrying an ErrorInfo with this service's domain."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    return RpcError(details_status(code, message, info))


def from_store_error(error: StoreError) -> RpcError:
    """The status a store error maps to."""
    if isinstance(error, WrongExpectedRevisionError):
        expected = (
            error.expected.value
            if isinstance(error.expected, ExpectedState)
            else str(error.expected)
        )
        return error_info(
            code_pb2.FAILED_PRECONDITION, str(error), WRONG_EXPECTED_REVISION,
            aggregate_id=error.aggregate_id, expected=expected, actual=str(error.actual),
        )  # fmt: skip
    if isinstance(error, DuplicateEventError):
        return error_info(
            code_pb2.ALREADY_EXISTS,
            str(error),
            DUPLICATE_EVENT_ID_CONFLICT,
            event_id=error.event_id,
        )
    if isinstance(error, InvalidEventError):
        return bad_request([("events", str(error))])
    if isinstance(error, StoreClosedError):
        return RpcError(details_status(code_pb2.UNAVAILABLE, "the server is shutting down"))
    if isinstance(error, ConnectionError):  # a distributed store unreachable: retry
        return RpcError(details_status(code_pb2.UNAVAILABLE, f"the store is unavailable: {error}"))
    return RpcError(details_status(code_pb2.INTERNAL, f"store error: {error}"))


def status(code: int, message: str) -> RpcError:
    """A plain status without details."""
    return RpcError(details_status(code, message))
