"""Webhook signatures, Standard Webhooks v1 (symmetric, HMAC-SHA256).

The signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; the
signature header is `v1,<base64 of the HMAC>`, one per secret, separated by
spaces (several secrets let a receiver rotate without downtime). A secret is
written `whsec_<base64 of 24 to 64 random bytes>`; the key is the decoded bytes.

`verify` is the receiver's side, for tests and as the reference for docs/webhooks.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
TOLERANCE_S = 300  # receivers refuse timestamps further than this from their clock


class SignatureError(Exception):
    """A delivery whose signature, timestamp or headers do not verify."""


def parse_secret(text: str) -> bytes:
    """The HMAC key of one `whsec_...` secret. Never echoes the secret in its errors."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret must start with 'whsec_'")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"a webhook secret must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"
        )
    return key


def parse_secrets(text: str) -> tuple[bytes, ...]:
    """Keys of a space- or comma-separated list of secrets (the first is the current one)."""
    return tuple(parse_secret(s) for s in text.replace(",", " ").split())


def new_secret() -> str:
    """A fresh random secret (32 bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _mac(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    return "v1," + base64.b64encode(_mac(key, msg_id, timestamp, body)).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per key, space-separated."""
    if "." in msg_id:
        raise ValueError("a webhook id must not contain '.'")
    return " ".join(signature(k, msg_id, timestamp, body) for k in keys)


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
    }


def verify(
    keys: Sequence[bytes],
    received: Mapping[str, str],
    body: bytes,
    now_s: int,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Check a delivery as a receiver must; returns its webhook-id (to deduplicate on).

    `body` is the raw request bytes, never re-serialised JSON. Any one valid
    `v1` signature for any key is enough; comparisons are constant-time.
    """
    h = {k.lower(): v for k, v in received.items()}
    msg_id = h.get("webhook-id", "")
    stamp = h.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        raise SignatureError("missing webhook-id or webhook-timestamp")
    timestamp = int(stamp)
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError("the timestamp is outside the tolerance")
    offered = [s.partition(",") for s in h.get("webhook-signature", "").split()]
    for key in keys:
        expected = _mac(key, msg_id, timestamp, body)
        for version, _, value in offered:
            if version != "v1":
                continue
            try:
                mac = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(mac, expected):
                return msg_id
    raise SignatureError("no valid signature")
