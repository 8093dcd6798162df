"""The package is typed (py.typed): a user's program type-checks under mypy --strict.

The factories' signatures are spelled out per event (`domain.<Event>.new`);
these tests pin them to the dataclass fields and check what mypy sees.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from pipeline_events import domain
from tests.conftest import ROOT

# A realistic little program (type-checked, never run): the factories, a user
# subclass, both codecs' entry points, the adapter and the sync client.
USER_PROGRAM = '''
"""Record a pipeline run and publish it."""

from __future__ import annotations

import uuid
from typing import assert_type

from adaptive_pipeline.events.v1 import envelope_pb2

import pipeline_events
from pipeline_events import adapter, domain
from pipeline_events.client import EventClient, PublishResult, RecordedEvent
from pipeline_events.codecs import rust_json


class AuditedCreated(domain.PipelineCreated):
    """A user's subclass: its `new` returns the subclass (Self)."""


def record_run(pipeline_id: uuid.UUID) -> list[domain.Event]:
    run = uuid.uuid4()
    created = domain.PipelineCreated.new(pipeline_id, "ingest", 4, created_by="alice")
    assert_type(created, domain.PipelineCreated)
    assert_type(AuditedCreated.new(pipeline_id, "audited", 1), AuditedCreated)
    started = domain.ProcessingStarted.new(
        pipeline_id, run, "/in/a.bin", "/out/a.bin", 4096, domain.SecurityContext()
    )
    chunk = domain.ChunkProcessed.new(pipeline_id, run, uuid.uuid4(), 0, 4096, "compression", 12)
    assert_type(chunk.chunk_size, int)
    violation = domain.SecurityViolation.new(
        pipeline_id, "unauthorized", "no token", domain.SecurityViolationSeverity.HIGH,
        processing_id=run,
    )
    done = domain.ProcessingCompleted.new(pipeline_id, run, domain.ProcessingMetrics(), 2048)
    any_kind: type[domain.Event] = domain.PipelineDeleted
    deleted = any_kind.new(pipeline_id)
    assert_type(deleted, domain.Event)
    return [created, started, chunk, violation, done, deleted]


def round_trip(event: domain.Event) -> domain.Event:
    envelope = adapter.to_envelope(event, correlation_id="run-1")
    assert_type(envelope, envelope_pb2.EventEnvelope)
    wire: bytes = envelope.SerializeToString()
    assert wire
    text: str = rust_json.encode(event)
    return rust_json.decode(text)


def publish(client: EventClient, events: list[domain.Event]) -> int:
    result: PublishResult = client.publish(events, correlation_id="run-1")
    history: list[RecordedEvent] = client.read_aggregate(events[0].pipeline_id, limit=10)
    for recorded in history:
        event = recorded.event
        if isinstance(event, domain.ChunkProcessed):
            print(recorded.revision, event.chunk_sequence + 1)
    print(pipeline_events.__version__, result)
    return len(history)


def main() -> None:
    events = [round_trip(event) for event in record_run(uuid.uuid4())]
    with EventClient("127.0.0.1:50051", timeout=5.0) as client:
        publish(client, events)


if __name__ == "__main__":
    main()
'''

# The same factories misused: each line must be one mypy error.
BAD_PROGRAM = """
import uuid

from pipeline_events import domain

pid = uuid.uuid4()
created = domain.PipelineCreated.new(pid, "ingest", "four")
chunk = domain.ChunkProcessed.new(pid, uuid.uuid4())
deleted: domain.PipelineDeleted = domain.PipelineCreated.new(pid, "ingest", 4)
violation = domain.SecurityViolation.new(pid, "x", "y", domain.SecurityViolationSeverity.LOW, user="m")
"""
BAD_PROGRAM_ERRORS = [
    'bad.py:7: error: Argument 3 to "new" of "PipelineCreated" has incompatible type "str"; '
    'expected "int"  [arg-type]',
    'bad.py:8: error: Missing positional arguments "chunk_id", "chunk_sequence", "chunk_size", '
    '"stage_name", "processing_time_ms" in call to "new" of "ChunkProcessed"  [call-arg]',
    'bad.py:9: error: Incompatible types in assignment (expression has type "PipelineCreated", '
    'variable has type "PipelineDeleted")  [assignment]',
    'bad.py:10: error: Unexpected keyword argument "user" for "new" of "SecurityViolation"  '
    "[call-arg]",
]


def _mypy(tmp_path: Path, name: str, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(textwrap.dedent(source))
    # The installed (editable) package is found through site-packages and its
    # py.typed. The generated bindings ship .pyi stubs but no py.typed marker,
    # so they are put on MYPYPATH here (a wheel's user would see them as Any).
    env = {**os.environ, "MYPYPATH": str(ROOT / "generated" / "python")}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / ".mypy_cache"),
         "--no-color-output", "--no-pretty", name],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def test_a_user_program_passes_mypy_strict(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "user.py", USER_PROGRAM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


def test_mypy_strict_reports_misused_factories(tmp_path: Path) -> None:
    result = _mypy(tmp_path, "bad.py", BAD_PROGRAM)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error: " in line]
    assert errors == BAD_PROGRAM_ERRORS, result.stdout


def test_package_ships_py_typed() -> None:
    import pipeline_events

    assert (Path(pipeline_events.__file__).parent / "py.typed").is_file()


def test_pipeline_created_signature_is_the_seeds() -> None:
    signature = inspect.signature(domain.PipelineCreated.new)
    assert list(signature.parameters) == [
        "pipeline_id", "pipeline_name", "stage_count", "created_by",
    ]  # fmt: skip
    assert signature.parameters["created_by"].default is None
    assert signature.parameters["stage_count"].annotation == "int"
    assert signature.return_annotation == "Self"


@pytest.mark.parametrize("cls", domain.EVENT_CLASSES, ids=lambda c: c.__name__)
def test_factory_signature_matches_the_fields(cls: type[domain.Event]) -> None:
    parameters = inspect.signature(cls.new).parameters
    assert tuple(parameters) == ("pipeline_id", *cls.factory_parameters())
    assert cls.new is not domain.Event.new
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, parameter in parameters.items():
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        # Same annotation text as the field (this module and domain both defer annotations).
        assert parameter.annotation == fields[name].type, name
        if name == "pipeline_id":
            assert parameter.default is inspect.Parameter.empty
        elif fields[name].default is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty, name
        else:  # optional fields default to None; PipelineUpdated.changes to ()
            assert parameter.default == fields[name].default, name


@pytest.mark.parametrize("cls", domain.EVENT_CLASSES, ids=lambda c: c.__name__)
def test_factory_rejects_too_many_positional_arguments_as_before(
    cls: type[domain.Event],
) -> None:
    most = len(cls.factory_parameters()) + 1
    extra = [None] * most
    with pytest.raises(TypeError, match=rf"^{cls.__name__}\.new takes at most {most} positional"):
        cls.new(uuid.uuid4(), *extra)


def test_factories_take_keywords_and_reject_duplicates_and_unknowns() -> None:
    pid, run = uuid.uuid4(), uuid.uuid4()
    event = domain.ProcessingCancelled.new(
        pipeline_id=pid, processing_id=run, reason="superseded", cancelled_by="bob"
    )
    assert (event.pipeline_id, event.processing_id, event.cancelled_by) == (pid, run, "bob")
    with pytest.raises(TypeError, match="multiple values"):
        domain.ProcessingCancelled.new(pid, run, "superseded", reason="again")  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword"):
        domain.ProcessingCancelled.new(pid, run, "superseded", event_id=uuid.uuid4())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 1 required"):
        domain.ProcessingCancelled.new(pid, run)  # type: ignore[call-arg]


def test_a_subclass_factory_builds_the_subclass() -> None:
    class Audited(domain.PipelineCreated):
        pass

    event = Audited.new(uuid.uuid4(), "audited", 2)
    assert type(event) is Audited and event.stage_count == 2 and event.created_by is None
