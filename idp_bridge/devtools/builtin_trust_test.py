"""``trust-test`` without ``--url``: the demo (bridge + Huawei IAM simulator) started in-process on free ports.

The journey itself is diagnostics/trust_test.py; this module only starts and silences the throwaway servers.
"""

from __future__ import annotations

import logging
import socketserver
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from idp_bridge.diagnostics.report import Report
from idp_bridge.diagnostics.trust_test import run_against
from idp_bridge.ops.periodic import Periodic

_Handler = Callable[..., socketserver.BaseRequestHandler]


class _MuteApps(logging.Filter):
    """Drops records logged while one of these Flask apps handles a request (in that request's thread), and
    records of their background loops (webhook delivery, purging)."""

    def __init__(self, apps: list[Any]) -> None:
        super().__init__()
        self.app_ids = {id(app) for app in apps}
        self.thread_ids = {loop.thread_id for app in apps for loop in app.extensions.values()
                           if isinstance(loop, Periodic)}

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import current_app, has_app_context

        if record.thread in self.thread_ids:
            return False
        return not (has_app_context() and id(current_app._get_current_object()) in self.app_ids)  # type: ignore[attr-defined]


def _quiet(handler: _Handler) -> _Handler:
    """The server's request handler without werkzeug's per-request log line (errors are still logged)."""
    if not isinstance(handler, type) or not issubclass(handler, WSGIRequestHandler):
        return handler  # type: ignore[return-value]  # narrowed to type[object] by isinstance; unchanged
    base: type[WSGIRequestHandler] = handler

    class Quiet(base):  # type: ignore[valid-type,misc]  # a subclass of the server's own handler class
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    return Quiet


def run_with_builtin_simulator(*, sp: str | None = None, workdir: Path | None = None) -> Report:
    """Start the demo (bridge + Huawei IAM simulator) in-process on free ports, run the journey, stop."""
    import socket

    from idp_bridge.devtools.demo import DEMO_USERS, prepare_demo, start_demo
    from idp_bridge.idp.identity_provider import IdentityProvider
    from idp_bridge.store import Store

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    with tempfile.TemporaryDirectory(prefix="idp-bridge-trust-") as tmp:
        setup = start_demo(prepare_demo(workdir or Path(tmp), port=free_port(), simulator_port=free_port(),
                                         platform_port=free_port()))
        # This throwaway bridge and simulator write nothing to the terminal: no werkzeug request lines, no
        # audit JSON lines (the report says it all). Only these servers: other servers and apps still log.
        for server in setup.servers:
            server.RequestHandlerClass = _quiet(server.RequestHandlerClass)
        mute = _MuteApps([server.app for server in setup.servers])
        audit_log = logging.getLogger("idp_bridge.audit")
        audit_log.addFilter(mute)
        store = Store.from_url(setup.config.database_url)
        try:
            user = DEMO_USERS[0]
            return run_against(setup.bridge_url, user=user.user_id, password=user.password, sp=sp,
                               bridge=IdentityProvider(setup.config, store))
        finally:
            loops = setup.loops()
            setup.shutdown()  # loops first, then servers: an in-flight webhook delivery ends while muted
            if all(loop.stop(timeout=0) for loop in loops):  # a loop still running keeps its lines muted
                audit_log.removeFilter(mute)
            store.dispose()
