"""Whether PostgreSQL keeps the job tables in shape by itself (autovacuum).

Every lease and ack rewrites a row of `runs` and adds one to `run_events`, so
without autovacuum `runs` bloats. It also leaves query plans stale: PostgreSQL
replans a prepared statement only when the table's statistics change (an
ANALYZE), so a plan chosen while `runs` was nearly empty, a sequential scan,
is kept as the table grows. Measured on a server whose tables started empty:
with 46,000 jobs, a Lease of one job took 10-14 ms in PostgreSQL instead of
0.1 ms, and the reaper's start-deadline sweep scanned the whole table twice a
second. The server cannot fix that, but it can say so at startup.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatcher.store.sql.runs import translate_errors

JOB_TABLES = ("runs", "run_events")
_OFF = {"false", "off", "no", "0", "f", "n"}


async def autovacuum_gaps(engine: AsyncEngine) -> list[str]:
    """Why autovacuum would not look after the job tables, one reason each; empty
    when it does (or the database is not PostgreSQL). Unavailable if it cannot ask."""
    if engine.dialect.name != "postgresql":
        return []
    reasons = []
    async with translate_errors(), engine.connect() as conn:
        settings = (
            await conn.execute(
                text("SELECT current_setting('autovacuum'), current_setting('track_counts')")
            )
        ).one()
        regclasses = ", ".join(f"to_regclass('{table}')" for table in JOB_TABLES)
        tables = await conn.execute(
            text(
                "SELECT c.relname, c.reloptions FROM pg_class c"
                f" WHERE c.oid = ANY (ARRAY[{regclasses}])"
            )
        )
        options = {name: list(opts or []) for name, opts in tables}
    if settings[0] != "on":
        reasons.append("autovacuum is off in the server's configuration")
    if settings[1] != "on":
        reasons.append("track_counts is off, and autovacuum needs it")
    for table in JOB_TABLES:
        for option in options.get(table, []):
            name, _, value = option.partition("=")
            if name == "autovacuum_enabled" and value.lower() in _OFF:
                reasons.append(f"table {table} has autovacuum_enabled = {value}")
    return reasons
