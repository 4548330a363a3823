"""Alembic environment: runs migrations over the asyncio engine the dispatcher uses.

The URL comes from `config.attributes["url"]` (set by `dispatcher db upgrade`)
or, for the plain `alembic` command, from DISPATCHER_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from dispatcher.store.sql.engine import create_engine
from dispatcher.store.sql.tables import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("DISPATCHER_DATABASE_URL")
    if not url:
        raise SystemExit("set DISPATCHER_DATABASE_URL or use `dispatcher db upgrade`")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
