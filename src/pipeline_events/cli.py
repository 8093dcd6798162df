"""The `pipeline-events` command line: argument parsing and dispatch.

The commands themselves live in `commands` (the client commands), `convert` and
`service.serve`. Every mistake ends as one line on stderr and an exit status: 2 for
usage errors (argparse's, and the checks of the argument types below) and for a
service that cannot be reached, 1 for other failures.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

from pipeline_events import __version__, domain

GRPC_EXTRA_HINT = "this command needs the gRPC extra: pip install 'pipeline-events[grpc]'"
# Top-level modules of the [grpc] extra and its dependencies (google.rpc: grpcio-status).
_GRPC_MODULES = ("grpc", "grpc_health", "grpc_reflection", "grpc_status", "google.rpc")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- argument types: a bad value is a usage error naming what is allowed -------------------


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:  # NaN and infinity fail too
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, not {text!r}")
    return value


_UINT64_MAX = 2**64 - 1  # what a uint64 field of the contract holds


def _uint64(text: str, what: str) -> int:
    """`text` as a uint64 (ASCII digits: int() takes other scripts' digits too)."""
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected {what} >= 0, not {text!r}")
    if int(text) > _UINT64_MAX:
        raise argparse.ArgumentTypeError(f"expected {what} >= 0 and <= 2^64 - 1, not {text!r}")
    return int(text)


def _whole_number(text: str) -> int:
    return _uint64(text, "a whole number")


def _revision(text: str) -> int:
    return _uint64(text, "a revision")


def _position(text: str) -> int:
    return _uint64(text, "a position")


def _start_position(text: str) -> str | int:
    if text in ("start", "end"):
        return text
    return _uint64(text, "start, end or a position")


def _squashed(text: str, prefix: str) -> str:
    """A name compared without case, underscores, dashes or the proto enum's prefix."""
    text = text.strip().upper().replace("-", "_")
    text = text.removeprefix(prefix)
    return text.replace("_", "")


_EVENT_TYPES = {_squashed(name, ""): name for name in domain.EVENT_TYPES}
_CATEGORIES = {_squashed(member.name, ""): member for member in domain.EventCategory}


def _event_type(text: str) -> str:
    """ChunkProcessed, chunk_processed or EVENT_TYPE_CHUNK_PROCESSED (any case)."""
    name = _EVENT_TYPES.get(_squashed(text, "EVENT_TYPE_"))
    if name is None:
        raise argparse.ArgumentTypeError(
            f"unknown event type {text!r}; the types are {', '.join(domain.EVENT_TYPES)}"
        )
    return name


def _category(text: str) -> domain.EventCategory:
    """processing, PROCESSING or EVENT_CATEGORY_PROCESSING (any case)."""
    category = _CATEGORIES.get(_squashed(text, "EVENT_CATEGORY_"))
    if category is None:
        names = ", ".join(member.name.lower() for member in domain.EventCategory)
        raise argparse.ArgumentTypeError(
            f"unknown event category {text!r}; the categories are {names}"
        )
    return category


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UUID, not {text!r}") from None


_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # as the server checks it
MAX_DELIVERIES = 1000  # the contract's bounds on a group's settings
MAX_GROUP_IN_FLIGHT = 10_000
MAX_BACKOFF_STEPS = 32
MAX_SETTING_SECONDS = 86_400


def _group_name(text: str) -> str:
    if not _GROUP_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a group name (1-200 of A-Z a-z 0-9 . _ -, starting with a letter or "
            f"digit), not {text!r}"
        )
    return text


def _bounded_int(high: int) -> Any:
    def parse(text: str) -> int:
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from 1 to {high}, not {text!r}"
            )
        return int(text)

    return parse


def _setting_seconds(text: str, *, zero: bool = False) -> float:
    """Seconds, to the millisecond, at most a day (0 allowed where `zero`)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    low = 0 if zero else 0.001
    if not low <= value <= MAX_SETTING_SECONDS:  # NaN and infinity fail too
        least = "0" if zero else "0.001"
        raise argparse.ArgumentTypeError(
            f"expected seconds from {least} to {MAX_SETTING_SECONDS}, not {text!r}"
        )
    return value


def _ack_timeout(text: str) -> float:
    return _setting_seconds(text)


def _backoff(text: str) -> tuple[float, ...]:
    """`1,5,30`: the seconds before each redelivery (the last repeats)."""
    steps = text.split(",")
    if len(steps) > MAX_BACKOFF_STEPS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_BACKOFF_STEPS} comma-separated seconds, not {len(steps)}"
        )
    try:
        return tuple(_setting_seconds(step.strip(), zero=True) for step in steps)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (in {text!r})") from None


def _input_file(text: str) -> str:
    """An existing file, or - for stdin (checked now, so a typo is a usage error)."""
    if text != "-" and os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    if text != "-" and not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _tls_file(text: str) -> str:
    """An existing file (not stdin): a certificate, key or CA bundle."""
    if text == "-":
        raise argparse.ArgumentTypeError("a TLS file cannot be stdin")
    return _input_file(text)


def _output_file(text: str) -> str:
    """A file to write in an existing directory, or - for stdout."""
    if text == "-":
        return text
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    directory = os.path.dirname(text) or "."
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"no such directory: {directory!r} (for {text!r})")
    return text


def _listen_address(text: str) -> Any:
    from pipeline_events.service.serve import parse_listen

    try:
        return parse_listen(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="pipeline-events", description="Publish, store and stream Adaptive Pipeline events."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_publish(commands)
    _add_tail(commands)
    _add_history(commands)
    _add_state_queries(commands)
    _add_groups(commands)
    _add_parked(commands)
    _client_command(
        commands, "status", "show whether the service is up and how many events it holds"
    )
    _add_demo(commands)
    _add_convert(commands)
    _add_token(commands)
    return parser


def _add_token(commands: Any) -> None:
    from pipeline_events.tokens import ROLES

    token = commands.add_parser("token", help="make tokens for `serve --auth`")
    actions = token.add_subparsers(dest="token_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="print a new token once, and the lines to add to the principals file",
        description="Print a new token (shown once: keep it secret) and the [[principal]] "
        "lines to add to the file `serve --auth` reads.",
    )
    create.add_argument("name", help="who the token is for")
    create.add_argument("--role", action="append", choices=ROLES, required=True,
                        help="publisher, subscriber or admin (repeatable)")  # fmt: skip
    create.add_argument("--pipeline", action="append", type=_uuid, metavar="ID", default=[],
                        help="only this pipeline (repeatable; default: every pipeline)")  # fmt: skip
    create.add_argument("--file", metavar="FILE", type=Path,
                        help="add the principal to this principals file (created 0600)")  # fmt: skip


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the EventService",
        description="Serve the EventService until SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--store",
        default="sqlite:///./pipeline-events.db",
        help="sqlite:///PATH (default ./pipeline-events.db), sqlite:///PATH?durability=power, or memory://",
    )
    serve.add_argument(
        "--listen",
        type=_listen_address,
        default="127.0.0.1:50051",
        help="HOST:PORT, [IPV6]:PORT, or port 0 for any free one (default %(default)s)",
    )
    tls = serve.add_argument_group("TLS")
    tls.add_argument("--tls-cert", type=_tls_file, metavar="FILE",
                     help="serve TLS with this certificate (chain), PEM; re-read on SIGHUP")  # fmt: skip
    tls.add_argument("--tls-key", type=_tls_file, metavar="FILE",
                     help="the certificate's private key, PEM")  # fmt: skip
    tls.add_argument("--tls-client-ca", type=_tls_file, metavar="FILE",
                     help="mutual TLS: require client certificates signed by these CAs")  # fmt: skip
    serve.add_argument(
        "--auth", type=_tls_file, metavar="FILE",
        help="require bearer tokens: the principals file (TOML; `token create`), re-read on SIGHUP",
    )  # fmt: skip
    serve.add_argument(
        "--no-reflection", action="store_true", help="do not serve gRPC server reflection"
    )
    serve.add_argument(
        "--max-streams-per-caller", type=_positive_int, metavar="N", default=None,
        help="with --auth: streams (Subscribe, PublishStream) one principal may hold (default 64)",
    )  # fmt: skip
    serve.add_argument(
        "--publish-rate", type=_positive_int, metavar="N", default=None,
        help="with --auth: events per second one principal may publish (default: no limit)",
    )  # fmt: skip
    serve.add_argument(
        "--stalled-stream-timeout", type=_positive_float, metavar="SECONDS", default=None,
        help="end a stream whose client takes no response for this long (default 120)",
    )  # fmt: skip
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow an address other than loopback without TLS and --auth (refused otherwise)",
    )
    serve.add_argument(
        "--max-event-bytes",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the largest event envelope accepted, in bytes (default: the server's own "
        "limit, DEFAULT_MAX_EVENT_BYTES)",
    )
    serve.add_argument(
        "--metrics", type=_listen_address, metavar="HOST:PORT", default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)",
    )  # fmt: skip
    serve.add_argument(
        "--web", type=_listen_address, metavar="HOST:PORT", default=None,
        help="serve the web console at http://HOST:PORT/ (default: off)",
    )  # fmt: skip
    logs = serve.add_argument_group("logs")
    logs.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                      help="the least severe lines logged (default %(default)s)")  # fmt: skip
    logs.add_argument("--log-format", choices=("text", "json"), default="text",
                      help="text, or json: one JSON object per line (default %(default)s)")  # fmt: skip
    logs.add_argument(
        "--slow-call-ms", type=_whole_number, metavar="MS", default=1000,
        help="log a unary call that takes longer than this, in milliseconds (default %(default)s)",
    )  # fmt: skip
    config = serve.add_argument_group("configuration")
    config.add_argument(
        "--config", metavar="FILE",
        help="read settings from this TOML file, keys as the flags without --"
        " (default: $PIPELINE_EVENTS_CONFIG); a flag wins over $PIPELINE_EVENTS_<FLAG>,"
        " which wins over the file",
    )  # fmt: skip
    config.add_argument("--print-config", action="store_true",
                        help="print the effective configuration as TOML and exit")  # fmt: skip
    from pipeline_events.service.config import mark_defaults

    mark_defaults(serve)  # tells a flag given from a default (service.config.resolve)


def _client_command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    command.add_argument(
        "--target", default="127.0.0.1:50051", help="the server's HOST:PORT (default %(default)s)"
    )
    command.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    command.add_argument("--json", action="store_true", help="JSON Lines for machines")
    _add_client_tls(command)
    return command


def _add_client_tls(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--token", metavar="TOKEN", default=os.environ.get("PIPELINE_EVENTS_TOKEN"),
        help="bearer token for a server with --auth (default: $PIPELINE_EVENTS_TOKEN)",
    )  # fmt: skip
    tls = command.add_argument_group("TLS (or PIPELINE_EVENTS_TLS_CA, _CERT, _KEY)")
    tls.add_argument("--tls-ca", type=_tls_file, metavar="FILE",
                     help="connect with TLS, trusting the CA certificates in FILE")  # fmt: skip
    tls.add_argument("--tls-cert", type=_tls_file, metavar="FILE",
                     help="mutual TLS: this client's certificate (with --tls-key)")  # fmt: skip
    tls.add_argument("--tls-key", type=_tls_file, metavar="FILE",
                     help="mutual TLS: this client's private key")  # fmt: skip


def _add_publish(commands: Any) -> None:
    from pipeline_events.convert import FORMATS

    publish = _client_command(commands, "publish", "publish events from JSON Lines, in batches")
    publish.add_argument(
        "file", nargs="?", default="-", type=_input_file, help="FILE or - for stdin (default)"
    )
    publish.add_argument(
        "--format",
        choices=FORMATS,
        default="rust-json",
        help="rust-json (default); proto-json also takes the RecordedEvents of tail --json",
    )
    publish.add_argument(
        "--batch", type=_positive_int, default=500, help="events per request (default 500)"
    )


def _add_tail(commands: Any) -> None:
    tail = _client_command(commands, "tail", "follow the event log live until interrupted")
    tail.add_argument(
        "--from",
        dest="from_",
        metavar="POSITION",
        type=_start_position,
        default="end",
        help="start, end (default) or POSITION (continue after it)",
    )
    tail.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop once every event stored so far is shown (exit 0) instead of following",
    )
    tail.add_argument(
        "--type", action="append", type=_event_type, metavar="NAME",
        help="only this event type, e.g. ChunkProcessed or chunk_processed (repeatable)",
    )  # fmt: skip
    tail.add_argument(
        "--category", action="append", type=_category, metavar="NAME",
        help="only this category: pipeline_lifecycle, processing, stage, operational (repeatable)",
    )  # fmt: skip
    tail.add_argument(
        "--pipeline",
        action="append",
        type=_uuid,
        metavar="ID",
        help="only this pipeline (repeatable)",
    )
    tail.add_argument(
        "--processing-id", action="append", type=_uuid, metavar="ID",
        help="only this processing run (repeatable)",
    )  # fmt: skip


def _add_history(commands: Any) -> None:
    history = _client_command(commands, "history", "show one pipeline's events")
    history.add_argument("pipeline_id", type=_uuid)
    history.add_argument(
        "--from-revision", type=_revision, default=0, metavar="N",
        help="the first revision to show (default: the first, or the latest with --backwards)",
    )  # fmt: skip
    history.add_argument("--limit", type=_positive_int, metavar="N", help="show at most N events")
    history.add_argument("--backwards", action="store_true", help="newest first")


RUN_STATUSES = ("running", "paused", "completed", "failed", "cancelled")


def _min_position(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--min-position", type=_position, default=0, metavar="N",
        help="answer once the service's read models have folded the log up to position N "
        "(read your writes: the position publish reported); default 0, no wait",
    )  # fmt: skip


def _add_state_queries(commands: Any) -> None:
    run = _client_command(commands, "run", "show one processing run's state")
    run.add_argument("processing_id", type=_uuid)
    _min_position(run)
    runs = _client_command(commands, "runs", "list processing runs, newest first")
    runs.add_argument("--pipeline", type=_uuid, metavar="ID", help="only this pipeline's runs")
    runs.add_argument(
        "--status", action="append", choices=RUN_STATUSES, metavar="STATUS",
        help=f"only runs in this status: {', '.join(RUN_STATUSES)} (repeatable)",
    )  # fmt: skip
    runs.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N",
        help="show at most N runs (default %(default)s)",
    )  # fmt: skip
    _min_position(runs)
    pipeline = _client_command(commands, "pipeline", "show one pipeline's state")
    pipeline.add_argument("pipeline_id", type=_uuid)
    _min_position(pipeline)
    _client_command(
        commands, "info",
        "show the server: version, store and head, events by type, pipelines, runs by status,"
        " subscriptions and consumer groups",
    )  # fmt: skip


def _group_options(command: argparse.ArgumentParser) -> None:
    """The filter and settings options of `group create` and `group update`."""
    selection = command.add_argument_group("which events (repeatable; none: every event)")
    selection.add_argument("--type", action="append", type=_event_type, metavar="NAME",
                           help="this event type, e.g. ChunkProcessed or chunk_processed")  # fmt: skip
    selection.add_argument("--category", action="append", type=_category, metavar="NAME",
                           help="pipeline_lifecycle, processing, stage or operational")  # fmt: skip
    selection.add_argument("--pipeline", action="append", type=_uuid, metavar="ID",
                           help="this pipeline's events")  # fmt: skip
    selection.add_argument("--run", "--processing-id", dest="processing_id", action="append",
                           type=_uuid, metavar="ID", help="this processing run's events")  # fmt: skip
    settings = command.add_argument_group("delivery (default: the server's)")
    settings.add_argument(
        "--max-deliveries", type=_bounded_int(MAX_DELIVERIES), metavar="N",
        help=f"deliveries of one event before it is parked, 1-{MAX_DELIVERIES} (server default 5)",
    )  # fmt: skip
    settings.add_argument(
        "--backoff", type=_backoff, metavar="SECONDS[,SECONDS...]",
        help="the wait before each redelivery, the last repeating (server default 1,5,30)",
    )  # fmt: skip
    settings.add_argument(
        "--ack-timeout", type=_ack_timeout, metavar="SECONDS",
        help="how long a member may hold an event unacknowledged (server default 30)",
    )  # fmt: skip
    settings.add_argument(
        "--max-in-flight", type=_bounded_int(MAX_GROUP_IN_FLIGHT), metavar="N",
        help=f"events one member holds unacknowledged at most, 1-{MAX_GROUP_IN_FLIGHT} "
        "(server default 100)",
    )  # fmt: skip


def _add_groups(commands: Any) -> None:
    group = commands.add_parser(
        "group",
        help="create, list, show, change and delete consumer groups",
        description="Consumer groups: named subscriptions the server keeps, shared by the "
        "workers that consume them.",
    )
    actions = group.add_subparsers(dest="group_action", required=True, metavar="ACTION")
    create = _client_command(actions, "create", "create a consumer group (or check that it exists "
                             "with these settings)")  # fmt: skip
    create.add_argument("name", type=_group_name, help="the group's name")
    create.add_argument(
        "--start", type=_start_position, default="start", metavar="start|end|POSITION",
        help="from the first event (start, the default), only new ones (end), or after POSITION",
    )  # fmt: skip
    _group_options(create)
    _client_command(actions, "list", "list the consumer groups with their progress")
    info = _client_command(actions, "info", "show one consumer group: progress, filter, settings")
    info.add_argument("name", type=_group_name, help="the group's name")
    update = _client_command(
        actions, "update", "change a consumer group's filter or settings (what is not given "
        "stays; its checkpoint and parked events stay)",
    )  # fmt: skip
    update.add_argument("name", type=_group_name, help="the group's name")
    update.add_argument("--every-event", action="store_true",
                        help="clear the filter first (then --type etc. start from nothing)")  # fmt: skip
    _group_options(update)
    delete = _client_command(
        actions, "delete", "delete a consumer group with its checkpoint and parked events"
    )
    delete.add_argument("name", type=_group_name, help="the group's name")


def _add_parked(commands: Any) -> None:
    parked = commands.add_parser(
        "parked",
        help="list, replay or discard a consumer group's parked events",
        description="Events a consumer group gave up on (after its max deliveries), kept "
        "until replayed or discarded.",
    )
    actions = parked.add_subparsers(dest="parked_action", required=True, metavar="ACTION")
    listing = _client_command(actions, "list", "list a group's parked events, in position order")
    listing.add_argument("group", type=_group_name, help="the consumer group's name")
    listing.add_argument("--limit", type=_positive_int, metavar="N", help="show at most N")
    replay = _client_command(
        actions, "replay", "give parked events back to the group (the ones named, or all)"
    )
    replay.add_argument("group", type=_group_name, help="the consumer group's name")
    replay.add_argument("event_ids", nargs="*", type=_uuid, metavar="EVENT_ID",
                        help="the events to replay (none: every parked event)")  # fmt: skip
    discard = _client_command(
        actions, "discard", "drop parked events for good (the ones named, or all with --all)"
    )
    discard.add_argument("group", type=_group_name, help="the consumer group's name")
    discard.add_argument("event_ids", nargs="*", type=_uuid, metavar="EVENT_ID",
                         help="the events to discard")  # fmt: skip
    discard.add_argument("--all", action="store_true", help="discard every parked event")

    def check(args: argparse.Namespace) -> None:
        if not args.event_ids and not args.all:
            discard.error("name the events to discard, or --all to discard every parked event")
        if args.event_ids and args.all:
            discard.error("either EVENT_IDs or --all, not both")

    discard.set_defaults(check=check)


def _add_demo(commands: Any) -> None:
    demo = _client_command(commands, "demo", "simulate realistic pipeline runs through the service")
    demo.add_argument("--pipelines", type=_positive_int, default=3)
    demo.add_argument("--runs", type=_positive_int, default=4, help="processing runs per pipeline")
    demo.add_argument("--seed", type=int, default=None, help="for a reproducible simulation")


def _add_convert(commands: Any) -> None:
    from pipeline_events.convert import FORMATS

    convert = commands.add_parser(
        "convert",
        help="convert JSON Lines of events between formats",
        description="Convert events, one per line, between formats. A bad line is reported "
        "on stderr as 'line N: reason', skipped, and makes the exit status 1.",
    )
    convert.add_argument("--from", dest="source", choices=FORMATS, required=True)
    convert.add_argument("--to", dest="target", choices=FORMATS, required=True)
    convert.add_argument("--input", "-i", type=_input_file, help="input file (default: stdin)")
    convert.add_argument("--output", "-o", type=_output_file, help="output file (default: stdout)")


# --- dispatch -----------------------------------------------------------------------------


def serve_parser() -> argparse.ArgumentParser:
    """The `serve` subcommand's parser, as the CLI builds it."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices["serve"]
    raise LookupError("the CLI has no serve command")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    check = getattr(args, "check", None)  # what argparse alone cannot check (exits 2)
    if check is not None:
        check(args)
    try:
        status = _run(args)
        sys.stdout.flush()  # here, where a closed pipe is still caught below
    except BrokenPipeError:  # `... | head -1`: the reader has all it wanted
        _discard_stdout()
        return 0
    except OSError as error:  # a file that cannot be read or written, a full disk
        print(f"pipeline-events {args.command}: {_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: stopped on purpose, no traceback
        return 130
    return status


def _run(args: argparse.Namespace) -> int:
    if args.command == "convert":
        from pipeline_events.convert import run_convert

        return run_convert(args)
    if args.command == "token":
        from pipeline_events.tokens import AuthFileError, add_principal, new_token, principal_toml

        token, token_id, hash_line = new_token()
        lines = principal_toml(args.name, token_id, hash_line, args.role, args.pipeline)
        if args.file is not None:
            try:
                add_principal(args.file, lines)
            except AuthFileError as error:
                print(f"pipeline-events token: {error}", file=sys.stderr)
                return 1
        print(f"token (shown once, keep it secret): {token}", file=sys.stderr)
        print(token)
        if args.file is not None:
            print(f"added {args.name} to {args.file}: `kill -HUP` the server", file=sys.stderr)
        else:
            print("\n# add to the principals file of `serve --auth`:", file=sys.stderr)
            print(lines, file=sys.stderr)
        return 0
    try:
        if args.command == "serve":
            from pipeline_events.service.config import options
            from pipeline_events.service.serve import run_serve

            return run_serve(args, options(serve_parser()))
        from pipeline_events import commands

        return commands.guarded(getattr(commands, f"run_{args.command}"), args)
    except ImportError as error:
        if not _is_grpc_module(error.name):
            raise
        print(f"pipeline-events {args.command}: {GRPC_EXTRA_HINT} ({error})", file=sys.stderr)
        return 1


def _os_error(error: OSError) -> str:
    """`No space left on device`, with the file when the error names one."""
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _is_grpc_module(name: str | None) -> bool:
    return name is not None and any(
        name == module or name.startswith(module + ".") for module in _GRPC_MODULES
    )


def _discard_stdout() -> None:
    """After the reader of stdout went away (`... | head -1`), send what is left nowhere.

    Otherwise the interpreter's last flush of stdout fails again, and prints a warning.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
