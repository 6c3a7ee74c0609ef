"""The whole trip against real server processes on 127.0.0.1: `idp-bridge serve`, gunicorn with two
workers (the documented production command) and `idp-bridge demo` with its Huawei IAM simulator."""

from __future__ import annotations

import base64
import re
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
    store.add_user("cust-1001", PASSWORD, email="c1001@partner.example")
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


def test_demo_journey_lands_on_simulator_console(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    cmd = idp_bridge_cmd("demo", "--dir", str(tmp_path / "demo"), "--port", str(port),
                         "--simulator-port", str(sim_port))
    with ServerProcess(cmd) as demo:
        base, sim = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
        wait_http(base + "/healthz", proc=demo.proc)
        wait_http(sim + "/authui/saml/metadata.xml", proc=demo.proc)
        http = requests.Session()
        assert "Sign in" in http.get(base + "/", timeout=10).text
        assert sign_in(http, base, "alice", "alice-demo-password").status_code == 302
        home = http.get(base + "/", timeout=10)
        assert "Open Huawei Cloud console" in home.text
        page = http.get(base + "/go?sp=huawei-sim", timeout=10)  # -> simulator login -> bridge SSO -> form
        form = extract_form(page.text)
        assert form["action"] == sim + "/authui/saml/SAMLAssertionConsumer"
        console = http.post(form["action"], data={"SAMLResponse": form["SAMLResponse"],
                                                  "RelayState": form["RelayState"]}, timeout=10)
        assert console.status_code == 200 and console.url == sim + "/console"
        assert "alice@partner.example" in console.text
        report = http.get(sim + "/simulator/last.json", timeout=10).json()
        assert report["ok"] is True, report
        assert all(c["ok"] for c in report["checks"])
        assert report["attributes"]["xUserId"] == ["alice"]
