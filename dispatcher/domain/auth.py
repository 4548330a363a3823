"""Who is calling: principals, roles, and the bearer tokens that prove them.

A token is "dsp_<key id>_<secret>". The server keeps only SHA-256(secret)
(the secret has 256 random bits, so a fast hash is enough) and compares
digests in constant time. A principal belongs to one namespace and holds roles:

- producer: Enqueue, EnqueueBatch, GetStatus, StreamUpdates, Cancel (and schedules)
- worker: Lease, Heartbeat, Ack, Nack
- admin: the AdminService

The current principal travels in a context variable set by the auth
interceptor, so the domain can bind leases to it without knowing about gRPC.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

TOKEN_RE = re.compile(r"dsp_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class Role(StrEnum):
    PRODUCER = "producer"
    WORKER = "worker"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    key_id: str
    namespace: str
    roles: frozenset[Role]


# None: the server runs without authentication (the open embedded default).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)


def principal_id() -> str:
    """The key id of the caller, or "" when the server runs open."""
    p = current_principal.get()
    return "" if p is None else p.key_id


def new_token() -> tuple[str, str, str]:
    """A new (key id, token, secret digest); the token is shown once and never stored."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"dsp_{key_id}_{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret), or None if the token is not one of ours."""
    m = TOKEN_RE.fullmatch(token)
    return (m.group(1), m.group(2)) if m else None


def secret_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)
