"""HTTPS as Huawei requires (issue 12.7), and slow clients through the proxy (issue 8.7), for real:
Debian's nginx running the shipped recipe (idp_bridge/deploy/nginx-idp-bridge.conf) with a certificate
from a test CA, in front of the shipped gunicorn setup (`idp-bridge serve`, 2 workers), the bridge
trusting the forwarded headers. The SSO round trip (judged by python3-saml strict and xmlsec1) and the
metadata over HTTPS; the client address the bridge records is the one nginx saw, not one a client wrote
into X-Forwarded-For; `idp-bridge check` reports the public URL's TLS; stalled clients are absorbed by
nginx (more than gunicorn has threads) while /healthz and a login answer."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.store import Store
from tests.journey import Env
from tests.servers import ServerProcess, free_port, idp_bridge_cmd, wait_http
from tests.serving_helpers import (
    LoginLoad,
    TestCA,
    bridge_env,
    render_recipe,
    run_nginx,
    serve_cmd,
    stalled_clients,
    still_open,
)
from tests.test_server_journey import sso_round_trip

pytestmark = pytest.mark.slow

NAME = "localhost"  # the public name in the test: resolves to loopback without DNS
CLIENT_ADDR = "127.0.0.5"  # a loopback address other than nginx's own, so a forwarded address is visible


@dataclass
class Stack:
    env: Env
    base: str
    upstream: str
    ca_file: Path
    https_port: int
    http_port: int
    db_url: str


@pytest.fixture
def stack(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    ca = TestCA.create()
    ca_file = ca.write_ca(tmp_path / "test-ca.pem")
    chain, key = ca.issue(tmp_path / "tls", [NAME])
    https_port, http_port, app_port = free_port(), free_port(), free_port()
    base = f"https://{NAME}:{https_port}"
    env = bridge_env(tmp_path / "bridge", db_url, base, trust_forwarded=True)
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["sp"][0]["metadata_fetchers"] = [f"{CLIENT_ADDR}/32"]
    write_raw_config(env.config.path, raw)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))  # requests (and sso_round_trip) trust the test CA
    site = render_recipe(server_name=NAME, https_port=https_port, http_port=http_port,
                         upstream=f"127.0.0.1:{app_port}", chain=chain, key=key)
    with ServerProcess(serve_cmd(env, app_port)) as app:
        wait_http(f"http://127.0.0.1:{app_port}/healthz", proc=app.proc)
        with run_nginx(tmp_path / "nginx", site, https_port=https_port):
            yield Stack(env, base, f"http://127.0.0.1:{app_port}", ca_file, https_port, http_port, db_url)


def from_address(addr: str) -> requests.Session:
    """A client connecting from ``addr`` (a loopback alias)."""

    class Bound(HTTPAdapter):
        def init_poolmanager(self, *args: object, **kwargs: object) -> None:
            kwargs["source_address"] = (addr, 0)
            super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]

    http = requests.Session()
    http.mount("https://", Bound())
    return http


def test_sso_round_trip_metadata_forwarded_headers_and_check_over_https(stack: Stack) -> None:
    # the whole SSO round trip over HTTPS through nginx (Secure session cookie, Destination = https URL)
    sso_round_trip(stack.env, stack.base, "_https-trip-1")

    # metadata over HTTPS; the address recorded is the one nginx saw, not the one the client claims
    http = from_address(CLIENT_ADDR)
    meta = http.get(stack.base + "/saml/metadata?sp=huawei-cn", headers={"X-Forwarded-For": "203.0.113.66"},
                    timeout=10)
    assert meta.status_code == 200 and meta.content.startswith(b"<?xml")
    assert f'Location="{stack.base}/saml/sso"'.encode() in meta.content
    assert meta.headers["Strict-Transport-Security"].startswith("max-age=")
    store = Store.from_url(stack.db_url)
    try:
        fetches = store.keyring.metadata_fetches(limit=10)
    finally:
        store.dispose()
    assert [f.remote_addr for f in fetches if f.sp == "huawei-cn"] == [CLIENT_ADDR], fetches

    # plain http only redirects to https; a name other than the bridge's gets no TLS handshake at all
    plain = requests.get(f"http://127.0.0.1:{stack.http_port}/saml/metadata", headers={"Host": NAME},
                         allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"] == f"https://{NAME}/saml/metadata"
    ctx = ssl.create_default_context(cafile=str(stack.ca_file))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", stack.https_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="other.example")

    with pytest.raises(requests.ConnectionError):  # our name in the handshake, another in Host: no answer
        requests.get(stack.base + "/healthz", headers={"Host": "other.example"}, timeout=10)

    # `idp-bridge check` reports the public URL's TLS (the test CA is the only one it trusts)
    proc = subprocess.run(idp_bridge_cmd("--config", str(stack.env.config.path), "check", "--json"),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SSL_CERT_FILE": str(stack.ca_file)}, check=False)
    items = {i["name"]: i for i in json.loads(proc.stdout)["items"] if i["group"] == "TLS"}
    assert items["protocol TLS 1.2+"]["status"] == "pass", items
    assert "TLSv1.3" in items["protocol TLS 1.2+"]["detail"]
    assert items["certificate valid"]["status"] == "pass", items
    assert items["certificate hostname"]["status"] == "pass", items
    assert items["TLS 1.0/1.1 refused"]["status"] in ("pass", "skip"), items
    served = next(i for i in json.loads(proc.stdout)["items"] if i["name"] == "served metadata is current")
    assert served["status"] == "pass", served


# Against 2 workers x 16 threads: more clients stalled mid-request (over TLS) than gunicorn has threads.
SILENT, MID_REQUEST = 40, {"partial-headers": 20, "stalled-body": 20}


def test_stalled_clients_are_absorbed_by_nginx(stack: Stack) -> None:
    tls = ssl.create_default_context(cafile=str(stack.ca_file))
    started = time.monotonic()
    with stalled_clients("127.0.0.1", stack.https_port, {"silent": SILENT}) as silent, \
            stalled_clients("127.0.0.1", stack.https_port, MID_REQUEST, tls=tls, server_name=NAME) as mid_request:
        held_for = time.monotonic() - started
        for _ in range(3):
            assert requests.get(stack.base + "/healthz", timeout=5).status_code == 200
            assert requests.get(stack.upstream + "/healthz", timeout=5).status_code == 200
        load = LoginLoad(stack.env, stack.base, max_logins=2, timeout=10, verify=str(stack.ca_file))
        for n in range(2):
            assert load.one_login(n, 0) is None
        # nginx held every one of them meanwhile (it drops them after client_header/body_timeout, 10 s)
        if time.monotonic() - started < 9:
            assert (still_open(silent), still_open(mid_request)) == (len(silent), len(mid_request))
        else:  # a very slow machine: at least the ones opened last are still held
            assert still_open(mid_request) > 0, f"opening them took {held_for:.1f} s"
