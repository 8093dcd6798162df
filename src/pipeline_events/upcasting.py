"""Schema evolution: upcasters `(event type, from version) -> function`, applied on read.

An upcaster is a plain function named like `upcast_v1_v2` that takes an
envelope at version N and returns it at version N+1. Readers chain them, so a
consumer always sees the current version of every event type it knows.
"""

from __future__ import annotations

from collections.abc import Callable

from adaptive_pipeline.events.v1 import envelope_pb2

from pipeline_events.errors import PipelineEventsError

Upcaster = Callable[[envelope_pb2.EventEnvelope], envelope_pb2.EventEnvelope]
_PAYLOAD = envelope_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"]
# Payload case ("chunk_processed") by EventType value, for the registry's keys.
_CASE_BY_TYPE = {field.number - 100: field.name for field in _PAYLOAD.fields}


class UpcastError(PipelineEventsError, ValueError):
    """An upcaster failed or did not produce the next version."""


class Upcasters:
    """A registry of upcasters, keyed by payload case and the version they upgrade from."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], Upcaster] = {}

    def register(self, case: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register `function` to upgrade `case` events from `from_version`.

        Args:
            case: the payload case, e.g. "chunk_processed".
            from_version: the schema version the function reads.
        """
        if case not in {field.name for field in _PAYLOAD.fields}:
            raise ValueError(f"no payload case {case!r} in EventEnvelope")

        def decorate(function: Upcaster) -> Upcaster:
            key = (case, from_version)
            if key in self._by_key:
                raise ValueError(f"an upcaster for {case} v{from_version} is already registered")
            self._by_key[key] = function
            return function

        return decorate

    def current_version(self, case: str) -> int:
        """The version readers of `case` end up with (1 plus one per registered step)."""
        version = 1
        while (case, version) in self._by_key:
            version += 1
        return version

    def upcast(self, envelope: envelope_pb2.EventEnvelope) -> envelope_pb2.EventEnvelope:
        """The envelope at the current version of its type; the input is never modified."""
        case = envelope.WhichOneof("payload")
        if not self._by_key or case is None:
            return envelope
        while (step := self._by_key.get((case, envelope.schema_version))) is not None:
            version = envelope.schema_version
            copy = envelope_pb2.EventEnvelope()
            copy.CopyFrom(envelope)
            try:
                envelope = step(copy)
            except Exception as error:
                raise UpcastError(f"upcasting {case} v{version}: {error}") from error
            if envelope.WhichOneof("payload") != case:
                raise UpcastError(f"upcasting {case} v{version} changed the payload case")
            envelope.schema_version = version + 1
        return envelope


#: The registry readers use by default. Every event type is at version 1 today.
DEFAULT_UPCASTERS = Upcasters()
