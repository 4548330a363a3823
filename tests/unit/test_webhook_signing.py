"""Webhook signatures (Standard Webhooks v1) and the retry schedule."""

from __future__ import annotations

import random

import pytest

from dispatcher.domain.webhook_signing import (
    SignatureError,
    headers,
    new_secret,
    parse_secret,
    parse_secrets,
    signature,
    verify,
)
from dispatcher.service.webhooks import SCHEDULE_MS, retry_after_ms, retry_delay_ms

# The test vector of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = parse_secret(SPEC_SECRET)


def spec_headers() -> dict[str, str]:
    return headers([KEY], SPEC_ID, SPEC_TS, SPEC_BODY)


def test_the_standard_webhooks_test_vector_is_reproduced() -> None:
    assert signature(KEY, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    assert spec_headers() == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TS),
        "webhook-signature": SPEC_SIGNATURE,
    }


def test_a_genuine_delivery_verifies_and_yields_its_id_to_deduplicate_on() -> None:
    assert verify([KEY], spec_headers(), SPEC_BODY, SPEC_TS + 10) == SPEC_ID


def test_a_tampered_body_fails_verification() -> None:
    with pytest.raises(SignatureError):
        verify([KEY], spec_headers(), b'{"test": 2432232315}', SPEC_TS)


def test_a_tampered_timestamp_fails_verification() -> None:
    h = spec_headers() | {"webhook-timestamp": str(SPEC_TS + 1)}
    with pytest.raises(SignatureError):
        verify([KEY], h, SPEC_BODY, SPEC_TS)


def test_a_timestamp_more_than_five_minutes_away_is_rejected() -> None:
    verify([KEY], spec_headers(), SPEC_BODY, SPEC_TS + 300)
    verify([KEY], spec_headers(), SPEC_BODY, SPEC_TS - 300)
    for now in (SPEC_TS + 301, SPEC_TS - 301):
        with pytest.raises(SignatureError):
            verify([KEY], spec_headers(), SPEC_BODY, now)


def test_another_secret_does_not_verify() -> None:
    with pytest.raises(SignatureError):
        verify([parse_secret(new_secret())], spec_headers(), SPEC_BODY, SPEC_TS)


def test_with_two_signatures_during_rotation_one_valid_one_is_enough() -> None:
    new, old = parse_secret(new_secret()), KEY
    h = headers([new, old], SPEC_ID, SPEC_TS, SPEC_BODY)
    assert len(h["webhook-signature"].split()) == 2
    assert h["webhook-signature"].split()[1] == SPEC_SIGNATURE
    assert verify([old], h, SPEC_BODY, SPEC_TS) == SPEC_ID  # a receiver not yet rotated
    assert verify([new], h, SPEC_BODY, SPEC_TS) == SPEC_ID


def test_header_names_are_matched_case_insensitively_and_missing_ones_fail() -> None:
    upper = {k.title(): v for k, v in spec_headers().items()}
    assert verify([KEY], upper, SPEC_BODY, SPEC_TS) == SPEC_ID
    with pytest.raises(SignatureError):
        verify([KEY], {"webhook-signature": SPEC_SIGNATURE}, SPEC_BODY, SPEC_TS)


@pytest.mark.parametrize(
    "bad",
    ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="],
)
def test_a_malformed_or_short_secret_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_secret(bad)
    assert "MfKQ" not in str(info.value) and "c2hvcnQ" not in str(info.value)


def test_a_secret_list_is_split_on_spaces_or_commas() -> None:
    other = new_secret()
    assert parse_secrets(f"{SPEC_SECRET} {other}") == parse_secrets(f"{SPEC_SECRET},{other}")
    assert len(parse_secrets(f" {SPEC_SECRET}  {other} ")) == 2


def test_a_webhook_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError):
        headers([KEY], "msg.1", SPEC_TS, SPEC_BODY)


def test_retries_follow_the_schedule_within_twenty_percent_then_give_up() -> None:
    rng = random.Random(1)
    for made, base in enumerate(SCHEDULE_MS, start=1):
        for _ in range(50):
            delay = retry_delay_ms(made, rng)
            assert delay is not None and 0.8 * base <= delay <= 1.2 * base
    assert SCHEDULE_MS[:3] == (5_000, 300_000, 1_800_000)
    assert retry_delay_ms(len(SCHEDULE_MS) + 1, rng) is None


def test_retry_after_reads_seconds_and_http_dates_and_is_capped_at_a_day() -> None:
    now = 1_800_000_000_000
    assert retry_after_ms("120", now) == 120_000
    assert retry_after_ms("Fri, 15 Jan 2027 08:00:30 GMT", 1_800_000_000_000) == 30_000
    assert retry_after_ms("99999999", now) == 86_400_000
    assert retry_after_ms("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0
    assert retry_after_ms("soon", now) is None
    assert retry_after_ms(None, now) is None
