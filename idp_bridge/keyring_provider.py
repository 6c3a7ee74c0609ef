"""Keeps the key ring in memory and picks up changes (files and database states) without a restart.

Every ``reload_seconds`` the key folder and the stored states are read again. A ring that fails
to load (a half-written file, a mismatched pair, an unreadable key) never replaces the good one
in memory: the error is logged and the previous ring keeps signing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from .config import Config
from .keys import KeyRing, load_key_ring
from .saml.errors import BridgeError

log = logging.getLogger("idp_bridge.keys")

StatesLoader = Callable[[], Mapping[str, str]]


class KeyRingProvider:
    def __init__(self, config: Config, *, states: StatesLoader | None = None, reload_seconds: float = 2.0) -> None:
        self._config = config
        self._states = states or (lambda: {})
        self._reload = reload_seconds
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None
        self._checked = 0.0
        self.last_error: str | None = None

    def load(self) -> KeyRing:
        return load_key_ring(self._config.key_dir, states=self._states(),
                             passphrase=self._config.key_passphrase)

    def ring(self) -> KeyRing:
        now = time.monotonic()
        with self._lock:
            if self._ring is None or now - self._checked >= self._reload:
                self._checked = now
                try:
                    fresh = self.load()
                    fresh.active  # noqa: B018 - a ring with no single active key is not good
                except BridgeError as exc:
                    self.last_error = str(exc)
                    if self._ring is None:
                        raise
                    log.error("key ring reload refused, keeping the previous keys: %s", exc)
                else:
                    self.last_error = None
                    self._ring = fresh
            return self._ring

    def invalidate(self) -> None:
        with self._lock:
            self._checked = 0.0
