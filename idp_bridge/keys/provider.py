"""Keeps the key ring in memory, parsed once, and picks up changes (files and stored states) without a restart.

Change detection is cheap: the ``os.stat`` of the key folder's ``*.key``/``*.crt`` entries (inode,
size, times, mode) and the stored key states (one small query), looked at every
``[keys] reload_seconds``. Only a pair whose files changed is parsed again (``ring.PairCache``); an
activation alone parses nothing. In a serving process (``serve()``) this runs in a background thread:
a request only reads the current ring and never waits for a parse, a lock or the database.

A key that fails to load never replaces the key held in memory (see ``ring.load_ring``), and a ring
without exactly one usable active key is not taken at all (the previous ring keeps signing). At
start-up a broken active key file is replaced by its last verified copy (``keys.verified``); when
there is none, the process still starts and every signing request is refused with a 503 naming the
reason, until the files are fixed (picked up within ``reload_seconds``, no restart needed).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from idp_bridge.config import Config
from idp_bridge.errors import KeyRingError
from idp_bridge.keys.ring import KeyProblem, KeyRing, PairCache, expiring, load_ring
from idp_bridge.keys.verified import VerifiedCopies
from idp_bridge.saml.signing import Signer

log = logging.getLogger("idp_bridge.keys")

StatesLoader = Callable[[], Mapping[str, str]]
#: a background refresh never polls faster than this, whatever reload_seconds says
MIN_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class KeyHealth:
    """What ``/healthz`` and ``check`` say about the keys: ``fail`` when nothing can sign or the active
    key is not served from its own file; ``warn`` for a refused next/retiring key."""

    status: str
    ring: KeyRing | None
    error: str | None
    problems: tuple[KeyProblem, ...]

    @property
    def active_problems(self) -> tuple[KeyProblem, ...]:
        return tuple(p for p in self.problems if p.state == "active")


class KeyRingProvider:
    def __init__(self, config: Config, *, states: StatesLoader | None = None,
                 reload_seconds: float | None = None, environ: Mapping[str, str] | None = None) -> None:
        self._config = config
        self._states = states or (lambda: {})
        self._reload = config.keys.reload_seconds if reload_seconds is None else reload_seconds
        self._environ = environ
        self._lock = threading.Lock()  # one load at a time; requests never take it once serving
        self._ring: KeyRing | None = None
        self._failure: KeyRingError | None = None  # why there is no ring (start-up could not load a signing key)
        self._signature: object = None
        self._checked = 0.0
        self._cache = PairCache()
        self.verified = VerifiedCopies(config.key_dir)
        self._hsm: Sequence[Signer] | None = None
        self._hsm_failures: dict[str, KeyRingError] = {}
        self._logged_problems: frozenset[KeyProblem] = frozenset()
        self._states_error: str | None = None
        self._warned_expiry: set[str] = set()
        self._serving = False
        self._thread_pid: int | None = None
        self._stop = threading.Event()
        self.last_error: str | None = None

    # -- sources ------------------------------------------------------------------------------
    def hsm_signers(self) -> Sequence[Signer]:
        """The configured PKCS#11 keys, opened once per process (a token refusing a PIN is never retried:
        repeated wrong PINs lock a token). One that cannot be opened is in ``hsm_failures``."""
        if self._hsm is None:
            from idp_bridge.keys.pkcs11 import open_configured

            self._hsm, self._hsm_failures = open_configured(self._config.keys.pkcs11, self._environ)
        return self._hsm

    @property
    def hsm_failures(self) -> Mapping[str, KeyRingError]:
        self.hsm_signers()
        return dict(self._hsm_failures)

    def load(self, *, states: Mapping[str, str] | None = None, strict: bool = False,
             now: dt.datetime | None = None) -> KeyRing:
        """A one-off ring (commands, ``check``): the files as they are now, ``states`` or the stored ones."""
        hsm = self.hsm_signers()
        return load_ring(self._config.key_dir, states=self._states() if states is None else states,
                         passphrase=self._config.key_passphrase, hsm=hsm, hsm_failures=self._hsm_failures,
                         strict=strict, now=now, cache=self._cache, verified=self.verified)

    # -- serving ------------------------------------------------------------------------------
    def serve(self) -> None:
        """Start serving (the web app, at start-up): load now, never raise for a key problem, keep verified
        copies of keys that load, and refresh in a background thread from now on."""
        self._serving = True
        self.verified.writable = True
        self.refresh()
        _SERVING.add(self)
        self._ensure_thread()

    def ring(self) -> KeyRing:
        if self._ring is None and self._failure is None:
            self.refresh()  # the first use of a provider that is not serving (commands, tests)
        elif self._serving and self._reload > 0:
            self._ensure_thread()
        elif time.monotonic() - self._checked >= self._reload:
            self.refresh()
        ring = self._ring
        if ring is None:
            failure = self._failure
            assert failure is not None
            raise KeyRingError(failure.operator, code=failure.code, status=503)
        return ring

    def health(self) -> KeyHealth:
        ring, failure = self._ring, self._failure
        problems = ring.problems if ring is not None else ()
        if ring is None:
            return KeyHealth("fail", None, failure.operator if failure else "not loaded yet", problems)
        status = "fail" if any(p.state == "active" for p in problems) else "warn" if problems else "ok"
        return KeyHealth(status, ring, self.last_error, problems)

    def invalidate(self) -> None:
        """Look again at the next ``ring()`` (commands call this after changing keys)."""
        with self._lock:
            self._checked = 0.0
            self._signature = None

    def close(self) -> None:
        self._stop.set()

    def _ensure_thread(self) -> None:
        if self._thread_pid == os.getpid() or self._stop.is_set():
            return
        self._thread_pid = os.getpid()
        threading.Thread(target=_refresh_loop, args=(weakref.ref(self), self._stop), name="key-ring-refresh",
                         daemon=True).start()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._thread_pid = None
        self._ensure_thread()

    # -- reloading ----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Look for changes now; reload (parsing only changed files) when there are. True if reloaded."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                states = dict(self._states())
            except Exception as exc:  # noqa: BLE001 - the database is down: keep what we have
                why = f"the key states cannot be read: {type(exc).__name__}: {exc}"
                if why != self._states_error:
                    log.error("%s; the keys loaded before keep signing", why)
                self._states_error = why
                if self._ring is None:
                    self._failure = KeyRingError(why, code="key_states_unreadable", status=503)
                return False
            self._states_error = None
            signature = (_dir_signature(self._config.key_dir), tuple(sorted(states.items())))
            if signature == self._signature:
                return False
            self._signature = signature
            self._reload_ring(states)
            return True

    def _reload_ring(self, states: Mapping[str, str]) -> None:
        first = self._ring is None
        try:
            hsm = self.hsm_signers()
            fresh = load_ring(self._config.key_dir, states=states, passphrase=self._config.key_passphrase, hsm=hsm,
                              hsm_failures=self._hsm_failures, previous=self._ring, strict=first,
                              cache=self._cache, verified=self.verified)
            try:
                fresh.active  # noqa: B018 - a ring with no single usable active key is not good
            except KeyRingError as exc:
                why = "; ".join(f"key {p.key_id} refused: {p.message} [{p.code}]" for p in fresh.problems)
                raise KeyRingError(f"{exc.operator}{' (' + why + ')' if why else ''}", code=exc.code) from exc
        except KeyRingError as exc:
            self.last_error = str(exc)
            if first:
                self._failure = exc
                log.error("no signing key can be loaded, so every sign-in is refused (HTTP 503) until this is "
                          "fixed: %s [%s]; run `idp-bridge check`", exc.operator, exc.code)
                return
            problem = KeyProblem("", "", exc.code, exc.operator)
            if self._logged_problems != frozenset({problem}):
                log.error("key ring reload refused, the previous keys keep signing (active %s): %s [%s]",
                          self._ring.active.key_id if self._ring else "-", exc.operator, exc.code)
                self._logged_problems = frozenset({problem})
            return
        self._log_changes(fresh)
        self._failure = None
        self._ring = fresh

    def _log_changes(self, fresh: KeyRing) -> None:
        problems = frozenset(fresh.problems)
        for p in problems - self._logged_problems:
            if p.state == "active":
                log.error("signing key %s: %s [%s]. /healthz says fail until %s is fixed; `idp-bridge check` "
                          "says what to do", p.key_id, p.message, p.code, p.path)
            else:
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


def _dir_signature(key_dir: os.PathLike[str]) -> tuple[tuple[object, ...], ...]:
    """``os.stat`` of every ``*.key``/``*.crt`` in the key folder (symlinks followed: a Kubernetes secret
    volume swaps a symlink)."""
    found: list[tuple[object, ...]] = []
    try:
        with os.scandir(key_dir) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.name.endswith((".key", ".crt")):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue  # removed meanwhile
                found.append((entry.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                              st.st_mode))
    except OSError:
        return ()
    return tuple(sorted(found, key=lambda t: str(t[0])))


def _refresh_loop(ref: weakref.ReferenceType[KeyRingProvider], stop: threading.Event) -> None:
    """Refresh every ``reload_seconds`` until stopped or the provider is gone (holds no strong reference)."""
    while True:
        provider = ref()
        if provider is None:
            return
        interval = max(provider._reload, MIN_POLL_SECONDS)
        del provider
        if stop.wait(interval):
            return
        provider = ref()
        if provider is None or provider._thread_pid != os.getpid():
            return
        try:
            provider.refresh()
        except Exception:
            log.exception("key ring refresh failed; the keys loaded before keep signing")
        del provider


_SERVING: weakref.WeakSet[KeyRingProvider] = weakref.WeakSet()


def _restart_after_fork() -> None:
    """A forked worker (gunicorn --preload) has no refresh thread and maybe a held lock: start afresh."""
    for provider in list(_SERVING):
        provider._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)
