"""Hostile bytes on every RPC of the EventService: a seeded fuzzer (issue 9, "An unbreakable log").

A real server (the `running` fixture: a SQLite file in tmp_path, 127.0.0.1:0) is called
through a raw grpc.aio channel whose methods take and return bytes, with inputs drawn by
`random.Random(seed)`: random bytes; valid requests (built with the official bindings and
`adapter.to_envelope(domain.X.new(...))`) as they are, truncated, or with bits flipped; and
structurally hostile protobuf at any level of a valid request: deeply nested groups and
submessages, huge length prefixes, over-long varints, invalid UTF-8 in strings, wrong wire
types for known fields, unknown fields, payload cases at unusual numbers, out-of-range
timestamps, uint64 values >= 2**63 (from_revision, after_position, expected revision...).

For every call, and once the run is over:

(a) no call ends with UNKNOWN or INTERNAL, nor DEADLINE_EXCEEDED or UNAVAILABLE (a hung or
    gone server), and every response, PublishError and grpc-status-details-bin decodes;
(b) the health service (grpc.health.v1, service "") still answers SERVING;
(c) a rejected request, and every read, leaves the store's head where it was (checked with
    `store.head_position()` around each call), and an accepted one moves it by the number
    of new events exactly;
(d) every event a Publish accepted reads back byte-identical, through ReadAggregate (every
    page of its aggregate) and through a Subscribe from the start; events seen by the
    fuzzed reads themselves are checked the same way;
(e) every envelope a Publish accepted keeps the contract: its schema's validation rules
    (protovalidate, which covers occurred_at's years 0001-9999), Timestamp nanos in
    0..999,999,999, an EventType that matches its payload case, and, without a v1 payload
    case, the forward-compatibility form the contract waives the required payload for: an
    EventType v1 does not define and an unknown field in the payload range 100-999.

What "byte-identical" compares, in (d): the store keeps an envelope as the bytes the request
carried for it, even when they are valid but not canonical (over-long varints, fields out of
order or twice, map entries in any order, unknown fields in the middle), and serves those
bytes back. So the expected bytes of an accepted event are its `events` element exactly as
in the request (cut from the wire format here), compared with the envelope's bytes exactly
as they arrive in the responses (also cut from the wire format, not re-serialized by a
binding). A retry of a stored id may be encoded otherwise, if it parses to the same envelope.

One test per RPC, so that a failure names its RPC; a failure lists each kind of problem with
its count and the first inputs that showed it, in hex. The default run is a few thousand
inputs; PIPELINE_EVENTS_FUZZ_ITERATIONS=N runs N inputs per RPC (PublishStream: N streams)
and PIPELINE_EVENTS_FUZZ_SEED picks the seed (default 9).
"""

from __future__ import annotations

import os
import random
import struct
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import protovalidate
import pytest
from adaptive_pipeline.events.v1 import envelope_pb2, service_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeline_events import adapter, domain
from pipeline_events.service.server import MAX_MESSAGE_BYTES, RunningServer
from pipeline_events.timestamps import NanoDatetime

SERVICE = "/adaptive_pipeline.events.v1.EventService/"
SEED = int(os.environ.get("PIPELINE_EVENTS_FUZZ_SEED", "9"))
_ITERATIONS = os.environ.get("PIPELINE_EVENTS_FUZZ_ITERATIONS")
#: Inputs per RPC in the default run (PublishStream: streams of one to four batches).
DEFAULT_INPUTS = {
    "Publish": 3000,
    "PublishStream": 800,
    "ReadAggregate": 1500,
    "Subscribe": 1000,
    "GetPipelineState": 500,
    "GetProcessingState": 500,
    "ListProcessingRuns": 500,
}
RPCS = tuple(DEFAULT_INPUTS)
UNARY_RPCS = ("Publish", "ReadAggregate", "GetPipelineState", "GetProcessingState",
              "ListProcessingRuns")  # fmt: skip
CALL_TIMEOUT = 10.0  # a call still running after this long is a hung server
#: Codes that mean the server broke: a handler raised (UNKNOWN), gRPC itself failed
#: (INTERNAL), the call hung (DEADLINE_EXCEEDED) or the server went away (UNAVAILABLE).
BROKEN = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
BROKEN_RPC_CODES = frozenset({2, 13, 4, 14})  # the same, as google.rpc.Code values
U64 = (1 << 64) - 1
BIG_U64 = (2**63, 2**63 + 1, 2**64 - 2, U64)  # >= 2**63: negative as int64 (SQLite INTEGER)


def inputs_for(rpc: str) -> int:
    return int(_ITERATIONS) if _ITERATIONS else DEFAULT_INPUTS[rpc]


# --- The wire format, written and read by hand --------------------------------------------

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
Record = tuple[int, int, bytes]  # (field number, wire type, body); see `split`


def varint(value: int, *, extra: int = 0) -> bytes:
    """Base-128 varint; a negative value as its 64-bit two's complement (as int32/int64 are
    written); `extra` bytes more than needed (an over-long but, up to 10 bytes, valid form)."""
    if value < 0:
        value &= U64
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            break
        out.append(byte | 0x80)
    if extra:
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def key(number: int, wire_type: int, *, extra: int = 0) -> bytes:
    return varint(number << 3 | wire_type, extra=extra)


def ld(number: int, body: bytes) -> bytes:
    return key(number, LEN) + varint(len(body)) + body


def vint(number: int, value: int, *, extra: int = 0) -> bytes:
    return key(number, VARINT) + varint(value, extra=extra)


def group(number: int, body: bytes) -> bytes:
    return key(number, SGROUP) + body + key(number, EGROUP)


def encode(record: Record) -> bytes:
    number, wire_type, body = record
    if wire_type == LEN:
        return ld(number, body)
    if wire_type == SGROUP:
        return group(number, body)
    return key(number, wire_type) + body


def join(records: list[Record]) -> bytes:
    return b"".join(encode(r) for r in records)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); ValueError for a truncated or over-long varint."""
    value = shift = 0
    for index in range(pos, min(pos + 10, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index + 1
    raise ValueError(f"bad varint at offset {pos}")


def _skip(data: bytes, pos: int, wire_type: int) -> int:
    if wire_type == VARINT:
        return read_varint(data, pos)[1]
    if wire_type in (I64, I32):
        end = pos + (8 if wire_type == I64 else 4)
    elif wire_type == LEN:
        length, pos = read_varint(data, pos)
        end = pos + length
    else:
        raise ValueError(f"wire type {wire_type} at offset {pos}")
    if end > len(data):
        raise ValueError(f"field runs past the end at offset {pos}")
    return end


def _group_end(data: bytes, pos: int, number: int) -> tuple[int, int]:
    """(end of the group's content, position after its end tag), without recursion."""
    open_groups = [number]
    while True:
        tag_at = pos
        tag, pos = read_varint(data, pos)
        inner, wire_type = tag >> 3, tag & 7
        if wire_type == EGROUP:
            if open_groups.pop() != inner:
                raise ValueError(f"mismatched end group at offset {tag_at}")
            if not open_groups:
                return tag_at, pos
        elif wire_type == SGROUP:
            open_groups.append(inner)
        else:
            pos = _skip(data, pos, wire_type)


def split(data: bytes) -> list[Record]:
    """A message's records. The body of a varint or fixed field is its encoded bytes, of a
    length-delimited one its content, of a group what lies between its tags."""
    records: list[Record] = []
    pos = 0
    while pos < len(data):
        tag, start = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == LEN:
            length, start = read_varint(data, start)
            pos = start + length
            if pos > len(data):
                raise ValueError("length-delimited field runs past the end")
            body = data[start:pos]
        elif wire_type == SGROUP:
            end, pos = _group_end(data, start, number)
            body = data[start:end]
        else:
            pos = _skip(data, start, wire_type)
            body = data[start:pos]
        records.append((number, wire_type, body))
    return records


def recorded_events(message: bytes, path: tuple[int, ...]) -> list[tuple[int, int, bytes]]:
    """(global position, revision, envelope bytes exactly as sent) of every RecordedEvent
    found by following `path`, the numbers of the fields leading to RecordedEvents."""
    found = []
    for number, wire_type, body in split(message):
        if number != path[0] or wire_type != LEN:
            continue
        if len(path) > 1:
            found += recorded_events(body, path[1:])
            continue
        envelope, position, revision = b"", 0, 0
        for inner, inner_type, value in split(body):
            if inner == 1 and inner_type == LEN:
                envelope = value
            elif inner == 2 and inner_type == VARINT:
                position = read_varint(value, 0)[0]
            elif inner == 3 and inner_type == VARINT:
                revision = read_varint(value, 0)[0]
        found.append((position, revision, envelope))
    return found


def difference(got: bytes, want: bytes) -> str:
    """How two envelopes' bytes differ: in content, or only in the order of their fields
    (e.g. map entries written in another order), at some level."""
    try:
        if _same_fields(got, want):
            return "same fields in another order"
    except ValueError:
        pass
    return "other content"


def _same_fields(got: bytes, want: bytes, depth: int = 0) -> bool:
    if got == want:
        return True
    mine, theirs = split(got), split(want)
    if sorted(mine) == sorted(theirs):
        return True
    if depth > 8 or len(mine) != len(theirs):
        return False
    pairs = zip(sorted(mine), sorted(theirs), strict=True)
    return all(a[:2] == b[:2] and a[1] == LEN and _same_fields(a[2], b[2], depth + 1)
               if a != b else True for a, b in pairs)  # fmt: skip


# --- Valid requests: realistic events from the domain, built with the official bindings ----

STAGES = ("input_checksum", "compression", "encryption", "output_checksum")
USERS = ("alice", "bob", None)
CHANGES = ("chunk size 1 MiB", "encryption aes-256-gcm", "compression zstd level 3", "retries 5")


def _uuid(rnd: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rnd.getrandbits(128), version=4)


def _metrics(rnd: random.Random) -> domain.ProcessingMetrics:
    total = rnd.choice([0, 4096, 11_534_336, 2**40])
    stage = rnd.choice(STAGES)
    return domain.ProcessingMetrics(
        bytes_processed=rnd.randint(0, total),
        bytes_total=total,
        chunks_processed=rnd.randint(0, 11),
        chunks_total=11,
        processing_duration=rnd.choice([None, domain.Duration(rnd.randint(0, 99), 5)]),
        throughput_bytes_per_second=rnd.random() * 1e9,
        compression_ratio=rnd.choice([None, 0.0, 0.42]),
        error_count=rnd.randint(0, 2),
        stage_metrics={
            stage: domain.StageMetrics(
                stage_name=stage,
                bytes_processed=rnd.randint(0, total),
                processing_time=domain.Duration(rnd.randint(0, 9), rnd.randrange(10**9)),
                throughput=rnd.random(),
                success_rate=1.0,
                memory_usage=rnd.choice([None, 2**20]),
                cpu_usage=rnd.choice([None, 0.25]),
            )
        },
    )


def _when(rnd: random.Random) -> NanoDatetime:
    return NanoDatetime.from_seconds_nanos(rnd.randint(1_577_836_800, 1_893_456_000), 0)


def realistic_event(rnd: random.Random, pipeline: uuid.UUID, run: uuid.UUID) -> domain.Event:
    """One of the 16 events, as the upstream pipeline would emit it."""
    cls = rnd.choice(domain.EVENT_CLASSES)
    stage, user, ms = rnd.choice(STAGES), rnd.choice(USERS), rnd.randint(0, 60_000)
    size = rnd.choice([0, 4096, 1_048_576, 11_534_336, 2**40, U64])
    batch = rnd.randint(1000, 9999)
    p, r, d = pipeline, run, domain
    if cls is d.PipelineCreated:
        return d.PipelineCreated.new(p, f"ingest-{rnd.randint(1, 99)}", rnd.randint(1, 8), user)
    if cls is d.PipelineUpdated:
        return d.PipelineUpdated.new(p, tuple(rnd.sample(CHANGES, rnd.randint(0, 3))), user)
    if cls is d.PipelineDeleted:
        return d.PipelineDeleted.new(p, user)
    if cls is d.ProcessingStarted:
        security = domain.SecurityContext(
            user_id=user,
            session_id=_uuid(rnd),
            permissions=(domain.StandardPermission.READ, domain.CustomPermission("audit")),
            metadata={"host": f"worker-{rnd.randint(1, 9)}"},
            created_at=_when(rnd),
        )
        return d.ProcessingStarted.new(
            p, r, f"/data/in/batch_{batch}.csv", f"/data/out/batch_{batch}.adapipe", size, security
        )
    if cls is d.ProcessingCompleted:
        return d.ProcessingCompleted.new(p, r, _metrics(rnd), size)
    if cls is d.ProcessingFailed:
        return d.ProcessingFailed.new(
            p, r, "disk full", "E_IO", rnd.choice([None, stage]), rnd.choice([None, _metrics(rnd)])
        )
    if cls is d.ProcessingPaused:
        return d.ProcessingPaused.new(p, r, "operator", rnd.choice([None, b"", rnd.randbytes(24)]))
    if cls is d.ProcessingResumed:
        return d.ProcessingResumed.new(p, r, rnd.random() < 0.5)
    if cls is d.ProcessingCancelled:
        return d.ProcessingCancelled.new(p, r, "superseded by a newer file", user)
    if cls is d.StageStarted:
        return d.StageStarted.new(p, r, _uuid(rnd), stage, "checksum")
    if cls is d.StageCompleted:
        return d.StageCompleted.new(p, r, _uuid(rnd), stage, ms, size)
    if cls is d.StageFailed:
        return d.StageFailed.new(p, r, _uuid(rnd), stage, "checksum mismatch", "E_CHECKSUM")
    if cls is d.ChunkProcessed:
        return d.ChunkProcessed.new(p, r, _uuid(rnd), rnd.randint(0, 999), 1_048_576, stage, ms)
    if cls is d.MetricsUpdated:
        return d.MetricsUpdated.new(p, r, _metrics(rnd))
    if cls is d.SecurityViolation:
        severity = rnd.choice(list(d.SecurityViolationSeverity))
        return d.SecurityViolation.new(
            p, "path_traversal", "input path escapes the data root", severity,
            rnd.choice([None, r]), user, rnd.choice([None, "10.0.0.7"]),
        )  # fmt: skip
    return d.ResourceExhausted.new(p, r, "memory", size, max(size, 2**30), "throttled")


@dataclass
class Pool:
    """The aggregates and runs most requests are about, so that they meet stored events."""

    pipelines: list[uuid.UUID]
    runs: list[uuid.UUID]

    @classmethod
    def draw(cls, rnd: random.Random) -> Pool:
        return cls([_uuid(rnd) for _ in range(6)], [_uuid(rnd) for _ in range(8)])

    def pipeline(self, rnd: random.Random) -> uuid.UUID:
        return rnd.choice(self.pipelines) if rnd.random() < 0.85 else _uuid(rnd)

    def run(self, rnd: random.Random) -> uuid.UUID:
        return rnd.choice(self.runs) if rnd.random() < 0.85 else _uuid(rnd)

    def some_id(self, rnd: random.Random) -> str:
        text = str(rnd.choice([*self.pipelines, *self.runs, _uuid(rnd)]))
        return rnd.choice([text, text, text.upper(), text.replace("-", ""), "", "not-a-uuid"])


def realistic_envelope(rnd: random.Random, pool: Pool) -> envelope_pb2.EventEnvelope:
    run = pool.run(rnd)
    event = realistic_event(rnd, pool.pipeline(rnd), run)
    # Producers' metadata: several entries, so that their order is tested (the store keeps
    # them sorted, in the deterministic serialization; a map's hash order is not that).
    metadata = {
        name: value
        for name, value in (
            ("host", f"worker-{rnd.randint(1, 9)}"),
            ("trace", f"{rnd.getrandbits(64):016x}"),
            ("span", f"{rnd.getrandbits(32):08x}"),
            ("tenant", rnd.choice(["acme", "globex", "initech"])),
            ("region", rnd.choice(["eu-west-1", "us-east-2"])),
            ("build", "2026.11.27"),
        )
        if rnd.random() < 0.6
    }
    envelope = adapter.to_envelope(
        event, correlation_id=rnd.choice(["", str(run)]), metadata=metadata
    )
    # The seed's factories take a fresh v4 id and the current time: made reproducible here.
    envelope.event_id = str(_uuid(rnd))
    envelope.occurred_at.seconds = rnd.randint(1_577_836_800, 1_893_456_000)
    envelope.occurred_at.nanos = rnd.randrange(10**9)
    return envelope


def expected_revisions(
    rnd: random.Random, events: list[envelope_pb2.EventEnvelope]
) -> list[service_pb2.ExpectedRevision]:
    checks = []
    for aggregate in sorted({e.aggregate_id for e in events}):
        if rnd.random() < 0.35:
            check = service_pb2.ExpectedRevision(aggregate_id=aggregate)
            case = rnd.choice(["any", "no_stream", "stream_exists", "revision"])
            if case == "revision":
                check.revision = rnd.choice([0, 1, 2, 3, 7])
            else:
                getattr(check, case).SetInParent()
            checks.append(check)
    return checks


def valid_publish(rnd: random.Random, pool: Pool) -> service_pb2.PublishRequest:
    events = [realistic_envelope(rnd, pool) for _ in range(rnd.choice([1, 1, 1, 2, 3, 5]))]
    return service_pb2.PublishRequest(
        events=events, expected_revisions=expected_revisions(rnd, events)
    )


def valid_publish_stream(rnd: random.Random, pool: Pool) -> service_pb2.PublishStreamRequest:
    publish = valid_publish(rnd, pool)
    return service_pb2.PublishStreamRequest(
        batch_id=rnd.choice([0, 1, rnd.getrandbits(32), rnd.getrandbits(64)]),
        events=publish.events,
        expected_revisions=publish.expected_revisions,
    )


def valid_read_aggregate(rnd: random.Random, pool: Pool) -> service_pb2.ReadAggregateRequest:
    return service_pb2.ReadAggregateRequest(
        aggregate_id=str(pool.pipeline(rnd)),
        from_revision=rnd.choice([0, 0, 1, 2, 5, 1000]),
        backwards=rnd.random() < 0.3,
        limit=rnd.choice([0, 0, 1, 2, 10, 10_000]),
    )


def valid_subscribe(rnd: random.Random, pool: Pool) -> service_pb2.SubscribeRequest:
    request = service_pb2.SubscribeRequest(
        max_batch_size=rnd.choice([0, 0, 1, 3, 500, 10_000]),
        checkpoint_interval=rnd.choice([0, 0, 1, 5, 1000]),
    )
    start = rnd.choice(["from_start", "from_end", "after_position"])
    if start == "after_position":
        request.after_position = rnd.choice([0, 1, 5, 20, 10**6])
    else:
        getattr(request, start).SetInParent()
    wanted = request.filter
    if rnd.random() < 0.3:
        wanted.event_types.extend(rnd.sample(range(1, 17), rnd.randint(1, 3)))
    if rnd.random() < 0.2:
        wanted.categories.extend(rnd.sample(range(1, 5), rnd.randint(1, 2)))
    if rnd.random() < 0.3:
        wanted.aggregate_ids.extend(str(pool.pipeline(rnd)) for _ in range(rnd.randint(1, 3)))
    if rnd.random() < 0.2:
        wanted.processing_ids.extend(str(pool.run(rnd)) for _ in range(rnd.randint(1, 2)))
    return request


def valid_pipeline_state(rnd: random.Random, pool: Pool) -> service_pb2.GetPipelineStateRequest:
    return service_pb2.GetPipelineStateRequest(pipeline_id=pool.some_id(rnd))


def valid_processing_state(rnd: random.Random, pool: Pool) -> service_pb2.GetProcessingStateRequest:
    return service_pb2.GetProcessingStateRequest(processing_id=pool.some_id(rnd))


def valid_list_runs(rnd: random.Random, pool: Pool) -> service_pb2.ListProcessingRunsRequest:
    request = service_pb2.ListProcessingRunsRequest(page_size=rnd.choice((0, 1, 7, 1000)))
    if rnd.random() < 0.5:
        request.pipeline_id = str(pool.pipeline(rnd))
    request.statuses.extend(rnd.sample(range(1, 6), rnd.randint(0, 3)))
    if rnd.random() < 0.3:
        request.page_token = f"runs-before-{rnd.randint(1, 500)}"
    if rnd.random() < 0.3:
        request.min_position = rnd.choice((1, 10, *BIG_U64))
    return request


VALID: dict[str, Callable[[random.Random, Pool], Message]] = {
    "Publish": valid_publish,
    "PublishStream": valid_publish_stream,
    "ReadAggregate": valid_read_aggregate,
    "Subscribe": valid_subscribe,
    "GetPipelineState": valid_pipeline_state,
    "GetProcessingState": valid_processing_state,
    "ListProcessingRuns": valid_list_runs,
}
REQUEST_TYPES: dict[str, type[Message]] = {
    "Publish": service_pb2.PublishRequest,
    "PublishStream": service_pb2.PublishStreamRequest,
    "ReadAggregate": service_pb2.ReadAggregateRequest,
    "Subscribe": service_pb2.SubscribeRequest,
    "GetPipelineState": service_pb2.GetPipelineStateRequest,
    "GetProcessingState": service_pb2.GetProcessingStateRequest,
    "ListProcessingRuns": service_pb2.ListProcessingRunsRequest,
}
RESPONSE_TYPES: dict[str, type[Message]] = {
    "Publish": service_pb2.PublishResponse,
    "PublishStream": service_pb2.PublishStreamResponse,
    "ReadAggregate": service_pb2.ReadAggregateResponse,
    "Subscribe": service_pb2.SubscribeResponse,
    "GetPipelineState": service_pb2.GetPipelineStateResponse,
    "GetProcessingState": service_pb2.GetProcessingStateResponse,
    "ListProcessingRuns": service_pb2.ListProcessingRunsResponse,
}


# --- Hostile structure, at any level of a valid request ------------------------------------

F = FieldDescriptor
_VARINT_TYPES = {
    F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64,
    F.TYPE_SINT32, F.TYPE_SINT64, F.TYPE_BOOL, F.TYPE_ENUM,
}  # fmt: skip
_I64_TYPES = {F.TYPE_DOUBLE, F.TYPE_FIXED64, F.TYPE_SFIXED64}
_I32_TYPES = {F.TYPE_FLOAT, F.TYPE_FIXED32, F.TYPE_SFIXED32}
_TIMESTAMP = "google.protobuf.Timestamp"
INVALID_UTF8 = (
    b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80",
    b"\xf8\x88\x80\x80\x80", b"\xc3", b"\xef\xbf",
)  # fmt: skip
#: Payload cases where no v1 schema has one, and EventType values to pair them with.
ODD_PAYLOAD_NUMBERS = (100, 117, 118, 150, 500, 999, 1000, 1100, 19000, 19999, 2**29 - 1)
ODD_EVENT_TYPES = (0, 13, 17, 899, 2**31 - 1, -1, -(2**31), 2**32 + 13)


def natural_wire_type(f: FieldDescriptor) -> int:
    if f.type in _VARINT_TYPES:
        return VARINT
    if f.type in _I64_TYPES:
        return I64
    if f.type in _I32_TYPES:
        return I32
    return LEN


def levels(data: bytes, d: Descriptor, path: tuple[int, ...] = (), name: str = "") -> list:
    """Every (record path, descriptor, dotted name) of a message and its submessages."""
    found = [(path, d, name or "<request>")]
    for index, (number, wire_type, body) in enumerate(split(data)):
        f = d.fields_by_number.get(number)
        if wire_type == LEN and f is not None and f.message_type is not None:
            dotted = f"{name}.{f.name}" if name else f.name
            found += levels(body, f.message_type, (*path, index), dotted)
    return found


def replace_at(data: bytes, path: tuple[int, ...], change: Callable[[bytes], bytes]) -> bytes:
    """`data` with the submessage at `path` replaced by `change(its bytes)`, lengths fixed."""
    if not path:
        return change(data)
    records = split(data)
    number, wire_type, body = records[path[0]]
    records[path[0]] = (number, wire_type, replace_at(body, path[1:], change))
    return join(records)


def _insert(rnd: random.Random, data: bytes, raw: bytes) -> bytes:
    chunks = [encode(r) for r in split(data)]
    chunks.insert(rnd.randint(0, len(chunks)), raw)
    return b"".join(chunks)


def _unknown_number(rnd: random.Random, d: Descriptor) -> int:
    while True:
        number = rnd.choice(
            [rnd.randint(1, 15), rnd.randint(16, 99), rnd.randint(100, 999),
             rnd.randint(1000, 18_999), rnd.randint(19_000, 19_999),
             rnd.randint(20_000, 2**29 - 1), 2**29 - 1]
        )  # fmt: skip
        if number not in d.fields_by_number:
            return number


def _random_record(rnd: random.Random, number: int, depth: int = 0) -> bytes:
    wire_type = rnd.choice([VARINT, I64, LEN, I32, SGROUP])
    if wire_type == VARINT:
        return vint(number, rnd.choice([0, 1, 300, 2**31, *BIG_U64]))
    if wire_type == I64:
        return key(number, I64) + struct.pack("<Q", rnd.getrandbits(64))
    if wire_type == I32:
        return key(number, I32) + struct.pack("<I", rnd.getrandbits(32))
    if wire_type == LEN:
        return ld(number, rnd.randbytes(rnd.randint(0, 40)))
    inner = b""
    if depth < 3:
        inner = b"".join(
            _random_record(rnd, rnd.randint(1, 2000), depth + 1) for _ in range(rnd.randint(0, 3))
        )
    return group(number, inner)


def _depth(rnd: random.Random) -> int:
    return rnd.choice(
        [rnd.randint(1, 31), rnd.randint(28, 36), rnd.randint(60, 70), rnd.randint(95, 102),
         rnd.randint(200, 5000), 50_000]
    )  # fmt: skip


def nested_groups(number: int, depth: int, leaf: bytes = b"") -> bytes:
    return key(number, SGROUP) * depth + leaf + key(number, EGROUP) * depth


def nested_messages(number: int, depth: int, leaf: bytes = b"") -> bytes:
    """`depth` length-delimited fields, each the only content of the one around it (O(depth))."""
    head = key(number, LEN)
    lengths, size = [], len(leaf)
    for _ in range(depth):
        lengths.append(size)
        size += len(head) + len(varint(size))
    return b"".join(head + varint(n) for n in reversed(lengths)) + leaf


# Each operator rewrites one level (a message's bytes and its descriptor), or returns None
# when it does not apply there.
Operator = Callable[[random.Random, bytes, Descriptor], bytes | None]


def op_unknown_fields(rnd: random.Random, data: bytes, d: Descriptor) -> bytes:
    for _ in range(rnd.randint(1, 6)):
        data = _insert(rnd, data, _random_record(rnd, _unknown_number(rnd, d)))
    return data


def op_nested_groups(rnd: random.Random, data: bytes, d: Descriptor) -> bytes:
    number, depth = _unknown_number(rnd, d), _depth(rnd)
    raw = nested_groups(number, depth, rnd.choice([b"", vint(1, 1), ld(2, b"leaf")]))
    variant = rnd.random()
    if variant < 0.15:  # unterminated
        raw = raw[: len(raw) - len(key(number, EGROUP)) * rnd.randint(1, depth)]
    elif variant < 0.25:  # closed by the wrong end tag
        raw = raw[: -len(key(number, EGROUP))] + key(number + 1, EGROUP)
    return _insert(rnd, data, raw)


def op_nested_messages(rnd: random.Random, data: bytes, d: Descriptor) -> bytes:
    number, depth = _unknown_number(rnd, d), _depth(rnd)
    leaf = rnd.choice([b"", vint(1, 1), nested_groups(number, rnd.randint(1, 40))])
    return _insert(rnd, data, nested_messages(number, min(depth, 20_000), leaf))


def op_huge_length(rnd: random.Random, data: bytes, d: Descriptor) -> bytes:
    lengths = [f.number for f in d.fields if natural_wire_type(f) == LEN]
    number = rnd.choice(lengths) if lengths and rnd.random() < 0.7 else _unknown_number(rnd, d)
    length = rnd.choice([17, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63, U64, 2**70])
    raw = key(number, LEN) + varint(length) + rnd.randbytes(rnd.randint(0, 16))
    return data + raw if rnd.random() < 0.6 else _insert(rnd, data, raw)


def _varint_fields(d: Descriptor) -> list[FieldDescriptor]:
    return [f for f in d.fields if natural_wire_type(f) == VARINT]


def op_long_varint(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    """Over-long encodings: of a value (10 bytes is the most a valid varint takes), of a tag,
    of a length prefix."""
    choice = rnd.randrange(3)
    if choice == 0 and _varint_fields(d):
        f = rnd.choice(_varint_fields(d))
        value = rnd.choice([0, 1, 5, 2**31 - 1, *BIG_U64])
        return data + key(f.number, VARINT) + varint(value, extra=rnd.randint(1, 12))
    records = split(data)
    if not records:
        return None
    index = rnd.randrange(len(records))
    number, wire_type, body = records[index]
    if choice == 1 or wire_type != LEN:
        raw = key(number, wire_type, extra=rnd.randint(1, 8))
        raw += ld(0, body)[2:] if wire_type == LEN else body
        if wire_type == SGROUP:
            raw += key(number, EGROUP)
    else:
        raw = key(number, LEN) + varint(len(body), extra=rnd.randint(1, 12)) + body
    chunks = [encode(r) for r in records]
    chunks[index] = raw
    return b"".join(chunks)


def op_big_varint(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    """Values past their type: >= 2**63 for (u)int64, past 32 bits for (u)int32 and enums."""
    fields = _varint_fields(d)
    if not fields:
        return None
    f = rnd.choice(fields)
    return data + vint(f.number, rnd.choice([*BIG_U64, 2**31, 2**32, 2**32 + 1, -1, -(2**63)]))


def op_invalid_utf8(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    strings = [f for f in d.fields if f.type == F.TYPE_STRING]
    if not strings:
        return None
    f = rnd.choice(strings)
    bad = rnd.choice([b"", b"abc", b"\xc3\xa9"]) + rnd.choice(INVALID_UTF8)
    bad += rnd.choice([b"", b"-tail", str(uuid.UUID(int=0)).encode()])
    return _insert(rnd, data, ld(f.number, bad)) if rnd.random() < 0.3 else data + ld(f.number, bad)


def op_wrong_wire_type(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    if not d.fields:
        return None
    f = rnd.choice(d.fields)
    wire_type = rnd.choice(
        [w for w in (VARINT, I64, LEN, I32, SGROUP) if w != natural_wire_type(f)]
    )
    body = {
        VARINT: varint(rnd.choice([0, 1, 2**63])),
        I64: struct.pack("<Q", rnd.getrandbits(64)),
        I32: struct.pack("<I", rnd.getrandbits(32)),
        LEN: rnd.randbytes(rnd.randint(0, 12)),
        SGROUP: vint(1, 1),
    }[wire_type]
    return _insert(rnd, data, encode((f.number, wire_type, body)))


def op_bad_wire(rnd: random.Random, data: bytes, d: Descriptor) -> bytes:
    """Records no parser may accept: wire types 6 and 7, field number 0 or past 2**29 - 1,
    a stray end group, a group never closed."""
    number = rnd.choice([f.number for f in d.fields] or [1])
    raw = rnd.choice(
        [
            key(number, 6) + rnd.randbytes(4),
            key(number, 7) + rnd.randbytes(4),
            key(0, rnd.choice([VARINT, LEN])) + b"\x00",
            key(2**29, VARINT) + b"\x01",
            key(2**32, VARINT) + b"\x01",
            key(number, EGROUP),
            key(number, SGROUP) + vint(1, 1),
        ]
    )
    return _insert(rnd, data, raw)


def _timestamp(rnd: random.Random) -> bytes:
    seconds = rnd.choice(
        [-62_135_596_801, 253_402_300_800, 253_402_300_799, -(2**63), 2**63 - 1, 10**15, -1]
    )
    nanos = rnd.choice([0, -1, 10**9, 999_999_999, 2**31 - 1, -(2**31)])
    return vint(1, seconds) + vint(2, nanos)


def op_timestamp(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    """Timestamps out of range; appended, they merge into the message already there."""
    if d.full_name == _TIMESTAMP:
        return data + _timestamp(rnd)
    fields = [f for f in d.fields if f.message_type and f.message_type.full_name == _TIMESTAMP]
    if not fields:
        return None
    return data + ld(rnd.choice(fields).number, _timestamp(rnd))


def op_duplicate(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    records = split(data)
    if not records:
        return None
    return _insert(rnd, data, encode(rnd.choice(records)))


def op_shuffle(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    records = split(data)
    if len(records) < 2:
        return None
    rnd.shuffle(records)
    return join(records)


def op_drop(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    records = split(data)
    if not records:
        return None
    del records[rnd.randrange(len(records))]
    return join(records)


def op_truncate(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    """Cut inside a submessage; its parent's length prefix is fixed, so only it is broken."""
    return data[: rnd.randrange(len(data))] if data else None


def op_bitflip(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    if not data:
        return None
    out = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
    return bytes(out)


_PAYLOADS = range(101, 117)


def op_payload_case(rnd: random.Random, data: bytes, d: Descriptor) -> bytes | None:
    """An envelope whose payload sits at a number no v1 case has, is of the wrong wire type,
    is missing, empty or doubled; with an odd EventType."""
    if d is not envelope_pb2.EventEnvelope.DESCRIPTOR:
        return None
    records = split(data)
    payload = next((r for r in records if r[0] in _PAYLOADS), None)
    body = payload[2] if payload else rnd.randbytes(8)
    rest = [r for r in records if r[0] not in _PAYLOADS and r[0] != 3]
    variant = rnd.randrange(6)
    extra: list[bytes] = []
    if variant == 0:  # moved to a number no case has
        extra.append(ld(rnd.choice(ODD_PAYLOAD_NUMBERS), body))
    elif variant == 1:  # the case's number, but not length-delimited
        number = payload[0] if payload else 113
        extra.append(vint(number, 1) if rnd.random() < 0.5 else key(number, I32) + bytes(4))
    elif variant == 2:  # no payload at all
        pass
    elif variant == 3:  # an empty payload of some case
        extra.append(ld(rnd.choice(_PAYLOADS), b""))
    elif variant == 4:  # two cases (the last one wins)
        extra += [ld(rnd.choice(_PAYLOADS), body), ld(rnd.choice(_PAYLOADS), body)]
    else:  # a known case plus an unknown one
        extra += [encode(payload) if payload else b"", ld(rnd.choice(ODD_PAYLOAD_NUMBERS), body)]
    event_type = rnd.choice([*ODD_EVENT_TYPES, payload[0] - 100 if payload else 13])
    return join(rest) + vint(3, event_type) + b"".join(extra)


OPERATORS: tuple[Operator, ...] = (
    op_unknown_fields, op_nested_groups, op_nested_messages, op_huge_length, op_long_varint,
    op_big_varint, op_invalid_utf8, op_wrong_wire_type, op_bad_wire, op_timestamp,
    op_duplicate, op_shuffle, op_drop, op_truncate, op_bitflip, op_payload_case,
)  # fmt: skip


def structural(rnd: random.Random, data: bytes, d: Descriptor) -> tuple[bytes, str]:
    """One operator at one level of `data` (a valid message of type `d`) where it applies."""
    where = levels(data, d)
    for _ in range(12):
        operator = rnd.choice(OPERATORS)
        path, level_type, name = rnd.choice(where)
        applied = False

        def change(level: bytes, operator=operator, level_type=level_type) -> bytes:
            nonlocal applied
            changed = operator(rnd, level, level_type)
            applied = changed is not None
            return level if changed is None else changed

        mutated = replace_at(data, path, change)
        if applied:
            return mutated, f"{operator.__name__[3:]}@{name}"
    return op_unknown_fields(rnd, data, d), "unknown_fields@<request>"


# --- Inputs --------------------------------------------------------------------------------


def targeted(rnd: random.Random, rpc: str, pool: Pool) -> tuple[bytes, str]:
    """What the issue names for each RPC: uint64 >= 2**63 where the store meets it, payload
    cases at odd numbers, timestamps out of range, odd event types."""
    big = rnd.choice(BIG_U64)
    if rpc in ("Publish", "PublishStream"):
        request = VALID[rpc](rnd, pool)
        envelope = request.events[0]
        choice = rnd.randrange(5)
        if choice == 0:
            check = service_pb2.ExpectedRevision(aggregate_id=envelope.aggregate_id, revision=big)
            del request.expected_revisions[:]
            request.expected_revisions.append(check)
            return request.SerializeToString(deterministic=True), "expected_revision>=2**63"
        if choice == 1:
            envelope.schema_version = big
            return request.SerializeToString(deterministic=True), "schema_version>=2**63"
        if choice == 2:
            envelope.occurred_at.seconds = rnd.choice(
                [253_402_300_800, -62_135_596_801, 2**63 - 1, -(2**63)]
            )
            envelope.occurred_at.nanos = rnd.choice([0, 999_999_999, 10**9, -1])
            return request.SerializeToString(deterministic=True), "occurred_at_out_of_range"
        if choice == 3:
            envelope.event_type = rnd.choice([0, 17, 899, 2**31 - 1, -1])
            return request.SerializeToString(deterministic=True), "odd_event_type"
        data = request.SerializeToString(deterministic=True)
        path = next(p for p, t, _ in levels(data, request.DESCRIPTOR) if t is envelope.DESCRIPTOR)
        mutated = replace_at(data, path, lambda b: op_payload_case(rnd, b, envelope.DESCRIPTOR))
        return mutated, "payload_case@events"
    if rpc == "ReadAggregate":
        request = valid_read_aggregate(rnd, pool)
        request.from_revision = big
        data = request.SerializeToString(deterministic=True)
        if rnd.random() < 0.3:
            data += vint(4, rnd.choice([2**32, 2**32 + 1, U64]))  # limit: uint32 given 64 bits
            return data, "from_revision>=2**63,limit>32bits"
        return data, "from_revision>=2**63"
    if rpc == "Subscribe":
        request = valid_subscribe(rnd, pool)
        request.after_position = big
        data = request.SerializeToString(deterministic=True)
        if rnd.random() < 0.3:
            data += vint(rnd.choice([5, 6]), rnd.choice([2**32, 2**32 + 1, U64]))
            return data, "after_position>=2**63,uint32>32bits"
        return data, "after_position>=2**63"
    number = 1
    bad = rnd.choice(INVALID_UTF8)
    return ld(number, str(pool.pipeline(rnd)).encode()[:10] + bad), "id_invalid_utf8"


def random_bytes(rnd: random.Random) -> bytes:
    return rnd.randbytes(rnd.choice([rnd.randint(0, 8), rnd.randint(0, 64), rnd.randint(0, 1024)]))


def make_input(rnd: random.Random, rpc: str, pool: Pool) -> tuple[bytes, str]:
    """One input for `rpc` and the kind of input it is."""
    valid = VALID[rpc](rnd, pool).SerializeToString(deterministic=True)
    kind = rnd.choices(
        ["valid", "random", "truncated", "bitflip", "structural", "targeted", "oversized"],
        weights=[12, 8, 10, 14, 44, 12, 0.2],
    )[0]
    if kind == "valid":
        return valid, kind
    if kind == "random" or (kind == "bitflip" and not valid):  # (nothing to flip bits of)
        return random_bytes(rnd), "random"
    if kind == "truncated":
        return valid[: rnd.randrange(max(len(valid), 1))], kind
    if kind == "bitflip":
        out = bytearray(valid)
        for _ in range(rnd.randint(1, 8)):
            out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
        return bytes(out), kind
    if kind == "structural":
        data, where = structural(rnd, valid, REQUEST_TYPES[rpc].DESCRIPTOR)
        return data, f"structural:{where}"
    if kind == "targeted":
        data, what = targeted(rnd, rpc, pool)
        return data, f"targeted:{what}"
    # More than the server takes in one message: an unknown field padding a valid request.
    return valid + ld(999, bytes(MAX_MESSAGE_BYTES)), kind


# --- (e): what an accepted envelope must be, from the contract -------------------------------

_V1_EVENT_TYPES = frozenset(envelope_pb2.EventType.values())  # 0 (unspecified) to 16
_CASE_TYPES = {
    f.name: f.number - 100
    for f in envelope_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
}


def _timestamps(message: Message, path: str = "") -> list[tuple[str, Message]]:
    found = []
    for f, value in message.ListFields():
        if f.message_type is None or f.message_type.GetOptions().map_entry:
            continue
        where = f"{path}.{f.name}" if path else f.name
        values = value if f.is_repeated else [value]
        for item in values:
            if f.message_type.full_name == _TIMESTAMP:
                found.append((where, item))
            else:
                found += _timestamps(item, where)
    return found


def contract_violations(envelope: envelope_pb2.EventEnvelope) -> list[str]:
    """Why an envelope breaks the contract (envelope.proto), if it does."""
    problems = []
    case = envelope.WhichOneof("payload")
    future_case = case is None and any(
        100 <= f.field_number <= 999 for f in UnknownFieldSet(envelope)
    )
    try:
        protovalidate.validate(envelope)
    except protovalidate.ValidationError as error:
        for violation in error.violations:
            path = ".".join(e.field_name for e in violation.proto.field.elements)
            waived = future_case and violation.proto.rule_id == "required" and path == "payload"
            if not waived:
                problems.append(f"{path or '<envelope>'}: {violation.proto.message}")
    for path, stamp in _timestamps(envelope):
        if not 0 <= stamp.nanos <= 999_999_999:  # google.protobuf.Timestamp's own rule
            problems.append(f"{path}.nanos: {stamp.nanos} is out of range")
    if case is not None and envelope.event_type != _CASE_TYPES[case]:
        problems.append(f"event_type {envelope.event_type} does not match the payload {case}")
    if case is None and envelope.event_type in _V1_EVENT_TYPES:
        problems.append(f"no payload, but event_type {envelope.event_type} is a v1 type")
    if case is None and not future_case:
        problems.append("no payload case, known or unknown")
    return problems


# --- The run: calls, checks, findings -------------------------------------------------------


@dataclass
class Input:
    rpc: str
    kind: str
    data: bytes


@dataclass
class Finding:
    check: str  # which assertion: a to e, or decode
    rpc: str
    problem: str  # short and shared by findings of one kind, for the summary
    detail: str
    input: Input


@dataclass
class Fuzz:
    """The state of one run against one server: what was accepted and what went wrong."""

    server: RunningServer
    channel: grpc.aio.Channel
    findings: list[Finding] = field(default_factory=list)
    expected: dict[int, bytes] = field(default_factory=dict)  # position -> envelope bytes
    origin: dict[int, Input] = field(default_factory=dict)  # position -> accepted input
    where: dict[int, tuple[str, int]] = field(default_factory=dict)  # -> (aggregate, revision)
    codes: Counter = field(default_factory=Counter)
    inputs: int = 0

    def __post_init__(self) -> None:
        self.store = self.server.service.store
        raw = {"request_serializer": None, "response_deserializer": None}
        self.unary = {rpc: self.channel.unary_unary(SERVICE + rpc, **raw) for rpc in UNARY_RPCS}
        self.stream = self.channel.stream_stream(SERVICE + "PublishStream", **raw)
        self.subscription = self.channel.unary_stream(SERVICE + "Subscribe", **raw)

    # -- checks shared by every call --

    def add(self, check: str, input_: Input, problem: str, detail: str = "") -> None:
        self.findings.append(Finding(check, input_.rpc, problem, detail, input_))

    def check_status(self, input_: Input, code: grpc.StatusCode, details: str, trailers) -> None:
        self.codes[code.name] += 1
        if code in BROKEN:
            self.add("a", input_, f"ended with {code.name}", (details or "")[:300])
        for name, value in trailers or ():
            if name != "grpc-status-details-bin":
                continue
            try:
                rich = status_pb2.Status.FromString(value)
            except DecodeError as error:
                self.add("decode", input_, "grpc-status-details-bin does not decode", str(error))
                continue
            if rich.code != code.value[0]:
                self.add("a", input_, "status details disagree with the status", str(rich))

    def decode(self, input_: Input, message_type: type[Message], data: bytes) -> Message | None:
        try:
            return message_type.FromString(data)
        except DecodeError as error:
            self.add("decode", input_, f"the {message_type.__name__} does not decode", str(error))
            return None

    def check_records(self, input_: Input, records: list[tuple[int, int, bytes]]) -> None:
        """Events a read returned are the accepted ones, byte for byte."""
        for position, _, envelope in records:
            wanted = self.expected.get(position)
            if wanted is None:
                self.add(
                    "c", input_, "a read returned an event no Publish accepted",
                    f"position {position}: {envelope[:200].hex()}",
                )  # fmt: skip
            elif wanted != envelope:
                self.add(
                    "d", input_, f"a read returned other bytes ({difference(envelope, wanted)})",
                    f"position {position}: got {envelope[:200].hex()}, want {wanted[:200].hex()}",
                )  # fmt: skip

    def accepted(
        self, input_: Input, request: Message, reply: service_pb2.PublishResponse, before: int,
        after: int,
    ) -> None:  # fmt: skip
        """Record what an accepted batch stored; check the response and the head."""
        events = list(request.events)  # type: ignore[attr-defined]
        events_field = 1 if input_.rpc == "Publish" else 2  # PublishStreamRequest: 2
        sent = [
            body
            for number, wire, body in split(input_.data)
            if (number, wire) == (events_field, LEN)
        ]
        if len(reply.positions) != len(events):
            self.add("d", input_, "positions do not match the events", str(reply))
            return
        fresh = 0
        for envelope, data, position in zip(events, sent, reply.positions, strict=True):
            at = position.global_position
            known = self.expected.get(at)
            if known is None:
                if at <= before:
                    self.add("d", input_, "accepted at an old position no event holds", str(at))
                fresh += 1
                self.expected[at], self.origin[at] = data, input_
                for problem in contract_violations(envelope):
                    kind = problem.split(":")[0] if ":" in problem else problem
                    self.add("e", input_, f"accepted against the contract: {kind}", problem)
                self.where[at] = (str(uuid.UUID(envelope.aggregate_id)), position.revision)
            elif envelope_pb2.EventEnvelope.FromString(known) != envelope:
                self.add("d", input_, "accepted as a retry of another envelope", f"position {at}")
        if after != before + fresh:
            self.add("c", input_, "accepted, but the head moved by another count",
                     f"{fresh} new events, head {before} -> {after}")  # fmt: skip
        if events and reply.already_recorded != (fresh == 0):
            self.add("d", input_, "already_recorded is wrong", f"{fresh} new events: {reply}")

    async def head(self) -> int:
        return await self.store.head_position()

    def check_head(self, input_: Input, before: int, after: int, why: str) -> None:
        if after != before:
            self.add("c", input_, f"the head moved on {why}", f"{before} -> {after}")

    # -- the RPCs --

    async def call_unary(self, input_: Input):
        self.inputs += 1
        call = self.unary[input_.rpc](input_.data, timeout=CALL_TIMEOUT)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            return error.code(), None, error.details(), error.trailing_metadata()
        return grpc.StatusCode.OK, response, "", await call.trailing_metadata()

    async def publish(self, input_: Input) -> None:
        before = await self.head()
        code, response, details, trailers = await self.call_unary(input_)
        after = await self.head()
        self.check_status(input_, code, details, trailers)
        if code != grpc.StatusCode.OK:
            self.check_head(input_, before, after, f"a rejected request ({code.name})")
            return
        reply = self.decode(input_, service_pb2.PublishResponse, response)
        request = self.decode(input_, service_pb2.PublishRequest, input_.data)
        if reply is not None and request is not None:
            self.accepted(input_, request, reply, before, after)

    async def publish_stream(self, inputs: list[Input]) -> None:
        """One stream: each batch is written, then its response read, before the next."""
        self.inputs += len(inputs)
        call = self.stream(timeout=CALL_TIMEOUT * (len(inputs) + 1))
        ended = None
        for input_ in inputs:
            before = await self.head()
            try:
                await call.write(input_.data)
                response = await call.read()
            except grpc.aio.AioRpcError:
                response = grpc.aio.EOF
            except Exception as error:  # writing to a stream the server ended
                self.add("a", input_, "the stream broke", repr(error))
                response = grpc.aio.EOF
            after = await self.head()
            if response is grpc.aio.EOF:
                self.check_head(input_, before, after, "a batch the stream ended on")
                ended = input_
                break
            self.stream_response(input_, response, before, after)
        if ended is None:
            try:
                await call.done_writing()
                if (extra := await call.read()) is not grpc.aio.EOF:
                    self.add("a", inputs[-1] if inputs else Input("PublishStream", "empty", b""),
                             "a response no batch asked for", extra[:200].hex())  # fmt: skip
            except grpc.aio.AioRpcError:
                pass
        last = ended or (inputs[-1] if inputs else Input("PublishStream", "empty stream", b""))
        code = await call.code()
        self.check_status(last, code, await call.details(), await call.trailing_metadata())

    def stream_response(self, input_: Input, response: bytes, before: int, after: int) -> None:
        message = self.decode(input_, service_pb2.PublishStreamResponse, response)
        if message is None:
            return
        try:
            request = service_pb2.PublishStreamRequest.FromString(input_.data)
        except DecodeError:
            request = None
        if request is not None and message.batch_id != request.batch_id:
            self.add(
                "a", input_, "batch_id not echoed", f"{message.batch_id} != {request.batch_id}"
            )
        case = message.WhichOneof("result")
        if case == "published" and request is not None:
            self.accepted(input_, request, message.published, before, after)
            return
        if case == "error":
            self.codes[f"PublishError {message.error.code}"] += 1
        if case == "published" and request is None:
            self.add("d", input_, "an undecodable batch was published", str(message))
        elif case is None:
            self.add("a", input_, "a response with no result", response.hex())
        elif message.error.code in BROKEN_RPC_CODES:
            self.add("a", input_, f"PublishError code {message.error.code}",
                     message.error.message[:300])  # fmt: skip
        self.check_head(input_, before, after, "a rejected batch")

    async def read(self, input_: Input) -> None:
        """ReadAggregate and the state queries: they answer, decode, and change nothing."""
        before = await self.head()
        code, response, details, trailers = await self.call_unary(input_)
        after = await self.head()
        self.check_status(input_, code, details, trailers)
        self.check_head(input_, before, after, f"a read ({code.name})")
        if code != grpc.StatusCode.OK:
            return
        if self.decode(input_, RESPONSE_TYPES[input_.rpc], response) is None:
            return
        if input_.rpc == "ReadAggregate":
            self.check_records(input_, recorded_events(response, (1,)))

    async def subscribe(self, input_: Input, max_messages: int = 20_000) -> None:
        """A subscription is read until its CaughtUp (then cancelled), or until it ends."""
        self.inputs += 1
        before = await self.head()
        call = self.subscription(input_.data, timeout=CALL_TIMEOUT)
        caught_up, code, details, trailers = False, grpc.StatusCode.OK, "", None
        try:
            count = 0
            async for data in call:
                count += 1
                message = self.decode(input_, service_pb2.SubscribeResponse, data)
                if message is None:
                    break
                self.check_records(input_, recorded_events(data, (1, 1)))
                if message.WhichOneof("content") == "caught_up" or count >= max_messages:
                    caught_up = message.WhichOneof("content") == "caught_up"
                    break
        except grpc.aio.AioRpcError as error:
            code, details, trailers = error.code(), error.details(), error.trailing_metadata()
        finally:
            call.cancel()
        after = await self.head()
        self.check_status(input_, code, details, trailers)
        if code == grpc.StatusCode.OK and not caught_up:
            self.add("a", input_, "the subscription never caught up")
        self.check_head(input_, before, after, f"a subscription ({code.name})")

    # -- (d): everything accepted reads back --

    async def read_back(self) -> None:
        """Every accepted event, through ReadAggregate (all pages) and a Subscribe from start.

        When a read fails, the events it would have returned are read one at a time, so
        that the finding names the input that made the unreadable event."""
        by_aggregate: dict[str, list[int]] = {}
        for position, (aggregate, _) in sorted(self.where.items()):
            by_aggregate.setdefault(aggregate, []).append(position)
        for aggregate, positions in by_aggregate.items():
            seen, _ = await self._read_aggregate(aggregate)
            if seen is None:
                seen = {}
                for position in positions:
                    revision = self.where[position][1]
                    one, why = await self._read_aggregate(aggregate, revision, limit=1, pages=1)
                    if one is None:
                        self.add("d", self.origin[position], "accepted, ReadAggregate fails", why)
                    seen.update(one or {position: None})
            for position in positions:
                self._compare(position, seen, "ReadAggregate")
        seen, _ = await self._subscribe()
        if seen is None:
            seen = {}
            for position in sorted(self.expected):
                one, why = await self._subscribe(after=position - 1, batch=1, until=position)
                if one is None:
                    self.add("d", self.origin[position], "accepted, Subscribe fails", why)
                seen.update(one or {position: None})
        for position in sorted(self.expected):
            self._compare(position, seen, "Subscribe")
        for position in sorted(set(seen) - set(self.expected)):
            self.add("c", Input("Subscribe", "read back", b""),
                     "the log holds an event no Publish accepted", f"position {position}")  # fmt: skip

    def _compare(self, position: int, seen: dict[int, bytes | None], via: str) -> None:
        got = seen.get(position, b"")
        if got is None:  # its read failed, and that is a finding already
            return
        if position not in seen:
            self.add("d", self.origin[position], f"accepted, missing from {via}", str(position))
        elif got != self.expected[position]:
            what = difference(got, self.expected[position])
            self.add("d", self.origin[position], f"reads back other bytes via {via} ({what})",
                     f"got {got[:200].hex()}, want {self.expected[position][:200].hex()}")  # fmt: skip

    async def _read_aggregate(
        self, aggregate: str, revision: int = 0, limit: int = 0, pages: int = 100_000
    ) -> tuple[dict[int, bytes] | None, str]:
        """Pages from `revision` on, as a reader would page (limit 0: the server's default)."""
        seen: dict[int, bytes] = {}
        for _ in range(pages):
            request = service_pb2.ReadAggregateRequest(
                aggregate_id=aggregate, from_revision=revision, limit=limit
            )
            try:
                data = await self.unary["ReadAggregate"](
                    request.SerializeToString(deterministic=True), timeout=CALL_TIMEOUT
                )
                response = service_pb2.ReadAggregateResponse.FromString(data)
                records = recorded_events(data, (1,))
            except (grpc.aio.AioRpcError, DecodeError, ValueError) as error:
                return None, _describe(error)
            seen.update((position, envelope) for position, _, envelope in records)
            if not response.next_revision:
                break
            revision = response.next_revision
        return seen, ""

    async def _subscribe(
        self, after: int | None = None, batch: int = 0, until: int | None = None
    ) -> tuple[dict[int, bytes] | None, str]:
        """Events from the start (or after `after`) until caught up with the head (or `until`)."""
        head = until if until is not None else await self.head()
        request = service_pb2.SubscribeRequest(max_batch_size=batch)
        if after is None:
            request.from_start.SetInParent()
        else:
            request.after_position = after
        seen: dict[int, bytes] = {}
        call = self.subscription(
            request.SerializeToString(deterministic=True), timeout=6 * CALL_TIMEOUT
        )
        try:
            async for data in call:
                message = service_pb2.SubscribeResponse.FromString(data)
                seen.update((p, envelope) for p, _, envelope in recorded_events(data, (1, 1)))
                if until in seen:
                    break
                if (
                    message.WhichOneof("content") == "caught_up"
                    and message.caught_up.position >= head
                ):
                    break
        except (grpc.aio.AioRpcError, DecodeError, ValueError) as error:
            return None, _describe(error)
        finally:
            call.cancel()
        return seen, ""

    async def check_health(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        input_ = Input("Health", "after the run", b"")
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.aio.AioRpcError as error:
            self.add("b", input_, "the health check fails", _describe(error))
            return
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            self.add("b", input_, "the health check does not say SERVING", str(answer))

    # -- the failure message --

    def report(self, rpc: str) -> str:
        lines = [
            f"{len(self.findings)} problems in {self.inputs} {rpc} inputs (seed {SEED}; rerun with"
            f" PIPELINE_EVENTS_FUZZ_SEED={SEED}); status codes seen: {dict(self.codes)}",
        ]
        groups: dict[tuple[str, str, str], list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault((finding.check, finding.rpc, finding.problem), []).append(finding)
        for (check, where, problem), found in sorted(groups.items()):
            kinds = Counter(f.input.kind.split("@")[0] for f in found).most_common(6)
            lines.append(f"[{check}] {where}: {problem} x{len(found)}; input kinds: {kinds}")
            for finding in found[:3]:
                data = finding.input.data
                lines.append(
                    f"    {finding.input.kind}: {finding.detail[:300]}\n"
                    f"      input ({len(data)} bytes): {data[:160].hex()}"
                    + ("..." if len(data) > 160 else "")
                )
        return "\n".join(lines)


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


# --- The tests -----------------------------------------------------------------------------


async def _seed(fuzz: Fuzz, rnd: random.Random, pool: Pool, batches: int = 25) -> None:
    """Realistic events for the reads to find, published like any input (and checked)."""
    for _ in range(batches):
        request = valid_publish(rnd, pool)
        del request.expected_revisions[:]
        await fuzz.publish(Input("Publish", "seed", request.SerializeToString(deterministic=True)))


async def _run(fuzz: Fuzz, rnd: random.Random, rpc: str, pool: Pool, count: int) -> None:
    for _ in range(count):
        if rpc == "PublishStream":
            batches = [make_input(rnd, rpc, pool) for _ in range(rnd.choice([0, 1, 2, 3, 4]))]
            await fuzz.publish_stream([Input(rpc, kind, data) for data, kind in batches])
            continue
        data, kind = make_input(rnd, rpc, pool)
        input_ = Input(rpc, kind, data)
        if rpc == "Publish":
            await fuzz.publish(input_)
        elif rpc == "Subscribe":
            await fuzz.subscribe(input_)
        else:
            await fuzz.read(input_)


CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


@pytest.mark.parametrize("rpc", RPCS)
async def test_hostile_inputs_do_not_break_the_service(rpc: str, running: RunningServer) -> None:
    await fuzz_service(rpc, running, inputs_for(rpc))


async def fuzz_service(rpc: str, running: RunningServer, inputs: int) -> None:
    """Send `inputs` seeded hostile inputs to one RPC of a running server; assert no finding."""
    rnd = random.Random(f"{SEED}/{rpc}")
    pool = Pool.draw(rnd)
    target = f"127.0.0.1:{running.port}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        fuzz = Fuzz(running, channel)
        await _seed(fuzz, rnd, pool)
        await _run(fuzz, rnd, rpc, pool, inputs)
        await fuzz.read_back()
        await fuzz.check_health()
    assert fuzz.expected, "no input was accepted: the fuzzer exercised no read-back"
    assert not fuzz.findings, fuzz.report(rpc)
