"""Who is logged in: the bridge session, and the seam a platform hand-off plugs into."""

from __future__ import annotations

import secrets

from flask import current_app, redirect, session, url_for
from werkzeug.wrappers import Response

from ..bridge import Bridge, utcnow
from ..huawei.attributes import Customer
from .security import safe_next
from .sessions import rotate_session


def bridge() -> Bridge:
    b: Bridge = current_app.extensions["idp_bridge"]
    return b


def current_customer() -> Customer | None:
    data = session.get("customer")
    if not data:
        return None
    return Customer(**data)


def log_in(customer: Customer, *, method: str) -> None:
    """Start an authenticated session: new token, fresh CSRF secret, the pending step kept server-side."""
    keep = {k: session[k] for k in ("pending", "next") if k in session}
    session.clear()
    rotate_session(session)
    session.update(keep)
    session["customer"] = {k: v for k, v in customer.__dict__.items()}
    session["user_id"] = customer.user_id
    session["authn_instant"] = utcnow().isoformat()
    session["session_index"] = "_" + secrets.token_hex(16)
    session["login_method"] = method
    session["csrf"] = secrets.token_urlsafe(32)


def continue_after_login() -> Response:
    if "pending" in session:
        return redirect(url_for("idp.sso_continue"))
    target = safe_next(session.pop("next", None))
    return redirect(target or url_for("account.home"))


def require_login_redirect() -> Response:
    """Send a visitor with no session to sign in; the pending step stays in the server session."""
    return redirect(url_for("account.login"))
