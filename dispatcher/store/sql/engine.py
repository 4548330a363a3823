"""Engine creation for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with synchronous=FULL, so a commit survives a crash of
the process and of the machine; transactions begin IMMEDIATE so that two
writers never deadlock on a lock upgrade.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """Pick the asyncio driver for a plain database URL."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    elif u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# No prepared statement outlives this many seconds. PostgreSQL keeps a prepared
# statement's generic plan until the table is analyzed, so a plan chosen while
# runs was nearly empty (a sequential scan) would otherwise serve on as it grows
# (docs/architecture.md, PostgreSQL maintenance). asyncpg prepares its cached
# statements (the hot writes, `pg_driver`) again after it (its default is 300 s).
# Statements through SQLAlchemy (the general writes: Heartbeat, Nack, Cancel)
# are prepared by its asyncpg adapter, which keeps them for the connection's
# life, out of asyncpg's reach: the pool replaces a connection that old when
# it is next checked out. Measured: a general write's lock and save planned
# for a table of 120 rows took 53-89 ms each once runs held 200,000, against
# 1.3-1.4 ms on the connection that replaced it. Preparing a handful of
# statements per connection every 30 s costs nothing measurable; the call
# that finds its connection that old waits for a new one (about 7 ms here).
STATEMENT_LIFETIME_S = 30


def create_engine(url: str, *, statement_lifetime_s: int = STATEMENT_LIFETIME_S) -> AsyncEngine:
    url = async_url(url)
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        # No pre-ping: it costs a round trip per transaction. A connection the
        # server dropped fails its statement (UNAVAILABLE, which clients retry),
        # and SQLAlchemy then replaces every pooled connection opened before it.
        pool_pre_ping=False,
        pool_recycle=statement_lifetime_s,
        pool_size=10,
        max_overflow=10,
        pool_timeout=10,
        connect_args={
            "timeout": 5,
            "command_timeout": 30,
            "max_cached_statement_lifetime": statement_lifetime_s,
        },
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
