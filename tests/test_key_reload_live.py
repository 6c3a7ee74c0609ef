"""Bad key files appearing under a RUNNING server (gunicorn, 2 workers): each is refused with a clear
reason, and every Response keeps verifying with the key that signed before — judged by xmlsec1."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.keys.files import key_id_for, self_signed_certificate
from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env, extract_form, make_env, metadata_certificate_b64, xmlsec1_verify
from tests.servers import ServerProcess, free_port, gunicorn_cmd, wait_http

pytestmark = pytest.mark.slow


def _login_response(env: Env, base: str, request_id: str) -> bytes:
    http = requests.Session()
    query = env.redirect_query(env.authn_request(request_id=request_id))
    assert http.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=10).status_code == 302
    page = http.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    http.post(base + "/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token.group(1)},
              allow_redirects=False, timeout=10)
    form = extract_form(http.get(base + "/saml/continue", timeout=10).text)
    return base64.b64decode(form["SAMLResponse"])


def test_bad_key_files_under_a_running_server_never_replace_the_signing_key(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    env = make_env(tmp_path / "bridge", db_url, base_url=f"http://127.0.0.1:{port}")
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["keys"] = {"reload_seconds": 0.2}
    write_raw_config(env.config.path, raw)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD)
    store.dispose()
    base = f"http://127.0.0.1:{port}"
    key_dir = env.config.key_dir

    with ServerProcess(gunicorn_cmd(port), env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as server:
        wait_http(base + "/healthz", proc=server.proc)
        (good_cert,) = metadata_certificate_b64(requests.get(base + "/saml/metadata", timeout=10).content)

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_cert = self_signed_certificate(other, common_name="intruder", days=30)
        pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        kid = key_id_for(other_cert)
        cert_pem = other_cert.public_bytes(serialization.Encoding.PEM)

        def write_private(data: bytes, mode: int = 0o600) -> None:
            path = key_dir / f"{kid}.key"
            path.write_bytes(data)
            path.chmod(mode)

        def write_cert(data: bytes) -> None:
            (key_dir / f"{kid}.crt").write_bytes(data)

        stranger = self_signed_certificate(rsa.generate_private_key(65537, 2048), common_name="x", days=30)
        def half_written() -> None:  # the certificate landed, the key file only half-way
            write_cert(cert_pem)
            write_private(pem[: len(pem) // 2])

        def mismatched() -> None:  # the whole key, but the certificate beside it belongs to another key
            write_private(pem)
            write_cert(stranger.public_bytes(serialization.Encoding.PEM))

        def world_readable() -> None:  # the right pair, readable by everyone
            write_cert(cert_pem)
            write_private(pem, 0o644)

        bad_files: dict[str, Callable[[], None]] = {
            "half-written": half_written, "mismatched": mismatched, "world-readable": world_readable}
        # recorded as "next" first, as `keys new` / `keys import` do: from then on the files count
        recorder = Store.from_url(db_url)
        recorder.keyring.register(kid, state="next", now=dt.datetime.now(dt.UTC))
        recorder.dispose()
        for i, (case, write) in enumerate(bad_files.items()):
            write()
            time.sleep(1.0)  # several reload periods in both workers
            for j in range(3):  # both workers answer
                xml = _login_response(env, base, f"_live-{i}-{j}")
                verified = xmlsec1_verify(xml, good_cert)
                assert verified.returncode == 0, (case, verified.stderr)
            health = requests.get(base + "/healthz", timeout=10).json()
            assert health["status"] == "warn", (case, health)
            assert kid in health.get("key_reload_error", ""), (case, health)
        log = server.stop()
    for reason in ("key_unreadable", "key_file_permissions"):
        assert reason in log, (reason, log[-3000:])
    assert "does not match" in log or "mismatch" in log, log[-3000:]


def test_workers_start_beside_a_bad_next_key(tmp_path: Path, db_url: str) -> None:
    """A worker (re)starting — gunicorn recycles them — while a broken next key sits in certs/ must boot and
    sign with the active key; only a broken ACTIVE key may stop it."""
    port = free_port()
    env = make_env(tmp_path / "bridge", db_url, base_url=f"http://127.0.0.1:{port}")
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD)
    (active_key,) = env.config.key_dir.glob("*.key")
    store.keyring.register(active_key.stem, state="active", now=dt.datetime.now(dt.UTC))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_cert = self_signed_certificate(other, common_name="next", days=30)
    kid = key_id_for(other_cert)
    store.keyring.register(kid, state="next", now=dt.datetime.now(dt.UTC))
    store.dispose()
    (env.config.key_dir / f"{kid}.crt").write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    half = env.config.key_dir / f"{kid}.key"
    half.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())[:40])  # cut off while being written
    half.chmod(0o600)
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(gunicorn_cmd(port), env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as server:
        wait_http(base + "/healthz", proc=server.proc)
        metadata = requests.get(base + "/saml/metadata", timeout=10).content
        (cert,) = metadata_certificate_b64(metadata)  # the broken key is not published
        for j in range(4):  # both workers
            verified = xmlsec1_verify(_login_response(env, base, f"_boot-{j}"), cert)
            assert verified.returncode == 0, verified.stderr
        assert server.proc.poll() is None
        health = requests.get(base + "/healthz", timeout=10).json()
        assert health["status"] == "warn" and kid in health["key_reload_error"], health
