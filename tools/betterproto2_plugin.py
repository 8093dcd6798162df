"""protoc plugin: betterproto2's compiler with google.protobuf.Timestamp kept lossless.

betterproto2 0.10 turns every Timestamp field into a `datetime.datetime`,
which stops at microseconds, so nanosecond `occurred_at` values would change
on a round trip (upstream: betterproto/python-betterproto2 PR #213, open).
This wrapper keeps Timestamp fields as the Timestamp message (seconds +
nanos, with `to_datetime()` / `from_datetime()` helpers) and gives that
message a canonical proto3 JSON form with all nine digits. Everything else is
the pinned compiler, unchanged.
"""

from __future__ import annotations

import datetime
import re
import typing

import betterproto2
from betterproto2_compiler import known_types
from betterproto2_compiler.plugin.main import main as compiler_main

TIMESTAMP = ("google.protobuf", "Timestamp")


class Timestamp:
    """Method sources injected into the generated Timestamp message (inspect.getsource)."""

    seconds: int
    nanos: int

    @classmethod
    def from_datetime(cls, dt: datetime.datetime) -> typing.Any:
        if not dt.tzinfo:
            raise ValueError("datetime must be timezone aware")
        offset = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        seconds = offset.days * 86400 + offset.seconds
        return cls(seconds=seconds, nanos=offset.microseconds * 1000)  # type: ignore[call-arg]

    def to_datetime(self) -> datetime.datetime:
        # datetime stops at microseconds: the nanoseconds below them are dropped here only.
        offset = datetime.timedelta(seconds=self.seconds, microseconds=self.nanos // 1000)
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + offset

    def to_dict(
        self,
        *,
        output_format: betterproto2.OutputFormat = betterproto2.OutputFormat.PROTO_JSON,
        casing: betterproto2.Casing = betterproto2.Casing.CAMEL,
        include_default_values: bool = False,
    ) -> typing.Any:
        if output_format != betterproto2.OutputFormat.PROTO_JSON:
            return super().to_dict(  # type: ignore[misc]
                output_format=output_format,
                casing=casing,
                include_default_values=include_default_values,
            )
        whole = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=self.seconds)
        text = f"{whole.year:04d}-{whole:%m-%dT%H:%M:%S}"
        # Canonical proto3 JSON: 0, 3, 6 or 9 fractional digits.
        if self.nanos == 0:
            return text + "Z"
        if self.nanos % 1_000_000 == 0:
            return f"{text}.{self.nanos // 1_000_000:03d}Z"
        if self.nanos % 1000 == 0:
            return f"{text}.{self.nanos // 1000:06d}Z"
        return f"{text}.{self.nanos:09d}Z"

    @classmethod
    def from_dict(cls, value: typing.Any, *, ignore_unknown_fields: bool = False) -> typing.Any:
        if not isinstance(value, str):
            return super().from_dict(  # type: ignore[misc]
                value, ignore_unknown_fields=ignore_unknown_fields
            )
        match = re.fullmatch(r"([^.]+T[0-9:]+)(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})", value)
        if match is None:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
        whole, fraction, zone = match.groups()
        moment = datetime.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
        offset = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        seconds = offset.days * 86400 + offset.seconds
        return cls(seconds=seconds, nanos=int((fraction or "0").ljust(9, "0")))  # type: ignore[call-arg]


def main() -> None:
    del known_types.WRAPPED_TYPES[TIMESTAMP]
    known_types.KNOWN_METHODS[TIMESTAMP] = [
        Timestamp.from_datetime,
        Timestamp.to_datetime,
        Timestamp.to_dict,
        Timestamp.from_dict,
    ]
    compiler_main()


if __name__ == "__main__":
    main()
