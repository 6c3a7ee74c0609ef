"""Rejections: the operator reads the exact reason in the log and the audit trail; the browser gets a page
in the customer's language saying what happened, what to do next and the way back to the platform, with a
correlation id, and nothing else (messages.py holds the customer wording)."""

from __future__ import annotations

import logging

from flask import Flask, current_app, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from idp_bridge.errors import AnyError, CodedError
from idp_bridge.ops.audit import audit
from idp_bridge.web.messages import Family, family_for
from idp_bridge.web.security import correlation_id

log = logging.getLogger("idp_bridge.web")


def platform_url() -> str:
    """The way back: ``[platform] home_url``, else its ``login_url``, else our own start page."""
    p = current_app.extensions["idp_bridge"].config.platform
    return str(p.home_url or p.login_url or url_for("account.home"))


def error_page(family: Family, status: int) -> tuple[str, int]:
    return render_template("error.html", status=status, correlation_id=correlation_id(), family=family), status


def install(app: Flask) -> None:
    app.jinja_env.globals["platform_url"] = platform_url

    @app.errorhandler(CodedError)
    def _bridge_error(exc: AnyError) -> tuple[str, int]:
        cid = correlation_id()
        # A refused SSO request must not leave a half-done login behind.
        session.pop("pending", None)
        status = exc.status if 400 <= exc.status < 600 else 400
        family = family_for(exc.code, status, request.endpoint)
        audit(current_app.extensions["idp_bridge"].store, "rejection", "refused", reason_code=exc.code,
              correlation_id=cid, detail={"reason": exc.operator, "shown": family.name})
        return error_page(family, status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        return error_page(family_for(None, status), status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[str, int]:
        log.exception('{"event": "error", "correlation_id": "%s"}', correlation_id())
        return error_page(family_for(None, 500), 500)
