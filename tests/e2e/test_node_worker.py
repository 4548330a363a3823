"""The Node example (examples/node) as processes against a dispatcher process.

Jobs go in from Python through the generated stubs; `node worker.js` runs them;
Python reads what the Node worker wrote. `node producer.js` is run too. Node and
examples/node/node_modules are required: without them these tests fail, never
skip (CI runs `npm ci` in examples/node first).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from tests.e2e.conftest import ROOT, DispatcherProcess, Stack, free_port
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb

if TYPE_CHECKING:
    from worker_sdk._proto.dispatch.v1.dispatcher_pb2_grpc import (
        DispatcherServiceAsyncStub as AsyncStub,
    )

pytestmark = pytest.mark.slow
NODE_DIR = ROOT / "examples" / "node"
Stub = dispatcher_pb2_grpc.DispatcherServiceStub


@pytest.fixture
def node() -> str:
    """The node executable, with the example's dependencies installed."""
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not on PATH: the Node example tests need Node 18 or later")
    for dep in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (NODE_DIR / "node_modules" / dep / "package.json").is_file():
            pytest.fail(f"examples/node/node_modules lacks {dep}: run `npm ci` in examples/node")
    return exe


def node_env() -> dict[str, str]:
    """The environment without DISPATCHER_* settings, which the scripts would pick up."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}


class NodeWorker:
    """`node worker.js` with its output (stdout and stderr) in a file."""

    def __init__(self, node: str, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [node, "worker.js", *args],
                cwd=NODE_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**node_env(), **(env or {})},
            )

    def log(self) -> str:
        return self.log_path.read_text()

    async def sigterm(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)


def start_worker(
    node: str,
    tmp_path: Path,
    processes: list[Any],
    address: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> NodeWorker:
    log = tmp_path / f"node-worker-{len(processes)}.log"
    w = NodeWorker(node, log, "--address", address, "--wait", "1", *args, env=env)
    processes.append(w.proc)
    return w


async def run_producer(node: str, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [node, "producer.js", "--address", address, *args],
        cwd=NODE_DIR,
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )


async def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll until check() (sync or async) returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def job(stub: AsyncStub, job_id: str) -> jpb.Job:
    return (await stub.GetStatus(pb.GetStatusRequest(job_id=job_id), timeout=10)).job


async def in_state(stub: AsyncStub, ids: list[str], state: int) -> list[jpb.Job] | None:
    jobs = [await job(stub, i) for i in ids]
    return jobs if all(j.state == state for j in jobs) else None


async def enqueue(stub: AsyncStub, *specs: jpb.JobSpec) -> list[str]:
    resp = await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=list(specs)), timeout=10)
    assert not [r.error for r in resp.results if r.error.code], resp
    return [r.job.id for r in resp.results]


def spec(type_: str, payload: Any = None, queue: str = "math", **kw: Any) -> jpb.JobSpec:
    body = b"" if payload is None else json.dumps(payload).encode()
    return jpb.JobSpec(queue=queue, type=type_, payload=body, content_type="application/json", **kw)


async def test_a_node_worker_started_before_the_dispatcher_connects_and_python_reads_its_sums(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    worker = start_worker(
        node, tmp_path, processes, address, "--queues", "other,math", "--concurrency", "4"
    )
    await eventually(lambda: "Lease failed" in worker.log(), "the worker to find no server")
    d = DispatcherProcess(stack, port)
    processes.append(d.proc)
    async with grpc.aio.insecure_channel(address) as ch:
        stub = Stub(ch)
        ids = await enqueue(stub, *(spec("add", {"a": i, "b": 2 * i}) for i in range(12)))
        done = await eventually(
            lambda: in_state(stub, ids, jpb.JOB_STATE_SUCCEEDED), "12 sums to succeed"
        )
    assert [json.loads(j.result) for j in done] == [{"sum": 3 * i} for i in range(12)]
    assert {j.result_content_type for j in done} == {"application/json"}
    assert {j.attempt for j in done} == {1}
    assert "connected again" in worker.log()
    assert await worker.sigterm() == 0
    assert worker.log().rstrip().endswith("stopped")


async def test_failing_node_jobs_are_retried_then_dead_lettered_with_the_node_error_message(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    worker = start_worker(node, tmp_path, processes, d.address, "--queues", "math")
    fast_retry = jpb.RetryPolicy(initial_backoff=Duration(nanos=50_000_000))
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = Stub(ch)
        failing, unknown, bad = await enqueue(
            stub,
            spec("fail", {}, max_attempts=3, retry_policy=fast_retry),
            spec("no-such-type", {}, max_attempts=3),
            spec("add", {"a": "one"}, max_attempts=3),
        )
        failed, not_handled, refused = await eventually(
            lambda: in_state(stub, [failing, unknown, bad], jpb.JOB_STATE_DEAD_LETTERED),
            "the three jobs to be dead-lettered",
        )
    assert failed.attempt == 3
    assert failed.terminal_reason == jpb.TERMINAL_REASON_ATTEMPTS_EXHAUSTED
    assert failed.last_error == (
        f"Error: fail handler: intentional failure of job {failing} (attempt 3)"
    )
    for j in (not_handled, refused):  # a NonRetryableError: one attempt, no retry
        assert (j.attempt, j.terminal_reason) == (1, jpb.TERMINAL_REASON_NOT_RETRYABLE)
    assert 'no handler for job type "no-such-type"' in not_handled.last_error
    assert "add expects a JSON payload" in refused.last_error
    log = worker.log()
    assert log.count(f"job {failing} (fail) failed on attempt") == 3
    assert await worker.sigterm() == 0


async def test_producer_js_prints_the_job_id_then_the_final_job_with_its_decoded_result(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    worker = start_worker(node, tmp_path, processes, d.address, "--queues", "math")
    add = await run_producer(
        node, d.address, "--queue", "math", "--type", "add", "--payload", '{"a":1,"b":2}', "--wait"
    )
    assert add.returncode == 0, add.stderr
    first, final = (json.loads(line) for line in add.stdout.splitlines())
    assert first["created"] is True
    assert final["jobId"] == first["jobId"]
    assert final["state"] == "JOB_STATE_SUCCEEDED"
    assert final["result"] == {"sum": 3}
    assert final["resultContentType"] == "application/json"

    fail = await run_producer(
        node, d.address, "--queue", "math", "--type", "fail", "--max-attempts", "1", "--wait"
    )
    assert fail.returncode == 3, fail.stderr
    first, final = (json.loads(line) for line in fail.stdout.splitlines())
    assert final["state"] == "JOB_STATE_DEAD_LETTERED"
    assert "intentional failure" in final["lastError"]

    queued = await run_producer(node, d.address, "--queue", "later", "--type", "add")
    assert queued.returncode == 0, queued.stderr
    (only,) = (json.loads(line) for line in queued.stdout.splitlines())
    async with grpc.aio.insecure_channel(d.address) as ch:
        got = await job(Stub(ch), only["jobId"])
    assert (got.queue, got.type, got.state) == ("later", "add", jpb.JOB_STATE_QUEUED)
    assert await worker.sigterm() == 0


async def test_node_heartbeats_keep_a_long_job_and_carry_a_cancel_back_to_the_node_worker(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    worker = start_worker(node, tmp_path, processes, d.address, "--queues", "math")
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = Stub(ch)
        # Runs for two and a half lease lengths: only heartbeats keep the lease.
        (long_id,) = await enqueue(
            stub, spec("sleep", {"ms": 5000}, lease_duration=Duration(seconds=2), max_attempts=1)
        )
        (long_job,) = await eventually(
            lambda: in_state(stub, [long_id], jpb.JOB_STATE_SUCCEEDED),
            "the long job to succeed",
        )
        assert long_job.attempt == 1
        assert json.loads(long_job.result)["slept_ms"] >= 5000

        (endless,) = await enqueue(
            stub, spec("sleep", {"ms": 600_000}, lease_duration=Duration(seconds=3))
        )
        await eventually(lambda: in_state(stub, [endless], jpb.JOB_STATE_LEASED), "a lease")
        await stub.Cancel(pb.CancelRequest(job_id=endless, reason="not needed"), timeout=10)
        (cancelled,) = await eventually(
            lambda: in_state(stub, [endless], jpb.JOB_STATE_CANCELLED), "the cancel to land"
        )
    assert cancelled.terminal_reason == jpb.TERMINAL_REASON_CANCELLED
    # The worker heard it from a heartbeat and Nacked, rather than the lease running out.
    assert f"job {endless} cancel requested" in worker.log()
    assert "lost the lease" not in worker.log()
    assert await worker.sigterm() == 0


async def test_sigterm_lets_a_short_node_job_finish_and_gives_the_long_one_back_at_once(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port())
    processes.append(d.proc)
    worker = start_worker(node, tmp_path, processes, d.address, "--queues", "math", "--grace", "8")
    async with grpc.aio.insecure_channel(d.address) as ch:
        stub = Stub(ch)
        short, endless = await enqueue(
            stub,
            spec("sleep", {"ms": 1500}),
            # A lease far longer than the test: only a release can requeue it now.
            spec("sleep", {"ms": 600_000}, lease_duration=Duration(seconds=600)),
        )
        await eventually(
            lambda: in_state(stub, [short, endless], jpb.JOB_STATE_LEASED), "both to be leased"
        )
        assert await worker.sigterm() == 0
        finished = await job(stub, short)
        given_back = await job(stub, endless)
    assert finished.state == jpb.JOB_STATE_SUCCEEDED
    assert given_back.state == jpb.JOB_STATE_QUEUED
    assert given_back.last_error == "worker shutting down"
    assert given_back.attempt == 0  # a release does not use up an attempt
    assert "released 1 job(s) for redelivery" in worker.log()


async def test_a_node_worker_and_producer_send_the_bearer_token_and_stop_without_one(
    stack: Stack, node: str, tmp_path: Path, processes: list[Any]
) -> None:
    d = DispatcherProcess(stack, free_port(), "--auth", "required")
    processes.append(d.proc)
    created = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "dispatcher",
            "tokens",
            "create",
            "--database-url",
            stack.database_url,
            "--namespace",
            "default",
            "--role",
            "producer",
            "--role",
            "worker",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = json.loads(created.stdout)["token"]

    anonymous = start_worker(node, tmp_path, processes, d.address, "--queues", "math")
    code = await asyncio.to_thread(anonymous.proc.wait, 60)
    assert code == 2
    assert "UNAUTHENTICATED" in anonymous.log()

    worker = start_worker(
        node, tmp_path, processes, d.address, "--queues", "math",
        env={"DISPATCHER_TOKEN": token},
    )  # fmt: skip
    refused = await run_producer(node, d.address, "--queue", "math", "--type", "add")
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
    add = await run_producer(
        node, d.address, "--token", token,
        "--queue", "math", "--type", "add", "--payload", '{"a":1,"b":2}', "--wait",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    final = json.loads(add.stdout.splitlines()[-1])
    assert (final["state"], final["result"]) == ("JOB_STATE_SUCCEEDED", {"sum": 3})
    assert await worker.sigterm() == 0
