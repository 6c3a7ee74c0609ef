"""Expired rows go away on their own: a small daemon thread in every web process purges them.

Purging is idempotent and cheap (indexed deletes), so several workers and nodes running it is
harmless; `idp-bridge db purge` does the same once, for cron or a quiet deployment.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading

from .store import Store

log = logging.getLogger("idp_bridge.housekeeping")

DEFAULT_INTERVAL_SECONDS = 600.0


def purge_once(store: Store, *, now: dt.datetime | None = None) -> dict[str, int]:
    counts = store.purge_expired(now or dt.datetime.now(dt.UTC))
    if any(counts.values()):
        log.info(json.dumps({"event": "purge", "deleted": counts}))
    return counts


class PurgeLoop:
    def __init__(self, store: Store, *, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                purge_once(self.store)
            except Exception:  # a database hiccup must not kill the loop
                log.exception("purge of expired rows failed")

    def start(self) -> PurgeLoop:
        self._thread = threading.Thread(target=self.run_forever, name="idp-bridge-purge", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
