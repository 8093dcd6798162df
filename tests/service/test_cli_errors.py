"""Every mistake is one line on stderr and an exit status, never a traceback.

2 for usage errors (argparse's own, and the argument types' checks) and for a
service that cannot be reached; 1 for runtime failures (a store that cannot be
opened, an address in use, a missing extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_events import cli, client, domain
from pipeline_events.codecs import rust_json
from pipeline_events.errors import DecodeError
from pipeline_events.service.serve import ListenAddress, parse_listen
from tests.service.conftest import CLI, ServerProcess, start_server_process, stop_process

PIPELINE = "6513270e-269e-4d37-b2a7-4de452e6b438"


def cli_run(*args: str, stdin: str = "", **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False,
        **options,  # type: ignore[call-overload]
    )  # fmt: skip


def one_line(stderr: str) -> str:
    """The only line of stderr (and that there is no traceback)."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def server(memory_server: ServerProcess) -> ServerProcess:
    return memory_server


# --- usage errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tail", "--type", "Bogus"], "argument --type: unknown event type 'Bogus'; the types are "
         "PipelineCreated, PipelineUpdated, "),
        (["tail", "--category", "bogus"], "argument --category: unknown event category 'bogus'; "
         "the categories are pipeline_lifecycle, processing, stage, operational"),
        (["tail", "--from", "-5"], "argument --from: expected start, end or a position >= 0, "
         "not '-5'"),
        (["tail", "--from", "soon"], "expected start, end or a position >= 0, not 'soon'"),
        (["tail", "--from", str(2**64)], "expected start, end or a position >= 0 and <= 2^64 - 1"),
        (["runs", "--min-position", str(2**64)], "a position >= 0 and <= 2^64 - 1"),
        (["history", PIPELINE, "--from-revision", str(2**64)], "a revision >= 0 and <= 2^64 - 1"),
        (["tail", "--processing-id", "run-1"], "argument --processing-id: expected a UUID"),
        (["demo", "--pipelines", "0"], "argument --pipelines: expected a whole number >= 1"),
        (["demo", "--pipelines", "-1"], "argument --pipelines: expected a whole number >= 1"),
        (["demo", "--runs", "0"], "argument --runs: expected a whole number >= 1, not '0'"),
        (["demo", "--runs", "-1"], "argument --runs: expected a whole number >= 1, not '-1'"),
        (["publish", "--batch", "0"], "argument --batch: expected a whole number >= 1, not '0'"),
        (["publish", "--batch", "-5"], "argument --batch: expected a whole number >= 1"),
        (["publish", "no-such-file.jsonl"], "argument file: no such file: 'no-such-file.jsonl'"),
        (["publish", "."], "argument file: '.' is a directory, not a file"),
        (["history", "not-a-uuid"], "argument pipeline_id: expected a UUID, not 'not-a-uuid'"),
        (["history", PIPELINE, "--limit", "0"], "argument --limit: expected a whole number >= 1"),
        (["history", PIPELINE, "--from-revision", "-1"], "expected a revision >= 0, not '-1'"),
        (["convert", "--from", "binary", "--to", "proto-json", "-i", "missing.b64"],
         "argument --input/-i: no such file: 'missing.b64'"),
        (["convert", "--from", "binary", "--to", "proto-json", "-i", "."],
         "argument --input/-i: '.' is a directory, not a file"),
        (["convert", "--from", "binary", "--to", "proto-json", "-o", "no/such/dir/out.json"],
         "argument --output/-o: no such directory: 'no/such/dir'"),
        (["serve", "--listen", "127.0.0.1:70000"], "the port must be a number from 0 to 65535, "
         "not '70000'"),
        (["serve", "--listen", "127.0.0.1:-1"], "the port must be a number from 0 to 65535"),
        (["serve", "--listen", "127.0.0.1:0x10"], "the port must be a number from 0 to 65535"),
        (["serve", "--listen", "no-such-host.invalid:1"], "cannot resolve the host "
         "'no-such-host.invalid'"),
        (["serve", "--listen", "nohost:1"], "cannot resolve the host 'nohost'"),
        (["serve", "--listen", "127.0.0.1"], "no port in '127.0.0.1': use HOST:PORT"),
        (["serve", "--listen", ":x"], "no host in ':x'"),
        (["serve", "--listen", "::1:50051"], "an IPv6 address goes in brackets"),
        (["serve", "--max-event-bytes", "0"], "argument --max-event-bytes: expected a whole "
         "number >= 1"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_and_status_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = cli_run(*args, cwd=tmp_path)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"pipeline-events {args[0]}: error: ")
    assert message in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "name", ["ChunkProcessed", "chunk_processed", "CHUNK_PROCESSED", "EVENT_TYPE_CHUNK_PROCESSED",
             "event_type_chunk_processed", "chunkprocessed"],
)  # fmt: skip
def test_tail_takes_an_event_type_in_any_of_its_spellings(name: str) -> None:
    args = cli.build_parser().parse_args(["tail", "--type", name])
    assert args.type == ["ChunkProcessed"]


@pytest.mark.parametrize(
    "name", ["processing", "PROCESSING", "EVENT_CATEGORY_PROCESSING", "event_category_processing"],
)  # fmt: skip
def test_tail_takes_a_category_in_any_of_its_spellings(name: str) -> None:
    args = cli.build_parser().parse_args(["tail", "--category", name, "--category", "stage"])
    assert args.category == [domain.EventCategory.PROCESSING, domain.EventCategory.STAGE]


def test_tail_from_takes_start_end_and_positions() -> None:
    parse = cli.build_parser().parse_args
    assert [parse(["tail", "--from", text]).from_ for text in ("start", "end", "0", "42")] == [
        "start", "end", 0, 42,
    ]  # fmt: skip
    assert parse(["tail"]).from_ == "end"


# --- parse_listen -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:50051", ("0.0.0.0", 50051)),
        ("[::1]:65535", ("::1", 65535)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_listen_splits_host_and_port(text: str, address: tuple[str, int]) -> None:
    assert parse_listen(text) == address
    assert str(parse_listen(text)) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1:65536", "from 0 to 65535"),
        ("127.0.0.1: 5", "from 0 to 65535"),
        ("127.0.0.1:\u0665", "from 0 to 65535"),  # ARABIC-INDIC FIVE: int() takes it
        ("127.0.0.1:", "from 0 to 65535"),
        ("127.0.0.1", "no port"),
        (":50051", "no host"),
        ("[::1]", "expected [IPV6]:PORT"),
        ("[::1:5", "expected [IPV6]:PORT"),
        ("fe80::1:5", "in brackets"),
        ("no-such-host.invalid:5", "cannot resolve"),
    ],
)
def test_parse_listen_names_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_listen(text)


def test_a_listen_address_prints_ipv6_in_brackets() -> None:
    assert str(ListenAddress("::1", 5)) == "[::1]:5"
    assert str(ListenAddress("example.org", 5)) == "example.org:5"


# --- serve: startup failures ------------------------------------------------------------


def serve_fails(*args: str, cwd: Path | None = None) -> str:
    """Run `serve` that must refuse to start: its one stderr line (status 1)."""
    process = subprocess.Popen(
        [CLI, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop_process(process)
        pytest.fail(f"`serve {' '.join(args)}` started serving instead of failing")
    finally:
        stop_process(process)
    assert process.returncode == 1, stderr
    line = one_line(stderr)
    assert line.startswith("pipeline-events serve: "), line
    return line


@contextlib.contextmanager
def listening_socket() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_on_a_port_in_use_says_so() -> None:
    with listening_socket() as port:
        line = serve_fails("--store", "memory://", "--listen", f"127.0.0.1:{port}")
    assert (
        line == f"pipeline-events serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_serve_on_an_address_of_another_host_says_so() -> None:
    # TEST-NET-1; --insecure: not loopback, so plaintext needs saying (test_tls.py)
    line = serve_fails("--store", "memory://", "--listen", "192.0.2.1:50051", "--insecure")
    assert line == (
        "pipeline-events serve: cannot listen on 192.0.2.1:50051: Cannot assign requested address"
    )


def test_serve_on_the_port_of_another_server_says_so() -> None:
    first = start_server_process("memory://")
    try:
        line = serve_fails("--store", "memory://", "--listen", first.target)
    finally:
        assert stop_process(first.process) == 0
    assert f"cannot listen on {first.target}: Address already in use" in line


def test_serve_refuses_a_max_event_bytes_over_the_message_limit() -> None:
    line = serve_fails("--store", "memory://", "--listen", "127.0.0.1:0",
                       "--max-event-bytes", str(1 << 30))  # fmt: skip
    assert "the largest event must be between 1 and" in line


def test_serve_passes_max_event_bytes_to_the_server(tmp_path: Path) -> None:
    server = start_server_process("memory://", options=["--max-event-bytes", "2000"])
    try:
        pipeline, run = uuid.uuid4(), uuid.uuid4()
        events = [
            domain.PipelineCreated.new(pipeline, "small", 1),
            domain.ProcessingFailed.new(pipeline, run, "x" * 3000, "E_BIG"),
        ]
        source = tmp_path / "events.jsonl"
        source.write_text("".join(rust_json.encode(e) + "\n" for e in events))
        result = cli_run("publish", str(source), "--target", server.target)
    finally:
        assert stop_process(server.process) == 0
    assert result.returncode == 1
    # Reading a file, publish draws its progress bar on stderr too.
    errors = "".join(line for line in result.stderr.splitlines(True) if "publishing" not in line)
    assert re.fullmatch(
        r"line 2: the event is 3,\d{3} bytes; this server takes at most 2,000", one_line(errors)
    )
    assert result.stdout.startswith("stored nothing; line 2 rejected: the event is 3,")


def _newer_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (999)")
        connection.commit()


@pytest.mark.parametrize(
    ("name", "url", "problem"),
    [
        ("not SQLite", "sqlite:///{tmp}/notes.txt", r"not a (usable )?SQLite database"),
        ("newer schema", "sqlite:///{tmp}/newer.db", r"schema version 999"),
        ("a directory", "sqlite:///{tmp}", r"is a directory"),
        ("bad durability", "sqlite:///{tmp}/x.db?durability=always",
         r"durability must be 'process' or 'power', not 'always'"),
        ("unknown scheme", "postgres://db/events", r"unsupported store URL 'postgres://db/events'"),
        ("missing parent", "sqlite:///{tmp}/no/such/dir/x.db", r"(does not exist|no such)"),
    ],
)  # fmt: skip
def test_serve_names_a_store_it_cannot_open(
    name: str, url: str, problem: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("these are not the events you are looking for\n" * 100)
    _newer_schema(tmp_path / "newer.db")
    line = serve_fails("--store", url.format(tmp=tmp_path), "--listen", "127.0.0.1:0")
    assert re.search(problem, line, re.IGNORECASE), line


def test_serve_names_the_process_that_holds_the_store(tmp_path: Path) -> None:
    first = start_server_process(f"sqlite:///{tmp_path}/events.db")
    try:
        line = serve_fails("--store", f"sqlite:///{tmp_path}/events.db", "--listen", "127.0.0.1:0")
    finally:
        assert stop_process(first.process) == 0
    assert f"is in use by process {first.process.pid}" in line


# --- without the [grpc] extra -------------------------------------------------------------


@pytest.fixture
def without_grpc(tmp_path: Path) -> dict[str, str]:
    """An environment where `import grpc` fails as if grpcio were not installed."""
    package = tmp_path / "no-grpc" / "grpc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'grpc'\", name='grpc')\n"
    )
    return {**os.environ, "PYTHONPATH": str(package.parent)}


@pytest.mark.parametrize(
    "args",
    [["serve", "--store", "memory://", "--listen", "127.0.0.1:0"], ["status"], ["tail"],
     ["history", PIPELINE], ["publish"], ["demo"]],
)  # fmt: skip
def test_a_command_without_the_grpc_extra_says_which_to_install(
    args: list[str], without_grpc: dict[str, str]
) -> None:
    result = cli_run(*args, env=without_grpc)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"pipeline-events {args[0]}: this command needs the gRPC extra: "
        "pip install 'pipeline-events[grpc]' (No module named 'grpc')"
    )


def test_convert_needs_no_grpc(without_grpc: dict[str, str]) -> None:
    line = rust_json.encode(domain.PipelineCreated.new(uuid.uuid4(), "p", 1))
    result = cli_run("convert", "--from", "rust-json", "--to", "proto-json", stdin=line,
                     env=without_grpc)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["eventType"] == "EVENT_TYPE_PIPELINE_CREATED"


# --- a reader that goes away (`| head -1`) ------------------------------------------------


@pytest.fixture(scope="module")
def long_pipeline(server: ServerProcess) -> str:
    """A pipeline whose history prints well over a pipe's 64 KiB buffer."""
    demo = cli_run("demo", "--pipelines", "1", "--runs", "24", "--seed", "31", "--json",
                   "--target", server.target)  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    history = cli_run("history", "--json", "--limit", "1", "--backwards", "--target",
                      server.target, _first_pipeline(server))  # fmt: skip
    assert int(json.loads(history.stdout)["revision"]) > 500
    return _first_pipeline(server)


def _first_pipeline(server: ServerProcess) -> str:
    tail = cli_run("tail", "--from", "start", "--until-caught-up", "--json",
                   "--type", "PipelineCreated", "--target", server.target)  # fmt: skip
    return json.loads(tail.stdout.splitlines()[-1])["envelope"]["aggregateId"]


@pytest.mark.parametrize(
    "command",
    [["history"], ["history", "--json"], ["tail", "--from", "start"],
     ["tail", "--from", "start", "--json"]],
)  # fmt: skip
def test_a_closed_pipe_ends_the_command_quietly(
    command: list[str], server: ServerProcess, long_pipeline: str
) -> None:
    args = [*command, long_pipeline] if command[0] == "history" else command
    process = subprocess.Popen(
        [CLI, *args, "--target", server.target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline()  # like `head -1`: one line, then close the pipe
        process.stdout.close()
        status = process.wait(60)
        stderr = process.stderr.read()
    finally:
        stop_process(process)
    assert (status, stderr) == (0, "")


# --- events this version cannot decode -----------------------------------------------------


@pytest.fixture
def undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored event fails to decode, as one from a newer writer might."""

    def fail(self: client.RecordedEvent) -> domain.Event:
        raise DecodeError("not a UUID: 'x'", field="chunk_processed.chunk_id")

    monkeypatch.setattr(client.RecordedEvent, "event", property(fail))


@pytest.mark.parametrize("command", ["history", "tail"])
def test_an_undecodable_event_is_a_row_with_its_error(
    command: str,
    server: ServerProcess,
    long_pipeline: str,
    undecodable: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [long_pipeline] if command == "history" else ["--from", "start", "--until-caught-up",
                                                         "--pipeline", long_pipeline]  # fmt: skip
    assert cli.main([command, *args, "--target", server.target]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line[:1].isdigit()]
    assert len(rows) > 500
    assert all(
        row.endswith("cannot decode this event: chunk_processed.chunk_id: not a UUID: 'x'")
        for row in rows
    )
    assert rows[0].split("  ")[3:5] == ["PipelineCreated", long_pipeline[:8]]
    assert captured.err == ""
