"""The package's exceptions: one base, each also a subclass of the matching builtin."""

from __future__ import annotations


class PipelineEventsError(Exception):
    """Base of every error this package raises on purpose."""


class DecodeError(PipelineEventsError, ValueError):
    """Input could not be decoded into an event.

    Attributes:
        field: dotted path of the offending field, when one is to blame.
        line: 1-based line number, when decoding line-oriented input.
    """

    def __init__(self, reason: str, *, field: str | None = None, line: int | None = None):
        self.reason = reason
        self.field = field
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        prefix = f"line {self.line}: " if self.line is not None else ""
        return f"{prefix}{where}{self.reason}"

    def at_line(self, line: int) -> DecodeError:
        """The same error, located at a line of the input."""
        return DecodeError(self.reason, field=self.field, line=line)


class EncodeError(PipelineEventsError, ValueError):
    """An event could not be encoded in the requested format."""


class UnknownEventTypeError(PipelineEventsError, KeyError):
    """An event type name this schema version does not define."""

    def __str__(self) -> str:
        return f"unknown event type: {self.args[0]!r}"
