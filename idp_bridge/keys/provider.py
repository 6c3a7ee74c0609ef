"""Keeps the key ring in memory and picks up changes (files and database states) without a restart.

Every ``[keys] reload_seconds`` (2 s by default) the key folder and the stored states are read
again. A key that fails to load (a half-written or truncated file, a ``.key`` whose ``.crt`` is
not there yet, a mismatched pair, an unreadable or too-small key, an expired active certificate)
never replaces the key held in memory: it is refused with a logged reason, and a ring without
exactly one usable active key is not taken at all (the previous ring keeps signing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from idp_bridge.config import Config
from idp_bridge.errors import ANY_ERROR, KeyRingError, SigningKeyError
from idp_bridge.keys.files import KeyProblem, KeyRing, expiring, load_key_ring
from idp_bridge.saml.signing import Signer

log = logging.getLogger("idp_bridge.keys")

StatesLoader = Callable[[], Mapping[str, str]]


class KeyRingProvider:
    def __init__(self, config: Config, *, states: StatesLoader | None = None,
                 reload_seconds: float | None = None) -> None:
        self._config = config
        self._states = states or (lambda: {})
        self._reload = config.keys.reload_seconds if reload_seconds is None else reload_seconds
        self._lock = threading.Lock()
        self._ring: KeyRing | None = None
        self._checked = 0.0
        self._hsm: Sequence[Signer] | None = None
        self._logged_problems: frozenset[KeyProblem] = frozenset()
        self._warned_expiry: set[str] = set()
        self.last_error: str | None = None

    def hsm_signers(self) -> Sequence[Signer]:
        if self._hsm is None:
            if self._config.keys.pkcs11:
                from idp_bridge.keys.pkcs11 import signers_from_config
                self._hsm = signers_from_config(self._config.keys.pkcs11)
            else:
                self._hsm = ()
        return self._hsm

    def load(self, *, strict: bool = True) -> KeyRing:
        return load_key_ring(self._config.key_dir, states=self._states(), passphrase=self._config.key_passphrase,
                             previous=None if strict else self._ring, strict=strict,
                             extra_signers=self.hsm_signers())

    def ring(self) -> KeyRing:
        now = time.monotonic()
        with self._lock:
            if self._ring is None or now - self._checked >= self._reload:
                self._checked = now
                self._refresh()
            assert self._ring is not None
            return self._ring

    def _refresh(self) -> None:
        first = self._ring is None
        try:
            fresh = self.load(strict=first)
            try:
                fresh.active  # noqa: B018 - a ring with no single usable active key is not good
            except (KeyRingError, SigningKeyError) as exc:
                why = "; ".join(f"key {p.key_id} refused: {p.message} [{p.code}]" for p in fresh.problems)
                raise KeyRingError(f"{exc.operator}{' (' + why + ')' if why else ''}", code=exc.code) from exc
        except ANY_ERROR as exc:
            self.last_error = str(exc)
            if first:
                raise
            if self._logged_problems != frozenset({KeyProblem("", "", exc.code, exc.operator)}):
                log.error("key ring reload refused, the previous keys keep signing (active %s): %s [%s]",
                          self._ring.active.key_id if self._ring else "-", exc.operator, exc.code)
                self._logged_problems = frozenset({KeyProblem("", "", exc.code, exc.operator)})
            return
        problems = frozenset(fresh.problems)
        for p in problems - self._logged_problems:
            log.error("signing key %s refused (%s), not used; active key stays %s: %s", p.key_id, p.code,
                      fresh.active.key_id, p.message)
        self._logged_problems = problems
        self.last_error = "; ".join(f"{p.key_id}: {p.message} [{p.code}]" for p in fresh.problems) or None
        if self._ring is not None and self._ring.active.key_id != fresh.active.key_id:
            log.info("signing key switched from %s to %s", self._ring.active.key_id, fresh.active.key_id)
        for e in expiring(fresh.entries, days=self._config.keys.expiry_warning_days):
            if e.key_id not in self._warned_expiry:
                self._warned_expiry.add(e.key_id)
                log.warning("signing key %s (%s) certificate expires %s; rotate it (idp-bridge keys status)",
                            e.key_id, e.state, e.not_after.isoformat())
        self._ring = fresh

    def invalidate(self) -> None:
        with self._lock:
            self._checked = 0.0
