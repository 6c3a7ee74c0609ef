"""The whole trip against real server processes on 127.0.0.1: `idp-bridge serve`, gunicorn with two
workers (the documented production command) and `idp-bridge demo` with its Huawei IAM simulator."""

from __future__ import annotations

import base64
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import (
    PASSWORD,
    SP_ACS,
    Env,
    extract_form,
    make_env,
    metadata_certificate_b64,
    python3_saml_validate,
    xmlsec1_verify,
)
from tests.servers import ServerProcess, free_port, gunicorn_cmd, idp_bridge_cmd, wait_http

pytestmark = pytest.mark.slow


def sign_in(http: requests.Session, base: str, user_id: str, password: str) -> requests.Response:
    page = http.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return http.post(base + "/login", data={"user_id": user_id, "password": password,
                                            "csrf_token": token.group(1)}, allow_redirects=False, timeout=10)


def sso_round_trip(env: Env, base: str, request_id: str) -> None:
    http = requests.Session()
    metadata = http.get(base + "/saml/metadata", timeout=10)
    assert metadata.status_code == 200
    query = env.redirect_query(env.authn_request(request_id=request_id), relay_state="rs-42")
    first = http.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=10)
    assert first.status_code == 302 and first.headers["Location"].endswith("/login")
    assert sign_in(http, base, "cust-1001", PASSWORD).status_code == 302
    page = http.get(base + "/saml/continue", timeout=10)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    form = extract_form(page.text)
    assert form["action"] == SP_ACS and form["RelayState"] == "rs-42"
    ok, error, attrs = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=metadata.content,
                                             request_id=request_id)
    assert ok, error
    assert attrs["xUserId"] == ["cust-1001"]
    (cert,) = metadata_certificate_b64(metadata.content)
    result = xmlsec1_verify(base64.b64decode(form["SAMLResponse"]), cert)
    assert result.returncode == 0, result.stderr
    # the same request again is a replay, refused with a 4xx and no response
    again = requests.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=10)
    assert again.status_code == 400 and "SAMLResponse" not in again.text


def _env_with_user(tmp_path: Path, db_url: str, port: int) -> Env:
    env = make_env(tmp_path / "bridge", db_url, base_url=f"http://127.0.0.1:{port}")
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example")
    store.dispose()
    return env


def test_round_trip_against_idp_bridge_serve(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    env = _env_with_user(tmp_path, db_url, port)
    with ServerProcess(idp_bridge_cmd("--config", str(env.config.path), "serve", "--port", str(port))) as server:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=server.proc)
        sso_round_trip(env, f"http://127.0.0.1:{port}", "_serve-trip-1")


def test_round_trip_against_gunicorn_two_workers(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    env = _env_with_user(tmp_path, db_url, port)
    with ServerProcess(gunicorn_cmd(port), env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as server:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=server.proc)
        for i in range(3):  # several trips so both workers take part
            sso_round_trip(env, f"http://127.0.0.1:{port}", f"_gunicorn-trip-{i}")


def test_demo_journey_platform_to_console_binding_checkout_and_back(tmp_path: Path) -> None:
    """`idp-bridge demo`: platform sign-in -> console jump -> first-login binding -> console -> pay -> back."""
    port, sim_port, shop_port = free_port(), free_port(), free_port()
    workdir = tmp_path / "demo"
    cmd = idp_bridge_cmd("demo", "--dir", str(workdir), "--port", str(port), "--simulator-port", str(sim_port),
                         "--platform-port", str(shop_port))
    with ServerProcess(cmd) as demo:
        base, sim, shop = (f"http://127.0.0.1:{p}" for p in (port, sim_port, shop_port))
        for url in (base + "/healthz", sim + "/authui/saml/metadata.xml", shop + "/"):
            wait_http(url, proc=demo.proc)
        http = requests.Session()
        # 1. sign in on the partner platform
        signed_in = http.post(shop + "/login", data={"user_id": "alice", "password": "alice-demo-password"},
                              timeout=10)
        assert 'id="open-console"' in signed_in.text
        # 2. console jump: hand-off token -> bridge /go -> simulator login (isFirstLogin=true) -> bridge SSO
        page = http.get(shop + "/console-jump", timeout=10)
        form = extract_form(page.text)
        assert form["action"] == sim + "/authui/saml/SAMLAssertionConsumer"
        bind_page = http.post(form["action"], data={"SAMLResponse": form["SAMLResponse"],
                                                    "RelayState": form["RelayState"]}, timeout=10)
        assert bind_page.url == sim + "/authui/bind" and "bind a Huawei Cloud account" in bind_page.text
        report = http.get(sim + "/simulator/last.json", timeout=10).json()
        assert report["ok"] is True and report["is_first_login"] is True, report
        assert report["attributes"]["xUserId"] == ["alice"]
        # 3. bind: the simulator posts Huawei's signed notification through the browser to /huawei/bind
        notify = http.post(sim + "/authui/bind", data={"action": "bind", "domain_name": "hw_alice"}, timeout=10)
        target = re.search(r'<form id="notify" method="post" action="([^"]+)"', notify.text)
        assert target and target.group(1) == base + "/huawei/bind"
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', notify.text))
        assert set(fields) == {"bindRequest", "SigAlg", "Signature"}
        landed = http.post(target.group(1), data=fields, timeout=10)
        assert landed.url == shop + "/huawei/bound?result=bound" and "account linked" in landed.text
        # the platform hears about it by webhook (delivered by the bridge's outbox loop)
        deadline = time.monotonic() + 20
        hooks: list[dict[str, object]] = []
        while time.monotonic() < deadline and not hooks:
            hooks = http.get(shop + "/webhooks.json", timeout=10).json()["webhooks"]
            time.sleep(0.2)
        assert [(h["xUserId"], h["bound"], h["domainName"]) for h in hooks] == [("alice", True, "hw_alice")]
        # 4. console again: now bound, straight in
        form = extract_form(http.get(shop + "/console-jump", timeout=10).text)
        console = http.post(form["action"], data={"SAMLResponse": form["SAMLResponse"],
                                                  "RelayState": form["RelayState"]}, timeout=10)
        assert console.status_code == 200 and console.url == sim + "/console"
        assert "alice@partner.example" in console.text
        assert http.get(sim + "/simulator/last.json", timeout=10).json()["is_first_login"] is False
        # 5. pay for an order; "View order details" returns through the bridge to the platform
        paid = http.post(sim + "/order/pay", timeout=10)
        link = re.search(r'<a id="order-details" href="([^"]+)"', paid.text)
        assert link and link.group(1).startswith(base + "/huawei/return?orderId=CS")
        back = http.get(link.group(1).replace("&amp;", "&"), timeout=10)
        assert back.url.startswith(shop + "/orders?orderId=CS") and "Back on the partner platform" in back.text
        # 6. the audit trail has it all
        tail = subprocess.run(idp_bridge_cmd("--config", str(workdir / "idp-bridge.toml"), "audit", "tail", "-n",
                                             "50"), capture_output=True, text=True, timeout=60, check=True).stdout
        for event in ("handoff", "console_jump", "login", "binding", "webhook", "return"):
            assert re.search(rf"\b{event}\s+ok\b", tail), (event, tail)
