"""A daemon thread that runs one job every ``interval`` seconds until stopped.

The job returns True when there may be more work right away (run again without waiting). A
failing pass is logged and the loop goes on: a database hiccup must not end it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger("idp_bridge.background")


#: Every loop started and not yet stopped in this process (a test suite stops the ones a test started).
RUNNING: weakref.WeakSet[Periodic] = weakref.WeakSet()


class Periodic:
    def __init__(self, name: str, job: Callable[[], bool], *, interval: float, wait_first: bool = False) -> None:
        self.name = name
        self.job = job
        self.interval = interval
        self.wait_first = wait_first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_forever(self) -> None:
        if self.wait_first and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                again = self.job()
            except Exception:
                log.exception("%s: pass failed", self.name)
                again = False
            if not again:
                self._stop.wait(self.interval)

    def start(self) -> Periodic:
        self._thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        self._thread.start()
        RUNNING.add(self)
        return self

    @property
    def thread_id(self) -> int | None:
        """The loop's thread (for log filters), once started."""
        return self._thread.ident if self._thread is not None else None

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the loop to end and wait up to ``timeout`` seconds; True once its thread has ended."""
        self._stop.set()
        RUNNING.discard(self)
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
