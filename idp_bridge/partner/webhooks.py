"""Webhook delivery to the partner platform from the durable outbox (no Flask).

Every message is POSTed as JSON with:

- ``Idempotency-Key``: the outbox message's key, the same on every retry (the platform keeps the
  keys it has processed and ignores a repeat: a crash between its 2xx and our "delivered" mark
  then still shows the change once);
- ``X-Idp-Bridge-Timestamp``: seconds since the epoch;
- ``X-Idp-Bridge-Signature``: ``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.

A 2xx marks the message delivered; anything else retries with exponential backoff
(``base * 2**(attempt-1)``, capped). Several loops (gunicorn workers, nodes, ``idp-bridge webhooks
run``) may run at once: each message is claimed by exactly one of them (see store/outbox.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from idp_bridge.ops.audit import audit
from idp_bridge.ops.periodic import Periodic
from idp_bridge.store import Store
from idp_bridge.store.outbox import OutboxMessage

log = logging.getLogger("idp_bridge.webhooks")

SIGNATURE_HEADER = "X-Idp-Bridge-Signature"
TIMESTAMP_HEADER = "X-Idp-Bridge-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "idp-bridge-webhooks/1"


def sign_body(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Idp-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a platform runs on receipt (also used by the demo platform and the tests)."""
    try:
        expected = sign_body(secret, int(timestamp), body)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    secret: str
    timeout: float = 10.0
    lease: dt.timedelta = dt.timedelta(seconds=60)
    backoff_base: dt.timedelta = dt.timedelta(seconds=5)
    backoff_max: dt.timedelta = dt.timedelta(hours=1)

    def backoff(self, attempts: int) -> dt.timedelta:
        seconds = self.backoff_base.total_seconds() * 2 ** max(0, min(attempts - 1, 30))
        return dt.timedelta(seconds=min(seconds, self.backoff_max.total_seconds()))


@dataclass(frozen=True)
class DeliveryResult:
    message_id: int
    key: str
    ok: bool
    status: int | None
    error: str | None
    retry_at: dt.datetime | None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is a failed delivery: the body must go to the configured URL only


_opener = urllib.request.build_opener(_NoRedirect)


def post(settings: WebhookSettings, message: OutboxMessage, *, now: dt.datetime) -> tuple[int | None, str | None]:
    """POST one message; (HTTP status or None, error text or None)."""
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    ts = int(now.timestamp())
    req = urllib.request.Request(settings.url, data=body, method="POST", headers={  # noqa: S310 - config URL
        "Content-Type": "application/json", "User-Agent": USER_AGENT, IDEMPOTENCY_HEADER: message.dedupe_key,
        TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign_body(settings.secret, ts, body),
        "X-Idp-Bridge-Attempt": str(message.attempts), "X-Idp-Bridge-Topic": message.topic})
    try:
        with _opener.open(req, timeout=settings.timeout) as resp:
            resp.read(64 * 1024)
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} from {settings.url}"
    except (OSError, ValueError) as exc:
        return None, f"cannot reach {settings.url}: {exc}"
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status} from {settings.url}"


def deliver_due(store: Store, settings: WebhookSettings, *, now: dt.datetime | None = None,
                limit: int = 20) -> list[DeliveryResult]:
    """Claim what is due, POST each message once, record the outcome. One pass; returns what it did."""
    now = now or dt.datetime.now(dt.UTC)
    results: list[DeliveryResult] = []
    for message in store.outbox.claim_due(now=now, lease=settings.lease, limit=limit):
        status, error = post(settings, message, now=now)
        detail = {"key": message.dedupe_key, "topic": message.topic, "attempt": message.attempts,
                  "status": status, "url": settings.url}
        customer = message.payload.get("xUserId") if isinstance(message.payload.get("xUserId"), str) else None
        if error is None:
            store.outbox.mark_delivered(message.id, now=now)
            audit(store, "webhook", "ok", customer=customer, detail=detail, now=now)
            results.append(DeliveryResult(message.id, message.dedupe_key, True, status, None, None))
            continue
        retry_at = now + settings.backoff(message.attempts)
        store.outbox.mark_failed(message.id, error=error, retry_at=retry_at)
        audit(store, "webhook", "error", reason_code="webhook_failed", customer=customer,
              detail={**detail, "error": error, "retry_at": retry_at.isoformat()}, now=now)
        results.append(DeliveryResult(message.id, message.dedupe_key, False, status, error, retry_at))
    return results


def delivery_loop(store: Store, settings: WebhookSettings, *, interval: float = 2.0,
                  clock: Callable[[], dt.datetime] | None = None) -> Periodic:
    """``deliver_due`` every ``interval`` seconds, at once again while there was work (web processes)."""
    now = clock or (lambda: dt.datetime.now(dt.UTC))
    return Periodic("idp-bridge-webhooks", lambda: len(deliver_due(store, settings, now=now())) > 0,
                    interval=interval)


def settings_from_config(url: str | None, secret: str | None) -> WebhookSettings | None:
    return WebhookSettings(url, secret) if url and secret else None


def wait_idle(store: Store, *, timeout: float = 10.0) -> bool:
    """Until nothing is pending (for the demo and tests); True if it got there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.outbox.pending_count() == 0:
            return True
        time.sleep(0.05)
    return False
