"""The event loop `dispatcher serve` runs on: uvloop where installed, else asyncio's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import uvloop

from dispatcher.event_loop import LoopUnavailable, loop_factory


def _run_on(factory: object) -> type:
    """The class of the loop a coroutine actually ran on."""

    async def running() -> type:
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=factory) as runner:  # type: ignore[arg-type]
        return runner.run(running())


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    name, factory = loop_factory("auto")
    assert name == "uvloop"
    assert _run_on(factory) is uvloop.Loop


def test_auto_falls_back_to_asyncio_where_uvloop_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    name, factory = loop_factory("auto")
    assert name == "asyncio"
    assert not issubclass(_run_on(factory), uvloop.Loop)


def test_asyncio_can_be_chosen_even_where_uvloop_is_installed() -> None:
    name, factory = loop_factory("asyncio")
    assert name == "asyncio"
    ran_on = _run_on(factory)
    assert issubclass(ran_on, asyncio.BaseEventLoop)
    assert not issubclass(ran_on, uvloop.Loop)


def test_choosing_uvloop_where_it_is_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(LoopUnavailable, match="'uvloop' is not installed"):
        loop_factory("uvloop")
    with pytest.raises(LoopUnavailable, match="unknown event loop 'tokio'"):
        loop_factory("tokio")


def test_serve_refuses_a_missing_uvloop_before_it_starts() -> None:
    # In a child process: `serve` sets up logging for the whole process.
    code = (
        "import sys; sys.modules['uvloop'] = None; from dispatcher.cli import main; "
        "sys.exit(main(['serve', '--port', '0']))"
    )
    env = {**os.environ, "DISPATCHER_EVENT_LOOP": "uvloop"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "event loop 'uvloop' is not installed" in done.stderr
    assert "listening" not in done.stdout
