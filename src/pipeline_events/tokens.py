"""Tokens and principals for `serve --auth` (importable without the grpc extra: the CLI's
`token create` needs none of it). See `service.auth` for how the server uses them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tomllib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline_events.errors import PipelineEventsError

ROLES = ("publisher", "subscriber", "admin")
#: The role each RPC needs (admin may call every one).
RPC_ROLES = {
    "Publish": "publisher",
    "PublishStream": "publisher",
    "ReadAggregate": "subscriber",
    "Subscribe": "subscriber",
    "GetPipelineState": "subscriber",
    "GetProcessingState": "subscriber",
    "ListProcessingRuns": "subscriber",
    "GetServerInfo": "subscriber",
    # ConsumerGroupService: members and readers of groups; admin creates, changes,
    # deletes them and replays or discards their parked events.
    "Consume": "subscriber",
    "ListConsumerGroups": "subscriber",
    "GetConsumerGroup": "subscriber",
    "ListParkedEvents": "subscriber",
}
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
TOKEN = re.compile(r"pe_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{32,128})")  # pe_<token id>_<secret>


_KEYS = ("name", "token_id", "token_hash", "roles", "pipelines", "max_streams", "publish_rate")


class AuthFileError(PipelineEventsError, ValueError):
    """A principals file that cannot be used (named, with the line's problem)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to, what it may do, and where."""

    name: str
    token_id: str
    token_hash: str
    roles: frozenset[str]
    pipelines: frozenset[str] = frozenset()  # empty: every pipeline
    max_streams: int | None = None  # None: the server's --max-streams-per-caller
    publish_rate: float | None = None  # events per second; None: the server's --publish-rate

    def may_call(self, rpc: str) -> bool:
        return "admin" in self.roles or RPC_ROLES.get(rpc, "admin") in self.roles

    def may_touch(self, pipeline_ids: Iterable[str]) -> bool:
        if not self.pipelines:
            return True
        return all(p.lower() in self.pipelines for p in pipeline_ids)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """The scrypt hash line of a token's secret."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT)
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}$"
        f"{encode(salt).decode()}${encode(digest).decode()}"
    )


def verify_secret(secret: str, line: str) -> bool:
    """Whether `secret` matches a `hash_secret` line (in constant time)."""
    try:
        scheme, n, r, p, salt, digest = line.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
            dklen=len(expected),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


def new_token() -> tuple[str, str, str]:
    """(token, token id, hash line) of a fresh token."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    token_id = "".join(secrets.choice(alphabet) for _ in range(8))
    secret = secrets.token_urlsafe(32)
    return f"pe_{token_id}_{secret}", token_id, hash_secret(secret)


def principal_toml(name: str, token_id: str, hash_line: str, roles: list[str],
                   pipelines: list[str]) -> str:  # fmt: skip
    """The lines of a principal, to add to the principals file."""
    lines = [
        "[[principal]]",
        f"name = {json.dumps(name)}",  # a JSON string is a TOML basic string, escapes and all
        f'token_id = "{token_id}"',
        f'token_hash = "{hash_line}"',
        "roles = [" + ", ".join(f'"{r}"' for r in roles) + "]",
    ]
    if pipelines:
        lines.append("pipelines = [" + ", ".join(f'"{p}"' for p in pipelines) + "]")
    return "\n".join(lines) + "\n"


def load_principals(path: Path) -> dict[str, Principal]:
    """The principals of a file, by token id.

    Raises:
        AuthFileError: unreadable, not TOML, or a principal that cannot be used.
    """
    try:
        mode = path.stat().st_mode
        if mode & 0o022:  # whoever may write it may make themselves admin
            raise AuthFileError(
                f"principals file {path} is writable by other users (mode {mode & 0o777:o}):"
                f" chmod 600 {path}"
            )
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise AuthFileError(f"principals file {path}: {error.strerror or error}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AuthFileError(f"principals file {path}: not TOML: {error}") from error
    entries = document.get("principal", [])
    if not isinstance(entries, list):
        raise AuthFileError(f"principals file {path}: `principal` must be [[principal]] tables")
    found: dict[str, Principal] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"principals file {path}, principal {number}"
        if not isinstance(entry, dict):
            raise AuthFileError(f"{where}: not a table")
        unknown = sorted(set(entry) - {*_KEYS})
        if unknown:
            raise AuthFileError(f"{where}: unknown key {unknown[0]!r}")
        name, token_id, token_hash = (entry.get(k) for k in ("name", "token_id", "token_hash"))
        roles, pipelines = entry.get("roles", []), entry.get("pipelines", [])
        if not all(isinstance(v, str) and v for v in (name, token_id, token_hash)):
            raise AuthFileError(f"{where}: name, token_id and token_hash are required strings")
        if not re.fullmatch(r"[A-Za-z0-9]{8}", token_id) or token_id in found:  # type: ignore[arg-type]
            raise AuthFileError(f"{where}: token_id must be 8 letters or digits, once per file")
        if not token_hash.startswith("scrypt$"):  # type: ignore[union-attr]
            raise AuthFileError(f"{where}: token_hash must be a scrypt hash (token create)")
        if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles):
            raise AuthFileError(f"{where}: roles must be some of {', '.join(ROLES)}")
        try:
            allowed = frozenset(str(uuid.UUID(p)) for p in pipelines)
        except (ValueError, TypeError, AttributeError) as error:
            raise AuthFileError(f"{where}: pipelines must be UUIDs") from error
        streams, rate = entry.get("max_streams"), entry.get("publish_rate")
        if streams is not None and (type(streams) is not int or streams < 1):
            raise AuthFileError(f"{where}: max_streams must be a whole number >= 1")
        if rate is not None and (type(rate) not in (int, float) or not 0 < rate < 1e12):
            raise AuthFileError(f"{where}: publish_rate must be a number of events per second > 0")
        found[token_id] = Principal(
            name, token_id, token_hash, frozenset(roles), allowed,  # type: ignore[arg-type]
            streams, None if rate is None else float(rate),
        )  # fmt: skip
    return found


def add_principal(path: Path, lines: str) -> None:
    """Append a principal's lines (`principal_toml`) to a principals file, creating it
    readable and writable by its owner only (0600).

    Raises:
        AuthFileError: the file exists but is not a usable principals file (nothing is
            added to it), or cannot be written.
    """
    if path.exists():
        load_principals(path)  # add only to a file the server can read
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as file:
            file.write(("\n" if file.tell() else "") + lines)
    except OSError as error:
        raise AuthFileError(f"principals file {path}: {error.strerror or error}") from error
