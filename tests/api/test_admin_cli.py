"""The admin service and the operator CLI against a running server."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from dispatcher import cli
from dispatcher.app import DispatcherApp
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import admin_pb2_grpc, dispatcher_pb2_grpc
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb


async def run_cli(
    app: DispatcherApp, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run `dispatcher ARGV --address ...` in a thread (it is synchronous; the server is not)."""
    code = await asyncio.to_thread(cli.main, [*argv, "--address", f"127.0.0.1:{app.port}"])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_enqueue_then_queues_and_jobs_show_what_was_enqueued(
    app: DispatcherApp, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_cli(
        app,
        capsys,
        "enqueue",
        "--queue",
        "mail",
        "--type",
        "send",
        "--payload",
        "hi",
        "--priority",
        "high",
        "--json",
    )
    assert code == 0
    job_id = json.loads(out)["job"]["id"]
    code, out, _ = await run_cli(app, capsys, "queues", "--json")
    (queue,) = json.loads(out)["queues"]
    high = next(p for p in queue["priorities"] if p["priority"] == "PRIORITY_HIGH")
    assert (queue["name"], high["queued"]) == ("mail", "1")
    code, out, _ = await run_cli(app, capsys, "queues")
    assert out.splitlines()[0].split() == [
        "QUEUE",
        "QUEUED",
        "SCHEDULED",
        "LEASED",
        "DEAD",
        "OLDEST",
        "DONE/MIN",
    ]
    assert out.splitlines()[1].split()[:2] == ["mail", "1"]
    code, out, _ = await run_cli(app, capsys, "jobs", "list", "--queue", "mail")
    assert job_id in out and "queued" in out
    code, out, _ = await run_cli(app, capsys, "jobs", "show", job_id, "--json")
    assert json.loads(out)["payload"] == "aGk="  # "hi", base64


async def test_dead_letter_retry_and_purge_change_what_they_say(
    app: DispatcherApp,
    stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await stub.EnqueueBatch(
        pb.EnqueueBatchRequest(jobs=[jpb.JobSpec(queue="q", type="t", max_attempts=1)] * 2)
    )
    leases = (
        await stub.Lease(pb.LeaseRequest(worker_id="cli-test", queues=["q"], max_jobs=2))
    ).leases
    await stub.Nack(
        pb.NackRequest(items=[pb.NackItem(lease_token=le.lease_token) for le in leases])
    )
    code, out, _ = await run_cli(app, capsys, "dead-letter", "retry", "--queue", "q")
    assert (code, out.strip()) == (0, "retried 2 job(s)")
    code, _, err = await run_cli(app, capsys, "purge", "--queue", "q")
    assert code == 2 and "--yes" in err
    code, out, _ = await run_cli(app, capsys, "purge", "--queue", "q", "--yes")
    assert (code, out.strip()) == (0, "purged 2 job(s)")
    await app.components.workers.flush()
    code, out, _ = await run_cli(app, capsys, "workers")
    assert "cli-test" in out


async def test_a_cli_error_prints_the_code_and_exits_non_zero(
    app: DispatcherApp, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_cli(app, capsys, "jobs", "show", "not-an-id")
    assert code == 1 and err.startswith("error: INVALID_ARGUMENT")


async def test_list_jobs_pages_through_every_job_once(
    channel: grpc.aio.Channel, stub: dispatcher_pb2_grpc.DispatcherServiceAsyncStub
) -> None:
    await stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=[jpb.JobSpec(queue="q", type="t")] * 25))
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    seen, token = [], ""
    while True:
        resp = await admin.ListJobs(apb.ListJobsRequest(queue="q", page_size=10, page_token=token))
        seen += [j.id for j in resp.jobs]
        assert all(not j.payload for j in resp.jobs)
        token = resp.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 25 and seen == sorted(seen, reverse=True)


async def test_an_unknown_state_number_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.ListJobs(apb.ListJobsRequest(queue="q", state=42))  # type: ignore[arg-type]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
