"""The event loop `dispatcher serve` and `Worker.run()` run on: uvloop where installed, else
asyncio's. (tests/e2e/test_sdk_worker.py runs jobs on both under `python -m worker_sdk run`.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from worker_sdk.event_loop import LoopUnavailable, loop_factory

ROOT = Path(__file__).resolve().parents[2]


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


def test_an_sdk_worker_refuses_a_missing_uvloop_before_it_connects() -> None:
    code = (
        "import sys; sys.modules['uvloop'] = None; from worker_sdk.__main__ import main; "
        "sys.exit(main(['run', 'tests.e2e.sdk_app:worker', '--event-loop', 'uvloop', "
        "'--address', '127.0.0.1:9']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2
    assert "worker_sdk: event loop 'uvloop' is not installed" in done.stderr
    assert "leasing from" not in done.stderr
