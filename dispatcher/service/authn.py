"""Authentication: bearer tokens checked against hashed API keys, and role checks.

Lookups are cached for a few seconds per key id, so an RPC does not cost a SQL
query; a revoked key stops working within that time (CACHE_S).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dispatcher.clock import Clock
from dispatcher.domain import validation
from dispatcher.domain.auth import Principal, Role, new_token, parse_token, secret_matches
from dispatcher.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated
from dispatcher.store.sql import api_keys
from dispatcher.store.sql.api_keys import ApiKey
from dispatcher.store.sql.runs import RunStore

CACHE_S = 5.0


class Authenticator:
    def __init__(self, runs: RunStore, clock: Clock) -> None:
        self.runs = runs
        self.clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `authorization: Bearer <token>` value; Unauthenticated if none."""
        if not authorization:
            raise Unauthenticated("credentials required: authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise Unauthenticated("malformed credentials")
        key_id, secret = parsed
        key = await self._lookup(key_id)
        if (
            key is None
            or key.revoked_ms is not None
            or not secret_matches(secret, key.secret_sha256)
        ):
            raise Unauthenticated("invalid or revoked credentials")
        return Principal(key.id, key.namespace, frozenset(Role(r) for r in key.roles))

    async def _lookup(self, key_id: str) -> ApiKey | None:
        hit = self._cache.get(key_id)
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
        key = await api_keys.get(self.runs, key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (time.monotonic(), key)
        return key


def authorize(principal: Principal, role: Role) -> None:
    if role not in principal.roles:
        raise PermissionDenied(f"this credential lacks the {role.value} role", {"role": role.value})


async def create_key(
    runs: RunStore, clock: Clock, namespace: str, roles: Sequence[str], name: str
) -> tuple[ApiKey, str]:
    """Create an API key; returns it and the token, which is shown this once."""
    ns = validation.namespace(namespace)
    try:
        parsed = sorted({Role(r) for r in roles})
    except ValueError:
        raise InvalidArgument.field("roles", "each role is producer, worker or admin") from None
    if not parsed:
        raise InvalidArgument.field("roles", "name at least one role")
    key_id, token, secret_digest = new_token()
    key = ApiKey(key_id, name[:128], ns, tuple(parsed), secret_digest, clock.now_ms(), None)
    await api_keys.insert(runs, key)
    return key, token
