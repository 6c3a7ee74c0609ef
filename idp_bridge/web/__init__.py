"""The thin Flask layer: ``create_app`` builds the app from a config file or a ``Config``.

Production: ``idp-bridge serve`` (gunicorn with idp_bridge/deploy/gunicorn_conf.py, which names
``idp_bridge.web:create_app()``) behind nginx; config from ``$IDP_BRIDGE_CONFIG`` or ``./idp-bridge.toml``.
See docs/deployment.md.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any

from flask import Flask

from idp_bridge.config import Config, load_config
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.keys.rotation import Rotation
from idp_bridge.ops.audit import configure_logging
from idp_bridge.ops.housekeeping import purge_loop, spool_dir, spool_loop
from idp_bridge.store import Store
from idp_bridge.web import (
    account,
    debug,
    errors,
    handoff,
    health,
    huawei,
    i18n,
    jump,
    metrics,
    saml,
    security,
    validation,
)
from idp_bridge.web.sessions import StoreSessionInterface


class BridgeFlask(Flask):
    """Flask, with ``ensure_sync`` remembering its answer per function.

    Flask calls ``ensure_sync`` for the view and for every before/after/teardown hook on every request, and
    each call inspects the function's code flags (``iscoroutinefunction``); the answer never changes for a
    function, so it is looked up once. (Flask documents ``ensure_sync`` as the method to override.)
    """

    def __init__(self, import_name: str, **kwargs: Any) -> None:
        super().__init__(import_name, **kwargs)
        self._sync_cache: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        found = self._sync_cache.get(func)
        if found is None:
            found = super().ensure_sync(func)
            if len(self._sync_cache) < 4096:  # views and hooks are a fixed set; a bound method made per call is not kept
                self._sync_cache[func] = found
        return found


def create_app(config: Config | str | os.PathLike[str] | None = None, *, bridge: IdentityProvider | None = None) -> Flask:
    configure_logging()
    if bridge is None:
        cfg = config if isinstance(config, Config) else load_config(config)
        bridge = IdentityProvider(cfg, Store.from_url(cfg.database_url))
    cfg = bridge.config
    if not bridge.store.is_migrated():
        bridge.store.upgrade()
    Rotation(bridge).bootstrap()  # a fresh install's single key is recorded as active, for every worker
    bridge.keys.serve()  # load now; a key problem is logged and answered with 503s, never a crash-looping worker

    app = BridgeFlask(__name__)
    app.config.update(SECRET_KEY=cfg.secret_key, MAX_CONTENT_LENGTH=1024 * 1024,
                      SESSION_COOKIE_SECURE=cfg.base_url.startswith("https://"))
    app.extensions["idp_bridge"] = bridge
    app.session_interface = StoreSessionInterface(
        bridge.store, lifetime=dt.timedelta(seconds=cfg.saml.session_lifetime_seconds),
        secure=cfg.base_url.startswith("https://"), secret_key=cfg.secret_key)
    if cfg.trust_forwarded:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    security.install(app)
    validation.install(app)  # every value from outside, checked before any view
    errors.install(app)
    i18n.install(app, cfg.ui.default_locale)
    metrics.install(app)  # /metrics (off unless [metrics] enabled) and the SSO latency histogram
    for blueprint in (saml.bp, account.bp, jump.bp, handoff.bp, huawei.bp, health.bp, debug.bp):
        app.register_blueprint(blueprint)
    _load_plugins(app)
    _start_webhook_loop(app, bridge)
    app.extensions["idp_bridge_purge"] = purge_loop(bridge.store, retention=cfg.retention).start()
    app.extensions["idp_bridge_spool"] = spool_loop(bridge.store, spool_dir(cfg)).start()
    return app


def _start_webhook_loop(app: Flask, bridge: IdentityProvider) -> None:
    """Deliver binding webhooks from this process too (safe with many workers: claims are atomic)."""
    from idp_bridge.partner.webhooks import delivery_loop, settings_from_config

    p = bridge.config.platform
    settings = settings_from_config(p.webhook_url, p.webhook_secret, timeout=p.webhook_timeout_seconds)
    if settings is not None and p.webhook_in_process:
        app.extensions["idp_bridge_webhooks"] = delivery_loop(bridge.store, settings).start()


def _load_plugins(app: Flask) -> None:
    """Pages other packages add (``idp_bridge.plugins`` entry points: the console's test login from devtools)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="idp_bridge.plugins"):
        register = getattr(entry.load(), "register_web", None)
        if register is not None:
            register(app)
