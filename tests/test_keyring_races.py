"""Key-ring changes racing across threads (and so across workers): no duplicate-key crash, one active key,
never more than three published — on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

from idp_bridge.errors import KeyRingError
from idp_bridge.store import Store

RACERS = 8


def race(db_url: str, job: object) -> list[str]:
    """Run ``job(store, i)`` in RACERS threads, each with its own Store (its own connections)."""
    barrier = threading.Barrier(RACERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        store = Store.from_url(db_url)
        try:
            barrier.wait(10)
            job(store, i)  # type: ignore[operator]
            result = "ok"
        except KeyRingError as exc:
            result = exc.code
        except Exception as exc:  # an IntegrityError here is the bug this guards against
            result = f"crash: {type(exc).__name__}: {exc}"
        finally:
            store.dispose()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_workers_bootstrapping_the_same_key_at_once(db_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    outcomes = race(db_url, lambda store, i: store.keyring.register("k-first", state="active", now=now))
    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) <= {"ok", "key_exists"}, outcomes


def test_racing_new_keys_never_exceed_three_published(db_url: str, store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    store.keyring.register("k-active", state="active", now=now)
    outcomes = race(db_url, lambda s, i: s.keyring.register(f"k-next-{i}", state="next", now=now))
    assert outcomes.count("ok") == 2, outcomes
    assert set(outcomes) <= {"ok", "key_ring_full"}, outcomes
    assert sorted(store.keyring.states().values()) == ["active", "next", "next"]
