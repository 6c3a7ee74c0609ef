"""``GET /metrics`` for Prometheus, and the SSO latency it reports.

Not public: 404 unless ``[metrics] enabled``; then 403 unless the scraper sends the bearer token or comes
from an address in ``[metrics] allow``. The text adds up every worker's counters (ops/metrics.py).
"""

from __future__ import annotations

import hmac
import ipaddress
import time

from flask import Blueprint, Flask, Response, abort, g, request

from idp_bridge.ops import metrics
from idp_bridge.web.auth import bridge

bp = Blueprint("metrics", __name__)
_TIMED = {"saml.sso", "saml.sso_continue"}


@bp.get("/metrics")
def scrape() -> Response:
    b = bridge()
    settings = b.config.metrics
    if not settings.enabled:
        abort(404)
    sent = request.headers.get("Authorization", "")
    by_token = bool(settings.token) and hmac.compare_digest(sent.encode(), f"Bearer {settings.token}".encode())
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
        by_address = any(address in network for network in settings.allow)
    except ValueError:
        by_address = False
    if not (by_token or by_address):
        abort(403)
    state = metrics.StateCollector(keys=b.keys.ring,
                                   outbox=lambda now: b.store.outbox.pending_stats(now=now))
    body, content_type = metrics.render(state)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def install(app: Flask) -> None:
    """Time the SSO endpoints (the histogram ``idp_bridge_sso_seconds``)."""

    @app.before_request
    def _start() -> None:
        if request.endpoint in _TIMED:
            g.metrics_started = time.perf_counter()

    @app.teardown_request
    def _stop(_exc: BaseException | None) -> None:
        started = g.pop("metrics_started", None)
        if started is not None:
            metrics.SSO_SECONDS.observe(time.perf_counter() - started)

    app.register_blueprint(bp)

