"""The gRPC ConsumerGroupService over `ConsumerGroups` (service/groups.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from adaptive_pipeline.events.v1 import consumer_group_pb2 as pb
from adaptive_pipeline.events.v1 import consumer_group_pb2_grpc
from google.rpc import code_pb2

from pipeline_events.service.errors import RpcError, bad_request, from_store_error, status
from pipeline_events.service.groups import ConsumerGroups, GroupRuntime, Member
from pipeline_events.service.interceptors import Undecodable
from pipeline_events.service.validation import validate
from pipeline_events.service.wire import length_delimited, varint_field
from pipeline_events.store import StoreError

GROUP_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ConsumerGroupService"].full_name
DEFAULT_PARKED_PAGE = 100


def _unavailable() -> RpcError:
    return status(code_pb2.UNAVAILABLE, "the server is shutting down")


class ConsumerGroupService(consumer_group_pb2_grpc.ConsumerGroupServiceServicer):
    """Implements every RPC of the contract's ConsumerGroupService."""

    def __init__(self, groups: ConsumerGroups, stopping: asyncio.Event):
        self.groups = groups
        self._stopping = stopping

    async def _answer(self, context: Any, work: Any) -> Any:
        """Run `work` (a coroutine), turning refusals and store errors into statuses."""
        try:
            return await work
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())
        except StoreError as error:
            await context.abort_with_status(from_store_error(error).grpc_status())

    async def CreateConsumerGroup(self, request, context):
        async def work() -> pb.CreateConsumerGroupResponse:
            validate(request)
            group, created = await self.groups.create(request)
            return pb.CreateConsumerGroupResponse(group=group, created=created)

        return await self._answer(context, work())

    async def UpdateConsumerGroup(self, request, context):
        async def work() -> pb.UpdateConsumerGroupResponse:
            validate(request)
            return pb.UpdateConsumerGroupResponse(
                group=await self.groups.update(request.name, request.settings)
            )

        return await self._answer(context, work())

    async def DeleteConsumerGroup(self, request, context):
        async def work() -> pb.DeleteConsumerGroupResponse:
            validate(request)
            await self.groups.delete(request.name)
            return pb.DeleteConsumerGroupResponse()

        return await self._answer(context, work())

    async def ListConsumerGroups(self, request, context):
        async def work() -> pb.ListConsumerGroupsResponse:
            head = await self.groups.store.head_position()
            runtimes = [self.groups.groups[name] for name in sorted(self.groups.groups)]
            return pb.ListConsumerGroupsResponse(groups=[r.describe(head) for r in runtimes])

        return await self._answer(context, work())

    async def GetConsumerGroup(self, request, context):
        async def work() -> pb.GetConsumerGroupResponse:
            validate(request)
            runtime = self.groups.get(request.name)
            head = await self.groups.store.head_position()
            return pb.GetConsumerGroupResponse(group=runtime.describe(head))

        return await self._answer(context, work())

    async def ListParkedEvents(self, request, context) -> bytes:
        async def work() -> bytes:
            validate(request)
            runtime = self.groups.get(request.group)
            limit = request.limit or DEFAULT_PARKED_PAGE
            after = request.after_position
            records = await runtime.parked_records(after, limit=limit + 1)
            page = records[:limit]
            more = page[-1][0] if len(records) > limit else 0
            # ListParkedEventsResponse, written by hand: each ParkedEvent as stored, so its
            # event is served back exactly as the store holds it.
            return (
                b"".join(length_delimited(1, data) for _, data in page)
                + varint_field(2, more)
                + varint_field(3, len(runtime.parked))
            )

        return await self._answer(context, work())

    async def ReplayParkedEvents(self, request, context):
        async def work() -> pb.ReplayParkedEventsResponse:
            validate(request)
            runtime = self.groups.get(request.group)
            return pb.ReplayParkedEventsResponse(replayed=await runtime.replay(request.event_ids))

        return await self._answer(context, work())

    async def DiscardParkedEvents(self, request, context):
        async def work() -> pb.DiscardParkedEventsResponse:
            validate(request)
            runtime = self.groups.get(request.group)
            return pb.DiscardParkedEventsResponse(
                discarded=await runtime.discard(request.event_ids)
            )

        return await self._answer(context, work())

    async def Consume(self, request_iterator, context):
        """Join the group named by the first request; then deliver, and take acks and nacks."""
        try:
            runtime, member = await self._join(request_iterator, context)
        except RpcError as error:
            await context.abort_with_status(error.grpc_status())
        reader = asyncio.create_task(self._take_answers(request_iterator, runtime, member, context))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            started = pb.ConsumeStarted(member_id=member.id, max_in_flight=member.max_in_flight)
            yield pb.ConsumeResponse(started=started).SerializeToString()
            while member.ended is None:
                for message in member.take(runtime.page_bytes):
                    yield message
                if member.ended is not None:
                    break
                waiting = asyncio.ensure_future(member.wake.wait())
                await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                member.wake.clear()
                if self._stopping.is_set():
                    member.end(_unavailable())
        finally:
            stopping.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            # A member that said Leave, or a server stopping, hands back what it holds
            # uncounted; a stream that just ends (a crash, a lost connection) counts.
            runtime.leave(member, counted=not (member.left or self._stopping.is_set()))
        if member.ended is not None and member.ended.code != code_pb2.OK:
            await context.abort_with_status(member.ended.grpc_status())

    async def _join(self, requests: Any, context: Any) -> tuple[GroupRuntime, Member]:
        first = await anext(aiter(requests), None)
        if first is None:
            raise status(code_pb2.INVALID_ARGUMENT, "Consume: no start request")
        if isinstance(first, Undecodable):
            raise first.rpc_error()
        validate(first)
        if first.WhichOneof("content") != "start":
            raise bad_request([("start", "the first request of Consume must be start")])
        start = first.start
        runtime = self.groups.get(start.group)
        return runtime, runtime.join(start.max_in_flight, start.member_name or context.peer())

    async def _take_answers(
        self, requests: Any, runtime: GroupRuntime, member: Member, context: Any
    ) -> None:
        """Acks and nacks, until the member's stream ends or a request is refused."""
        try:
            async for request in requests:
                if isinstance(request, Undecodable):
                    raise request.rpc_error()
                validate(request)
                content = request.WhichOneof("content")
                if content == "ack":
                    runtime.ack(request.ack.event_ids)
                elif content == "nack":
                    nack = request.nack
                    runtime.nack(member, nack.event_ids, nack.action, nack.reason)
                elif content == "leave":
                    member.left = True
                    member.end(status(code_pb2.OK, "the member left"))
                    return
                else:
                    raise bad_request([("start", "Consume takes one start request, first")])
        except RpcError as error:
            member.end(error)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            raise
        else:
            # Its side closed (or it went away: the requests end then too): it takes
            # nothing more, so its stream ends.
            member.end(status(code_pb2.OK, "the member closed its requests"))


def add_group_service(service: ConsumerGroupService, server: grpc.aio.Server) -> None:
    """Register the service: Consume and ListParkedEvents answer in bytes (the stored
    records, relayed)."""
    handlers = consumer_group_pb2_grpc.ConsumerGroupServiceServicer  # names checked below
    raw = None  # grpc passes bytes through when a serializer is None
    methods = pb.DESCRIPTOR.services_by_name["ConsumerGroupService"].methods
    table: dict[str, grpc.RpcMethodHandler] = {}
    for method in methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        behavior = getattr(service, method.name)
        assert getattr(handlers, method.name, None) is not None
        if method.name == "Consume":
            table[method.name] = grpc.stream_stream_rpc_method_handler(
                behavior, request_type.FromString, raw
            )
        elif method.name == "ListParkedEvents":
            table[method.name] = grpc.unary_unary_rpc_method_handler(
                behavior, request_type.FromString, raw
            )
        else:
            table[method.name] = grpc.unary_unary_rpc_method_handler(
                behavior, request_type.FromString, response_type.SerializeToString
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(GROUP_SERVICE_NAME, table),)
    )
    server.add_registered_method_handlers(GROUP_SERVICE_NAME, table)
