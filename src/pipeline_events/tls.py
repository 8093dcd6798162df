"""TLS files for the clients and the server: read, checked, and turned into gRPC credentials.

A client names the CA that signed the server's certificate (`--tls-ca`), and for
mutual TLS its own certificate and key (`--tls-cert`, `--tls-key`); each may also
come from the environment (`PIPELINE_EVENTS_TLS_CA`, `_CERT`, `_KEY`). Every
problem with the files (missing, unreadable, not PEM, a key that is not the
certificate's) is a `TlsError` naming the file, before any connection is tried.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_events.errors import PipelineEventsError

ENV_CA = "PIPELINE_EVENTS_TLS_CA"
ENV_CERT = "PIPELINE_EVENTS_TLS_CERT"
ENV_KEY = "PIPELINE_EVENTS_TLS_KEY"


class TlsError(PipelineEventsError, ValueError):
    """TLS files that cannot be used (named in the message)."""


def read_pem(path: str | Path, what: str) -> bytes:
    """A PEM file's bytes.

    Raises:
        TlsError: missing, unreadable, or not PEM.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TlsError(f"{what} {path}: {error.strerror or error}") from error
    if b"-----BEGIN " not in data:
        raise TlsError(f"{what} {path}: not a PEM file")
    return data


def check_key_pair(cert: bytes, key: bytes, cert_path: str | Path, key_path: str | Path) -> None:
    """That `key` is the private key of `cert` (and both parse).

    Raises:
        TlsError: naming both files.
    """
    with tempfile.TemporaryDirectory() as scratch:  # ssl loads chains from files only
        cert_file, key_file = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        cert_file.write_bytes(cert)
        key_file.write_bytes(key)
        os.chmod(key_file, 0o600)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_file, key_file)
        except ssl.SSLError as error:
            raise TlsError(
                f"certificate {cert_path} and key {key_path} cannot be used together:"
                f" {error.reason or error}"
            ) from error


def check_ca(ca: bytes, path: str | Path) -> None:
    """That `ca` holds at least one certificate.

    Raises:
        TlsError: naming the file.
    """
    try:
        ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as error:
        raise TlsError(f"CA certificates {path}: {error}") from error


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client trusts (`ca`), and what it proves (`cert` and `key`, for mutual TLS)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @classmethod
    def of(
        cls,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> ClientTls | None:
        """Options given, else the environment's; None when neither asks for TLS.

        Raises:
            TlsError: a certificate without its key, or a key without its certificate.
        """
        ca = ca or environ.get(ENV_CA) or None
        cert = cert or environ.get(ENV_CERT) or None
        key = key or environ.get(ENV_KEY) or None
        if (cert is None) != (key is None):
            raise TlsError("a client certificate needs its key, and a key its certificate")
        if ca is None and cert is None:
            return None
        return cls(*(None if p is None else Path(p) for p in (ca, cert, key)))

    def credentials(self) -> Any:
        """gRPC channel credentials (grpc.ChannelCredentials); files read and checked now.

        Raises:
            TlsError: a file that cannot be used.
        """
        import grpc

        ca = None if self.ca is None else read_pem(self.ca, "CA certificates")
        if ca is not None:
            check_ca(ca, self.ca)  # type: ignore[arg-type]
        cert = key = None
        if self.cert is not None and self.key is not None:
            cert = read_pem(self.cert, "client certificate")
            key = read_pem(self.key, "client key")
            check_key_pair(cert, key, self.cert, self.key)
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
