"""API keys in SQL: created, listed, looked up and revoked. Secrets are stored hashed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from dispatcher.store.sql.runs import RunStore, translate_errors
from dispatcher.store.sql.tables import api_keys


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    namespace: str
    roles: tuple[str, ...]
    secret_sha256: str
    created_ms: int
    revoked_ms: int | None


def _key(r: object) -> ApiKey:
    m = r._mapping  # type: ignore[attr-defined]
    return ApiKey(
        m["id"],
        m["name"],
        m["namespace"],
        tuple(x for x in m["roles"].split(",") if x),
        m["secret_sha256"],
        m["created_at"],
        m["revoked_at"],
    )


async def insert(store: RunStore, key: ApiKey) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                namespace=key.namespace,
                roles=",".join(key.roles),
                secret_sha256=key.secret_sha256,
                created_at=key.created_ms,
                revoked_at=None,
            )
        )


async def get(store: RunStore, key_id: str) -> ApiKey | None:
    async with translate_errors(), store.engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    return None if row is None else _key(row)


async def all_keys(store: RunStore) -> list[ApiKey]:
    async with translate_errors(), store.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
    return [_key(r) for r in rows]


async def revoke(store: RunStore, key_id: str, now_ms: int) -> bool:
    async with store.transaction() as tx:
        result = await tx.conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now_ms)
        )
    return bool(result.rowcount)
