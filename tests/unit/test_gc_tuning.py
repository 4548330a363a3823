"""The collector settings of a serving process (worker_sdk/gc_tuning.py): what they
change, and that `dispatcher serve` and `Worker.run()` apply them once started."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker_sdk.gc_tuning import YOUNG_THRESHOLD, tune_for_service

# Run in a child process before the code under test: once something froze the
# heap (or after 30 s), report the freeze and the young threshold, then stop
# the process the way an operator would (SIGINT).
WATCH = """
import gc, os, signal, threading, time
def _watch():
    deadline = time.monotonic() + 30
    while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("frozen", gc.get_freeze_count(), gc.get_threshold()[0], flush=True)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=_watch, daemon=True).start()
"""


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _frozen_report(code: str, cwd: Path) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", WATCH + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("frozen ")]
    assert done.returncode == 0, done.stderr[-2000:]
    assert lines, f"no report; stderr: {done.stderr[-2000:]}"
    _, count, threshold = lines[0].split()
    return int(count), int(threshold)


def test_tuning_freezes_the_objects_alive_and_collects_young_objects_less_often(
    restored_gc: None,
) -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(100)]  # a container the collector tracks
    assert gc.is_tracked(survivor)

    tune_for_service()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700
    # Frozen objects are out of every generation the collector walks.
    assert not any(obj is survivor for obj in gc.get_objects())


def test_cyclic_garbage_made_after_tuning_is_still_collected(restored_gc: None) -> None:
    tune_for_service()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2


def test_dispatcher_serve_tunes_the_collector_once_it_has_started(tmp_path: Path) -> None:
    code = (
        "import sys; from dispatcher.cli import main; "
        "sys.exit(main(['serve', '--port', '0', '--database-url', 'sqlite:///d.db']))"
    )
    count, threshold = _frozen_report(code, tmp_path)
    assert count > 10_000  # the imported modules, not a handful of objects
    assert threshold == YOUNG_THRESHOLD


def test_worker_run_tunes_the_collector_once_it_has_started(tmp_path: Path) -> None:
    # Nothing listens on the address: the worker keeps retrying its Lease until stopped.
    code = (
        "from worker_sdk import ConnectOptions, Worker, WorkerOptions\n"
        "w = Worker(WorkerOptions(queues=('q',)), ConnectOptions(address='127.0.0.1:9'))\n"
        "@w.handler('t')\n"
        "async def t(job): pass\n"
        "w.run()\n"
    )
    count, threshold = _frozen_report(code, tmp_path)
    assert count > 10_000
    assert threshold == YOUNG_THRESHOLD
