"""Runs the Alembic migrations in migrations/ (`dispatcher db upgrade`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).resolve()
# The repository layout (editable installs) first, then the copy a wheel carries.
_CANDIDATES = [_HERE.parents[3] / "migrations", _HERE.parents[2] / "migrations"]


def migrations_dir() -> Path:
    for path in _CANDIDATES:
        if (path / "env.py").exists():
            return path
    raise FileNotFoundError("the migrations folder is missing from this installation")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at `url` to `revision` (blocking; runs its own event loop).

    "heads": features develop their migrations as branches from a common parent.
    """
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "heads") -> None:
    await asyncio.to_thread(upgrade, url, revision)
