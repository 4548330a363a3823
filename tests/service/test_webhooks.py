"""The webhook sender over each backend: signed POSTs to a loopback receiver, retries on the
fake clock, every attempt recorded, SSRF re-checked at send time, the job never touched."""

from __future__ import annotations

import json
import random
import socket
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dispatcher.app import Components
from dispatcher.clock import FakeClock
from dispatcher.domain import webhook_signing
from dispatcher.domain.errors import InvalidArgument
from dispatcher.service.ssrf import UrlPolicy
from dispatcher.service.webhooks import SCHEDULE_MS, WebhookSender
from dispatcher.store.sql.tables import webhook_attempts, webhook_outbox
from dispatcher.store.sql.webhooks import WebhookOutbox
from tests.service.helpers import ack, lease, spec
from tests.service.receiver import Answer, Receiver

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
KEYS = webhook_signing.parse_secrets(SECRET)


def sender_for(c: Components, policy: UrlPolicy | None = None, **kw: Any) -> WebhookSender:
    policy = policy or UrlPolicy(allow_private=True)
    return WebhookSender(WebhookOutbox(c.runs), KEYS, policy, rng=random.Random(7), **kw)


async def finish(c: Components, url: str, result: bytes = b"ok") -> str:
    """Enqueue a job with a callback, lease it and ack it: one outbox row."""
    await c.dispatcher.enqueue("", spec(callback_url=url))
    (granted,) = await lease(c)
    await ack(c, granted.token, result)
    return granted.job.id


async def outbox(c: Components) -> list[dict[str, Any]]:
    async with c.runs.engine.connect() as conn:
        rows = await conn.execute(select(webhook_outbox).order_by(webhook_outbox.c.id))
        return [dict(r._mapping) for r in rows]


async def attempts(c: Components) -> list[dict[str, Any]]:
    async with c.runs.engine.connect() as conn:
        rows = await conn.execute(select(webhook_attempts).order_by(webhook_attempts.c.id))
        return [dict(r._mapping) for r in rows]


async def test_a_finished_job_is_posted_to_its_callback_url_signed_and_with_its_outcome(
    replica: Components, clock: FakeClock
) -> None:
    async with Receiver() as receiver, sender_for(replica) as sender:
        job_id = await finish(replica, receiver.url, b"ok")
        stats = await sender.run_once(clock.now_ms())
    assert (stats.claimed, stats.delivered) == (1, 1)
    (got,) = receiver.received
    (row,) = await outbox(replica)
    assert got.method == "POST" and got.path == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == f"msg_{row['id']}"
    assert got.headers["webhook-timestamp"] == str(clock.now_ms() // 1000)
    now_s = clock.now_ms() // 1000
    assert webhook_signing.verify(KEYS, got.headers, got.body, now_s) == f"msg_{row['id']}"
    assert got.body == row["body"]
    event = json.loads(got.body)
    assert event["type"] == "job.succeeded"
    assert event["data"]["job_id"] == job_id and event["data"]["result"] == "b2s="
    assert (row["state"], row["attempts"], row["claimed_until"]) == ("delivered", 1, 0)
    (attempt,) = await attempts(replica)
    assert (attempt["outbox_id"], attempt["status_code"], attempt["error"]) == (row["id"], 200, "")
    assert attempt["at"] == clock.now_ms()


async def test_a_failed_delivery_is_retried_after_the_backoff_and_each_attempt_is_recorded(
    replica: Components, clock: FakeClock
) -> None:
    async with Receiver(500, 200) as receiver, sender_for(replica) as sender:
        job_id = await finish(replica, receiver.url)
        job = await replica.runs.get(job_id)
        start = clock.now_ms()
        assert (await sender.run_once(start)).retried == 1
        (row,) = await outbox(replica)
        assert row["state"] == "pending" and row["attempts"] == 1
        assert start + 4_000 <= row["next_attempt_at"] <= start + 6_000  # 5 s, +/-20%
        clock.advance((row["next_attempt_at"] - start - 1) / 1000)
        assert (await sender.run_once(clock.now_ms())).claimed == 0  # not due yet
        clock.advance(0.001)
        assert (await sender.run_once(clock.now_ms())).delivered == 1
    assert [r.headers["webhook-id"] for r in receiver.received] == [f"msg_{row['id']}"] * 2
    assert [a["status_code"] for a in await attempts(replica)] == [500, 200]
    assert (await attempts(replica))[0]["error"] == "HTTP 500"
    (row,) = await outbox(replica)
    assert (row["state"], row["attempts"]) == ("delivered", 2)
    assert await replica.runs.get(job_id) == job  # the job itself never changes


async def test_delivery_gives_up_after_the_last_step_of_the_schedule_and_the_job_stays_as_it_was(
    replica: Components, clock: FakeClock
) -> None:
    async with Receiver(*[503] * 20) as receiver, sender_for(replica) as sender:
        job_id = await finish(replica, receiver.url)
        job = await replica.runs.get(job_id)
        for _ in range(len(SCHEDULE_MS) + 1):
            await sender.run_once(clock.now_ms())
            (row,) = await outbox(replica)
            clock.advance(max(0, row["next_attempt_at"] - clock.now_ms()) / 1000)
        clock.advance(7 * 86_400)
        assert (await sender.run_once(clock.now_ms())).claimed == 0
    assert len(receiver.received) == len(SCHEDULE_MS) + 1 == 10
    (row,) = await outbox(replica)
    assert (row["state"], row["attempts"]) == ("failed", 10)
    assert len(await attempts(replica)) == 10
    assert sender.totals.failed == 1 and sender.totals.retried == 9
    got = await replica.runs.get(job_id)
    assert got == job and got is not None and got.state.value == "succeeded"


async def test_410_gone_gives_up_at_once(replica: Components, clock: FakeClock) -> None:
    async with Receiver(410) as receiver, sender_for(replica) as sender:
        await finish(replica, receiver.url)
        assert (await sender.run_once(clock.now_ms())).failed == 1
        clock.advance(86_400)
        assert (await sender.run_once(clock.now_ms())).claimed == 0
    assert len(receiver.received) == 1
    (row,) = await outbox(replica)
    assert row["state"] == "failed"
    (attempt,) = await attempts(replica)
    assert attempt["status_code"] == 410 and "Gone" in attempt["error"]


async def test_retry_after_on_429_postpones_the_next_attempt(
    replica: Components, clock: FakeClock
) -> None:
    async with (
        Receiver(Answer(429, {"retry-after": "600"})) as receiver,
        sender_for(replica) as sender,
    ):
        await finish(replica, receiver.url)
        await sender.run_once(clock.now_ms())
    (row,) = await outbox(replica)
    assert row["next_attempt_at"] == clock.now_ms() + 600_000


async def test_a_redirect_is_a_failure_and_is_never_followed(
    replica: Components, clock: FakeClock
) -> None:
    redirect = Answer(302, {"location": "http://169.254.169.254/latest/meta-data/"})
    async with Receiver(redirect) as receiver, sender_for(replica) as sender:
        await finish(replica, receiver.url)
        assert (await sender.run_once(clock.now_ms())).retried == 1
    assert len(receiver.received) == 1
    (attempt,) = await attempts(replica)
    assert attempt["status_code"] == 302 and "redirects are not followed" in attempt["error"]


async def test_a_receiver_that_never_answers_times_out_and_is_retried(
    replica: Components, clock: FakeClock
) -> None:
    async with (
        Receiver(Answer(hang=True)) as receiver,
        sender_for(replica, timeout_s=0.2) as sender,
    ):
        await finish(replica, receiver.url)
        assert (await sender.run_once(clock.now_ms())).retried == 1
    (attempt,) = await attempts(replica)
    assert attempt["status_code"] == 0 and "no answer within 0.2s" in attempt["error"]
    (row,) = await outbox(replica)
    assert row["state"] == "pending" and row["claimed_until"] == 0


async def test_a_large_answer_is_read_only_up_to_the_cap(
    replica: Components, clock: FakeClock
) -> None:
    async with (
        Receiver(Answer(500, body=b"x" * 1_000_000)) as receiver,
        sender_for(replica) as sender,
    ):
        await finish(replica, receiver.url)
        assert (await sender.run_once(clock.now_ms())).retried == 1
    (attempt,) = await attempts(replica)
    assert attempt["error"].startswith("HTTP 500: xxx") and len(attempt["error"]) <= 500


async def test_the_sender_connects_to_the_vetted_address_and_sends_the_name_as_host(
    replica: Components, clock: FakeClock
) -> None:
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    policy = UrlPolicy(allow_private=True, resolver=resolver)
    async with Receiver() as receiver, sender_for(replica, policy) as sender:
        await finish(replica, f"http://hooks.test:{receiver.port}/hook")
        assert (await sender.run_once(clock.now_ms())).delivered == 1
    assert lookups == ["hooks.test."]
    assert receiver.received[0].headers["host"] == f"hooks.test:{receiver.port}"


async def test_dns_rebinding_is_refused_at_send_time_without_connecting(
    replica: Components, clock: FakeClock
) -> None:
    answers = [["93.184.216.34"], ["127.0.0.1"]]  # public at Enqueue, loopback at send

    async def resolver(host: str, port: int) -> list[str]:
        return answers.pop(0)

    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"connected to {request.url}")

    policy = UrlPolicy(allow_private=False, resolver=resolver)
    replica.dispatcher.url_guard = policy.check
    async with sender_for(replica, policy, transport=httpx.MockTransport(never)) as sender:
        await finish(replica, "https://rebind.test/hook")
        assert (await sender.run_once(clock.now_ms())).failed == 1
    (row,) = await outbox(replica)
    assert row["state"] == "failed"
    (attempt,) = await attempts(replica)
    assert attempt["status_code"] == 0
    assert attempt["error"] == (
        "refused, not sent: the URL must not point to an internal address (its address is loopback)"
    )


async def test_a_host_that_stops_resolving_is_retried(
    replica: Components, clock: FakeClock
) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async with sender_for(replica, UrlPolicy(resolver=resolver)) as sender:
        await finish(replica, "https://flaky.test/hook")
        assert (await sender.run_once(clock.now_ms())).retried == 1
    (attempt,) = await attempts(replica)
    assert "Temporary failure in name resolution" in attempt["error"]


async def test_a_callback_url_to_a_private_address_is_refused_at_enqueue(
    replica: Components,
) -> None:
    replica.dispatcher.url_guard = UrlPolicy(allow_private=False).check
    with pytest.raises(InvalidArgument) as info:
        await replica.dispatcher.enqueue("", spec(callback_url="https://10.0.0.1/hook"))
    (violation,) = info.value.violations
    assert violation.field == "job.callback_url"
    assert "internal address" in violation.description
    assert await outbox(replica) == []


async def test_a_claimed_row_is_not_claimed_again_until_its_claim_expires(
    replica: Components, backend: Any, clock: FakeClock
) -> None:
    await finish(replica, "https://hooks.example.com/done")
    other = backend.components(clock)  # a second replica on the same stores
    now = clock.now_ms()
    mine = await WebhookOutbox(replica.runs).claim_due(now, now + 60_000, 10)
    assert len(mine) == 1
    assert await WebhookOutbox(other.runs).claim_due(now, now + 60_000, 10) == []
    later = now + 60_000
    again = await WebhookOutbox(other.runs).claim_due(later, later + 60_000, 10)
    assert [i.id for i in again] == [mine[0].id]
