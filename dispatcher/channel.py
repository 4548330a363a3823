"""Client channels for the CLI (and tests): TLS with call credentials, or plaintext
with the token in a header only when talking to loopback."""

from __future__ import annotations

import collections
from typing import Any

import grpc

LOOPBACK = ("127.", "localhost:", "[::1]:")


class _Call(
    collections.namedtuple(
        "_Call", ("method", "timeout", "metadata", "credentials", "wait_for_ready")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (plaintext loopback only)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [*(details.metadata or []), self._header]
        new = _Call(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return continuation(new, request)


def open_channel(address: str, token: str = "", tls_ca: str = "") -> grpc.Channel:
    if tls_ca:
        with open(tls_ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        if token:
            creds = grpc.composite_channel_credentials(
                creds, grpc.access_token_call_credentials(token)
            )
        return grpc.secure_channel(address, creds)
    channel = grpc.insecure_channel(address)
    if not token:
        return channel
    if not address.startswith(LOOPBACK):
        raise SystemExit(
            "refusing to send a token in plaintext to a non-loopback address: use --tls-ca"
        )
    return grpc.intercept_channel(channel, BearerInterceptor(token))
