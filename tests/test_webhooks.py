"""Binding changes reach the platform's webhook exactly once, through outages, with several delivery loops."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from idp_bridge.partner.webhooks import (
    WebhookSettings,
    deliver_due,
    settings_from_config,
    sign_body,
    verify_signature,
)
from idp_bridge.store import Store
from tests.servers import free_port
from tests.webhook_receiver import Receiver

SECRET = "w" * 40
T0 = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)


def change(store: Store, user: str, bound: bool, now: dt.datetime = T0) -> str | None:
    return store.bindings.apply(x_user_id=user, bound=bound, domain_id="d-" + user if bound else None,
                               bind_action="0" if bound else "1", source="test", now=now)[1]


def test_signature_helpers() -> None:
    sig = sign_body(SECRET, 1700000000, b"{}")
    assert sig.startswith("sha256=") and verify_signature(SECRET, "1700000000", b"{}", sig)
    assert not verify_signature(SECRET, "1700000001", b"{}", sig)
    assert not verify_signature("x" * 40, "1700000000", b"{}", sig)
    assert not verify_signature(SECRET, "nope", b"{}", sig)


def test_bindings_are_idempotent_and_queue_one_message_per_change(store: Store) -> None:
    assert change(store, "c1", True) is not None
    assert change(store, "c1", True) is None  # same state again: nothing
    assert change(store, "c1", False) is not None  # unbind
    assert change(store, "c1", False) is None
    assert change(store, "c1", True) is not None  # bound again: a new change
    assert store.bindings.get("c1").bound  # type: ignore[union-attr]
    assert len(store.outbox.messages()) == 3
    changed, key = store.bindings.apply(x_user_id="c2", bound=True, domain_id="d", source="import", now=T0,
                                       notify=False)
    assert changed and key is None and len(store.outbox.messages()) == 3


def test_endpoint_down_then_back_each_change_delivered_exactly_once(store: Store) -> None:
    port = free_port()
    settings = WebhookSettings(f"http://127.0.0.1:{port}/hooks", SECRET, timeout=5)
    keys = [change(store, f"c{i}", True) for i in range(5)] + [change(store, "c0", False)]
    # 1. nothing listening at all: c0's second change waits behind its first
    down = deliver_due(store, settings, now=T0)
    assert len(down) == 5 and not any(r.ok for r in down)
    assert all(r.retry_at == T0 + settings.backoff_base for r in down)
    assert deliver_due(store, settings, now=T0 + dt.timedelta(seconds=1)) == []  # backing off
    receiver = Receiver(SECRET, port)
    try:
        # 2. listening but failing (503): retried later with a doubled delay
        receiver.status = 503
        failing = deliver_due(store, settings, now=T0 + dt.timedelta(seconds=5))
        assert len(failing) == 5 and {r.status for r in failing} == {503}
        assert all(r.retry_at == T0 + dt.timedelta(seconds=15) for r in failing)
        # 3. back: two delivery loops at once (two workers/nodes) deliver each change once
        receiver.status = 200
        later = T0 + dt.timedelta(seconds=15)
        results: list[list[object]] = []
        threads = [threading.Thread(target=lambda: results.append(deliver_due(store, settings, now=later)))  # type: ignore[arg-type]
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sum(len(r) for r in results) == 6
        assert deliver_due(store, settings, now=later + dt.timedelta(hours=2)) == []
    finally:
        receiver.stop()
    assert dict(receiver.keys) == {k: 1 for k in keys}
    assert receiver.bad_signatures == 0
    assert [(m["bound"], m["seq"]) for m in receiver.accepted if m["xUserId"] == "c0"] == [(True, 1), (False, 2)]
    assert store.outbox.pending_count() == 0
    events = [e for e in store.audit.recent(100) if e.event == "webhook"]
    assert sum(e.outcome == "ok" for e in events) == 6 and sum(e.outcome == "error" for e in events) == 10


def test_a_customers_later_change_never_overtakes_an_earlier_one(store: Store) -> None:
    receiver = Receiver(SECRET)
    settings = WebhookSettings(receiver.url, SECRET, timeout=5)
    try:
        first, second, third = (change(store, "c1", b) for b in (True, False, True))
        other = change(store, "c2", True)
        receiver.status = 503  # the first change fails: nothing after it goes out, other customers do
        assert [r.key for r in deliver_due(store, settings, now=T0)] == [first, other]
        assert deliver_due(store, settings, now=T0 + dt.timedelta(hours=2), limit=1)[0].key == first
        receiver.status = 200
        later = T0 + dt.timedelta(hours=3)
        assert [r.key for r in deliver_due(store, settings, now=later)] == [first, second, third, other]
    finally:
        receiver.stop()
    mine = [(m["seq"], m["bound"]) for m in receiver.accepted if m["xUserId"] == "c1"]
    assert mine == [(1, True), (2, False), (3, True)]
    assert receiver.sequence_headers == ["1", "2", "3", "1"]
    assert store.bindings.get("c1").bound  # type: ignore[union-attr]


def test_the_timeout_bounds_the_whole_post_and_the_lease_outlasts_it(store: Store) -> None:
    with pytest.raises(ValueError, match="too short"):
        WebhookSettings("http://x", SECRET, timeout=10, lease=dt.timedelta(seconds=25))
    assert settings_from_config("http://x", SECRET, timeout=3).lease == dt.timedelta(seconds=16)  # type: ignore[union-attr]
    receiver = Receiver(SECRET)
    receiver.delay = 3.0
    settings = WebhookSettings(receiver.url, SECRET, timeout=1)
    try:
        key = change(store, "c1", True)
        started = time.monotonic()
        (result,) = deliver_due(store, settings, now=T0)
        elapsed = time.monotonic() - started
    finally:
        receiver.stop()
    assert not result.ok and result.key == key and "within 1 s" in (result.error or "")
    assert elapsed < 2.5  # cut at the timeout, not after the receiver's 3 s


def test_backoff_is_exponential_and_capped() -> None:
    s = WebhookSettings("http://x", SECRET)
    assert [s.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert s.backoff(40) == s.backoff_max


def test_crashed_worker_lease_expires_and_key_is_reused(store: Store) -> None:
    key = change(store, "c9", True)
    claimed = store.outbox.claim_due(now=T0, lease=dt.timedelta(seconds=60))
    assert [m.dedupe_key for m in claimed] == [key]
    assert store.outbox.claim_due(now=T0 + dt.timedelta(seconds=30), lease=dt.timedelta(seconds=60)) == []
    again = store.outbox.claim_due(now=T0 + dt.timedelta(seconds=61), lease=dt.timedelta(seconds=60))
    assert [m.dedupe_key for m in again] == [key] and again[0].attempts == 2
    assert store.outbox.mark_delivered(again[0].id, now=T0) and not store.outbox.mark_delivered(again[0].id, now=T0)
