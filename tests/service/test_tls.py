"""TLS and mutual TLS, with certificates made at run time: the CLI and the Python client
connect as the README shows; a client without a certificate, with one from another CA or an
expired one is refused; SIGHUP re-reads the certificates without a restart; plaintext off
loopback is refused unless --insecure; bad TLS files are one line and an exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pipeline_events import adapter, domain
from pipeline_events.client import (
    AsyncEventClient,
    EventClient,
    PermissionDeniedError,
    RetryPolicy,
    ServiceUnavailableError,
)
from pipeline_events.service.serve import ServerTlsFiles, check_secure, is_loopback, parse_listen
from pipeline_events.service.tls import ServerTls
from pipeline_events.service.violations import SYSTEM_PIPELINE
from pipeline_events.store import SQLiteEventStore
from pipeline_events.tls import ClientTls, TlsError
from tests.service.conftest import CLI, ServerProcess, start_server_process, stop_process
from tests.tls_support import Authority, Issued

ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A CA with a server certificate and a client one; another CA with its own client."""
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority.create(directory, "good")
    other = Authority.create(directory, "other")
    return {
        "ca": ca,
        "server": ca.issue("server", server=True),
        "client": ca.issue("alice"),
        "expired": ca.issue("bob", expired=True),
        "stranger": other.issue("mallory"),
        "other_ca": other,
    }


def serve_tls(tmp_path: Path, pki: dict[str, object], *, mutual: bool) -> ServerProcess:
    server: Issued = pki["server"]  # type: ignore[assignment]
    ca: Authority = pki["ca"]  # type: ignore[assignment]
    options = ["--tls-cert", str(server.cert), "--tls-key", str(server.key)]
    if mutual:
        options += ["--tls-client-ca", str(ca.cert)]
    return start_server_process(f"sqlite:///{tmp_path}/events.db", options=options)


@pytest.fixture
def tls_server(tmp_path: Path, pki: dict[str, object]) -> Iterator[ServerProcess]:
    process = serve_tls(tmp_path, pki, mutual=False)
    yield process
    assert stop_process(process.process) == 0


@pytest.fixture
def mtls_server(tmp_path: Path, pki: dict[str, object]) -> Iterator[ServerProcess]:
    process = serve_tls(tmp_path, pki, mutual=True)
    yield process
    assert stop_process(process.process) == 0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def chunk() -> domain.ChunkProcessed:
    return domain.ChunkProcessed.new(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 0, 1, "s", 1)


def test_tls_serves_the_cli_and_the_client_and_refuses_plaintext(
    tls_server: ServerProcess, pki: dict[str, object]
) -> None:
    ca: Authority = pki["ca"]  # type: ignore[assignment]
    assert "TLS" in "".join(tls_server.log)
    status = cli("status", "--json", "--target", tls_server.target, "--tls-ca", str(ca.cert))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["health"] == "SERVING"
    credentials = ClientTls.of(ca.cert).credentials()  # type: ignore[union-attr]
    with EventClient(tls_server.target, credentials=credentials) as client:
        assert client.publish([chunk()]).positions[0].global_position == 1
    # The environment works as the options do.
    by_env = cli(
        "status", "--target", tls_server.target, env={"PIPELINE_EVENTS_TLS_CA": str(ca.cert)}
    )
    assert by_env.returncode == 0, by_env.stderr
    # Plaintext to a TLS port: unreachable, one line, status 2.
    plain = cli("status", "--target", tls_server.target, "--timeout", "2")
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1
    # A CA that did not sign the server's certificate: refused.
    other: Authority = pki["other_ca"]  # type: ignore[assignment]
    wrong = cli(
        "status", "--target", tls_server.target, "--tls-ca", str(other.cert), "--timeout", "2"
    )
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr


async def test_mutual_tls_admits_only_clients_the_ca_signed(
    mtls_server: ServerProcess, pki: dict[str, object]
) -> None:
    ca: Authority = pki["ca"]  # type: ignore[assignment]
    client: Issued = pki["client"]  # type: ignore[assignment]
    good = ClientTls.of(ca.cert, client.cert, client.key).credentials()  # type: ignore[union-attr]
    async with AsyncEventClient(mtls_server.target, credentials=good) as events:
        assert (await events.publish([chunk()])).positions[0].global_position == 1
    ok = cli("status", "--target", mtls_server.target, "--tls-ca", str(ca.cert),
             "--tls-cert", str(client.cert), "--tls-key", str(client.key))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    for name in ("no certificate", "expired", "stranger"):
        if name == "no certificate":
            credentials = ClientTls.of(ca.cert).credentials()  # type: ignore[union-attr]
        else:
            issued: Issued = pki[name]  # type: ignore[assignment]
            credentials = ClientTls.of(ca.cert, issued.cert, issued.key).credentials()  # type: ignore[union-attr]
        with (
            EventClient(
                mtls_server.target, credentials=credentials, timeout=2, retry=ONCE
            ) as refused,
            pytest.raises(ServiceUnavailableError),  # the handshake fails: no call gets in
        ):
            refused.publish([chunk()])
    with EventClient(mtls_server.target, credentials=good) as events:
        assert events.read_aggregate(uuid.uuid4()) == []  # the good client is still served


def test_sighup_rereads_the_certificates_without_a_restart(
    tmp_path: Path, pki: dict[str, object]
) -> None:
    ca: Authority = pki["ca"]  # type: ignore[assignment]
    other: Authority = pki["other_ca"]  # type: ignore[assignment]
    live = tmp_path / "live"
    live.mkdir()
    first = ca.issue("live-server-1", server=True)  # own names: the shared ones stay as they are
    cert, key = live / "cert.pem", live / "key.pem"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    process = start_server_process(
        f"sqlite:///{tmp_path}/events.db", options=["--tls-cert", str(cert), "--tls-key", str(key)]
    )
    try:

        def status(trust: Authority) -> int:
            return cli("status", "--target", process.target, "--tls-ca", str(trust.cert),
                       "--timeout", "2").returncode  # fmt: skip

        assert status(ca) == 0 and status(other) == 2
        # Certificates renewed by another CA, then SIGHUP: new connections use them.
        renewed = other.issue("live-server-2", server=True)
        cert.write_bytes(renewed.cert.read_bytes())
        key.write_bytes(renewed.key.read_bytes())
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while status(other) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status(other) == 0 and status(ca) == 2
        assert process.process.poll() is None  # the same process
        # Broken files on reload: logged, and the server keeps the certificates it has.
        key.write_text("not a key")
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "TLS reload failed" not in "".join(process.log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "TLS reload failed" in "".join(process.log)
        assert status(other) == 0
    finally:
        assert stop_process(process.process) == 0


def test_plaintext_off_loopback_is_refused_unless_insecure(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="--tls-cert and --tls-key, or --insecure"):
        check_secure(parse_listen("0.0.0.0:0"), None, insecure=False)
    check_secure(parse_listen("0.0.0.0:0"), None, insecure=True)  # said so: allowed
    tls = ServerTlsFiles(Path("c"), Path("k"))
    with pytest.raises(ValueError, match="give --auth FILE"):  # TLS, but anyone may call
        check_secure(parse_listen("0.0.0.0:0"), tls, insecure=False)
    check_secure(parse_listen("0.0.0.0:0"), tls, insecure=False, auth=Path("principals.toml"))
    refused = cli("serve", "--store", "memory://", "--listen", "0.0.0.0:0")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "pipeline-events serve: 0.0.0.0:0 is reachable from other machines and the connection"
        " would be plaintext: anyone who reaches it could read and write the log; give"
        " --tls-cert and --tls-key, or --insecure to accept that"
    ]
    allowed = start_server_process("memory://", options=["--insecure"])  # loopback anyway
    assert stop_process(allowed.process) == 0


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ("missing", "no such file"),
        ("not pem", "not a PEM file"),
        ("mismatched", "cannot be used together"),
        ("cert only", "TLS needs both --tls-cert and --tls-key"),
    ],
)
def test_bad_tls_files_are_one_line(
    tmp_path: Path, pki: dict[str, object], files: str, problem: str
) -> None:
    server: Issued = pki["server"]  # type: ignore[assignment]
    client: Issued = pki["client"]  # type: ignore[assignment]
    (tmp_path / "junk.pem").write_text("hello")
    options = {
        "missing": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(server.key)],
        "not pem": ["--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(server.key)],
        "mismatched": ["--tls-cert", str(server.cert), "--tls-key", str(client.key)],
        "cert only": ["--tls-cert", str(server.cert)],
    }[files]
    result = cli("serve", "--store", "memory://", "--listen", "127.0.0.1:0", *options)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert problem in line, line
    # The client side says the same before connecting.
    with pytest.raises(TlsError, match="cannot be used together"):
        ClientTls.of(None, server.cert, client.key).credentials()  # type: ignore[union-attr]
    with pytest.raises(TlsError, match="needs its key"):
        ClientTls.of(None, server.cert, None)


def test_server_tls_reload_keeps_the_old_certificates_on_bad_files(
    tmp_path: Path, pki: dict[str, object]
) -> None:
    server: Issued = pki["server"]  # type: ignore[assignment]
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(server.cert.read_bytes())
    key.write_bytes(server.key.read_bytes())
    tls = ServerTls(ServerTlsFiles(cert, key))
    assert isinstance(tls.credentials(), grpc.ServerCredentials)
    assert tls._fetch() is None  # nothing new: gRPC keeps what it has
    assert tls.reload() and tls._fetch() is not None and tls._fetch() is None
    key.write_text("garbage")
    assert not tls.reload() and tls._fetch() is None


async def test_a_refused_mutual_tls_caller_is_named_by_its_certificate(
    tmp_path: Path, pki: dict[str, object]
) -> None:
    ca: Authority = pki["ca"]  # type: ignore[assignment]
    server: Issued = pki["server"]  # type: ignore[assignment]
    client: Issued = pki["client"]  # type: ignore[assignment]
    principals = tmp_path / "principals.toml"
    principals.write_text("")  # nobody has a token
    path = tmp_path / "events.db"
    process = start_server_process(
        f"sqlite:///{path}",
        options=["--tls-cert", str(server.cert), "--tls-key", str(server.key),
                 "--tls-client-ca", str(ca.cert), "--auth", str(principals)],
    )  # fmt: skip
    try:
        credentials = ClientTls.of(ca.cert, client.cert, client.key).credentials()  # type: ignore[union-attr]
        with (
            EventClient(process.target, credentials=credentials, retry=ONCE) as alice,
            pytest.raises(PermissionDeniedError),
        ):
            alice.publish([chunk()])
    finally:
        assert stop_process(process.process) == 0  # writes the counted refusal
    async with await SQLiteEventStore.open(path) as store:
        events = [
            adapter.from_envelope(r.envelope)
            for r in await store.read_aggregate(str(SYSTEM_PIPELINE))
        ]
    (violation,) = [e for e in events if isinstance(e, domain.SecurityViolation)]
    assert (violation.violation_type, violation.user_id) == ("unauthenticated", "alice")
