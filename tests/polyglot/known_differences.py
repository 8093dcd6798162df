"""The golden vectors' known differences of one runtime (manifest "known_differences")."""

from __future__ import annotations

from typing import Any


def expected_failures(vectors: list[dict[str, Any]], runtime: str) -> dict[str, set[str]]:
    """Vector name -> the checks ("binary", "json") known to fail on `runtime`.

    `runtime` is the start of the entries' "runtime" ("protobuf-go", "protobuf-java"). A
    consumer pins these as expected, and must fail when one of them stops failing.
    """
    expected: dict[str, set[str]] = {}
    for vector in vectors:
        for difference in vector.get("known_differences", ()):
            if difference["runtime"].startswith(runtime):
                expected.setdefault(vector["name"], set()).update(difference["checks"])
    return expected
