"""Bearer tokens with roles and pipelines (`serve --auth`), through a real `serve` process:
who may call what, on which pipelines; refusals are UNAUTHENTICATED or PERMISSION_DENIED with
one line in the CLI; a principal removed from the file on SIGHUP is refused and its open
streams end; a burst of bad tokens does not stop good callers; health stays open."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from adaptive_pipeline.events.v1 import service_pb2, service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeline_events import adapter, domain
from pipeline_events.client import (
    AsyncEventClient,
    ClientError,
    EventClient,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryPolicy,
)
from pipeline_events.service.auth import FAILED_CHECKS
from pipeline_events.service.violations import SYSTEM_NAME, SYSTEM_PIPELINE
from pipeline_events.store import SQLiteEventStore
from pipeline_events.tokens import (
    AuthFileError,
    hash_secret,
    load_principals,
    new_token,
    verify_secret,
)
from tests.service.conftest import CLI, ServerProcess, start_server_process, stop_process

ONCE = RetryPolicy(max_attempts=1)
CONTEXT = domain.SecurityContext(user_id="alice")
MINE = uuid.uuid4()  # the one pipeline the limited principal may touch


def make_token(*args: str) -> tuple[str, str]:
    """`pipeline-events token create ...`: the token (stdout) and the TOML lines (stderr)."""
    result = subprocess.run(
        [CLI, "token", "create", *args], capture_output=True, text=True, timeout=60, check=True
    )
    toml = result.stderr[result.stderr.index("[[principal]]") :]
    return result.stdout.strip(), toml


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("auth")
    made = {
        "publisher": make_token("ingest", "--role", "publisher"),
        "subscriber": make_token("dashboard", "--role", "subscriber"),
        "admin": make_token("ops", "--role", "admin"),
        "limited": make_token(
            "one-pipeline", "--role", "publisher", "--role", "subscriber", "--pipeline", str(MINE)
        ),
    }
    path = directory / "principals.toml"
    path.write_text("\n".join(toml for _, toml in made.values()))
    path.chmod(0o600)
    return {"path": path, **{name: token for name, (token, _) in made.items()}}


@pytest.fixture
def server(tmp_path: Path, tokens: dict[str, object]) -> Iterator[ServerProcess]:
    process = start_server_process(
        f"sqlite:///{tmp_path}/events.db", options=["--auth", str(tokens["path"])]
    )
    yield process
    assert stop_process(process.process) == 0


def chunk(pipeline: uuid.UUID | None = None) -> domain.ChunkProcessed:
    pipeline = pipeline or uuid.uuid4()
    return domain.ChunkProcessed.new(pipeline, uuid.uuid4(), uuid.uuid4(), 0, 1, "s", 1)


def client(server: ServerProcess, token: object | None) -> EventClient:
    return EventClient(server.target, token=None if token is None else str(token), retry=ONCE)


def test_tokens_are_made_once_and_hashed_with_scrypt(tokens: dict[str, object]) -> None:
    principals = load_principals(tokens["path"])  # type: ignore[arg-type]
    assert {p.name for p in principals.values()} == {"ingest", "dashboard", "ops", "one-pipeline"}
    token, token_id, line = new_token()
    assert token.startswith(f"pe_{token_id}_") and line.startswith("scrypt$16384$8$1$")
    secret = token.split("_", 2)[2]
    assert verify_secret(secret, line) and not verify_secret(secret + "x", line)
    assert hash_secret(secret) != line  # salted
    assert str(tokens["publisher"]) not in tokens["path"].read_text()  # type: ignore[union-attr]


def test_a_principal_name_of_any_text_makes_valid_toml(tmp_path: Path) -> None:
    name = 'quote " backslash \\ tab \t é'
    _, toml = make_token(name, "--role", "admin")
    (tmp_path / "p.toml").write_text(toml)
    (principal,) = load_principals(tmp_path / "p.toml").values()
    assert principal.name == name


def test_each_role_calls_what_it_may_and_nothing_else(
    server: ServerProcess, tokens: dict[str, object]
) -> None:
    pipeline = uuid.uuid4()
    with client(server, tokens["publisher"]) as publisher:
        assert publisher.publish([chunk(pipeline)]).positions[0].global_position == 1
        with pytest.raises(PermissionDeniedError, match="may not call ReadAggregate") as denied:
            publisher.read_aggregate(pipeline)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    with client(server, tokens["subscriber"]) as subscriber:
        assert len(subscriber.read_aggregate(pipeline)) == 1
        assert subscriber.runs() != []
        with pytest.raises(PermissionDeniedError, match="may not call Publish"):
            subscriber.publish([chunk()])
    with client(server, tokens["admin"]) as admin:
        admin.publish([chunk(pipeline)])
        assert len(admin.read_aggregate(pipeline)) == 2
    for token in (None, "nonsense", "pe_AAAAAAAA_" + "x" * 43, str(tokens["admin"])[:-1] + "!"):
        with client(server, token) as stranger, pytest.raises(PermissionDeniedError) as refused:
            stranger.publish([chunk()])
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    # Health stays open: load balancers and probes carry no token.
    with grpc.insecure_channel(server.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_principal_limited_to_pipelines_touches_only_those(
    server: ServerProcess, tokens: dict[str, object]
) -> None:
    with client(server, tokens["limited"]) as limited:
        limited.publish([chunk(MINE)])
        assert len(limited.read_aggregate(MINE)) == 1
        for call in (
            lambda: limited.publish([chunk(MINE), chunk()]),  # one event of another pipeline
            lambda: limited.read_aggregate(uuid.uuid4()),
            lambda: limited.runs(),  # every pipeline's runs
            lambda: next(iter(limited.subscribe(from_position="start", reconnect=ONCE))),
        ):
            with pytest.raises(PermissionDeniedError, match="may not touch these pipelines"):
                call()
        # A run names its pipeline only in its state: checked there.
        own_run, other_run = uuid.uuid4(), uuid.uuid4()
        limited.publish([domain.ProcessingStarted.new(MINE, own_run, "/i", "/o", 1, CONTEXT)])
        with client(server, tokens["admin"]) as admin:
            other = uuid.uuid4()
            admin.publish([domain.ProcessingStarted.new(other, other_run, "/i", "/o", 1, CONTEXT)])
        assert limited.run_state(own_run, min_position=1).pipeline_id == MINE
        with pytest.raises(PermissionDeniedError, match="may not touch these pipelines"):
            limited.run_state(other_run, min_position=1)
        mine = limited.subscribe(from_position="start", pipeline_ids=[MINE], reconnect=ONCE)
        assert next(iter(mine)).pipeline_id == str(MINE)
        mine.close()


def test_the_cli_sends_tokens_and_says_why_it_is_refused(
    server: ServerProcess, tokens: dict[str, object]
) -> None:
    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args, "--target", server.target], capture_output=True, text=True,
            timeout=60, check=False, env={**os.environ, **(env or {})},
        )  # fmt: skip

    assert cli("status", "--token", str(tokens["subscriber"])).returncode == 0
    by_env = cli("runs", env={"PIPELINE_EVENTS_TOKEN": str(tokens["subscriber"])})
    assert by_env.returncode == 0, by_env.stderr
    refused = cli("runs")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "bearer token is required" in line
    wrong_role = cli("runs", "--token", str(tokens["publisher"]))
    assert "ingest may not call ListProcessingRuns" in wrong_role.stderr


def test_sighup_removes_a_principal_and_ends_its_streams(
    tmp_path: Path, tokens: dict[str, object]
) -> None:
    principals = tmp_path / "principals.toml"
    original = tokens["path"].read_text()  # type: ignore[union-attr]
    principals.write_text(original)
    process = start_server_process(
        f"sqlite:///{tmp_path}/events.db", options=["--auth", str(principals)]
    )
    try:
        with client(process, tokens["subscriber"]) as subscriber:
            stream = subscriber.subscribe(from_position="start", reconnect=ONCE)
            items = iter(stream)
            with client(process, tokens["publisher"]) as publisher:
                publisher.publish([chunk()])
            assert next(items).global_position == 1
            # The dashboard's principal goes; SIGHUP re-reads the file.
            kept = [block for block in original.split("[[principal]]") if "dashboard" not in block]
            principals.write_text("[[principal]]".join(kept))
            process.process.send_signal(signal.SIGHUP)
            with pytest.raises(ClientError):  # its open stream ends
                next(items)
            with pytest.raises(PermissionDeniedError) as gone:
                subscriber.read_aggregate(uuid.uuid4())
            assert gone.value.code == grpc.StatusCode.UNAUTHENTICATED
        with client(process, tokens["admin"]) as admin:  # the others stay
            assert admin.read_aggregate(uuid.uuid4()) == []
    finally:
        assert stop_process(process.process) == 0


async def test_a_burst_of_1000_bad_tokens_costs_bounded_checks_and_bounded_events(
    tmp_path: Path, tokens: dict[str, object]
) -> None:
    path = tmp_path / "events.db"
    process = start_server_process(f"sqlite:///{path}", options=["--auth", str(tokens["path"])])
    admin, publisher = str(tokens["admin"]), str(tokens["publisher"])
    try:
        async with AsyncEventClient(process.target, token=admin) as good:
            await good.publish([chunk()])  # its token is checked once, then remembered
            async with grpc.aio.insecure_channel(process.target) as channel:
                stub = service_pb2_grpc.EventServiceStub(channel)
                request = service_pb2.PublishRequest(events=[adapter.to_envelope(chunk())])

                async def stranger(n: int) -> tuple[grpc.StatusCode, str]:
                    guesses = [
                        admin[:-4] + f"{n:04d}",  # a known token id, the wrong secret
                        f"pe_{n:08d}_" + "x" * 43,  # an unknown token id
                        "not a token",
                    ]
                    metadata = (("authorization", f"Bearer {guesses[n % 3]}"),)
                    try:
                        await stub.Publish(request, metadata=metadata, timeout=60)
                    except grpc.aio.AioRpcError as error:
                        return error.code(), error.details() or ""
                    return grpc.StatusCode.OK, ""

                burst = asyncio.gather(*(stranger(n) for n in range(1000)))
                served = await good.publish([chunk()])  # during the burst
                answers = await burst
            # A principal attacked by guesses keeps being served (its token was verified);
            # another principal's first call is not stuck behind the guesses either.
            async with AsyncEventClient(process.target, token=publisher, retry=ONCE) as other:
                assert (await other.publish([chunk()])).positions[0].global_position > 2
    finally:
        assert stop_process(process.process) == 0
    assert {code for code, _ in answers} == {grpc.StatusCode.UNAUTHENTICATED}
    assert served.positions[0].global_position >= 2
    guessed = [details for n, (_, details) in enumerate(answers) if n % 3 == 0]
    throttled = sum("too many failed attempts" in d for d in guessed)
    assert throttled >= len(guessed) - FAILED_CHECKS  # at most FAILED_CHECKS hashed
    async with await SQLiteEventStore.open(path) as store:
        recorded = await store.read_aggregate(str(SYSTEM_PIPELINE))
    # 1,000 refusals from one source and of one kind, a few aggregate events.
    violations = [adapter.from_envelope(r.envelope) for r in recorded][1:]
    assert 1 <= len(violations) <= 4
    assert sum(int(v.description.split()[0]) for v in violations) == 1000


def test_a_principal_may_have_limits_of_its_own(tmp_path: Path) -> None:
    token, toml = make_token("trickle", "--role", "admin")
    auth = tmp_path / "principals.toml"
    auth.write_text(toml + "max_streams = 1\npublish_rate = 5\n")
    auth.chmod(0o600)
    process = start_server_process(f"sqlite:///{tmp_path}/events.db", options=["--auth", str(auth)])
    try:
        with EventClient(process.target, token=token, retry=ONCE) as trickle:
            with pytest.raises(ResourceExhaustedError, match="more than trickle may publish"):
                trickle.publish([chunk() for _ in range(6)])
            trickle.publish([chunk() for _ in range(5)])
            first = trickle.subscribe(from_position="start", reconnect=ONCE)
            assert next(iter(first)).global_position == 1
            with pytest.raises(ResourceExhaustedError, match="trickle has 1 streams open"):
                next(iter(trickle.subscribe(from_position="start", reconnect=ONCE)))
            first.close()
    finally:
        assert stop_process(process.process) == 0


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("max_streams = 0\n", "max_streams must be a whole number >= 1"),
        ('max_streams = "2"\n', "max_streams must be a whole number >= 1"),
        ("publish_rate = -1\n", "publish_rate must be a number of events per second > 0"),
        ("publish_rate = nan\n", "publish_rate must be a number of events per second > 0"),
    ],
)
def test_bad_per_principal_limits_are_refused(tmp_path: Path, extra: str, problem: str) -> None:
    _, toml = make_token("x", "--role", "admin")
    auth = tmp_path / "principals.toml"
    auth.write_text(toml + extra)
    auth.chmod(0o600)
    with pytest.raises(AuthFileError, match=problem):
        load_principals(auth)


def test_token_create_adds_to_a_principals_file_it_creates_0600(tmp_path: Path) -> None:
    auth = tmp_path / "principals.toml"
    for name in ("first", "second"):
        result = subprocess.run(
            [CLI, "token", "create", name, "--role", "admin", "--file", str(auth)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert f"added {name} to {auth}" in result.stderr
        assert "[[principal]]" not in result.stderr  # the lines went to the file
    assert auth.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in load_principals(auth).values()) == ["first", "second"]
    auth.write_text("not toml [")
    broken = subprocess.run(
        [CLI, "token", "create", "third", "--role", "admin", "--file", str(auth)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert broken.returncode == 1 and broken.stdout == ""  # no token for a file left as it was
    assert broken.stderr.startswith(f"pipeline-events token: principals file {auth}: not TOML")
    assert auth.read_text() == "not toml ["


def test_a_principals_file_others_may_write_is_refused(tmp_path: Path) -> None:
    _, toml = make_token("x", "--role", "admin")
    auth = tmp_path / "principals.toml"
    auth.write_text(toml)
    auth.chmod(0o620)
    result = subprocess.run(
        [CLI, "serve", "--store", "memory://", "--listen", "127.0.0.1:0", "--auth", str(auth)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"pipeline-events serve: principals file {auth} is writable by other users"
        f" (mode 620): chmod 600 {auth}"
    )


async def test_refusals_are_recorded_as_bounded_security_violation_events(
    tmp_path: Path, tokens: dict[str, object]
) -> None:
    path = tmp_path / "events.db"
    process = start_server_process(f"sqlite:///{path}", options=["--auth", str(tokens["path"])])
    try:

        async def refused(token: str | None) -> None:
            async with AsyncEventClient(process.target, token=token, retry=ONCE) as caller:
                with pytest.raises(ClientError):
                    await caller.publish([chunk()])

        await asyncio.gather(*(refused("pe_AAAAAAAA_" + "x" * 43) for _ in range(300)))
        await refused(str(tokens["subscriber"]))  # a known principal without the role
    finally:
        assert stop_process(process.process) == 0  # a graceful stop writes what was counted
    system = str(SYSTEM_PIPELINE)
    async with await SQLiteEventStore.open(path) as store:
        events = [adapter.from_envelope(r.envelope) for r in await store.read_aggregate(system)]
    assert isinstance(events[0], domain.PipelineCreated)
    violations = {(e.violation_type, e.user_id): e for e in events[1:]}
    assert len(events) == 3  # 301 refusals, two events: bounded by sources and kinds
    flood = violations[("unauthenticated", None)]
    assert flood.description.startswith("300 refused calls") and flood.source_ip == "127.0.0.1"
    denied = violations[("permission_denied", "dashboard")]
    assert denied.severity is domain.SecurityViolationSeverity.HIGH
    # Visible where operators look: history, and the system pipeline's state.
    process = start_server_process(f"sqlite:///{path}", options=["--auth", str(tokens["path"])])
    try:
        with client(process, tokens["admin"]) as admin:
            state = admin.pipeline_state(SYSTEM_PIPELINE, min_position=3)
            assert (state.pipeline_name, state.security_violations) == (SYSTEM_NAME, 2)
        history = subprocess.run(
            [CLI, "history", system, "--target", process.target, "--token", str(tokens["admin"])],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert history.returncode == 0, history.stderr
        assert "300 refused calls" in history.stdout
    finally:
        assert stop_process(process.process) == 0


def test_a_caller_over_its_stream_limit_or_publish_rate_is_refused(
    tmp_path: Path, tokens: dict[str, object]
) -> None:
    process = start_server_process(
        f"sqlite:///{tmp_path}/events.db",
        options=["--auth", str(tokens["path"]), "--max-streams-per-caller", "3",
                 "--publish-rate", "20"],
    )  # fmt: skip
    try:
        with (
            client(process, tokens["admin"]) as admin,
            client(process, tokens["subscriber"]) as other,
        ):
            streams = [admin.subscribe(from_position="start", reconnect=ONCE) for _ in range(3)]
            opened = [iter(s) for s in streams]
            admin.publish([chunk()])
            assert all(next(items).global_position == 1 for items in opened)  # three slots held
            fourth = admin.subscribe(from_position="start", reconnect=ONCE)
            with pytest.raises(ResourceExhaustedError, match="ops has 3 streams open"):
                next(iter(fourth))
            # Another principal has slots of its own.
            mine = other.subscribe(from_position="start", reconnect=ONCE)
            assert next(iter(mine)).global_position == 1
            mine.close()
            for stream in streams:
                stream.close()
            # 20 events per second, a burst of one second: a batch of 21 can never pass.
            with pytest.raises(ResourceExhaustedError, match="more than ops may publish at once"):
                admin.publish([chunk() for _ in range(21)])
        # Publishing faster than the rate: refused with a RetryInfo, which clients wait out.
        with EventClient(process.target, token=str(tokens["admin"]), retry=ONCE) as hasty:
            hasty.publish([chunk() for _ in range(20)])
            with pytest.raises(ResourceExhaustedError, match="faster than 20 events per second"):
                hasty.publish([chunk() for _ in range(20)])
        patient = RetryPolicy(max_attempts=20, initial_backoff=0.05, max_backoff=0.5)
        with EventClient(process.target, token=str(tokens["admin"]), retry=patient) as steady:
            for _ in range(3):
                assert len(steady.publish([chunk() for _ in range(20)]).positions) == 20
    finally:
        assert stop_process(process.process) == 0


def test_caller_limits_without_auth_are_a_usage_error() -> None:
    result = subprocess.run(
        [CLI, "serve", "--store", "memory://", "--listen", "127.0.0.1:0", "--publish-rate", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pipeline-events serve: --publish-rate and --max-streams-per-caller limit principals:"
        " they need --auth"
    ]
