"""Bounds on everything a client sends; `validation.py` enforces them."""

from __future__ import annotations

from dataclasses import dataclass

SECOND_MS = 1_000
HOUR_MS = 3_600 * SECOND_MS
DAY_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS


@dataclass(frozen=True)
class Limits:
    """Server-side limits. The defaults are documented in the proto comments."""

    max_payload_bytes: int = 1024 * 1024
    max_metadata_entries: int = 64
    max_metadata_key_chars: int = 128
    max_metadata_value_chars: int = 1024
    max_metadata_total_bytes: int = 16 * 1024
    max_batch: int = 1000
    max_queues_per_lease: int = 32
    max_attempts: int = 1000
    default_max_attempts: int = 3
    min_lease_ms: int = SECOND_MS
    max_lease_ms: int = 12 * HOUR_MS
    default_lease_ms: int = 30 * SECOND_MS
    max_wait_ms: int = 30 * SECOND_MS
    max_delay_ms: int = YEAR_MS
    max_error_chars: int = 4096
    max_stream_jobs: int = 1000
    idempotency_window_ms: int = DAY_MS
    retention_ms: int = 7 * DAY_MS
    max_waiters_per_namespace: int = 1000
