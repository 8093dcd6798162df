"""The domain: the seed's 16 pipeline events, their shared types, and the DomainEvent protocol.

Plain frozen dataclasses with no dependency on generated code; the adapter
(`pipeline_events.adapter`) maps them to and from the protobuf bindings.
Field names and order follow the upstream Rust structs exactly.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast, runtime_checkable

from pipeline_events.timestamps import NanoDatetime

CURRENT_SCHEMA_VERSION = 1


@runtime_checkable
class DomainEvent(Protocol):
    """The seed's `DomainEvent` trait."""

    @property
    def event_id(self) -> uuid.UUID: ...

    @property
    def aggregate_id(self) -> uuid.UUID: ...

    @property
    def event_type(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def version(self) -> int: ...


class EventCategory(enum.IntEnum):
    """The seed's four event categories (values match the proto enum)."""

    PIPELINE_LIFECYCLE = 1
    PROCESSING = 2
    STAGE = 3
    OPERATIONAL = 4


class SecurityLevel(enum.IntEnum):
    """Data sensitivity, ordered (upstream `SecurityLevel`)."""

    PUBLIC = 1
    INTERNAL = 2
    MEDIUM = 3
    CONFIDENTIAL = 4
    SECRET = 5
    TOP_SECRET = 6


class SecurityViolationSeverity(enum.IntEnum):
    """How serious a security violation is."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class StandardPermission(enum.IntEnum):
    """Upstream's built-in permissions."""

    READ = 1
    WRITE = 2
    EXECUTE = 3
    ADMIN = 4
    ENCRYPT = 5
    DECRYPT = 6
    COMPRESS = 7
    DECOMPRESS = 8


@dataclass(frozen=True, slots=True)
class CustomPermission:
    """Upstream's `Permission::Custom(String)`."""

    name: str


Permission = StandardPermission | CustomPermission


@dataclass(frozen=True, slots=True)
class Duration:
    """Rust's `std::time::Duration`: u64 seconds and nanoseconds below one second."""

    secs: int = 0
    nanos: int = 0


def _now() -> NanoDatetime:
    return NanoDatetime.now()


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityContext:
    """Upstream `SecurityContext`; the defaults are upstream's `Default`."""

    user_id: str | None = None
    session_id: uuid.UUID = field(default_factory=uuid.uuid4)
    permissions: tuple[Permission, ...] = (StandardPermission.READ,)
    encryption_key_id: str | None = None
    integrity_required: bool = False
    audit_enabled: bool = True
    security_level: SecurityLevel = SecurityLevel.INTERNAL
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageMetrics:
    """Upstream `StageMetrics`."""

    stage_name: str = ""
    bytes_processed: int = 0
    processing_time: Duration = Duration()
    throughput: float = 0.0
    error_count: int = 0
    success_rate: float = 0.0
    memory_usage: int | None = None
    cpu_usage: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingMetrics:
    """Upstream `ProcessingMetrics` (without its two in-process `Instant` fields)."""

    bytes_processed: int = 0
    bytes_total: int = 0
    chunks_processed: int = 0
    chunks_total: int = 0
    start_time_rfc3339: str | None = None
    end_time_rfc3339: str | None = None
    processing_duration: Duration | None = None
    throughput_bytes_per_second: float = 0.0
    compression_ratio: float | None = None
    error_count: int = 0
    warning_count: int = 0
    input_file_size_bytes: int = 0
    output_file_size_bytes: int = 0
    input_file_checksum: str | None = None
    output_file_checksum: str | None = None
    stage_metrics: dict[str, StageMetrics] = field(default_factory=dict)


COMMON_FIELDS = ("event_id", "pipeline_id", "occurred_at", "version")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event has, and the DomainEvent protocol for all 16 events.

    Constructing an event without `event_id`, `occurred_at` or `version` fills
    them as the seed's factories do (fresh v4 id, now, version 1).
    """

    CATEGORY: ClassVar[EventCategory]

    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    pipeline_id: uuid.UUID
    occurred_at: datetime = field(default_factory=_now)
    version: int = CURRENT_SCHEMA_VERSION

    @property
    def aggregate_id(self) -> uuid.UUID:
        """The pipeline id: every event belongs to the pipeline aggregate."""
        return self.pipeline_id

    @property
    def event_type(self) -> str:
        """The seed's event type name, e.g. "ChunkProcessed"."""
        return type(self).__name__

    @property
    def category(self) -> EventCategory:
        """The seed's category of this event."""
        return self.CATEGORY

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """The event's own fields (not the common ones), in upstream declaration order."""
        return tuple(f.name for f in fields(cls) if f.name not in COMMON_FIELDS)

    @classmethod
    def new(cls, pipeline_id: uuid.UUID, *args: Any, **kwargs: Any) -> Self:
        """The seed's factory: a fresh v4 event id, now, version 1.

        Positional arguments after `pipeline_id` are the event's required own
        fields in declaration order, then its optional ones (the seed's
        parameter order, e.g. `PipelineCreated.new(pid, name, 5, "alice")`).

        Each of the 16 events overrides this with its exact, typed signature;
        this generic form serves code that holds only a `type[Event]`.
        """
        # (The ignores here and below: mypy checks a class object against Hashable
        # with the instances' __hash__, and reports a false arg-type error.)
        order = _factory_parameters(cls)  # type: ignore[arg-type]
        if len(args) > len(order):
            raise TypeError(
                f"{cls.__name__}.new takes at most {len(order) + 1} positional arguments"
            )
        for name, value in zip(order, args, strict=False):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}.new got multiple values for {name!r}")
            kwargs[name] = value
        return _create(cls, pipeline_id, **kwargs)

    @classmethod
    def factory_parameters(cls) -> tuple[str, ...]:
        """Own fields in `new`'s positional order: required ones, then optional ones."""
        return _factory_parameters(cls)  # type: ignore[arg-type]


@functools.cache
def _factory_parameters(cls: type[Event]) -> tuple[str, ...]:
    # Computed once per class: the generic `new` may be on the publish hot path.
    own = [f for f in fields(cls) if f.name not in COMMON_FIELDS]
    required = [f.name for f in own if not _is_optional(f.type)]
    optional = [f.name for f in own if _is_optional(f.type)]
    return tuple(required + optional)


def _is_optional(annotation: Any) -> bool:
    return isinstance(annotation, str) and annotation.endswith("| None")


_E = TypeVar("_E", bound=Event)
_F = TypeVar("_F", bound=Callable[..., Any])


def _create(cls: type[_E], pipeline_id: uuid.UUID, /, **own: Any) -> _E:
    """What every factory does: the own fields plus a fresh v4 id, now and version 1."""
    return cls(
        event_id=uuid.uuid4(),
        pipeline_id=pipeline_id,
        occurred_at=NanoDatetime.now(),
        version=CURRENT_SCHEMA_VERSION,
        **own,
    )


def _seed_factory(new: _F) -> _F:
    """Mark an event's typed `new`, keeping the seed factory's too-many-arguments error.

    Why 16 explicit `new` methods: the signature is what mypy, IDEs and
    `inspect.signature` must see, and no generic form (a `ParamSpec`, a
    dataclass transform) can express "required fields positionally, in the
    seed's order, then the optional ones" for mypy --strict. So each event
    spells its signature out (tests/test_typing.py checks that it matches
    `factory_parameters()` and the fields' types) and forwards to `_create`.

    This wrapper only keeps the generic factory's message for too many
    positional arguments ("... takes at most N positional arguments"); the
    arity is read once here, so a call costs one length check. Typed as the
    identity, so checkers see the wrapped signature; `functools.wraps` sets
    `__wrapped__`, which `inspect.signature` follows.
    """
    most = new.__code__.co_argcount - 1  # pipeline_id and the own fields, not cls

    @functools.wraps(new)
    def checked(cls: type[Event], /, *args: Any, **kwargs: Any) -> Any:
        if len(args) > most:
            raise TypeError(f"{cls.__name__}.new takes at most {most} positional arguments")
        return new(cls, *args, **kwargs)

    return cast(_F, checked)


# --- Pipeline lifecycle -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineCreated(Event):
    """A new pipeline definition was created."""

    CATEGORY = EventCategory.PIPELINE_LIFECYCLE
    pipeline_name: str
    stage_count: int
    created_by: str | None = None

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        pipeline_name: str,
        stage_count: int,
        created_by: str | None = None,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            pipeline_name=pipeline_name,
            stage_count=stage_count,
            created_by=created_by,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineUpdated(Event):
    """A pipeline's configuration was changed."""

    CATEGORY = EventCategory.PIPELINE_LIFECYCLE
    changes: tuple[str, ...] = ()
    updated_by: str | None = None

    @classmethod
    @_seed_factory
    def new(
        cls, pipeline_id: uuid.UUID, changes: tuple[str, ...] = (), updated_by: str | None = None
    ) -> Self:
        return _create(cls, pipeline_id, changes=changes, updated_by=updated_by)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineDeleted(Event):
    """A pipeline was removed."""

    CATEGORY = EventCategory.PIPELINE_LIFECYCLE
    deleted_by: str | None = None

    @classmethod
    @_seed_factory
    def new(cls, pipeline_id: uuid.UUID, deleted_by: str | None = None) -> Self:
        return _create(cls, pipeline_id, deleted_by=deleted_by)


# --- Processing lifecycle -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingStarted(Event):
    """A run of the pipeline over one input file began."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    input_path: str
    output_path: str
    file_size: int
    security_context: SecurityContext

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        input_path: str,
        output_path: str,
        file_size: int,
        security_context: SecurityContext,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            input_path=input_path,
            output_path=output_path,
            file_size=file_size,
            security_context=security_context,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingCompleted(Event):
    """A run finished successfully."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    metrics: ProcessingMetrics
    output_size: int

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        metrics: ProcessingMetrics,
        output_size: int,
    ) -> Self:
        return _create(
            cls, pipeline_id, processing_id=processing_id, metrics=metrics, output_size=output_size
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingFailed(Event):
    """A run ended with an error."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    error_message: str
    error_code: str
    stage_name: str | None = None
    partial_metrics: ProcessingMetrics | None = None

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        error_message: str,
        error_code: str,
        stage_name: str | None = None,
        partial_metrics: ProcessingMetrics | None = None,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            error_message=error_message,
            error_code=error_code,
            stage_name=stage_name,
            partial_metrics=partial_metrics,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingPaused(Event):
    """A run was suspended."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    reason: str
    checkpoint_data: bytes | None = None

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        reason: str,
        checkpoint_data: bytes | None = None,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            reason=reason,
            checkpoint_data=checkpoint_data,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingResumed(Event):
    """A paused run continued."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    resumed_from_checkpoint: bool

    @classmethod
    @_seed_factory
    def new(
        cls, pipeline_id: uuid.UUID, processing_id: uuid.UUID, resumed_from_checkpoint: bool
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            resumed_from_checkpoint=resumed_from_checkpoint,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingCancelled(Event):
    """A run was stopped on request."""

    CATEGORY = EventCategory.PROCESSING
    processing_id: uuid.UUID
    reason: str
    cancelled_by: str | None = None

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        reason: str,
        cancelled_by: str | None = None,
    ) -> Self:
        return _create(
            cls, pipeline_id, processing_id=processing_id, reason=reason, cancelled_by=cancelled_by
        )


# --- Stages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StageStarted(Event):
    """A stage of a run began."""

    CATEGORY = EventCategory.STAGE
    processing_id: uuid.UUID
    stage_id: uuid.UUID
    stage_name: str
    stage_type: str

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        stage_id: uuid.UUID,
        stage_name: str,
        stage_type: str,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            stage_id=stage_id,
            stage_name=stage_name,
            stage_type=stage_type,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StageCompleted(Event):
    """A stage of a run finished successfully."""

    CATEGORY = EventCategory.STAGE
    processing_id: uuid.UUID
    stage_id: uuid.UUID
    stage_name: str
    processing_time_ms: int
    bytes_processed: int

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        stage_id: uuid.UUID,
        stage_name: str,
        processing_time_ms: int,
        bytes_processed: int,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            stage_id=stage_id,
            stage_name=stage_name,
            processing_time_ms=processing_time_ms,
            bytes_processed=bytes_processed,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailed(Event):
    """A stage of a run ended with an error."""

    CATEGORY = EventCategory.STAGE
    processing_id: uuid.UUID
    stage_id: uuid.UUID
    stage_name: str
    error_message: str
    error_code: str

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        stage_id: uuid.UUID,
        stage_name: str,
        error_message: str,
        error_code: str,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            stage_id=stage_id,
            stage_name=stage_name,
            error_message=error_message,
            error_code=error_code,
        )


# --- Operational --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkProcessed(Event):
    """One chunk passed through one stage."""

    CATEGORY = EventCategory.OPERATIONAL
    processing_id: uuid.UUID
    chunk_id: uuid.UUID
    chunk_sequence: int
    chunk_size: int
    stage_name: str
    processing_time_ms: int

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        chunk_id: uuid.UUID,
        chunk_sequence: int,
        chunk_size: int,
        stage_name: str,
        processing_time_ms: int,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            chunk_id=chunk_id,
            chunk_sequence=chunk_sequence,
            chunk_size=chunk_size,
            stage_name=stage_name,
            processing_time_ms=processing_time_ms,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsUpdated(Event):
    """A run published a new snapshot of its metrics."""

    CATEGORY = EventCategory.OPERATIONAL
    processing_id: uuid.UUID
    metrics: ProcessingMetrics

    @classmethod
    @_seed_factory
    def new(
        cls, pipeline_id: uuid.UUID, processing_id: uuid.UUID, metrics: ProcessingMetrics
    ) -> Self:
        return _create(cls, pipeline_id, processing_id=processing_id, metrics=metrics)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityViolation(Event):
    """A security policy was violated."""

    CATEGORY = EventCategory.OPERATIONAL
    processing_id: uuid.UUID | None = None
    violation_type: str
    description: str
    severity: SecurityViolationSeverity
    user_id: str | None = None
    source_ip: str | None = None

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        violation_type: str,
        description: str,
        severity: SecurityViolationSeverity,
        processing_id: uuid.UUID | None = None,
        user_id: str | None = None,
        source_ip: str | None = None,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            violation_type=violation_type,
            description=description,
            severity=severity,
            processing_id=processing_id,
            user_id=user_id,
            source_ip=source_ip,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceExhausted(Event):
    """A run hit a resource limit."""

    CATEGORY = EventCategory.OPERATIONAL
    processing_id: uuid.UUID
    resource_type: str
    current_usage: int
    limit: int
    action_taken: str

    @classmethod
    @_seed_factory
    def new(
        cls,
        pipeline_id: uuid.UUID,
        processing_id: uuid.UUID,
        resource_type: str,
        current_usage: int,
        limit: int,
        action_taken: str,
    ) -> Self:
        return _create(
            cls,
            pipeline_id,
            processing_id=processing_id,
            resource_type=resource_type,
            current_usage=current_usage,
            limit=limit,
            action_taken=action_taken,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent:
    """An event whose payload case this schema version does not know.

    It keeps the envelope's bytes so it can be stored and relayed unchanged.
    """

    event_id: uuid.UUID
    pipeline_id: uuid.UUID
    occurred_at: datetime
    version: int
    type_number: int
    envelope_bytes: bytes

    @property
    def aggregate_id(self) -> uuid.UUID:
        """The pipeline id."""
        return self.pipeline_id

    @property
    def event_type(self) -> str:
        """`Unknown(N)`, N being the envelope's EventType number."""
        return f"Unknown({self.type_number})"


#: The 16 event classes in the seed's order (EventType value = index + 1).
EVENT_CLASSES: tuple[type[Event], ...] = (
    PipelineCreated,
    PipelineUpdated,
    PipelineDeleted,
    ProcessingStarted,
    ProcessingCompleted,
    ProcessingFailed,
    ProcessingPaused,
    ProcessingResumed,
    ProcessingCancelled,
    StageStarted,
    StageCompleted,
    StageFailed,
    ChunkProcessed,
    MetricsUpdated,
    SecurityViolation,
    ResourceExhausted,
)
EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_CLASSES}
