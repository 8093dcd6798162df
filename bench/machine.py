"""What machine a benchmark ran on, printed above every table."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path


def describe() -> str:
    """One line: date, CPU model, cores, Python, protobuf (and its backend), grpcio, SQLite."""
    import sqlite3
    from importlib import metadata

    from google.protobuf.internal import api_implementation

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{dt.date.today().isoformat()} · {cpu} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · protobuf {version('protobuf')}"
        f" ({api_implementation.Type()}) · grpcio {version('grpcio')} · SQLite {sqlite3.sqlite_version}"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with right-aligned numbers."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
