"""The webhook sender: delivers the outbox that finished jobs leave behind.

Never inside the completion transaction and never on the dispatch path: a
background loop claims due rows in bounded batches, POSTs each one signed
(Standard Webhooks), and records every attempt. 2xx delivers; 410 Gone gives
up; anything else (3xx included: redirects are not followed) is retried on
the schedule below with +/-20% jitter, honouring Retry-After on 429 and 5xx
answers that send one, and given up after the last step. The job's own row
is never read or written: a delivery cannot change a job's outcome.

Each send vets the URL again (SSRF) and connects to the vetted address, so
DNS cannot be rebound between the check and the connection. Delivery is
at-least-once: a replica that dies mid-send leaves its claim to expire and
another one sends again, with the same webhook-id.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Self

import httpx

from dispatcher.clock import Clock
from dispatcher.domain import webhook_signing, webhooks
from dispatcher.domain.errors import DispatchError, InvalidArgument
from dispatcher.service.dispatch import Dispatcher
from dispatcher.service.ssrf import Target, UnresolvableHost, UrlPolicy, UrlRefused
from dispatcher.service.state import ServingState
from dispatcher.store.sql.runs import RunStore
from dispatcher.store.sql.webhooks import OutboxItem, OutboxState, Settlement, WebhookOutbox

logger = logging.getLogger(__name__)

SECOND_MS = 1000
# Delay before each retry (Standard Webhooks' example): 10 attempts over about 3.3 days.
SCHEDULE_MS = tuple(
    s * SECOND_MS for s in (5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400)
)
JITTER = 0.2
MAX_RETRY_AFTER_MS = 86_400 * SECOND_MS
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
RESPONSE_CAP_BYTES = 64 * 1024  # read at most this much of an answer
ERROR_CAP = 500  # characters of an attempt's error kept
POLL_INTERVAL_S = 1.0
USER_AGENT = "dispatcher-webhooks/1"


@dataclass
class SendStats:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0  # given up


def retry_delay_ms(attempts_made: int, rng: random.Random) -> int | None:
    """Delay before the next attempt once `attempts_made` have failed; None: give up."""
    if not 1 <= attempts_made <= len(SCHEDULE_MS):
        return None
    return round(SCHEDULE_MS[attempts_made - 1] * rng.uniform(1 - JITTER, 1 + JITTER))


def retry_after_ms(value: str | None, now_ms: int) -> int | None:
    """A Retry-After header (seconds or an HTTP date) as a delay, capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = int(value) * SECOND_MS
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        delay = round(when.timestamp() * 1000) - now_ms
    return max(0, min(delay, MAX_RETRY_AFTER_MS))


@dataclass(frozen=True)
class _Outcome:
    state: OutboxState  # PENDING: failed, to be retried if the schedule allows
    status: int
    error: str
    retry_after: str | None = None


@dataclass(frozen=True)
class _Answer:
    status: int
    retry_after: str | None
    snippet: str


class WebhookSender:
    """Claims due outbox rows and delivers them; `run_once` handles one batch."""

    def __init__(
        self,
        outbox: WebhookOutbox,
        keys: Sequence[bytes],
        policy: UrlPolicy,
        *,
        timeout_s: float = 15.0,
        batch: int = 32,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not keys:
            raise ValueError("webhooks need at least one signing secret")
        self.outbox = outbox
        self.keys = tuple(keys)
        self.policy = policy
        self.timeout_s = timeout_s
        self.batch = batch
        self.rng = rng or random.Random()
        # A claim outlives a whole batch (sent concurrently, each within the timeout).
        self.claim_ms = round((2 * timeout_s + 30) * 1000)
        self.totals = SendStats()
        self._transport = transport  # tests only: the default connects for real
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: it would resolve the host
                # A fresh connection per send: a pooled one was set up for another host's SNI.
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"user-agent": USER_AGENT},
                transport=self._transport,
            )
        return self._client

    async def run_once(self, now_ms: int) -> SendStats:
        """Claim one batch of rows due at `now_ms`, deliver them, record the attempts."""
        items = await self.outbox.claim_due(now_ms, now_ms + self.claim_ms, self.batch)
        results = await asyncio.gather(*(self._attempt(item, now_ms) for item in items))
        await self.outbox.settle(results)
        stats = SendStats(claimed=len(items))
        for item, result in zip(items, results, strict=True):
            self._count(stats, item, result)
        for f in fields(SendStats):
            setattr(self.totals, f.name, getattr(self.totals, f.name) + getattr(stats, f.name))
        return stats

    def _count(self, stats: SendStats, item: OutboxItem, result: Settlement) -> None:
        extra = {"job_id": item.job_id, "namespace": item.namespace, "webhook_id": item.id}
        if result.state is OutboxState.DELIVERED:
            stats.delivered += 1
            return
        if result.state is OutboxState.PENDING:
            stats.retried += 1
            logger.info(
                "webhook attempt %d failed (%s); retrying", item.attempts + 1, result.error,
                extra=extra,
            )  # fmt: skip
            return
        stats.failed += 1
        logger.warning(
            "webhook given up after %d attempts: %s", item.attempts + 1, result.error, extra=extra
        )

    async def _attempt(self, item: OutboxItem, now_ms: int) -> Settlement:
        started = time.monotonic()
        try:
            out = await self._try(item, now_ms)
        except Exception:  # a bug must not lose the batch's other results
            logger.exception("webhook %d: unexpected error", item.id)
            out = _Outcome(OutboxState.PENDING, 0, "internal error while sending")
        took = round((time.monotonic() - started) * 1000)
        result = Settlement(item.id, out.state, 0, now_ms, out.status, out.error[:ERROR_CAP], took)
        if out.state is not OutboxState.PENDING:
            return result
        delay = retry_delay_ms(item.attempts + 1, self.rng)
        if delay is None:  # the schedule has run out
            return replace(result, state=OutboxState.FAILED)
        asked = retry_after_ms(out.retry_after, now_ms)
        return replace(result, next_attempt_ms=now_ms + max(delay, asked or 0))

    async def _try(self, item: OutboxItem, now_ms: int) -> _Outcome:
        """One attempt: vet the URL again, then POST to the vetted address."""
        try:
            target = await self.policy.vet(item.url)
        except UrlRefused as exc:
            return _Outcome(OutboxState.FAILED, 0, f"refused, not sent: the URL {exc}")
        except UnresolvableHost as exc:
            return _Outcome(OutboxState.PENDING, 0, str(exc))
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self._post(target, item, now_ms)
        except TimeoutError:
            return _Outcome(OutboxState.PENDING, 0, f"no answer within {self.timeout_s:g}s")
        except (httpx.HTTPError, OSError) as exc:
            return _Outcome(OutboxState.PENDING, 0, f"{type(exc).__name__}: {exc}")
        code = answer.status
        if 200 <= code < 300:
            return _Outcome(OutboxState.DELIVERED, code, "")
        if code == 410:
            return _Outcome(OutboxState.FAILED, code, "HTTP 410 Gone: the receiver asked to stop")
        error = f"HTTP {code}"
        if 300 <= code < 400:
            error += " (redirects are not followed)"
        if answer.snippet:
            error += f": {answer.snippet}"
        hint = answer.retry_after if code in RETRY_AFTER_STATUSES else None
        return _Outcome(OutboxState.PENDING, code, error, hint)

    async def _post(self, target: Target, item: OutboxItem, now_ms: int) -> _Answer:
        msg_id = webhooks.webhook_id(item.id)
        headers = webhook_signing.headers(self.keys, msg_id, now_ms // 1000, item.body)
        headers |= {
            "host": target.host_header,
            "content-type": "application/json",
            "accept-encoding": "identity",
        }
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        request = self.client.build_request(
            "POST", target.pinned_url, headers=headers, content=item.body, extensions=extensions
        )
        response = await self.client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_raw():  # raw: a compressed answer stays small
                body += chunk
                if len(body) >= RESPONSE_CAP_BYTES:
                    break
        finally:
            await response.aclose()
        snippet = bytes(body[:200]).decode("utf-8", "replace").strip()
        return _Answer(response.status_code, response.headers.get("retry-after"), snippet)


async def refuse_callbacks(url: str, field: str) -> None:
    """The Enqueue guard when no webhook secret is configured."""
    raise InvalidArgument.field(
        field, "webhooks are not enabled on this server (no webhook secret is configured)"
    )


def enable(
    dispatcher: Dispatcher,
    runs: RunStore,
    secret: str,
    allow_private: bool = False,
    timeout_s: float = 15.0,
    ports: Sequence[int] = (),
) -> WebhookSender | None:
    """Wire webhooks into a replica: the Enqueue guard, and a sender (None when disabled).

    Without a secret, callback URLs are refused at Enqueue: an unsigned or
    ephemerally signed webhook could not be verified by its receiver.
    """
    if not secret.strip():
        dispatcher.url_guard = refuse_callbacks
        logger.info("webhooks are off (no webhook secret): callback URLs are refused")
        return None
    keys = webhook_signing.parse_secrets(secret)
    policy = UrlPolicy(allow_private=allow_private, ports=ports)
    dispatcher.url_guard = policy.check
    if allow_private:
        logger.warning("webhooks may reach private and loopback addresses, over plain http too")
    return WebhookSender(WebhookOutbox(runs), keys, policy, timeout_s=timeout_s)


async def run_forever(
    sender: WebhookSender, clock: Clock, state: ServingState, interval_s: float = POLL_INTERVAL_S
) -> None:
    """Deliver due webhooks while the replica serves: again at once after a full batch."""
    try:
        while not state.draining.is_set():
            full = False
            if state.serving:
                try:
                    stats = await sender.run_once(clock.now_ms())
                    full = stats.claimed >= sender.batch
                except DispatchError as exc:
                    logger.warning("webhook pass failed: %s", exc.reason)
            await asyncio.sleep(0 if full else interval_s * random.uniform(0.8, 1.2))
    finally:
        await sender.aclose()
