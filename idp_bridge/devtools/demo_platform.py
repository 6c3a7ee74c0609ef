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
from flask import Flask, abort, redirect, render_template_string, request, session
from werkzeug.wrappers import Response

from idp_bridge.partner.webhooks import verify_signature

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Demo partner platform</title></head>
<body style="font-family: sans-serif; max-width: 46rem; margin: 2rem auto">
<p><b>Demo partner platform</b> &middot; <a href="/">home</a></p>
{% if title %}<h1 id="title">{{ title }}</h1>{% endif %}
{% if message %}<p id="message">{{ message }}</p>{% endif %}
{% if params %}<p>Returned with: <code id="params">{{ params }}</code></p>{% endif %}
{% if user %}
  <p>Signed in as <b id="user">{{ user }}</b>.</p>
  <p><a id="open-console" href="/console-jump">Open Huawei Cloud console</a></p>
  <form method="post" action="/logout"><button>Sign out</button></form>
{% elif show_login %}
  <form method="post" action="/login">
    <input type="hidden" name="return_to" value="{{ return_to or '' }}">
    <p><label>User <input name="user_id"></label> <label>Password <input name="password" type="password"></label>
    <button type="submit">Sign in</button></p>
  </form>
{% endif %}
<h2>Webhooks received from the bridge</h2>
<ul id="webhooks">{% for w in webhooks %}<li>{{ w.xUserId }}: {{ "bound" if w.bound else "unbound" }}
  {{ w.domainName or "" }} <small>({{ w.id }})</small></li>{% else %}<li>none yet</li>{% endfor %}</ul>
</body></html>"""


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
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_urlsafe(32), SESSION_COOKIE_NAME="demo_platform",
                      SESSION_COOKIE_SAMESITE="Lax")

    def page(**context: Any) -> str:
        with platform.lock:
            hooks = list(platform.webhooks)
        return render_template_string(PAGE, user=session.get("user"), webhooks=hooks, **context)

    def bridge_return(return_to: str | None) -> str | None:
        # only ever the bridge's own /handoff URL
        if return_to and return_to.startswith(platform.bridge_url + "/handoff?"):
            return return_to
        return None

    @app.get("/")
    def home() -> str:
        return page(title="Welcome", show_login=True)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response | str:
        return_to = bridge_return(request.values.get("return_to"))
        if request.method == "POST":
            user = request.form.get("user_id", "")
            password = request.form.get("password", "")
            expected = platform.users.get(user)
            if expected is None or not hmac.compare_digest(expected, password):
                return page(title="Sign in", message="Wrong user or password.", show_login=True, return_to=return_to)
            session.clear()
            session["user"] = user
            if return_to:
                return redirect(return_to + "&token=" + platform.mint(user))
            return redirect("/")
        if session.get("user") and return_to:
            return redirect(return_to + "&token=" + platform.mint(session["user"]))
        return page(title="Sign in", show_login=True, return_to=return_to)

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
        return page(title="Huawei Cloud account linked", message="Huawei told us about your account "
                    f"({request.args.get('result', '?')}). Open the console again to go straight in.")

    @app.get("/orders")
    def orders() -> str:
        return page(title="Back on the partner platform: your order",
                    params=dict(request.args), message="Thanks for your payment on Huawei Cloud.")

    @app.get("/wallet")
    def wallet() -> str:
        return page(title="Back on the partner platform: top-up", params=dict(request.args))

    return app
