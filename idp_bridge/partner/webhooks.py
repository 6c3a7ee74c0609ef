"""Webhook delivery to the partner platform from the durable outbox (no Flask).

Every message is POSTed as JSON with:

- ``Idempotency-Key``: the outbox message's key, the same on every retry (the platform keeps the
  keys it has processed and ignores a repeat: a crash between its 2xx and our "delivered" mark
  then still shows the change once);
- ``X-Idp-Bridge-Timestamp``: seconds since the epoch;
- ``X-Idp-Bridge-Signature``: ``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.

- ``X-Idp-Bridge-Sequence``: the change's number for this customer (also ``seq`` in the body).

A 2xx marks the message delivered; anything else retries with exponential backoff
(``base * 2**(attempt-1)``, capped). Several loops (gunicorn workers, nodes, ``idp-bridge webhooks
run``) may run at once: each message is claimed by exactly one of them (see store/outbox.py).

Guarantees: at least once, in order per customer (a customer's next change is sent only after the
platform accepted the one before), each with a stable Idempotency-Key. A loop claims one message at
a time, and a claim's lease always outlasts the whole POST (the timeout bounds the entire request,
not each socket read, and the lease is at least twice the timeout plus a margin), so no other loop
can send the same message while it is still in flight.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import urllib.parse
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
SEQUENCE_HEADER = "X-Idp-Bridge-Sequence"
USER_AGENT = "idp-bridge-webhooks/1"
#: A claim's lease covers the POST (at most ``timeout``) and the database calls around it, with room to spare.
LEASE_MARGIN = dt.timedelta(seconds=10)


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

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"webhook timeout must be positive, got {self.timeout}")
        shortest = min_lease(self.timeout)
        if self.lease < shortest:
            raise ValueError(f"webhook lease {self.lease.total_seconds():g} s is too short for a {self.timeout:g} s "
                             f"timeout: at least {shortest.total_seconds():g} s, or a slow delivery is sent twice")

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


def min_lease(timeout: float) -> dt.timedelta:
    return dt.timedelta(seconds=2 * timeout) + LEASE_MARGIN


def post(settings: WebhookSettings, message: OutboxMessage, *, now: dt.datetime) -> tuple[int | None, str | None]:
    """POST one message, all of it within ``settings.timeout``; (HTTP status or None, error text or None).

    http.client rather than urllib: a redirect is a failed delivery (the body goes to the configured URL
    only), and a watchdog can cut the socket when the whole exchange, not just one read, runs too long.
    """
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    ts = int(now.timestamp())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, IDEMPOTENCY_HEADER: message.dedupe_key,
               TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign_body(settings.secret, ts, body),
               "X-Idp-Bridge-Attempt": str(message.attempts), "X-Idp-Bridge-Topic": message.topic}
    if message.seq is not None:
        headers[SEQUENCE_HEADER] = str(message.seq)
    url = urllib.parse.urlsplit(settings.url)
    connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    try:
        conn = connection_class(url.hostname or "", url.port, timeout=settings.timeout)
    except ValueError as exc:
        return None, f"cannot reach {settings.url}: {exc}"
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(settings.timeout, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", (url.path or "/") + (f"?{url.query}" if url.query else ""), body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(64 * 1024)
        status = int(resp.status)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set():
            return None, f"no answer from {settings.url} within {settings.timeout:g} s"
        return None, f"cannot reach {settings.url}: {exc}"
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        return None, f"no answer from {settings.url} within {settings.timeout:g} s"
    if 200 <= status < 300:
        return status, None
    return status, f"HTTP {status} from {settings.url}"


def deliver_due(store: Store, settings: WebhookSettings, *, now: dt.datetime | None = None,
                limit: int = 20) -> list[DeliveryResult]:
    """Claim one due message, POST it, record the outcome; again, up to ``limit``. Returns what it did.

    One at a time, so each claim's lease starts when its own POST does (``now`` fixes the clock for tests).
    """
    results: list[DeliveryResult] = []
    for _ in range(limit):
        at = now or dt.datetime.now(dt.UTC)
        message = store.outbox.claim_next(now=at, lease=settings.lease)
        if message is None:
            break
        results.append(_deliver(store, settings, message, now=at))
    return results


def _deliver(store: Store, settings: WebhookSettings, message: OutboxMessage, *, now: dt.datetime) -> DeliveryResult:
    status, error = post(settings, message, now=now)
    detail = {"key": message.dedupe_key, "topic": message.topic, "attempt": message.attempts, "seq": message.seq,
              "status": status, "url": settings.url}
    customer = message.payload.get("xUserId") if isinstance(message.payload.get("xUserId"), str) else None
    if error is None:
        store.outbox.mark_delivered(message.id, now=now)
        audit(store, "webhook", "ok", customer=customer, detail=detail, now=now)
        return DeliveryResult(message.id, message.dedupe_key, True, status, None, None)
    retry_at = now + settings.backoff(message.attempts)
    store.outbox.mark_failed(message.id, error=error, retry_at=retry_at)
    audit(store, "webhook", "error", reason_code="webhook_failed", customer=customer,
          detail={**detail, "error": error, "retry_at": retry_at.isoformat()}, now=now)
    return DeliveryResult(message.id, message.dedupe_key, False, status, error, retry_at)


def delivery_loop(store: Store, settings: WebhookSettings, *, interval: float = 2.0,
                  clock: Callable[[], dt.datetime] | None = None) -> Periodic:
    """``deliver_due`` every ``interval`` seconds, at once again while there was work (web processes)."""
    now = clock or (lambda: dt.datetime.now(dt.UTC))
    return Periodic("idp-bridge-webhooks", lambda: len(deliver_due(store, settings, now=now())) > 0,
                    interval=interval)


def settings_from_config(url: str | None, secret: str | None, *, timeout: float = 10.0) -> WebhookSettings | None:
    """Settings for the configured endpoint; the lease follows the timeout (twice it, plus a margin)."""
    return WebhookSettings(url, secret, timeout=timeout, lease=min_lease(timeout)) if url and secret else None

