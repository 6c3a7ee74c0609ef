"""Slow clients (issue 8.7): stalled connections held open against the shipped gunicorn setup
(`idp-bridge serve`: gthread workers, the shipped config) while /healthz and a whole SSO login still
answer; and the negative control, the old README command (sync workers) that four such connections
starve, which shows the test can fail. Through nginx: tests/test_serving_https.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.servers import VENV_BIN, ServerProcess, free_port, wait_http
from tests.serving_helpers import LoginLoad, bridge_env, serve_cmd, stalled_clients, still_open

pytestmark = pytest.mark.slow

# Held at once against 2 workers x 16 threads (14 could all land on one worker). Silent connections cost no thread at all (gunicorn parks
# them on the worker's poller); one stalled mid-request holds one thread. Direct exposure is bounded by
# the threads; nginx in front (which buffers whole requests) is what removes the bound.
DIRECT = {"silent": 4, "partial-headers": 5, "stalled-body": 5}


def healthz(base: str) -> int:
    return requests.get(base + "/healthz", timeout=5).status_code


def test_shipped_gunicorn_answers_while_stalled_connections_are_held(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = bridge_env(tmp_path / "bridge", db_url, base)
    with ServerProcess(serve_cmd(env, port)) as server:
        wait_http(base + "/healthz", proc=server.proc)
        with stalled_clients("127.0.0.1", port, DIRECT) as held:
            for _ in range(5):
                assert healthz(base) == 200
            load = LoginLoad(env, base, max_logins=3, timeout=10)
            for n in range(3):
                assert load.one_login(n, 0) is None
            assert still_open(held) == len(held)  # they were really held during all of it
        assert server.proc.poll() is None


def test_negative_control_the_old_sync_command_is_starved(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = bridge_env(tmp_path / "bridge", db_url, base)
    old = [str(VENV_BIN / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}", "--no-control-socket",
           "--graceful-timeout", "2", "idp_bridge.web:create_app()"]
    with ServerProcess(old, env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as server:
        wait_http(base + "/healthz", proc=server.proc)
        with stalled_clients("127.0.0.1", port, {"partial-headers": 4}), pytest.raises(requests.Timeout):
            requests.get(base + "/healthz", timeout=3)
