"""The partner-platform side pages: start page, local sign-in, sign-out and the console jump."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from ..audit import audit
from ..huawei.attributes import Customer
from ..platform_service import accept_handoff
from .auth import bridge, continue_after_login, current_customer, log_in, require_login_redirect
from .security import check_csrf, correlation_id

bp = Blueprint("account", __name__)


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
        user_id = request.form.get("user_id", "").strip()[:128]
        password = request.form.get("password", "")[:1024]
        user = bridge().store.authenticate(user_id, password) if user_id and password else None
        if user is not None:
            log_in(Customer(user_id=user.user_id, email=user.email, name=user.name, mobile=user.mobile),
                   method="local")
            return continue_after_login()
        audit(bridge().store, "rejection", "refused", reason_code="login_failed", correlation_id=correlation_id(),
              customer=user_id or None, detail={"reason": "wrong user ID or password"})
        error, status = "Wrong user ID or password.", 401
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout() -> Response:
    check_csrf()
    session.clear()
    return redirect(url_for("account.home"))


@bp.get("/go")
def go() -> Response:
    b = bridge()
    sp_name = request.args.get("sp")
    sp = b.sps.requested(sp_name)
    service = request.args.get("service")
    b.console_link(sp, service=service, first_login=False)  # validate before any login step (or jti use)
    token = request.args.get("token")
    if token:  # the platform's hand-off: sign in and jump in one step
        claims = accept_handoff(b, token)
        log_in(claims.customer, method="handoff")
        audit(b.store, "handoff", "ok", correlation_id=correlation_id(), sp=sp.name, customer=claims.customer.user_id,
              detail={"alg": claims.algorithm, "iss": claims.issuer, "jti": claims.jti})
    customer = current_customer()
    if customer is None:
        params: dict[str, str] = {k: v for k, v in (("sp", sp_name), ("service", service)) if v}
        session["next"] = url_for("account.go", **params)  # type: ignore[arg-type]
        return require_login_redirect()
    first_login = b.is_first_login(customer)
    link = b.console_link(sp, service=service, first_login=first_login)
    audit(b.store, "console_jump", "ok", correlation_id=correlation_id(), sp=sp.name, customer=customer.user_id,
          detail={"is_first_login": first_login})
    return redirect(link)
