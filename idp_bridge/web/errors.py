"""Rejections: the operator reads the exact reason in the log and the audit trail; the browser gets a page
in the customer's language saying what happened, what to do next and the way back to the platform, with a
correlation id, and nothing else (messages.py holds the customer wording).

Rule: a database fault is a 503 page wherever it happens - in a view, while loading the session
before it, or while saving the session after it (the response built so far, perhaps a redirect
that would log someone in or a SAML Response, is replaced by the page). Never a 500.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from flask import Flask, Request, Response, current_app, g, render_template, request, session, url_for
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, InternalServerError

from idp_bridge.errors import AnyError, CodedError, StoreUnavailableError
from idp_bridge.ops.audit import audit
from idp_bridge.web.messages import FAMILIES, Family, family_for
from idp_bridge.web.security import correlation_id

log = logging.getLogger("idp_bridge.web")

RETRY_AFTER_SECONDS = 5
# Endpoints that answer without a session (a health check must report the database, not fail on it).
_SESSIONLESS = frozenset({"health.healthz", "static"})


def platform_url() -> str:
    """The way back: ``[platform] home_url``, else its ``login_url``, else our own start page."""
    p = current_app.extensions["idp_bridge"].config.platform
    return str(p.home_url or p.login_url or url_for("account.home"))


def error_page(family: Family, status: int) -> tuple[str, int]:
    return render_template("error.html", status=status, correlation_id=correlation_id(), family=family), status


def is_store_fault(exc: BaseException | None) -> bool:
    return isinstance(exc, StoreUnavailableError | DBAPIError | sqlite3.Error)


def _unavailable(exc: BaseException) -> tuple[str, int, dict[str, str]]:
    cid = correlation_id()
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    if not g.get("store_unavailable_reported"):  # once per request, even if saving the session fails too
        g.store_unavailable_reported = True
        log.error(json.dumps({"event": "store_unavailable", "correlation_id": cid, "path": request.path,
                              "error": reason}))
        audit(current_app.extensions["idp_bridge"].store, "rejection", "error", reason_code="store_unavailable",
              correlation_id=cid, detail={"reason": reason, "path": request.path, "shown": "unavailable"})
    page, status = error_page(FAMILIES["unavailable"], 503)
    return page, status, {"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"}


class UnavailableSession(dict[str, Any], SessionMixin):
    """Stands in for a session the database could not load: never saved, so the real one survives."""

    def __init__(self, error: StoreUnavailableError) -> None:
        super().__init__()
        self.error = error


class FaultTolerantSessions(SessionInterface):
    """Wraps the store-backed session interface so a database fault on either side of a view is a 503."""

    def __init__(self, inner: SessionInterface) -> None:
        self.inner = inner

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        try:
            return self.inner.open_session(app, request)
        except StoreUnavailableError as exc:
            return UnavailableSession(exc)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if isinstance(session, UnavailableSession):
            return
        try:
            self.inner.save_session(app, session, response)
        except StoreUnavailableError as exc:
            page, status, headers = _unavailable(exc)
            # Nothing of the response built so far may reach the browser: not its redirect, not its cookie,
            # not its body (it may hold a SAML Response for a login that was never recorded).
            for name in ("Location", "Set-Cookie", "Refresh", "Content-Disposition"):
                response.headers.pop(name, None)
            response.status_code = status
            response.headers.update(headers)
            response.mimetype = "text/html"
            response.set_data(page)


def install(app: Flask) -> None:
    app.jinja_env.globals["platform_url"] = platform_url
    app.session_interface = FaultTolerantSessions(app.session_interface)

    @app.before_request
    def _session_unavailable() -> None:
        if isinstance(session, UnavailableSession) and request.endpoint not in _SESSIONLESS:
            raise session.error

    @app.errorhandler(CodedError)
    def _bridge_error(exc: AnyError) -> Any:
        if isinstance(exc, StoreUnavailableError):
            return _unavailable(exc)
        cid = correlation_id()
        # A refused SSO request must not leave a half-done login behind.
        session.pop("pending", None)
        status = exc.status if 400 <= exc.status < 600 else 400
        family = family_for(exc.code, status, request.endpoint)
        audit(current_app.extensions["idp_bridge"].store, "rejection", "refused", reason_code=exc.code,
              correlation_id=cid, detail={"reason": exc.operator, "shown": family.name})
        return error_page(family, status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if isinstance(exc, InternalServerError) and is_store_fault(exc.original_exception):
            return _unavailable(exc.original_exception)  # type: ignore[arg-type]
        status = exc.code or 500
        return error_page(family_for(None, status), status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if is_store_fault(exc):
            return _unavailable(exc)
        log.exception('{"event": "error", "correlation_id": "%s"}', correlation_id())
        return error_page(family_for(None, 500), 500)
