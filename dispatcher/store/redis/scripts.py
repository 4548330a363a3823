"""Loads the Lua scripts in lua/ once, as redis-py `Script` objects.

A `Script` runs with EVALSHA and falls back to loading the script on NOSCRIPT,
so a Redis restart or SCRIPT FLUSH costs one extra round trip, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).parent / "lua"


@dataclass(frozen=True)
class Scripts:
    enqueue: Any
    lease: Any
    extend: Any
    remove: Any
    place: Any
    quota: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        def load(name: str) -> Any:
            return client.register_script((LUA_DIR / f"{name}.lua").read_text())

        return cls(
            enqueue=load("enqueue"),
            lease=load("lease"),
            extend=load("extend"),
            remove=load("remove"),
            place=load("place"),
            quota=load("quota"),
        )
