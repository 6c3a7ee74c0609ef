"""Webhooks through faults, delivered by gunicorn's two workers: the platform's endpoint down, a slow
platform answering after the timeout, and both workers killed (-9) in the middle of a delivery.

Counted at the end: changes lost (never accepted by the platform), reordered (a customer's change
arriving after a later one), and the state a platform applying them as they arrive ends with. Repeats
are allowed - at least once - but only with the same Idempotency-Key and in order."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from idp_bridge.store import Store
from tests.faults import Gunicorn, fault_env, new_port, wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

SECRET = "w" * 40
CUSTOMERS = ("c1", "c2", "c3")


def toggle(store: Store, rounds: int, start: int) -> list[str]:
    """``rounds`` binding changes per customer, interleaved; their idempotency keys."""
    keys = []
    for r in range(start, start + rounds):
        for c in CUSTOMERS:
            bound = r % 2 == 0
            _, key = store.bindings.apply(x_user_id=c, bound=bound, domain_id=f"d-{c}" if bound else None,
                                          source="fault-test", now=_now())
            assert key is not None
            keys.append(key)
    return keys


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def reordered(accepted: list[dict[str, Any]]) -> int:
    """Arrivals whose seq is lower than one already seen for that customer."""
    seen: dict[str, int] = {}
    bad = 0
    for m in accepted:
        if m["seq"] < seen.get(m["xUserId"], 0):
            bad += 1
        seen[m["xUserId"]] = max(seen.get(m["xUserId"], 0), m["seq"])
    return bad


def test_outage_slow_platform_and_kill_9_lose_and_reorder_nothing(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    hook_port, port = new_port(), new_port()
    url = f"http://127.0.0.1:{hook_port}/hooks"
    env = fault_env(tmp_path / "bridge", db_url, port=port,
                    platform={"webhook_url": url, "webhook_secret": SECRET, "webhook_timeout_seconds": 1})
    store = Store.from_url(db_url)
    keys: list[str] = []
    kills = 0
    receiver: Receiver | None = None
    try:
        with Gunicorn(env, port) as bridge:
            # 1. the platform is down: changes queue up and are retried
            keys += toggle(store, 2, 0)
            wait_for(lambda: all(m.attempts >= 1 for m in store.outbox.messages(pending_only=True)
                                 if m.seq == 1), timeout=15, what="first delivery attempts")
            receiver = Receiver(SECRET, hook_port)
            wait_for(lambda: store.outbox.pending_count() == 0, timeout=40, what="delivered after the outage")
            # 2. a slow platform: it answers after our 1 s timeout (and does process the change)
            receiver.delay = 1.5
            keys += toggle(store, 1, 2)
            wait_for(lambda: receiver.started >= 2, timeout=15, what="slow deliveries started")
            receiver.delay = 0.0
            wait_for(lambda: store.outbox.pending_count() == 0, timeout=40, what="delivered after the slow phase")
            # 3. kill -9 both workers while a delivery is in flight
            receiver.delay = 0.8
            started = receiver.started
            keys += toggle(store, 2, 3)
            wait_for(lambda: receiver.started > started, timeout=15, what="a delivery in flight")
            for pid in bridge.worker_pids():
                os.kill(pid, signal.SIGKILL)
                kills += 1
            receiver.delay = 0.0
            wait_for(lambda: store.outbox.pending_count() == 0, timeout=60, what="delivered after kill -9")
            killed = [line for line in bridge.crashes() if "SIGKILL" in line]
            assert len(killed) == kills, bridge.output()[-3000:]
    finally:
        if receiver is not None:
            receiver.stop()
    assert receiver is not None and receiver.bad_signatures == 0
    accepted = receiver.accepted
    lost = set(keys) - set(receiver.keys)
    repeats = {k: n for k, n in receiver.keys.items() if n > 1}
    final = {m["xUserId"]: m["bound"] for m in accepted}  # a platform applying them as they arrive
    truth = {c: store.bindings.get(c).bound for c in CUSTOMERS}  # type: ignore[union-attr]
    store.dispose()
    assert lost == set()
    assert reordered(accepted) == 0, [(m["xUserId"], m["seq"]) for m in accepted]
    assert final == truth
    assert set(receiver.keys) == set(keys) and len(keys) == 5 * len(CUSTOMERS)
    # repeats come only from the slow answers and the killed delivery, never more than a few
    assert sum(repeats.values()) - len(repeats) <= 2 + kills, repeats
    for c in CUSTOMERS:  # every customer's changes numbered 1..5, each accepted at least once, in order
        seqs = [m["seq"] for m in accepted if m["xUserId"] == c]
        assert sorted(set(seqs)) == [1, 2, 3, 4, 5] and seqs == sorted(seqs), (c, seqs)
    assert time.monotonic() > 0
