"""The `pipeline-events` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO, TextIO

from pipeline_events import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from pipeline_events.convert import FORMATS

    parser = argparse.ArgumentParser(
        prog="pipeline-events", description="Publish, store and stream Adaptive Pipeline events."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        "--listen", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)"
    )

    def client_command(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        command.add_argument(
            "--target",
            default="127.0.0.1:50051",
            help="the server's HOST:PORT (default %(default)s)",
        )
        command.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
        command.add_argument("--json", action="store_true", help="JSON Lines for machines")
        return command

    publish = client_command("publish", "publish events from JSON Lines, in batches")
    publish.add_argument("file", nargs="?", default="-", help="FILE or - for stdin (default)")
    publish.add_argument("--format", choices=FORMATS, default="rust-json")
    publish.add_argument("--batch", type=int, default=500, help="events per request")

    tail = client_command("tail", "follow the event log live until interrupted")
    tail.add_argument(
        "--from", dest="from_", default="end", help="start, end (default) or POSITION"
    )
    tail.add_argument("--type", action="append", help="only this event type (repeatable)")
    tail.add_argument("--pipeline", action="append", help="only this pipeline id (repeatable)")

    history = client_command("history", "show one pipeline's events")
    history.add_argument("pipeline_id")

    client_command("status", "show whether the service is up and how many events it holds")

    demo = client_command("demo", "simulate realistic pipeline runs through the service")
    demo.add_argument("--pipelines", type=int, default=3)
    demo.add_argument("--runs", type=int, default=4, help="processing runs per pipeline")
    demo.add_argument("--seed", type=int, default=None, help="for a reproducible simulation")

    convert = commands.add_parser(
        "convert",
        help="convert JSON Lines of events between formats",
        description="Convert events, one per line, between formats. A bad line is reported "
        "on stderr as 'line N: reason', skipped, and makes the exit status 1.",
    )
    convert.add_argument("--from", dest="source", choices=FORMATS, required=True)
    convert.add_argument("--to", dest="target", choices=FORMATS, required=True)
    convert.add_argument("--input", "-i", help="input file (default: stdin)")
    convert.add_argument("--output", "-o", help="output file (default: stdout)")
    return parser


@contextlib.contextmanager
def _open_input(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as handle:
            yield handle


@contextlib.contextmanager
def _open_output(path: str | None) -> Iterator[TextIO]:
    if path is None or path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            yield handle


def _lines_with_progress(source: BinaryIO, show: bool) -> Iterator[bytes]:
    """The input's lines, advancing a progress bar on stderr by bytes read."""
    if not show:
        yield from source
        return
    from rich.progress import Progress

    try:
        total: int | None = os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError):
        total = None
    with Progress(console=_stderr_console(), transient=False) as progress:
        task = progress.add_task("converting", total=total)
        for line in source:
            progress.advance(task, len(line))
            yield line


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def run_convert(args: argparse.Namespace) -> int:
    """`convert`: stream lines from input to output; 1 if any line failed."""
    from pipeline_events.convert import convert_lines

    failed = 0
    writing_to_file = args.output not in (None, "-")
    with _open_input(args.input) as source, _open_output(args.output) as sink:
        lines = _lines_with_progress(source, show=writing_to_file)
        for result in convert_lines(lines, args.source, args.target):
            if result.error is not None:
                failed += 1
                print(f"line {result.line}: {result.error}", file=sys.stderr)
            else:
                sink.write(result.output + "\n")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command == "convert":
        return run_convert(args)
    if args.command == "serve":
        return run_serve(args)
    from pipeline_events import commands

    command = getattr(commands, f"run_{args.command}")
    return commands.guarded(command, args)


def run_serve(args: argparse.Namespace) -> int:
    """`serve`: log to stderr, serve until a signal, exit 0 after a graceful stop."""
    import asyncio
    import logging

    from pipeline_events.service.serve import serve

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(args.store, args.listen))
    except OSError as error:
        print(f"pipeline-events serve: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
