"""What a webhook says: the event body written to the outbox at the terminal transition.

The body is fixed when the job finishes, so every delivery attempt signs and
sends the same bytes. Its shape follows Standard Webhooks:
{"type": "job.succeeded", "timestamp": ISO-8601, "data": {...}}.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from dispatcher.domain.models import Job


def event_type(job: Job) -> str:
    return f"job.{job.state.value}"


def event_body(job: Job, at_ms: int) -> bytes:
    data = {
        "job_id": job.id,
        "namespace": job.namespace,
        "queue": job.queue,
        "type": job.type,
        "state": job.state.value,
        "terminal_reason": job.terminal_reason.value,
        "attempt": job.attempt,
        "last_error": job.last_error,
        "result": base64.b64encode(job.result).decode(),
        "result_content_type": job.result_content_type,
        "metadata": job.metadata,
    }
    when = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    envelope = {"type": event_type(job), "timestamp": when, "data": data}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


def webhook_id(outbox_id: int) -> str:
    """The webhook-id header: stable across retries, never user-controlled, no '.'."""
    return f"msg_{outbox_id}"
