"""The README's quick start, run as written: its worker module and its producer script."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, DispatcherProcess, Stack, free_port

pytestmark = pytest.mark.slow


def quick_start_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def start_worker(folder: Path, env: dict[str, str], address: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "worker_sdk", "run", "tasks:worker", "--address", address]
    return subprocess.Popen(command, cwd=folder, env=env)


def run_producer(folder: Path, env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)


async def test_the_readme_quick_start_worker_and_producer_work_as_written(
    stack: Stack, tmp_path: Path, processes: list[Any]
) -> None:
    worker_code, producer_code = quick_start_blocks()
    (tmp_path / "tasks.py").write_text(worker_code)
    port = free_port()
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes.append(start_worker(tmp_path, env, d.address))
    producer = producer_code.replace("127.0.0.1:50051", d.address)
    out = await asyncio.to_thread(run_producer, tmp_path, env, producer)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'sent_to': 'ada@example.com'}"
