"""The server's TLS: certificate and key (and, for mutual TLS, the clients' CA), re-read on
SIGHUP without a restart.

gRPC asks `ServerTls` for a new configuration before every handshake; after a
`reload()` it hands over the files read then, so connections made from then on
use them and open ones go on with theirs. A reload whose files cannot be used
is logged and changes nothing: the server keeps the certificates it has.

With a client CA every client must present a certificate it signed; the
certificate's subject (its first DNS or URI subject alternative name, else its
common name) is the caller's identity (`peer_identity`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import grpc

from pipeline_events.service.serve import ServerTlsFiles
from pipeline_events.tls import TlsError, check_ca, check_key_pair, read_pem

_log = logging.getLogger(__name__)


class ServerTls:
    """Server credentials from files, re-read by `reload()` (the server calls it on SIGHUP)."""

    def __init__(self, files: ServerTlsFiles):
        self.files = files
        self._initial = self._load()  # raises TlsError: the server does not start
        self._pending: Any = None
        self._lock = threading.Lock()  # the fetch runs on gRPC's threads
        self.reloads = 0

    def _load(self) -> Any:
        files = self.files
        cert = read_pem(files.cert, "server certificate")
        key = read_pem(files.key, "server key")
        check_key_pair(cert, key, files.cert, files.key)
        ca = None
        if files.client_ca is not None:
            ca = read_pem(files.client_ca, "client CA certificates")
            check_ca(ca, files.client_ca)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> bool:
        """Re-read the files; True if they were usable (and are used from the next handshake)."""
        try:
            configuration = self._load()
        except TlsError as error:
            _log.error("TLS reload failed, the current certificates stay: %s", error)
            return False
        with self._lock:
            self._pending = configuration
            self.reloads += 1
        _log.info("TLS certificates re-read (reload %d)", self.reloads)
        return True

    def _fetch(self) -> Any:
        with self._lock:
            configuration, self._pending = self._pending, None
        return configuration  # None: keep the current one

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials that follow `reload()`."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,
            require_client_authentication=self.files.client_ca is not None,
        )


def peer_identity(context: Any) -> str | None:
    """The caller's identity from its verified client certificate (None: no certificate)."""
    auth = context.auth_context() or {}
    for key in ("x509_subject_alternative_name", "x509_common_name"):
        values = auth.get(key) or []
        if values:
            value = values[0]
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None
