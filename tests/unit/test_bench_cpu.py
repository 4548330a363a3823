"""bench.cpu reads CPU time from /proc: a process tree's total includes the
descendants, PostgreSQL's backends count those that exited through their
parent, and per-job figures divide what each part spent by the jobs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench.cpu import _stat, backends_cpu_s, per_job_us, redis_cpu_s, tree_cpu_s

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


# A postmaster in small: a live "backend" that burnt CPU and sleeps, and on a
# line from the test, another that burns, exits and is reaped.
POSTMASTER = f"""
import subprocess, sys, time
live = subprocess.Popen([sys.executable, "-c", {BURN!r}], stdout=subprocess.PIPE, text=True)
live.stdout.readline()
print(live.pid, flush=True)
sys.stdin.readline()
gone = subprocess.Popen(
    [sys.executable, "-c", {BURN.replace("time.sleep(60)", "")!r}], stdout=subprocess.DEVNULL
)
gone.wait()
print("reaped", flush=True)
time.sleep(60)
"""


def test_backends_that_exit_between_two_readings_still_count() -> None:
    # The dispatcher's pool replaces its PostgreSQL connections: a backend that
    # served part of a drain and exited has spent CPU in it that its pid no
    # longer shows. The postmaster, which reaps it, keeps that CPU.
    postmaster = subprocess.Popen(
        [sys.executable, "-c", POSTMASTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert postmaster.stdin is not None and postmaster.stdout is not None
    try:
        live = int(postmaster.stdout.readline())
        time.sleep(0.05)  # let the live one's last tick land
        before, live_before = backends_cpu_s([live]), _own(live)
        postmaster.stdin.write("go\n")
        postmaster.stdin.flush()
        assert postmaster.stdout.readline().strip() == "reaped"

        spent = backends_cpu_s([live]) - before

        assert _own(live) == live_before  # the live one slept throughout
        assert spent > 0.02  # the one that exited burnt millions of additions
    finally:
        subprocess.run(["pkill", "-P", str(postmaster.pid)], check=False)
        postmaster.kill()
        postmaster.wait()
        postmaster.stdin.close()
        postmaster.stdout.close()


def test_per_job_figures_divide_each_part_measured_at_both_ends() -> None:
    before = {"workers": 1.0, "redis": 0.5, "server": 2.0}
    after = {"workers": 2.0, "redis": 0.6, "postgresql": 9.0}
    assert per_job_us(before, after, 1000) == pytest.approx({"workers": 1000.0, "redis": 100.0})
    assert per_job_us(before, after, 0) == {}


def test_redis_cpu_is_its_system_and_user_time() -> None:
    assert redis_cpu_s({"used_cpu_sys": "1.5", "used_cpu_user": 2.25}) == 3.75
