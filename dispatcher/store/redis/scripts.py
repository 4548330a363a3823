"""Loads the Lua scripts in lua/ once, as redis-py `Script` objects, and runs them.

A script called alone runs through redis-py's `Script`: EVALSHA, and on NOSCRIPT
it loads the script and runs it again. Scripts in a pipeline go through
`Scripts.pipeline` instead: redis-py would send `SCRIPT EXISTS` before every
pipeline that carries a script, an extra round trip on the hottest paths
(enqueue, ack, heartbeat). We send EVALSHA alone and pay for loading only when
Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH): then every script is
loaded and the whole pipeline runs again. That is safe because each script
places jobs from their SQL state (running it twice leaves the same index) and
the other pipelined commands are a set add and update notices, which readers
deduplicate by version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

LUA_DIR = Path(__file__).parent / "lua"
# Helpers every script may use (variadic calls in chunks), prepended to each.
PRELUDE = (LUA_DIR / "lib" / "variadic.lua").read_text()


@dataclass(frozen=True)
class Scripts:
    enqueue: Any
    lease: Any
    extend: Any
    remove: Any
    place: Any
    quota: Any
    hand_off: Any

    @classmethod
    def register(cls, client: Any) -> Scripts:
        def load(name: str) -> Any:
            return client.register_script(PRELUDE + (LUA_DIR / f"{name}.lua").read_text())

        return cls(**{f.name: load(f.name) for f in fields(cls)})

    async def pipeline(self, client: Any, fill: Callable[[Any], None]) -> list[Any]:
        """Build a pipeline with `fill(pipe)` and run it in one round trip.

        `fill` queues scripts with `Scripts.call`, and plain commands as usual.
        """
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        try:
            return list(await pipe.execute())
        except NoScriptError:
            await self._load_all(client)
        pipe = client.pipeline(transaction=False)
        fill(pipe)
        return list(await pipe.execute())

    @staticmethod
    def call(pipe: Any, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one script call on a pipeline built by `Scripts.pipeline`."""
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def _load_all(self, client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for f in fields(self):
            pipe.script_load(getattr(self, f.name).script)
        await pipe.execute()
