"""`python -m worker_sdk run`: flags become the worker's options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def options_after(*flags: str) -> str:
    """The loaded worker's options as `run` leaves them (its run() replaced by a print)."""
    code = (
        "import sys; import tests.e2e.sdk_app as app; from worker_sdk.__main__ import main; "
        "app.worker.run = lambda: print(app.worker.options.lease_ahead, "
        "app.worker.options.concurrency); "
        f"sys.exit(main(['run', 'tests.e2e.sdk_app:worker', *{list(flags)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_worker_run_from_the_command_line_leases_ahead_unless_told_not_to() -> None:
    assert options_after("--concurrency", "7") == "True 7"
    assert options_after("--concurrency", "7", "--no-lease-ahead") == "False 7"
