"""Binding the listener: plaintext, TLS, or mutual TLS, with certificates re-read
from disk when they change (no restart needed to rotate them)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from dispatcher.config import Settings

logger = logging.getLogger(__name__)


class CertificateFiles:
    """Serves the current certificate files to grpc, reloading them when their mtime changes."""

    def __init__(self, cert: str, key: str, client_ca: str) -> None:
        self.paths = [Path(p) for p in (cert, key, client_ca) if p]
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca
        self._stamp: tuple[float, ...] = ()

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime for p in self.paths)

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        pair = [(self.key.read_bytes(), self.cert.read_bytes())]
        self._stamp = self._mtimes()
        return grpc.ssl_server_certificate_configuration(pair, root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by grpc on each new connection: a new configuration when files changed."""
        try:
            if self._mtimes() == self._stamp:
                return None
            logger.info("TLS certificate files changed: reloading")
            return self.configuration()
        except OSError:
            logger.exception("could not reload the TLS certificate files; keeping the old ones")
            return None


def bind(server: grpc.aio.Server, s: Settings) -> int:
    address = f"{s.host}:{s.port}"
    if not s.tls_cert:
        return server.add_insecure_port(address)
    files = CertificateFiles(s.tls_cert, s.tls_key, s.tls_client_ca)
    credentials = grpc.dynamic_ssl_server_credentials(
        files.configuration(),
        files.fetch,  # type: ignore[arg-type]  # grpc documents None as "no change"
        require_client_authentication=bool(s.tls_client_ca),
    )
    return server.add_secure_port(address, credentials)
