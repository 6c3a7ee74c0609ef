"""The partner-platform side pages: start page, local sign-in, sign-out.

Sign-in: attempts are throttled per account and client address (``login_guard``) before any password
is checked; an unknown user ID and a wrong password get the same text, status and (one argon2
verification, against a dummy hash for unknown users) the same time.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask_babel import gettext as _
from flask_babel import ngettext
from werkzeug.wrappers import Response

from idp_bridge.huawei.attributes import Customer
from idp_bridge.ops.audit import audit
from idp_bridge.web.auth import bridge, continue_after_login, current_customer, log_in
from idp_bridge.web.login_guard import begin_attempt
from idp_bridge.web.security import check_csrf, correlation_id

bp = Blueprint("account", __name__)


@bp.record_once
def _prepare(state: BlueprintSetupState) -> None:
    state.app.extensions["idp_bridge"].store.users.prepare()  # equal time for unknown users from the first one


@bp.get("/")
def home() -> str:
    b = bridge()
    return render_template("home.html", customer=current_customer(), sps=b.config.service_providers)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    status = 200
    if request.method == "POST":
        check_csrf()
        user_id = request.form.get("user_id", "").strip()  # bounded and clean: web.validation
        password = request.form.get("password", "")
        user = None
        if user_id and password:
            attempt = begin_attempt("login", user_id)
            if not attempt.allowed:
                minutes = -(-attempt.retry_after // 60)
                error = ngettext("Too many sign-in attempts. Try again in %(num)d minute.",
                                 "Too many sign-in attempts. Try again in %(num)d minutes.", minutes)
                return render_template("login.html", error=error), 429, {"Retry-After": str(attempt.retry_after)}
            user = bridge().store.users.authenticate(user_id, password)
            if user is not None:
                attempt.succeeded()
        if user is not None:
            log_in(Customer(user_id=user.user_id, email=user.email, name=user.name, mobile=user.mobile),
                   method="local")
            return continue_after_login()
        audit(bridge().store, "rejection", "refused", reason_code="login_failed", correlation_id=correlation_id(),
              customer=user_id or None, detail={"reason": "wrong user ID or password"})
        error, status = _("Wrong user ID or password."), 401
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout() -> Response:
    check_csrf()
    session.clear()
    return redirect(url_for("account.home"))
