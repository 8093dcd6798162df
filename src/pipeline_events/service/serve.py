"""`pipeline-events serve`: open the store, serve until SIGTERM/SIGINT, stop gracefully.

Importable without the `[grpc]` extra (the CLI checks `--listen` with `parse_listen`
before it knows whether grpc is installed); the server itself is imported when serving.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import re
import signal
import socket
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipeline_events.service.config import (
    ConfigError,
    Option,
    Resolved,
    one_line,
    resolve,
    shown,
)
from pipeline_events.store import EventStore, StoreError, open_store
from pipeline_events.tls import TlsError

if TYPE_CHECKING:
    from pipeline_events.service.access_log import AccessLog
    from pipeline_events.service.server import RunningServer

log = logging.getLogger("pipeline_events.server")

DEFAULT_STORE = "sqlite:///./pipeline-events.db"
DEFAULT_LISTEN = "127.0.0.1:50051"
#: The cyclic collector's thresholds while serving (Python's are 700, 10, 10): every
#: request allocates thousands of objects that reference counting frees, and a young
#: collection every 700 allocations rescans the survivors over and over.
GC_THRESHOLDS = (50_000, 20, 20)

# ASCII digits only: int() also takes " 5" and other scripts' digits.
_PORT = re.compile(r"[0-9]{1,5}")


class StartupError(ValueError):
    """The server refused its settings (e.g. a limit out of range)."""


class FeatureUnavailable(RuntimeError):
    """`--metrics` or `--web` asked for, and its module cannot be imported here."""


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """Where the server's TLS files are (see `service.tls`, which needs grpc)."""

    cert: Path
    key: Path
    client_ca: Path | None = None  # mutual TLS: the CA that signs the clients' certificates


class ListenAddress(NamedTuple):
    """Where the server listens: a host (an IPv6 address without brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Check a `HOST:PORT` listen address and split it.

    HOST is an IPv4 address, an IPv6 address in brackets (`[::1]:50051`) or a host name
    that resolves; PORT is 0 (any free port) to 65535, in decimal.

    Raises:
        ValueError: what is wrong with it, in words meant for the command line.
    """
    host, port = _split_host_port(text)
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"the port must be a number from 0 to 65535, not {port!r} in {text!r}")
    _resolve(host, int(port))
    return ListenAddress(host, int(port))


def _split_host_port(text: str) -> tuple[str, str]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"expected [IPV6]:PORT, e.g. [::1]:50051, not {text!r}")
        port = rest[1:]
    elif ":" not in text:
        raise ValueError(f"no port in {text!r}: use HOST:PORT, e.g. 127.0.0.1:50051")
    elif text.count(":") > 1:
        raise ValueError(f"an IPv6 address goes in brackets, e.g. [::1]:50051, not {text!r}")
    else:
        host, _, port = text.partition(":")
    if not host:
        # gRPC would take ":PORT" as every interface; say so explicitly instead.
        raise ValueError(
            f"no host in {text!r}: use e.g. 127.0.0.1:PORT, or 0.0.0.0:PORT for every interface"
        )
    return host, port


def _resolve(host: str, port: int) -> None:
    """Fail now, in words, rather than let gRPC fail to bind with a vague message."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ValueError(f"cannot resolve the host {host!r}: {reason}") from error


def is_loopback(host: str) -> bool:
    """Whether every address `host` resolves to is a loopback one (127.0.0.0/8, ::1)."""
    try:
        found = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)


def check_secure(
    address: ListenAddress, tls: ServerTlsFiles | None, insecure: bool, auth: Path | None = None
) -> None:
    """Secure by default: off loopback, TLS and tokens, unless `--insecure` says otherwise.

    Raises:
        StartupError: a non-loopback address without TLS or --auth, and no --insecure.
    """
    if insecure or is_loopback(address.host):
        return
    if tls is None:
        raise StartupError(
            f"{address} is reachable from other machines and the connection would be"
            " plaintext: anyone who reaches it could read and write the log; give"
            " --tls-cert and --tls-key, or --insecure to accept that"
        )
    if auth is None:
        raise StartupError(
            f"{address} is reachable from other machines and every caller could read and"
            " write the log: give --auth FILE (principals and their tokens), or --insecure"
            " to accept that"
        )


async def serve(
    store_url: str = DEFAULT_STORE,
    listen: str | ListenAddress = DEFAULT_LISTEN,
    grace: float = 10.0,
    *,
    max_event_bytes: int | None = None,
    tls: ServerTlsFiles | None = None,
    insecure: bool = False,
    auth: Path | None = None,
    reflection_on: bool = True,
    streams_per_caller: int | None = None,
    publish_rate: float | None = None,
    stalled_stream_seconds: float | None = None,
    metrics_listen: ListenAddress | None = None,
    web_listen: ListenAddress | None = None,
    access_log: AccessLog | None = None,
    configuration: Resolved | None = None,
) -> None:
    """Run the EventService until a signal; in-flight publishes finish before exit.

    Args:
        store_url: the store to open (see `open_store`).
        listen: HOST:PORT, checked by `parse_listen`.
        grace: seconds in-flight calls get to finish on stop.
        max_event_bytes: the largest envelope accepted; None: the server's default.
        tls: serve TLS (mutual TLS with a client CA) from these files, re-read on SIGHUP.
        insecure: allow an address other than loopback without TLS and tokens.
        auth: require bearer tokens of the principals in this file, re-read on SIGHUP.
        reflection_on: serve gRPC server reflection.
        streams_per_caller: streams one principal may hold open (with `auth`).
        publish_rate: events per second one principal may publish (with `auth`).
        stalled_stream_seconds: end a stream whose client takes no response this long.
        metrics_listen: serve Prometheus metrics there (`service.metrics`).
        web_listen: serve the web console there (`pipeline_events.web`).
        access_log: log refused, failed and slow calls (`service.access_log`).
        configuration: logged once (redacted) when the server has started; a server
            that fails to start says only why, in one line.

    Raises:
        ValueError: a bad listen address.
        StoreError: the store cannot be opened (an unreadable file too).
        OSError: the server cannot listen there.
        StartupError: the server refused a setting (max_event_bytes, plaintext off loopback).
        TlsError: TLS files that cannot be used.
        AuthFileError: a principals file that cannot be used.
    """
    address = listen if isinstance(listen, ListenAddress) else parse_listen(listen)
    check_secure(address, tls, insecure, auth)
    server_tls = authenticator = None
    if tls is not None:
        from pipeline_events.service.tls import ServerTls

        server_tls = ServerTls(tls)  # the files are read and checked before anything opens
    if auth is not None:
        from pipeline_events.service.auth import Authenticator

        authenticator = Authenticator.open(auth)
    metrics = None
    if metrics_listen is not None:
        Metrics = _feature("--metrics", "pipeline_events.service.metrics", "Metrics")
        metrics = Metrics()
    start_console = (
        None if web_listen is None else _feature("--web", "pipeline_events.web", "start_console")
    )
    store = await _open(store_url)
    try:
        credentials = None if server_tls is None else server_tls.credentials()
        limits = None
        if authenticator is not None:
            from pipeline_events.service.auth import DEFAULT_STREAMS_PER_PRINCIPAL, CallerLimits

            limits = CallerLimits(streams_per_caller or DEFAULT_STREAMS_PER_PRINCIPAL, publish_rate)
        running = await _start(
            store, address, max_event_bytes, credentials, authenticator, reflection_on, limits,
            stalled_stream_seconds, metrics=metrics, access_log=access_log,
        )  # fmt: skip
    except BaseException:
        await store.close()
        raise
    console = None
    try:
        if metrics is not None:
            assert metrics_listen is not None
            try:
                port = metrics.serve_http(str(metrics_listen))
            except OSError as error:  # one line naming what could not listen, as --web's
                raise OSError(
                    f"cannot listen on {metrics_listen} (metrics): {error.strerror or error}"
                ) from error
            where = ListenAddress(metrics_listen.host, port or metrics_listen.port)
            log.info("metrics on http://%s/metrics", where, extra={"metrics": str(where)})
        if start_console is not None:
            assert web_listen is not None
            console = await start_console(running, str(web_listen), authenticator=authenticator)
            where = ListenAddress(
                web_listen.host, getattr(console, "port", None) or web_listen.port
            )
            log.info("web console on http://%s/", where, extra={"web": str(where)})
    except BaseException:
        if console is not None:
            await console.stop()
        await running.stop(0)
        if metrics is not None:
            metrics.close()
        await store.close()
        raise
    # What startup made (modules, the read models of the snapshot) is long-lived: out of
    # the collector's way, and collections rarer (bench/service.py ingest: see README).
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    # Signals first, then the line that says it serves: whoever reads that line (a test,
    # a supervisor) and stops the server at once gets a graceful stop, not a killed one.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def reload() -> None:  # SIGHUP: certificates and principals, without a restart
        if server_tls is not None:
            server_tls.reload()
        if authenticator is not None:
            authenticator.reload()

    loop.add_signal_handler(signal.SIGHUP, reload)
    security = "plaintext" if tls is None else ("mutual TLS" if tls.client_ca else "TLS")
    security += ", tokens" if authenticator is not None else ", no tokens"
    if configuration is not None:  # once, redacted, now that the server has started
        log.info(
            "configuration: %s", configuration.one_line(),
            extra={"config": configuration.redacted(), "sources": configuration.sources()},
        )  # fmt: skip
    # One line, always printed: where it listens and what it stores (tests read the port here).
    where = ListenAddress(address.host, running.port)
    # At the level logging lets through, whatever --log-level says (info or above).
    log.log(
        max(logging.INFO, logging.getLogger().getEffectiveLevel()),
        "listening on %s, store %s, %s", where, shown(store_url), security,
        extra={"listen": str(where), "port": running.port, "store": shown(store_url),
               "security": security},
    )  # fmt: skip
    await stop.wait()
    log.info("shutting down: health NOT_SERVING, finishing in-flight calls")
    if access_log is not None:
        access_log.stopping = True  # the streams the stop ends are not failures
    if console is not None:
        await console.stop()
    await running.stop(grace)
    if metrics is not None:
        metrics.close()
    if access_log is not None:
        access_log.close()  # what it held back, said now
    await store.close()
    log.info("stopped")


async def _open(store_url: str) -> EventStore:
    """open_store, with SQLite's and the OS's own errors named as the store's."""
    try:
        return await open_store(store_url)
    except (sqlite3.Error, OSError) as error:
        raise StoreError(f"cannot open the store {store_url}: {error}") from error


def check_can_listen(address: ListenAddress) -> None:
    """Bind the address once, as gRPC will, and let go: a port in use fails here, in words.

    gRPC's own failure comes with a log line of its C core on stderr and no reason in
    the exception; start_server still reports it (a port taken in between). Like gRPC,
    a name that resolves to several addresses needs only one of them to bind.

    Raises:
        OSError: `cannot listen on HOST:PORT: Address already in use`, or the like.
    """
    if address.port == 0:
        return  # any free port
    failures = []
    for family, kind, proto, _, where in socket.getaddrinfo(*address, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(where)
                return
            except OSError as error:
                failures.append(error)
    if failures:
        raise OSError(f"cannot listen on {address}: {failures[0].strerror}") from failures[0]


async def _start(
    store: EventStore,
    address: ListenAddress,
    max_event_bytes: int | None,
    credentials: Any,
    authenticator: Any = None,
    reflection_on: bool = True,
    limits: Any = None,
    stalled_stream_seconds: float | None = None,
    *,
    metrics: Any = None,
    access_log: AccessLog | None = None,
) -> RunningServer:
    from pipeline_events.service.server import DEFAULT_MAX_EVENT_BYTES, start_server

    check_can_listen(address)
    optional: dict[str, Any] = {  # given only when set: start_server's defaults otherwise
        "caller_limits": limits,
        "metrics": metrics,
        "access_log": access_log,
        "stalled_stream_seconds": stalled_stream_seconds,
    }
    try:  # start_server itself turns gRPC's bind failure into an OSError
        return await start_server(
            store,
            listen=str(address),
            max_event_bytes=max_event_bytes or DEFAULT_MAX_EVENT_BYTES,
            credentials=credentials,
            authenticator=authenticator,
            reflection_on=reflection_on,
            **{name: value for name, value in optional.items() if value is not None},
        )
    except ValueError as error:  # a limit start_server refuses
        raise StartupError(str(error)) from error


def run_serve(args: argparse.Namespace, table: list[Option]) -> int:
    """`serve`: log to stderr, serve until a signal, exit 0 after a graceful stop.

    The settings come from the flags, the environment and the config file
    (`service.config`; `table`: the serve parser's options, from the CLI); one that cannot be used is one line on stderr and exit
    status 2, as is `--metrics` or `--web` where that feature is not installed.
    `--print-config` prints them and exits 0. A store that cannot be opened, an
    address that cannot be bound or a refused setting is one line and exit status 1.
    """
    try:
        resolved = resolve(args, table)
    except ConfigError as error:
        print(f"pipeline-events serve: {one_line(error)}", file=sys.stderr)
        return 2
    if getattr(args, "print_config", False):
        sys.stdout.write(resolved.toml())
        return 0
    # Without the [grpc] extra this fails here, before anything has started.
    import pipeline_events.service.server  # noqa: F401
    from pipeline_events.service.access_log import AccessLog

    configure_logging(args.log_level, args.log_format)
    if (args.publish_rate or args.max_streams_per_caller) and not args.auth:
        print(
            "pipeline-events serve: --publish-rate and --max-streams-per-caller limit"
            " principals: they need --auth",
            file=sys.stderr,
        )
        return 2
    tls = None
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            print("pipeline-events serve: TLS needs both --tls-cert and --tls-key", file=sys.stderr)
            return 2
        tls = ServerTlsFiles(
            Path(args.tls_cert),
            Path(args.tls_key),
            Path(args.tls_client_ca) if args.tls_client_ca else None,
        )
    try:  # before anything starts: a feature this installation lacks is a usage error
        if args.metrics is not None:
            _feature("--metrics", "pipeline_events.service.metrics", "Metrics")
        if args.web is not None:
            _feature("--web", "pipeline_events.web", "start_console")
    except FeatureUnavailable as error:
        print(f"pipeline-events serve: {one_line(error)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve(
                args.store, args.listen, max_event_bytes=args.max_event_bytes,
                tls=tls, insecure=args.insecure, auth=Path(args.auth) if args.auth else None,
                reflection_on=not args.no_reflection,
                streams_per_caller=args.max_streams_per_caller, publish_rate=args.publish_rate,
                stalled_stream_seconds=args.stalled_stream_timeout,
                metrics_listen=args.metrics, web_listen=args.web,
                access_log=AccessLog(slow_call_ms=args.slow_call_ms), configuration=resolved,
            )
        )  # fmt: skip
    except FeatureUnavailable as error:
        print(f"pipeline-events serve: {one_line(error)}", file=sys.stderr)
        return 2
    except (StoreError, OSError, StartupError, TlsError, ValueError) as error:
        print(f"pipeline-events serve: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


def _feature(flag: str, module: str, name: str) -> Any:
    """`name` from `module`, imported now; FeatureUnavailable (one line) if it cannot be."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as error:  # the module, or a package it needs, is not installed
        raise FeatureUnavailable(
            f"{flag} is unavailable in this installation ({module}: {error})"
        ) from None
    except AttributeError:
        raise FeatureUnavailable(
            f"{flag} is unavailable in this installation ({module} has no {name})"
        ) from None


# --- logs ------------------------------------------------------------------------------------

#: A LogRecord's own attributes: whatever else it has came in `extra` (JSON fields).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """stderr, at `level` (debug, info, warning, error), as text lines or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
