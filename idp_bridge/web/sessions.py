"""Server-side sessions in the bridge's database, shared by every worker and node.

The cookie holds only a random token; the database keeps its SHA-256 and the data. A session
is rotated (new token, old one deleted) at every login, so a token planted before login is
worthless afterwards.

Rules that keep the database quiet:

- A row is created only when there is something to keep (a login, a pending SAML request). A
  visitor's pre-login state - just the CSRF secret and where to go after signing in - travels in
  a separate signed, timed cookie (``idpb_pre``, HMAC with the secret key) and costs no row, so
  anonymous ``GET /login`` or ``/go`` cannot grow the sessions table.
- A session is written only when its data changed. An unchanged session's expiry slides at most
  once per ``touch_interval`` (one small UPDATE), not on every request.
- ``persist_session()`` writes the session now, inside the caller's ``store.transaction()``, so
  the SSO view commits replay claim, audit row and session together; the end of the request then
  only sets the cookie.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from flask import Flask, Request, Response, current_app, session
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.datastructures import CallbackDict

from idp_bridge.store import Store

COOKIE_NAME = "idpb_session"
PRE_COOKIE_NAME = "idpb_pre"
#: Keys a visitor's session may hold without a database row (kept in the signed pre-login cookie).
PRE_LOGIN_KEYS = frozenset({"csrf", "next"})
MAX_PRE_COOKIE = 2048


class StoreSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, initial: dict[str, Any] | None = None, token: str | None = None, *,
                 expires_at: dt.datetime | None = None, from_pre_cookie: bool = False) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.token = token
        self.new = token is None
        self.modified = False
        self.rotate = False
        self.expires_at = expires_at
        self.from_pre_cookie = from_pre_cookie
        self.saved = snapshot(initial or {})  # what the database/cookie holds, as canonical JSON
        self.cookie_changed = False  # the token changed or was cleared: the response must say so
        self.pre_changed = False  # pre-login data changed: the signed cookie must be rewritten


def snapshot(data: dict[str, Any]) -> str:
    """Session data as canonical JSON: compared at the end of a request to see whether anything changed
    (nested values included), at a fraction of a deep copy's cost."""
    if not data:
        return "{}"
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def rotate_session(session: Any) -> None:
    """Ask for a new session token at the end of this request (call at login)."""
    session.rotate = True
    session.modified = True


def persist_session() -> None:
    """Write the current session now (inside the caller's transaction, if one is open)."""
    interface = current_app.session_interface
    interface = getattr(interface, "inner", interface)  # web/errors.py wraps it (database faults -> 503)
    assert isinstance(interface, StoreSessionInterface)
    s = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(s, StoreSession)
    interface.persist(s, now=dt.datetime.now(dt.UTC))


def _pre_login_only(data: dict[str, Any]) -> bool:
    return set(data) <= PRE_LOGIN_KEYS


class StoreSessionInterface(SessionInterface):
    def __init__(self, store: Store, *, lifetime: dt.timedelta, secure: bool, secret_key: str = "",
                 touch_interval: dt.timedelta | None = None) -> None:
        self.store = store
        self.lifetime = lifetime
        self.secure = secure
        self.touch_interval = touch_interval or min(lifetime / 8, dt.timedelta(minutes=15))
        self._pre = URLSafeTimedSerializer(secret_key or "unset", salt="idp-bridge-pre-login")

    def open_session(self, app: Flask, request: Request) -> StoreSession:
        token = request.cookies.get(COOKIE_NAME)
        if token and len(token) <= 128:
            record = self.store.sessions.load(token, now=dt.datetime.now(dt.UTC))
            if record is not None:
                return StoreSession(dict(record.data), token, expires_at=record.expires_at)
        pre = request.cookies.get(PRE_COOKIE_NAME)
        if pre and len(pre) <= 2 * MAX_PRE_COOKIE:
            try:
                data = self._pre.loads(pre, max_age=int(self.lifetime.total_seconds()))
            except BadSignature:
                data = None
            if isinstance(data, dict) and _pre_login_only(data):
                return StoreSession(data, from_pre_cookie=True)
        return StoreSession()

    def persist(self, session: StoreSession, *, now: dt.datetime, current: str | None = None) -> None:
        """Bring the database in line with the session: create, update, slide, delete - or nothing.
        ``current``: ``snapshot(dict(session))`` if the caller has just made it."""
        data = dict(session)
        now_saved = snapshot(data) if current is None else current
        changed = now_saved != session.saved
        if changed:
            session.pre_changed = True
        if session.rotate and session.token:
            self.store.sessions.delete(session.token)
            session.token, session.cookie_changed = None, True
        session.rotate = False
        if session.token is None:
            if data and not _pre_login_only(data):
                session.token = self.store.sessions.create(data, user_id=data.get("user_id"), now=now,
                                                           ttl=self.lifetime)
                session.expires_at, session.cookie_changed = now + self.lifetime, True
        elif not data:
            self.store.sessions.delete(session.token)
            session.token, session.cookie_changed = None, True
        elif changed or self._due_for_touch(session, now):
            if self.store.sessions.save(session.token, data, user_id=data.get("user_id"), now=now,
                                        ttl=self.lifetime):
                session.expires_at = now + self.lifetime
            else:  # expired or deleted meanwhile: never resurrect it; start over
                session.token, session.cookie_changed = None, True
                if not _pre_login_only(data):
                    session.token = self.store.sessions.create(data, user_id=data.get("user_id"), now=now,
                                                               ttl=self.lifetime)
                    session.expires_at = now + self.lifetime
        session.saved = now_saved
        session.modified = False

    def _due_for_touch(self, session: StoreSession, now: dt.datetime) -> bool:
        return session.expires_at is None or now + self.lifetime - session.expires_at >= self.touch_interval

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, StoreSession)
        now = dt.datetime.now(dt.UTC)
        pre_before = session.from_pre_cookie
        current = snapshot(dict(session))
        if session.rotate or current != session.saved or (session.token and self._due_for_touch(session, now)):
            self.persist(session, now=now, current=current)
        data = dict(session)
        max_age = int(self.lifetime.total_seconds())
        if session.token:
            if session.cookie_changed:
                response.set_cookie(COOKIE_NAME, session.token, max_age=max_age, httponly=True, secure=self.secure,
                                    samesite="Lax", path="/")
            if pre_before:
                response.delete_cookie(PRE_COOKIE_NAME, path="/", secure=self.secure, httponly=True, samesite="Lax")
        else:
            if session.cookie_changed:
                response.delete_cookie(COOKIE_NAME, path="/", secure=self.secure, httponly=True, samesite="Lax")
            if data and session.pre_changed:
                value = self._pre.dumps(data)
                if len(value) > MAX_PRE_COOKIE:  # an over-long "next": the visitor lands on the start page instead
                    value = self._pre.dumps({k: v for k, v in data.items() if k != "next"})
                response.set_cookie(PRE_COOKIE_NAME, value, max_age=max_age, httponly=True, secure=self.secure,
                                    samesite="Lax", path="/")
            elif not data and pre_before:
                response.delete_cookie(PRE_COOKIE_NAME, path="/", secure=self.secure, httponly=True, samesite="Lax")
        response.vary.add("Cookie")
