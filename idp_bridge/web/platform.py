"""Partner Center URLs and the platform's sign-in entry.

- ``POST /huawei/bind``      Huawei's binding notification (signed; no CSRF token: Huawei posts it)
- ``GET  /huawei/return``    "order payment success" return -> the configured platform page
- ``GET  /huawei/recharge``  top-up return -> the configured platform page
- ``GET  /handoff``          sign in with a platform hand-off token, then continue (``next``: our own path)
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session
from werkzeug.wrappers import Response

from ..audit import audit
from ..huawei.returns import return_target
from ..platform_service import accept_bind_notification, accept_handoff
from .auth import bridge, continue_after_login, log_in
from .security import correlation_id, safe_next

bp = Blueprint("platform", __name__)


@bp.post("/huawei/bind")
def bind() -> Response | tuple[str, int]:
    b = bridge()
    outcome = accept_bind_notification(b, request.form)  # BridgeError -> 400 page, audited, nothing stored
    note = outcome.notification
    audit(b.store, "binding", "ok", reason_code="bind" if note.bound else "unbind", correlation_id=correlation_id(),
          sp=outcome.sp_name, customer=note.x_user_id,
          detail={"domain_id": note.domain_id, "domain_name": note.domain_name, "bind_action": note.bind_action,
                  "changed": outcome.changed, "signed_octets": note.signed_octets,
                  "webhook": outcome.webhook_key})
    landing = b.config.platform.bind_landing_url
    if landing:
        url, _ = return_target(landing, [("result", "bound" if note.bound else "unbound")], allowed=["result"],
                               what="platform.bind_landing_url")
        return redirect(url, 303)
    return render_template("bound.html", bound=note.bound, domain_name=note.domain_name), 200


def _return(kind: str, page: str | None, setting: str) -> Response:
    b = bridge()
    url, kept = return_target(page, request.args.items(multi=True), allowed=b.config.platform.return_params,
                              what=setting)
    customer = session.get("user_id")
    audit(b.store, "return", "ok", reason_code=kind, correlation_id=correlation_id(),
          customer=customer if isinstance(customer, str) else None,
          detail={"params": kept, "dropped": sorted({k for k in request.args if k not in kept})[:20]})
    return redirect(url, 302)


@bp.get("/huawei/return")
def payment_return() -> Response:
    return _return("payment", bridge().config.platform.return_url, "platform.return_url")


@bp.get("/huawei/recharge")
def recharge_return() -> Response:
    return _return("recharge", bridge().config.platform.recharge_url, "platform.recharge_url")


@bp.get("/handoff")
def handoff() -> Response:
    b = bridge()
    claims = accept_handoff(b, request.args.get("token", ""))
    target = safe_next(request.args.get("next"))
    log_in(claims.customer, method="handoff")
    audit(b.store, "handoff", "ok", correlation_id=correlation_id(), customer=claims.customer.user_id,
          detail={"alg": claims.algorithm, "iss": claims.issuer, "jti": claims.jti})
    if target and target != "/saml/continue":
        session["next"] = target
    return continue_after_login()
