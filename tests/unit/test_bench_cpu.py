"""bench.cpu reads CPU time from /proc: a process tree's total includes the
descendants, and per-job figures divide what each part spent by the jobs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.cpu import _stat, per_job_us, redis_cpu_s, tree_cpu_s

# A parent that only sleeps, and its child that burns CPU and then sleeps too:
# once both sleep, their CPU counters stand still and can be compared exactly.
BURN = """
import time
x = 0
for i in range(3_000_000):
    x += i
print("burnt", flush=True)
time.sleep(60)
"""
TREE = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {BURN!r}], stdout=subprocess.PIPE, text=True)
print(child.pid, flush=True)
child.stdout.readline()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    parent = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready"
    try:
        yield parent.pid, child
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
        parent.stdout.close()


def _own(pid: int) -> float:
    st = _stat(pid)
    assert st is not None
    return st[1]


def test_a_tree_counts_the_process_and_its_live_descendants(tree: tuple[int, int]) -> None:
    parent, child = tree
    time.sleep(0.05)  # let the child's last tick land
    assert _own(child) > 0  # it burnt millions of additions
    assert tree_cpu_s([parent]) == pytest.approx(_own(parent) + _own(child))
    assert tree_cpu_s([parent]) > _own(parent)


def test_a_process_that_is_gone_counts_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its /proc entry is gone
    assert tree_cpu_s([gone.pid]) == 0.0


def test_per_job_figures_divide_each_part_measured_at_both_ends() -> None:
    before = {"workers": 1.0, "redis": 0.5, "server": 2.0}
    after = {"workers": 2.0, "redis": 0.6, "postgresql": 9.0}
    assert per_job_us(before, after, 1000) == pytest.approx({"workers": 1000.0, "redis": 100.0})
    assert per_job_us(before, after, 0) == {}


def test_redis_cpu_is_its_system_and_user_time() -> None:
    assert redis_cpu_s({"used_cpu_sys": "1.5", "used_cpu_user": 2.25}) == 3.75
