"""What the runners set up around the systems: throwaway PostgreSQL databases, arq's venv.

Used by `bench.run` and `bench.scaling`; of the measured processes, only the
dispatcher's peer uses `pg_connect` (to find its database's backends).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.peers.base import ROOT

# arq pins redis<6 and we pin redis>=8.1, so arq gets a virtualenv of its own.
ARQ_VENV = ROOT / "bench" / ".venv-arq"
ARQ_REQUIREMENT = "arq>=0.26,<1"


# -- PostgreSQL -------------------------------------------------------------------


async def pg_connect(url: str) -> Any:
    """An asyncpg connection to the database a SQLAlchemy-style URL names."""
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        database=u.database,
        timeout=10,
    )


def pg_execute(admin_url: str, sql: str) -> None:
    """Run one statement on the admin database (asyncpg; CREATE/DROP DATABASE)."""

    async def go() -> None:
        conn = await pg_connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def pg_database_url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def pg_database(admin_url: str, prefix: str = "dispatcher_bench") -> Iterator[str]:
    """A fresh database for one measurement, dropped afterwards (WITH FORCE); yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    pg_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield pg_database_url(admin_url, name)
    finally:
        try:
            pg_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:
            print(f"  could not drop database {name}: {exc}", file=sys.stderr)


# -- arq's virtualenv ---------------------------------------------------------------


def _has_arq(python: Path) -> bool:
    probe = [str(python), "-c", "import arq, redis"]
    return python.exists() and subprocess.run(probe, capture_output=True).returncode == 0


def ensure_arq_python(python: Path) -> Path:
    """An interpreter with arq installed: `python` if it has it, else bench/.venv-arq, made now.

    Only the default location is created (from PyPI, with pip); an interpreter
    named by --arq-python / BENCH_ARQ_PYTHON must already exist.
    """
    if _has_arq(python):
        return python
    default = ARQ_VENV / "bin" / "python"
    if python != default:
        raise RuntimeError(f"{python} has no arq; install it there, or omit --arq-python")
    print(f"  creating {ARQ_VENV} with {ARQ_REQUIREMENT} (arq pins redis<6) ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(ARQ_VENV)],
        [str(default), "-m", "pip", "install", "-q", ARQ_REQUIREMENT],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(argv[:4])} failed: {' / '.join(tail)}")
    if not _has_arq(default):
        raise RuntimeError(f"{default} still cannot import arq")
    return default
