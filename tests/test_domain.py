"""The DomainEvent protocol, the seed's factories and categories, and NanoDatetime."""

from __future__ import annotations

import datetime as dt
import pickle
import uuid

import pytest

from pipeline_events import domain
from pipeline_events.domain import EventCategory
from pipeline_events.timestamps import NanoDatetime

# The seed's category lists (module docs of pipeline_events.rs).
SEED_CATEGORIES = {
    EventCategory.PIPELINE_LIFECYCLE: ["PipelineCreated", "PipelineUpdated", "PipelineDeleted"],
    EventCategory.PROCESSING: [
        "ProcessingStarted", "ProcessingCompleted", "ProcessingFailed",
        "ProcessingPaused", "ProcessingResumed", "ProcessingCancelled",
    ],
    EventCategory.STAGE: ["StageStarted", "StageCompleted", "StageFailed"],
    EventCategory.OPERATIONAL: [
        "ChunkProcessed", "MetricsUpdated", "SecurityViolation", "ResourceExhausted",
    ],
}  # fmt: skip
PID = uuid.UUID("01945e7b-8ba3-d938-5f1b-e752169601a1")
RUN = uuid.uuid4()

# Minimal required arguments of each event's factory, after the pipeline id.
FACTORY_ARGS: dict[type[domain.Event], tuple[object, ...]] = {
    domain.PipelineCreated: ("sales", 5),
    domain.PipelineUpdated: ((),),
    domain.PipelineDeleted: (),
    domain.ProcessingStarted: (RUN, "/in", "/out", 10, domain.SecurityContext()),
    domain.ProcessingCompleted: (RUN, domain.ProcessingMetrics(), 5),
    domain.ProcessingFailed: (RUN, "boom", "E1"),
    domain.ProcessingPaused: (RUN, "maintenance"),
    domain.ProcessingResumed: (RUN, True),
    domain.ProcessingCancelled: (RUN, "superseded"),
    domain.StageStarted: (RUN, uuid.uuid4(), "compression", "compression"),
    domain.StageCompleted: (RUN, uuid.uuid4(), "compression", 12, 4096),
    domain.StageFailed: (RUN, uuid.uuid4(), "encryption", "no key", "E_KEY"),
    domain.ChunkProcessed: (RUN, uuid.uuid4(), 0, 1024, "compression", 3),
    domain.MetricsUpdated: (RUN, domain.ProcessingMetrics()),
    domain.SecurityViolation: ("unauthenticated", "no token", domain.SecurityViolationSeverity.LOW),
    domain.ResourceExhausted: (RUN, "memory", 10, 8, "throttled"),
}


def test_event_classes_are_the_seed_events_in_categories() -> None:
    assert {cls.__name__: cls.CATEGORY for cls in domain.EVENT_CLASSES} == {
        name: category for category, names in SEED_CATEGORIES.items() for name in names
    }
    assert list(domain.EVENT_TYPES) == [n for names in SEED_CATEGORIES.values() for n in names]


@pytest.mark.parametrize("cls", domain.EVENT_CLASSES, ids=lambda c: c.__name__)
def test_every_factory_behaves_like_the_seed(cls: type[domain.Event]) -> None:
    before = NanoDatetime.now()
    event = cls.new(PID, *FACTORY_ARGS[cls])
    assert isinstance(event, domain.DomainEvent)
    assert event.event_type == cls.__name__
    assert event.aggregate_id == PID == event.pipeline_id
    assert event.event_id.version == 4
    assert event.version == 1
    assert event.occurred_at.tzinfo is not None and event.occurred_at.utcoffset() == dt.timedelta(0)
    assert before <= event.occurred_at <= NanoDatetime.now()
    assert event.category is cls.CATEGORY
    assert cls.new(PID, *FACTORY_ARGS[cls]).event_id != event.event_id


def test_seed_factory_signatures_take_required_then_optional_fields() -> None:
    created = domain.PipelineCreated.new(PID, "sales", 5, "alice")
    assert (created.pipeline_name, created.stage_count, created.created_by) == ("sales", 5, "alice")
    violation = domain.SecurityViolation.new(
        PID, "unauthorized", "no write permission", domain.SecurityViolationSeverity.HIGH
    )
    assert violation.processing_id is None and violation.user_id is None
    assert violation.violation_type == "unauthorized"
    with pytest.raises(TypeError, match="at most"):
        domain.PipelineDeleted.new(PID, "x", "y")
    with pytest.raises(TypeError, match="multiple values"):
        domain.PipelineDeleted.new(PID, "x", deleted_by="y")


def test_events_are_immutable() -> None:
    event = domain.PipelineDeleted.new(PID)
    with pytest.raises(AttributeError):
        event.deleted_by = "mallory"  # type: ignore[misc]


def test_nano_datetime_keeps_nanoseconds_and_compares_by_them() -> None:
    a = NanoDatetime.from_epoch_ns(1_736_937_045_123_456_789)
    b = NanoDatetime.from_epoch_ns(1_736_937_045_123_456_788)
    assert a.nanosecond == 123_456_789 and a.microsecond == 123_456
    assert a.epoch_ns == 1_736_937_045_123_456_789
    assert a != b and b < a and a > b and len({a, b}) == 2
    assert a == pickle.loads(pickle.dumps(a))
    plain = dt.datetime(2025, 1, 15, 10, 30, 45, 123_456, tzinfo=dt.UTC)
    assert NanoDatetime.from_datetime(plain) == plain != a


def test_nano_datetime_converts_offsets_to_utc_and_rejects_naive() -> None:
    plus_two = dt.datetime(2025, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    utc = NanoDatetime.from_datetime(plus_two)
    assert (utc.hour, utc.utcoffset()) == (10, dt.timedelta(0))
    with pytest.raises(ValueError, match="naive"):
        NanoDatetime.from_datetime(dt.datetime(2025, 1, 1))
    before_epoch = NanoDatetime.from_epoch_ns(-1)
    assert (before_epoch.year, before_epoch.nanosecond, before_epoch.epoch_seconds) == (
        1969, 999_999_999, -1
    )  # fmt: skip
