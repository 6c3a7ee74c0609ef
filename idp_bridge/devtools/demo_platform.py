"""The demo's "partner platform": its own sign-in, hand-off token minting, webhook receiver and landing pages.

A stand-in for the partner's real shop, used by ``idp-bridge demo`` only. It shows what a platform
implements (docs/platform-integration.md): mint a short-lived HS256 hand-off token, send the customer
to the bridge's ``/go``, answer the bridge's ``return_to`` with ``&token=…``, verify webhooks.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from flask import Flask, abort, redirect, render_template, request, session
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response

from idp_bridge.partner.webhooks import verify_signature
from idp_bridge.web import i18n

#: Returned query parameters the order pages name (others are shown under their own name).
_PARAM_LABELS = {"orderId": _l("Order number"), "amount": _l("Amount")}


@dataclass
class DemoPlatform:
    bridge_url: str
    audience: str
    sp_name: str
    handoff_secret: str
    webhook_secret: str
    users: Mapping[str, str]  # user id -> password
    profiles: Mapping[str, dict[str, str]] = field(default_factory=dict)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    seen_keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mint(self, user_id: str, now: dt.datetime | None = None) -> str:
        """A hand-off token: 2 minutes, audience = the bridge's entity ID, one-time jti."""
        now = now or dt.datetime.now(dt.UTC)
        claims: dict[str, Any] = {"iss": "demo-platform", "sub": user_id, "aud": self.audience,
                                  "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 120,
                                  "jti": uuid.uuid4().hex, **self.profiles.get(user_id, {})}
        return jwt.encode(claims, self.handoff_secret, algorithm="HS256")


def create_platform_app(platform: DemoPlatform) -> Flask:
    app = Flask(__name__, template_folder="platform_templates")
    app.config.update(SECRET_KEY=secrets.token_urlsafe(32), SESSION_COOKIE_NAME="demo_platform",
                      SESSION_COOKIE_SAMESITE="Lax")
    i18n.install(app, "en")  # the bridge's catalogue and language rule (the lang cookie is shared on one host)

    def page(template: str, **context: Any) -> str:
        with platform.lock:
            hooks = [w for w in platform.webhooks if w.get("xUserId") == session.get("user")]
        return render_template(template, user=session.get("user"), webhooks=hooks,
                               here=request.full_path.rstrip("?") if request.method == "GET" else "/", **context)

    def bridge_return(return_to: str | None) -> str | None:
        # only ever the bridge's own /handoff URL
        if return_to and return_to.startswith(platform.bridge_url + "/handoff?"):
            return return_to
        return None

    @app.get("/")
    def home() -> str:
        return page("shop_home.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str:
        return_to = bridge_return(request.values.get("return_to"))
        if request.method == "POST":
            user = request.form.get("user_id", "")
            password = request.form.get("password", "")
            expected = platform.users.get(user)
            if expected is None or not hmac.compare_digest(expected, password):
                return page("shop_login.html", title=_("Sign in"), error=_("Wrong user name or password."),
                            return_to=return_to)
            session.clear()
            session["user"] = user
            if return_to:
                return redirect(return_to + "&token=" + platform.mint(user))
            return redirect("/")
        if session.get("user") and return_to:
            return redirect(return_to + "&token=" + platform.mint(session["user"]))
        return page("shop_login.html", title=_("Sign in"), return_to=return_to)

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect("/")

    @app.get("/console-jump")
    def console_jump() -> Response:
        user = session.get("user")
        if not user:
            return redirect("/login")
        return redirect(f"{platform.bridge_url}/go?sp={platform.sp_name}&token={platform.mint(user)}")

    @app.post("/hooks")
    def hooks() -> tuple[str, int]:
        body = request.get_data()
        if not verify_signature(platform.webhook_secret, request.headers.get("X-Idp-Bridge-Timestamp", ""), body,
                                request.headers.get("X-Idp-Bridge-Signature", "")):
            abort(401)
        key = request.headers.get("Idempotency-Key", "")
        with platform.lock:
            if key not in platform.seen_keys:  # a retry of something already processed is acknowledged only
                platform.seen_keys.add(key)
                platform.webhooks.append(request.get_json(force=True))
        return "", 204

    @app.get("/webhooks.json")
    def webhooks_json() -> dict[str, Any]:
        with platform.lock:
            return {"webhooks": list(platform.webhooks)}

    @app.get("/huawei/bound")
    def bound() -> str:
        linked = request.args.get("result") != "unbound"
        return page("shop_message.html",
                    title=_("Huawei Cloud account linked") if linked else _("Huawei Cloud account unlinked"),
                    message=_("Your Huawei Cloud account is now linked to CloudMart. Open the console again to go "
                              "straight in.") if linked else _("Your Huawei Cloud account is no longer linked."))

    def returned_rows() -> list[tuple[str, str]]:
        return [(str(_PARAM_LABELS.get(k, k)), v) for k, v in request.args.items(multi=True)]

    @app.get("/orders")
    def orders() -> str:
        if not request.args:
            return page("shop_message.html", title=_("My orders"),
                        message=_("Orders you pay for on Huawei Cloud appear here."))
        return page("shop_message.html", title=_("Back on the partner platform: your order"),
                    message=_("Thank you! Your payment on Huawei Cloud went through."), rows=returned_rows())

    @app.get("/wallet")
    def wallet() -> str:
        return page("shop_message.html", title=_("Back on the partner platform: top-up"),
                    message=_("Your Huawei Cloud balance has been topped up."), rows=returned_rows())

    return app
