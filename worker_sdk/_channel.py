"""The client channel: TLS or loopback plaintext, the token and the trace context on every call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import propagate

from worker_sdk.options import ConnectOptions

LOOPBACK = ("127.", "localhost:", "[::1]:", "unix:")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def _with_metadata(details: grpc.aio.ClientCallDetails, extra: Sequence[tuple[str, str]]) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in extra:
        metadata.add(key, value)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the caller's trace, so the job carries it to its worker
    for key, value in carrier.items():
        metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self.extra = extra

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self.extra), request)


class _Stream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self.extra = extra

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_metadata(details, self.extra), request)


def open_channel(o: ConnectOptions) -> grpc.aio.Channel:
    """A channel for these options. The token goes in a header; never in plaintext off loopback."""
    extra = [("authorization", f"Bearer {o.token}")] if o.token else []
    interceptors = [_Unary(extra), _Stream(extra)]
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
    ]
    if o.tls_ca or o.tls_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(o.tls_ca),
            private_key=_read(o.tls_key),
            certificate_chain=_read(o.tls_cert),
        )
        if o.tls_server_name:
            options.append(("grpc.ssl_target_name_override", o.tls_server_name))
        return grpc.aio.secure_channel(o.address, creds, options, interceptors=interceptors)
    if o.token and not o.address.startswith(LOOPBACK):
        raise ValueError(
            f"refusing to send a token in plaintext to {o.address}: set tls_ca to use TLS"
        )
    return grpc.aio.insecure_channel(o.address, options, interceptors=interceptors)


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None
