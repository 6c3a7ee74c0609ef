"""Sign-in throttling: attempts counted per key (an account, a client address) in the shared database.

Rule: an attempt is *reserved* (counted) before the password is checked, in one write transaction
over all its keys (rows locked in key order), so parallel guesses on many workers and nodes are
counted exactly like sequential ones. A key allows ``max_attempts`` attempts per ``window``; the next
attempt locks it for ``lockout``, and a locked key refuses without counting. A successful sign-in
clears the account's count and gives back the address's one attempt (honest users behind one NAT
are not punished for each other's successes, and a success cannot wipe an attacker's count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from idp_bridge.store.db import Database
from idp_bridge.store.tables import LoginThrottleRow
from idp_bridge.store.timeutil import require_aware

MAX_KEY_LENGTH = 320


@dataclass(frozen=True)
class ThrottleRule:
    max_attempts: int
    window: timedelta
    lockout: timedelta


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: Whole seconds until the refusing key opens again (0 when allowed).
    retry_after: int = 0
    #: Keys this call locked (each lock-out is audited once, when it starts).
    newly_locked: tuple[str, ...] = ()


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"throttle key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}")


def _ensure_rows(conn: Connection, dialect: str, keys: Iterable[str], now: datetime) -> None:
    """Make sure every key has a row, and (PostgreSQL) lock it now.

    ``DO UPDATE`` rather than ``DO NOTHING``: on PostgreSQL an existing row is then locked by this statement,
    so a concurrent ``succeeded()`` cannot delete it between here and the ``SELECT ... FOR UPDATE`` (which
    would find no row). SQLite holds the database write lock from the first statement anyway.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for key in keys:
        stmt = insert(LoginThrottleRow).values(key=key, attempts=0, window_start=now, locked_until=None,
                                               expires_at=now)
        conn.execute(stmt.on_conflict_do_update(index_elements=[LoginThrottleRow.key],
                                                set_={"key": stmt.excluded.key}))


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def purge(conn: Connection, now: datetime) -> int:
    """Delete rows whose window and lock-out are both over (called from ``store.purge``)."""
    return conn.execute(delete(LoginThrottleRow).where(LoginThrottleRow.expires_at <= now)).rowcount


class ThrottleRepository:
    """``store.throttle``: sign-in attempt counters."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def reserve(self, rules: Mapping[str, ThrottleRule], *, now: datetime) -> Verdict:
        """Count one attempt against every key in ``rules``, unless one of them refuses it."""
        now = require_aware(now)
        keys = sorted(rules)
        for key in keys:
            _check_key(key)
        with self._db.write() as conn:
            _ensure_rows(conn, self._db.dialect, keys, now)
            rows = {r.key: r for r in conn.execute(
                select(LoginThrottleRow.key, LoginThrottleRow.attempts, LoginThrottleRow.window_start,
                       LoginThrottleRow.locked_until)
                .where(LoginThrottleRow.key.in_(keys)).order_by(LoginThrottleRow.key).with_for_update())}
            refused: dict[str, datetime] = {}
            newly: list[str] = []
            counts: dict[str, tuple[int, datetime]] = {}
            for key in keys:
                rule, row = rules[key], rows[key]
                if row.locked_until is not None and row.locked_until > now:
                    refused[key] = row.locked_until
                    continue
                attempts, start = row.attempts, row.window_start
                if start + rule.window <= now or row.locked_until is not None:  # window over, or lock-out served
                    attempts, start = 0, now
                if attempts >= rule.max_attempts:
                    until = now + rule.lockout
                    conn.execute(update(LoginThrottleRow).where(LoginThrottleRow.key == key)
                                 .values(locked_until=until, expires_at=until))
                    refused[key] = until
                    newly.append(key)
                    continue
                counts[key] = (attempts + 1, start)
            if refused:
                # A refused attempt counts nowhere: drop the empty rows it made (anonymous guesses at many
                # user IDs from a locked address must not add a row each).
                conn.execute(delete(LoginThrottleRow).where(LoginThrottleRow.key.in_(keys), LoginThrottleRow.attempts == 0,
                                                            LoginThrottleRow.locked_until.is_(None)))
                return Verdict(False, _seconds(max(refused.values()) - now), tuple(newly))
            for key, (attempts, start) in counts.items():
                conn.execute(update(LoginThrottleRow).where(LoginThrottleRow.key == key).values(
                    attempts=attempts, window_start=start, locked_until=None,
                    expires_at=start + rules[key].window))
        return Verdict(True)

    def succeeded(self, *, reset: Iterable[str] = (), refund: Iterable[str] = ()) -> None:
        """After a successful sign-in: forget ``reset`` keys' counts, give back one attempt to ``refund`` keys."""
        reset, refund = sorted(reset), sorted(refund)
        with self._db.write() as conn:
            if reset:
                conn.execute(delete(LoginThrottleRow).where(LoginThrottleRow.key.in_(reset),
                                                            LoginThrottleRow.locked_until.is_(None)))
            if refund:
                conn.execute(update(LoginThrottleRow)
                             .where(LoginThrottleRow.key.in_(refund), LoginThrottleRow.attempts > 0,
                                    LoginThrottleRow.locked_until.is_(None))
                             .values(attempts=LoginThrottleRow.attempts - 1))
