"""Server-side sessions in the bridge's database, shared by every worker and node.

The cookie holds only a random token; the database keeps its SHA-256 and the data. A session
is rotated (new token, old one deleted) at every login, so a token planted before login is
worthless afterwards.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from idp_bridge.store import Store

COOKIE_NAME = "idpb_session"


class StoreSession(CallbackDict[str, Any], SessionMixin):
    def __init__(self, initial: dict[str, Any] | None = None, token: str | None = None) -> None:
        def on_update(_: Any) -> None:
            self.modified = True

        super().__init__(initial or {}, on_update)
        self.token = token
        self.new = token is None
        self.modified = False
        self.rotate = False


def rotate_session(session: Any) -> None:
    """Ask for a new session token at the end of this request (call at login)."""
    session.rotate = True
    session.modified = True


class StoreSessionInterface(SessionInterface):
    def __init__(self, store: Store, *, lifetime: dt.timedelta, secure: bool) -> None:
        self.store = store
        self.lifetime = lifetime
        self.secure = secure

    def open_session(self, app: Flask, request: Request) -> StoreSession:
        token = request.cookies.get(COOKIE_NAME)
        if token and len(token) <= 128:
            record = self.store.sessions.load(token, now=dt.datetime.now(dt.UTC))
            if record is not None:
                return StoreSession(dict(record.data), token)
        return StoreSession()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        assert isinstance(session, StoreSession)
        now = dt.datetime.now(dt.UTC)
        if not session:
            if session.token:
                self.store.sessions.delete(session.token)
                response.delete_cookie(COOKIE_NAME, path="/")
            return
        if not session.modified and not session.rotate:
            return
        data = dict(session)
        user_id = data.get("user_id")
        if session.rotate and session.token:
            self.store.sessions.delete(session.token)
            session.token = None
        if session.token is None:
            session.token = self.store.sessions.create(data, user_id=user_id, now=now, ttl=self.lifetime)
        else:
            self.store.sessions.save(session.token, data, user_id=user_id, now=now, ttl=self.lifetime)
        response.set_cookie(COOKIE_NAME, session.token, max_age=int(self.lifetime.total_seconds()),
                            httponly=True, secure=self.secure, samesite="Lax", path="/")
        response.vary.add("Cookie")
