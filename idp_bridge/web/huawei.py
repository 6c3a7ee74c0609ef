"""The URLs Huawei sends the customer's browser to (set in Partner Center).

- ``POST /huawei/bind``      Huawei's binding notification (signed; no CSRF token: Huawei posts it). A
  replay of a notice already applied gets the same landing page, changes nothing and is audited
  ``binding/refused`` with reason ``bind_replayed`` / ``unbind_replayed``; a new notice the state does not allow is refused (409, partner/service.py).
- ``GET  /huawei/return``    "order payment success" return -> the configured platform page
- ``GET  /huawei/recharge``  top-up return -> the configured platform page
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session
from werkzeug.wrappers import Response

from idp_bridge.huawei.returns import return_target
from idp_bridge.ops.audit import audit
from idp_bridge.partner.service import accept_bind_notification
from idp_bridge.web.auth import bridge
from idp_bridge.web.security import correlation_id

bp = Blueprint("huawei", __name__)


@bp.post("/huawei/bind")
def bind() -> Response | tuple[str, int]:
    b = bridge()
    outcome = accept_bind_notification(b, request.form)  # BridgeError -> 400 page, audited, nothing stored
    note = outcome.notification
    kind = "bind" if note.bound else "unbind"
    audit(b.store, "binding", "refused" if outcome.replayed else "ok",
          reason_code=f"{kind}_replayed" if outcome.replayed else kind, correlation_id=correlation_id(),
          sp=outcome.sp_name, customer=note.x_user_id,
          detail={"domain_id": note.domain_id, "domain_name": note.domain_name, "bind_action": note.bind_action,
                  "changed": outcome.changed, "signed_octets": note.signed_octets, "digest": note.digest,
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
