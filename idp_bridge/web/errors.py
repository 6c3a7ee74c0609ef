"""Rejections: the operator reads the exact reason in the log and the audit trail; the browser gets
a plain page with the status and a correlation id, and nothing else."""

from __future__ import annotations

import logging

from flask import Flask, current_app, render_template, session
from werkzeug.exceptions import HTTPException

from idp_bridge.errors import AnyError, BridgeError, SamlError
from idp_bridge.ops.audit import audit
from idp_bridge.web.security import correlation_id

log = logging.getLogger("idp_bridge.web")


def install(app: Flask) -> None:
    @app.errorhandler(SamlError)
    @app.errorhandler(BridgeError)
    def _bridge_error(exc: AnyError) -> tuple[str, int]:
        cid = correlation_id()
        # A refused SSO request must not leave a half-done login behind.
        session.pop("pending", None)
        audit(current_app.extensions["idp_bridge"].store, "rejection", "refused", reason_code=exc.code,
              correlation_id=cid, detail={"reason": exc.operator})
        status = exc.status if 400 <= exc.status < 600 else 400
        return render_template("error.html", status=status, correlation_id=cid,
                               title="The sign-in could not be completed" if status < 500
                               else "The service is not set up correctly"), status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        return render_template("error.html", status=status, correlation_id=correlation_id(),
                               title=exc.name), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[str, int]:
        log.exception('{"event": "error", "correlation_id": "%s"}', correlation_id())
        return render_template("error.html", status=500, correlation_id=correlation_id(),
                               title="Something went wrong"), 500
