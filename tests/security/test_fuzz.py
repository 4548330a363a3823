"""Hostile input: every RPC driven with random and adversarial values (Hypothesis).

Only documented status codes come back (never INTERNAL or UNKNOWN), no Redis key
is written outside the deployment's prefix, and normal traffic keeps working.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.app import DispatcherApp
from dispatcher.clock import FakeClock
from dispatcher.config import Settings
from tests.backends import Backend
from worker_sdk._proto.dispatch.v1 import admin_pb2 as apb
from worker_sdk._proto.dispatch.v1 import admin_pb2_grpc, dispatcher_pb2_grpc, schedule_pb2_grpc
from worker_sdk._proto.dispatch.v1 import dispatcher_pb2 as pb
from worker_sdk._proto.dispatch.v1 import job_pb2 as jpb
from worker_sdk._proto.dispatch.v1 import schedule_pb2 as spb

C = grpc.StatusCode
DOCUMENTED = {
    C.OK,
    C.INVALID_ARGUMENT,
    C.NOT_FOUND,
    C.FAILED_PRECONDITION,
    C.ALREADY_EXISTS,
    C.RESOURCE_EXHAUSTED,
    C.PERMISSION_DENIED,
}

NASTY = [
    "",
    "{",
    "}",
    "{q}",
    "a:b",
    "*",
    "?",
    "[",
    "\x00",
    "\n",
    "q\r\n",
    "x" * 10_000,
    "ｑ",  # noqa: RUF001 (confusables on purpose)
    "q\u200b",
    "Ω",
    "../..",
    "dsp:{default/q}:ready",
    "default",
    "q",
]
VALID = st.sampled_from(["q", "q2", "default", "", "emails.send"])
# Mostly plausible values, so that requests get past validation and reach the stores.
names = st.one_of(VALID, VALID, VALID, VALID, st.sampled_from(NASTY), st.text(max_size=40))
small = st.integers(0, 10)
int32 = st.one_of(small, small, st.integers(-(2**31), 2**31 - 1))
int64 = st.integers(-(2**63), 2**63 - 1)
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, -0.0, 1e308])
)
seconds = st.integers(-315_576_000_000, 315_576_000_000)
durations = st.one_of(
    st.builds(lambda s: {"seconds": s}, st.integers(1, 60)),
    st.builds(lambda s, n: {"seconds": s, "nanos": n}, seconds, st.integers(0, 999_999_999)),
)
timestamps = st.builds(lambda s: {"seconds": s}, st.integers(-62_135_596_800, 253_402_300_799))
enums = st.integers(-3, 40)
tokens = st.one_of(
    names,
    st.builds(lambda a, b: f"{a}.{b}", st.text(max_size=30), st.text(max_size=40)),
    st.just("01M83HEKD3AA16Q5HS2VATHPWR." + "0" * 32),
)
job_ids = st.one_of(names, st.just("01M83HEKD3AA16Q5HS2VATHPWR"))


@st.composite
def specs(draw: Any) -> jpb.JobSpec:
    spec = jpb.JobSpec(
        queue=draw(names),
        type=draw(names),
        payload=draw(st.binary(max_size=64)),
        content_type=draw(names),
        priority=draw(enums),
        max_attempts=draw(int32),
        idempotency_key=draw(names),
        callback_url=draw(
            st.sampled_from(
                [
                    "",
                    "http://127.0.0.1/x",
                    "file:///etc/passwd",
                    "gopher://a",
                    "http://[::1",
                    "https://a.b/c",
                ]
            )
        ),
        concurrency_key=draw(names),
        depends_on=draw(st.lists(job_ids, max_size=3)),
        metadata=draw(st.dictionaries(names, names, max_size=3)),
    )
    for field, strat in [
        ("lease_duration", durations),
        ("delay", durations),
        ("start_within", durations),
        ("max_run_time", durations),
    ]:
        if draw(st.integers(0, 3)) == 0:
            getattr(spec, field).CopyFrom(duration_pb2.Duration(**draw(strat)))
    if draw(st.integers(0, 3)) == 0:
        spec.run_at.seconds = draw(timestamps)["seconds"]
    if draw(st.integers(0, 3)) == 0:
        spec.retry_policy.CopyFrom(
            jpb.RetryPolicy(
                initial_backoff=draw(durations),
                max_backoff=draw(durations),
                multiplier=draw(doubles),
                jitter=draw(doubles),
            )
        )
    return spec


CRONS = [
    "0 3 * * *",
    "*/5 * * * *",
    "0 0 30 2 *",
    "R * * * *",
    "* * * * * *",
    "@daily",
    "61 * * * *",
    "0 0 29 2 1",
    "0-59/7,3 1-5/2 L * 5#3",
]
ZONES = ["", "UTC", "Europe/Paris", "../../etc/passwd", "/etc/localtime", "Nowhere", "\x00"]


@st.composite
def schedules(draw: Any) -> spb.Schedule:
    x = spb.Schedule(
        name=draw(names),
        timezone=draw(st.one_of(st.sampled_from(ZONES), names)),
        job_template=draw(specs()),
        misfire_policy=draw(enums),
    )
    cadence = draw(st.integers(0, 2))
    if cadence == 0:
        x.cron = draw(st.one_of(st.sampled_from(CRONS), names))
    elif cadence == 1:
        x.interval.CopyFrom(duration_pb2.Duration(**draw(durations)))
    return x


def schedule_calls() -> st.SearchStrategy[tuple[str, str, Any]]:
    s = "schedule"
    by_id = [
        ("GetSchedule", spb.GetScheduleRequest),
        ("PauseSchedule", spb.PauseScheduleRequest),
        ("ResumeSchedule", spb.ResumeScheduleRequest),
        ("DeleteSchedule", spb.DeleteScheduleRequest),
    ]
    return st.one_of(
        st.builds(
            lambda n, x: (s, "CreateSchedule", spb.CreateScheduleRequest(namespace=n, schedule=x)),
            names,
            schedules(),
        ),
        st.builds(
            lambda n, size, tok: (
                s,
                "ListSchedules",
                spb.ListSchedulesRequest(namespace=n, page_size=size, page_token=tok),
            ),
            names,
            int32,
            names,
        ),
        *(
            st.builds(lambda n, i, m=m, r=r: (s, m, r(namespace=n, schedule_id=i)), names, job_ids)
            for m, r in by_id
        ),
    )


def calls() -> st.SearchStrategy[tuple[str, str, Any]]:
    """(service, method, request) triples covering every RPC but StreamUpdates' long life."""
    ns = names
    d, a = "dispatch", "admin"
    return st.one_of(
        st.builds(lambda n, s: (d, "Enqueue", pb.EnqueueRequest(namespace=n, job=s)), ns, specs()),
        st.builds(
            lambda n, s: (d, "EnqueueBatch", pb.EnqueueBatchRequest(namespace=n, jobs=s)),
            ns,
            st.lists(specs(), max_size=4),
        ),
        st.builds(
            lambda n, j: (d, "GetStatus", pb.GetStatusRequest(namespace=n, job_id=j)), ns, job_ids
        ),
        st.builds(
            lambda n, j, r: (d, "Cancel", pb.CancelRequest(namespace=n, job_id=j, reason=r)),
            ns,
            job_ids,
            names,
        ),
        st.builds(
            lambda n, w, q, m, ld: (
                d,
                "Lease",
                pb.LeaseRequest(
                    namespace=n,
                    worker_id=w,
                    queues=q,
                    max_jobs=m,
                    wait=duration_pb2.Duration(nanos=1000),
                    lease_duration=ld,
                ),
            ),
            ns,
            names,
            st.lists(names, max_size=3),
            int32,
            durations,
        ),
        st.builds(
            lambda n, t, p, m: (
                d,
                "Heartbeat",
                pb.HeartbeatRequest(
                    namespace=n,
                    items=[
                        pb.HeartbeatItem(lease_token=t, progress=jpb.Progress(percent=p, message=m))
                    ],
                ),
            ),
            ns,
            tokens,
            doubles,
            names,
        ),
        st.builds(
            lambda n, t, r: (
                d,
                "Ack",
                pb.AckRequest(namespace=n, items=[pb.AckItem(lease_token=t, result=r)]),
            ),
            ns,
            tokens,
            st.binary(max_size=32),
        ),
        st.builds(
            lambda n, t, e, r, dur: (
                d,
                "Nack",
                pb.NackRequest(
                    namespace=n,
                    items=[pb.NackItem(lease_token=t, error=e, retry=r, retry_after=dur)],
                ),
            ),
            ns,
            tokens,
            names,
            st.booleans(),
            durations,
        ),
        st.builds(
            lambda n, j: (d, "StreamUpdates", pb.StreamUpdatesRequest(namespace=n, job_ids=j)),
            ns,
            st.lists(job_ids, min_size=1, max_size=3),
        ),
        st.builds(
            lambda n, q, state, size, tok: (
                a,
                "ListJobs",
                apb.ListJobsRequest(
                    namespace=n, queue=q, state=state, page_size=size, page_token=tok
                ),
            ),
            ns,
            names,
            enums,
            int32,
            names,
        ),
        st.builds(
            lambda n, size, tok: (
                a,
                "ListQueues",
                apb.ListQueuesRequest(namespace=n, page_size=size, page_token=tok),
            ),
            ns,
            int32,
            names,
        ),
        st.builds(
            lambda n, q, dep, c, r: (
                a,
                "SetQueueLimits",
                apb.SetQueueLimitsRequest(
                    namespace=n, queue=q, max_depth=dep, max_concurrency=c, rate_per_second=r
                ),
            ),
            ns,
            names,
            int64,
            int64,
            doubles,
        ),
        st.builds(
            lambda n, q, states: (
                a,
                "PurgeQueue",
                apb.PurgeQueueRequest(namespace=n, queue=q, states=states),
            ),
            ns,
            names,
            st.lists(enums, max_size=3),
        ),
        st.builds(
            lambda n, j, q: (
                a,
                "RetryDeadLettered",
                apb.RetryDeadLetteredRequest(namespace=n, job_id=j, queue=q),
            ),
            ns,
            job_ids,
            names,
        ),
        st.builds(
            lambda n, q: (a, "PauseQueue", apb.PauseQueueRequest(namespace=n, queue=q)), ns, names
        ),
        st.builds(lambda n: (a, "ListWorkers", apb.ListWorkersRequest(namespace=n)), ns),
        schedule_calls(),
    )


def draw_examples(n: int) -> list[tuple[str, str, Any]]:
    """Hypothesis generates; the async test replays (Hypothesis cannot drive a coroutine
    nested in an async test)."""
    out: list[tuple[str, str, Any]] = []

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(call=calls())
    def collect(call: tuple[str, str, Any]) -> None:
        out.append(call)

    collect()
    return out


@pytest.fixture
async def open_app(backend: Backend, clock: FakeClock) -> AsyncIterator[DispatcherApp]:
    app = DispatcherApp(
        Settings(port=0, reaper_interval_s=3600, reconcile_interval_s=3600),
        backend.components(clock),
    )
    await app.start()
    await app.wait_serving()
    yield app
    await app.stop_serving(0.2)


async def test_random_and_hostile_requests_get_only_documented_codes(
    open_app: DispatcherApp,
) -> None:
    seen: list[grpc.StatusCode] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{open_app.port}") as channel:
        dispatch = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        stubs = {
            "dispatch": dispatch,
            "admin": admin_pb2_grpc.AdminServiceStub(channel),
            "schedule": schedule_pb2_grpc.ScheduleServiceStub(channel),
        }
        for service, method, request in draw_examples(400):
            call = getattr(stubs[service], method)(request, timeout=10)
            try:
                if method == "StreamUpdates":
                    async for _ in call:
                        break
                    call.cancel()
                else:
                    await call
                code = C.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                assert "Traceback" not in (exc.details() or "")
            if code == C.CANCELLED and method == "StreamUpdates":
                code = C.OK
            seen.append(code)
            assert code in DOCUMENTED, (method, code, request)
        stub = dispatch
        # The server keeps serving normal traffic.
        job = (await stub.Enqueue(pb.EnqueueRequest(job=jpb.JobSpec(queue="after", type="t")))).job
        lease = (await stub.Lease(pb.LeaseRequest(worker_id="w", queues=["after"]))).leases[0]
        await stub.Ack(pb.AckRequest(items=[pb.AckItem(lease_token=lease.lease_token)]))
        assert lease.job.id == job.id
    assert C.INVALID_ARGUMENT in seen and C.OK in seen, Counter(seen)
    assert len(seen) == 400
    # Every key the server wrote lies under its prefix (on a shared server, other runs'
    # keys exist too: there, check only that no key names a hostile queue or namespace).
    client = open_app.components.index.client
    prefix = open_app.components.index.keys.prefix + ":"
    keys = [k async for k in client.scan_iter(match="*")]
    if (
        not open_app.settings.redis_url
        and not open_app.components.index.client.connection_pool.connection_kwargs.get("host")
    ):
        assert [k for k in keys if not k.startswith(prefix)] == []
    for k in keys:
        if k.startswith(prefix):
            tag = k[len(prefix) :]
            assert "\x00" not in tag and "\n" not in tag
