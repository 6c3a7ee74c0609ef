"""Hundreds of hostile hand-off and binding requests against gunicorn (two workers), SQLite and PostgreSQL.

Every one is refused with a 4xx, signs no one in (the victim's session stays the victim's), redirects
nowhere, and leaves storage bounded; replays of applied notices land normally and change nothing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select

from idp_bridge.devtools.simulator.partner_flows import build_bind_notification
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.store import Store
from idp_bridge.store.tables import BindingJumpRow, BindingNoticeRow, OutboxRow, SessionRow
from tests.journey import Env
from tests.pki import cached_key
from tests.platform_env import SHOP, mint, platform_env
from tests.servers import free_port, gunicorn_cmd, wait_http

pytestmark = pytest.mark.slow
SERVICE = "https://console.huaweicloud.com/"
VICTIM = "victim-y"


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[tuple[Env, str]]:
    port = free_port()
    env = platform_env(tmp_path / "bridge", db_url, base_url=f"http://127.0.0.1:{port}",
                       webhook_url=SHOP + "/hooks")
    log = tmp_path / "gunicorn.log"  # a file, not a pipe: hundreds of audit lines would fill a pipe and block
    with log.open("wb") as out:
        proc = subprocess.Popen(gunicorn_cmd(port), env={**os.environ, "IDP_BRIDGE_CONFIG": str(env.config.path)},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
            yield env, f"http://127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            print(f"--- gunicorn output ---\n{log.read_text(errors='replace')[-8000:]}")  # shown on failure


def notice(user: str, domain: str, action: int = 0, key: str = "huawei-sp") -> dict[str, str]:
    k = cached_key(key)
    return build_bind_notification(PrivateKeySigner(k.private_key, k.certificate), x_user_id=user,
                                   domain_name="hw_" + domain, domain_id="dom-" + domain, bind_action=action)


def who(http: requests.Session, base: str) -> str | None:
    m = re.search(r'id="customer">[^<]*</strong>\s*<span class="muted">\(([^)]+)\)', http.get(base + "/", timeout=10).text)
    return m.group(1) if m else None


def counts(db_url: str) -> dict[str, int]:
    store = Store.from_url(db_url)
    try:
        with store.engine.connect() as conn:
            return {t.__tablename__: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                    for t in (BindingJumpRow, BindingNoticeRow, OutboxRow, SessionRow)}
    finally:
        store.dispose()


def test_hostile_requests_are_refused_and_change_nothing(server: tuple[Env, str], db_url: str) -> None:
    env, base = server
    victim = requests.Session()
    first = victim.get(base + "/go", params={"token": mint(env, VICTIM), "service": SERVICE},
                       allow_redirects=False, timeout=10)
    assert first.status_code == 302 and "isFirstLogin=true" in first.headers["Location"]
    honest_bind, honest_unbind = notice(VICTIM, "A"), notice(VICTIM, "A", action=1)
    assert requests.post(base + "/huawei/bind", data=honest_bind, allow_redirects=False, timeout=10
                         ).status_code == 303
    assert requests.post(base + "/huawei/bind", data=honest_unbind, allow_redirects=False, timeout=10
                         ).status_code == 303
    before = counts(db_url)
    assert before["binding_notices"] == 2 and before["outbox"] == 2

    hostile: list[tuple[str, requests.Response]] = []

    def send(label: str, http: requests.Session | None, method: str, path: str, **kw: Any) -> None:
        client = http or requests.Session()
        hostile.append((label, client.request(method, base + path, allow_redirects=False, timeout=10, **kw)))

    other = base64.b64encode(json.dumps({"xUserId": VICTIM, "domainId": "dom-evil", "bindAction": 0}).encode())
    for i in range(40):
        attacker = f"attacker-{i}"
        # login CSRF: someone else's unused token in the victim's browser, through both entry points
        send("go-switch", victim, "GET", "/go", params={"token": mint(env, attacker), "service": SERVICE})
        send("handoff-switch", victim, "GET", "/handoff", params={"token": mint(env, attacker), "next": "/go"})
        # forged confirmations: no CSRF token, a guessed nonce, the attacker's own session's token
        send("confirm-no-csrf", victim, "POST", "/handoff/confirm", data={"choice": "switch", "nonce": "x" * 32})
        send("confirm-guess", victim, "POST", "/handoff/confirm",
             data={"choice": "switch", "nonce": secrets.token_urlsafe(24), "csrf_token": secrets.token_urlsafe(32)})
        # bind notices: unsolicited (no first-login jump), tampered, foreign key, unbind of another account
        send("bind-unsolicited", None, "POST", "/huawei/bind", data=notice(f"nobody-{i}", f"N{i}"))
        send("bind-victim-unsolicited", None, "POST", "/huawei/bind", data=notice(VICTIM, f"E{i}"))
        send("bind-tampered", None, "POST", "/huawei/bind", data=dict(honest_bind, bindRequest=other.decode()))
        send("bind-foreign", None, "POST", "/huawei/bind", data=notice(VICTIM, "F", key="not-huawei"))
        send("unbind-not-current", None, "POST", "/huawei/bind", data=notice(VICTIM, f"U{i}", action=1))
        send("token-garbage", None, "GET", "/go", params={"token": "e30." * (i + 1), "service": SERVICE})
    assert len(hostile) == 400
    for label, resp in hostile:
        assert 400 <= resp.status_code < 500, (label, resp.status_code, resp.text[:200])
        assert "Location" not in resp.headers, (label, resp.headers.get("Location"))
    assert {r.status_code for label, r in hostile if label.endswith("switch")} == {409}
    assert who(victim, base) == VICTIM  # the victim's browser is still the victim's

    # replays of what the victim's browser carried: normal landing page, no change, no webhook
    for _ in range(20):
        for form, result in ((honest_bind, "bound"), (honest_unbind, "unbound")):
            resp = requests.post(base + "/huawei/bind", data=form, allow_redirects=False, timeout=10)
            assert resp.status_code == 303 and resp.headers["Location"] == f"{SHOP}/huawei/bound?result={result}"
            assert urlsplit(resp.headers["Location"]).netloc == "shop.example"

    after = counts(db_url)
    assert after["binding_notices"] == before["binding_notices"]  # nothing new remembered
    assert after["outbox"] == before["outbox"]  # no webhook queued
    assert after["binding_jumps"] == before["binding_jumps"] == 0  # the victim's jump was used; no new one
    assert after["sessions"] <= before["sessions"] + 1  # hostile requests without a cookie start none
    store = Store.from_url(db_url)
    try:
        b = store.bindings.get(VICTIM)
        assert b is not None and (b.bound, b.domain_id) == (False, "dom-A")
        assert store.bindings.all() == [b]
    finally:
        store.dispose()
