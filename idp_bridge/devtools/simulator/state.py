"""In-memory state of the simulator: outstanding AuthnRequests, console sessions, the last report.

The simulator is a development and test tool: one process, a dict behind a lock, nothing persisted,
nothing shared between workers. Never use it as a pattern for production state.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

#: Outstanding requests older than this are forgotten (Huawei's own lifetime is not documented).
PENDING_TTL = dt.timedelta(minutes=15)
MAX_PENDING = 10_000


@dataclass(frozen=True)
class PendingLogin:
    """One AuthnRequest the simulator sent and has not yet seen answered."""

    request_id: str
    relay_state: str
    x_account_type: str
    service: str | None
    is_first_login: bool
    created: dt.datetime


@dataclass
class ConsoleSession:
    """What the simulated console shows after a successful login."""

    x_account_type: str
    x_user_id: str
    service: str | None
    is_first_login: bool
    report: dict[str, Any]
    bound: bool = False
    orders: list[str] = field(default_factory=list)


class SimulatorState:
    """Thread-safe in-memory store (dev/test only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, PendingLogin] = {}  # by request ID
        self._by_relay: dict[str, str] = {}  # relay state -> request ID
        self._sessions: dict[str, ConsoleSession] = {}
        self.last_report: dict[str, Any] | None = None

    def add_pending(self, *, request_id: str, x_account_type: str, service: str | None,
                    is_first_login: bool, now: dt.datetime) -> PendingLogin:
        relay_state = secrets.token_urlsafe(24)
        pending = PendingLogin(request_id, relay_state, x_account_type, service, is_first_login, now)
        with self._lock:
            self._expire(now)
            self._pending[request_id] = pending
            self._by_relay[relay_state] = request_id
        return pending

    def _expire(self, now: dt.datetime) -> None:
        stale = [rid for rid, p in self._pending.items() if now - p.created > PENDING_TTL]
        if len(self._pending) - len(stale) >= MAX_PENDING:
            stale += sorted(self._pending, key=lambda rid: self._pending[rid].created)[: MAX_PENDING // 10]
        for rid in set(stale):
            p = self._pending.pop(rid, None)
            if p is not None:
                self._by_relay.pop(p.relay_state, None)

    def find_pending(self, *, relay_state: str | None, request_id: str | None) -> PendingLogin | None:
        """The pending login a Response answers: by RelayState first, else by its (unverified) InResponseTo."""
        with self._lock:
            if relay_state and relay_state in self._by_relay:
                return self._pending.get(self._by_relay[relay_state])
            if request_id and request_id in self._pending:
                return self._pending[request_id]
        return None

    def outstanding_ids(self, x_account_type: str) -> set[str]:
        with self._lock:
            return {rid for rid, p in self._pending.items() if p.x_account_type == x_account_type}

    def consume(self, request_id: str) -> bool:
        """Forget an outstanding request ID; True if it was still outstanding (each is usable once)."""
        with self._lock:
            p = self._pending.pop(request_id, None)
            if p is not None:
                self._by_relay.pop(p.relay_state, None)
            return p is not None

    def new_session(self, session: ConsoleSession) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[token] = session
        return token

    def session(self, token: str | None) -> ConsoleSession | None:
        if not token:
            return None
        with self._lock:
            return self._sessions.get(token)
