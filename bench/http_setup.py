"""Deployments for ``bench_http.py``: a bridge made by ``idp-bridge init`` with N SPs, logged-in sessions,
optional filler rows, the pysaml2 IdP's files, and fresh signed AuthnRequest URLs.

Everything lives in one temporary directory that ``bench_http.py`` removes at exit; keys are generated
here (the bridge's by ``init`` itself, the SPs' one request-signing key by this module).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.saml.bindings import encode_redirect
from idp_bridge.saml.metadata import build_sp_metadata
from idp_bridge.saml.request_builder import build_authn_request
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.store import Store

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).with_name("idp-bridge"))]


@dataclass(frozen=True)
class SpKey:
    """The one key every benchmark SP signs its AuthnRequests with (RSA-2048, like Huawei IAM's)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(cls) -> SpKey:
        key = rsa.generate_private_key(65537, 2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench-sp")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
        return cls(key, cert)

    @property
    def signer(self) -> PrivateKeySigner:
        return PrivateKeySigner(self.key, self.cert)


def sp_entity_id(i: int) -> str:
    return f"https://sp{i:04d}.bench.example/"


def sp_acs(i: int) -> str:
    return f"https://sp{i:04d}.bench.example/acs"


@dataclass
class Deployment:
    """One bridge configuration (database, SP count, key algorithm) served on ``port``."""

    name: str
    root: Path
    port: int
    db_url: str
    n_sps: int
    algorithm: str
    tokens: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "IDP_BRIDGE_CONFIG": str(self.root / "idp-bridge.toml"),
                "IDP_BRIDGE_DATABASE_URL": self.db_url}

    @property
    def requesting_sp(self) -> int:
        """Requests come from the last SP configured: the worst case for a linear lookup."""
        return self.n_sps - 1

    def key_files(self) -> tuple[Path, Path]:
        config = load_config(self.root / "idp-bridge.toml", environ={})
        key = next(iter(sorted(config.key_dir.glob("*.key"))))
        return key, key.with_suffix(".crt")


def make_deployment(name: str, root: Path, *, port: int, db_url: str, n_sps: int, algorithm: str,
                    sp_key: SpKey, sessions: int) -> Deployment:
    root.mkdir(parents=True)
    dep = Deployment(name, root, port, db_url, n_sps, algorithm)
    cfg_path = root / "idp-bridge.toml"
    subprocess.run([*CLI, "--config", str(cfg_path), "init", "--base-url", dep.base_url,
                    *(["--algorithm", algorithm] if algorithm != "init" else [])],
                   env=dep.env, check=True, capture_output=True, cwd=root)
    raw = read_raw_config(cfg_path)
    sp_dir = root / "sps"
    sp_dir.mkdir()
    sps: list[dict[str, Any]] = []
    for i in range(n_sps):
        path = sp_dir / f"sp{i:04d}.xml"
        path.write_bytes(build_sp_metadata(entity_id=sp_entity_id(i), acs_url=sp_acs(i), certificate=sp_key.cert))
        sps.append({"name": f"sp{i:04d}", "site": "cn", "metadata": str(path), "x_account_type": f"bench-{i}",
                    "console_hosts": ["console.huaweicloud.com"]})
    raw["sp"] = sps
    raw.setdefault("huawei", {})["partner_id"] = "bp-bench"
    if os.environ.get("BENCH_KEY_RELOAD_SECONDS"):  # debugging aid only; measurements use the defaults
        raw.setdefault("keys", {})["reload_seconds"] = float(os.environ["BENCH_KEY_RELOAD_SECONDS"])
    write_raw_config(cfg_path, raw)
    store = Store.from_url(db_url)
    try:
        if not store.is_migrated():
            store.upgrade()
        dep.tokens = [create_session(store, i) for i in range(sessions)]
    finally:
        store.dispose()
    return dep


def customer_data(i: int) -> dict[str, Any]:
    return {"user_id": f"cust-{i:06d}", "account_id": f"acct-{i:06d}", "email": f"c{i}@example.com",
            "name": f"Customer {i}", "mobile": "0086-13800000000", "bound": None}


def create_session(store: Store, i: int) -> str:
    """A session exactly as ``web.auth.log_in`` leaves it (made directly: argon2 per user would take minutes)."""
    now = dt.datetime.now(dt.UTC)
    customer = customer_data(i)
    data = {"customer": customer, "user_id": customer["user_id"], "authn_instant": now.isoformat(),
            "session_index": "_" + secrets.token_hex(16), "login_method": "local",
            "csrf": secrets.token_urlsafe(32)}
    kwargs: dict[str, Any] = {"user_id": customer["user_id"], "now": now, "ttl": dt.timedelta(hours=8)}
    return store.sessions.create(data, **kwargs)


def fill(db_url: str, rows: int) -> None:
    """``rows`` live rows each in replay_ids, sessions and audit_events (the "a million rows" acceptance)."""
    store = Store.from_url(db_url)
    try:
        with store.engine.begin() as conn:
            if store.dialect == "postgresql":
                series = f"generate_series(1, {rows}) AS g(x)"
                conn.execute(text(
                    "INSERT INTO replay_ids (kind, value, issuer, claimed_at, expires_at) "
                    f"SELECT 'authn_request', 'fill-' || x, 'https://filler.example/', now(), "
                    f"now() + interval '1 day' FROM {series}"))
                conn.execute(text(
                    "INSERT INTO sessions (id, data, user_id, created_at, expires_at) "
                    "SELECT md5('s' || x) || md5('t' || x), "
                    "('{\"user_id\": \"fill-' || x || '\", \"csrf\": \"' || md5(x::text) || '\"}')::json, "
                    f"'fill-' || x, now(), now() + interval '1 day' FROM {series}"))
                conn.execute(text(
                    "INSERT INTO audit_events (at, event, outcome, reason_code, correlation_id, sp, customer, detail) "
                    "SELECT now() - interval '1 hour', 'login', 'ok', NULL, md5(x::text), 'sp0000', "
                    "'fill-' || x, '{\"request_id\": \"_fill\"}'::json "
                    f"FROM {series}"))
            else:
                series = (f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) ")
                future = "strftime('%Y-%m-%d %H:%M:%f000', 'now', '+1 day')"
                now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
                conn.execute(text(
                    f"INSERT INTO replay_ids (kind, value, issuer, claimed_at, expires_at) {series}"
                    f"SELECT 'authn_request', 'fill-' || x, 'https://filler.example/', {now}, {future} FROM c"))
                conn.execute(text(
                    f"INSERT INTO sessions (id, data, user_id, created_at, expires_at) {series}"
                    "SELECT printf('%064x', x), json_object('user_id', 'fill-' || x, 'csrf', hex(randomblob(16))), "
                    f"'fill-' || x, {now}, {future} FROM c"))
                conn.execute(text(
                    "INSERT INTO audit_events (at, event, outcome, reason_code, correlation_id, sp, customer, detail) "
                    f"{series}SELECT {now}, 'login', 'ok', NULL, hex(randomblob(8)), 'sp0000', 'fill-' || x, "
                    "json_object('request_id', '_fill') FROM c"))
    finally:
        store.dispose()


def signed_paths(*, sso_url: str, issuer: str, acs_url: str, sp_key: SpKey, cookies: list[str],
                 count: int, now: dt.datetime | None = None) -> tuple[list[str], set[str]]:
    """``count`` lines "PATH<TAB>COOKIE", each a fresh signed AuthnRequest, cookies rotated; and the IDs."""
    now = now or dt.datetime.now(dt.UTC)
    signer = sp_key.signer
    prefix = sso_url.split("/saml/", 1)[0]
    lines, ids = [], set()
    for n in range(count):
        request_id = "_b" + secrets.token_hex(16)
        xml = build_authn_request(issuer=issuer, destination=sso_url, acs_url=acs_url, now=now,
                                  request_id=request_id)
        url = encode_redirect(xml, endpoint=sso_url, relay_state=f"r{n}", signer=signer)
        lines.append(url.removeprefix(prefix) + "\t" + cookies[n % len(cookies)])
        ids.add(request_id)
    return lines, ids


def write_pysaml2_dir(work: Path, *, key_file: Path, cert_file: Path, sp_key: SpKey, sessions: int) -> None:
    """pysaml2's files: the bridge's key pair (PKCS#8, as pysaml2 reads it), SP metadata, users by cookie."""
    work.mkdir(parents=True)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    (work / "idp.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (work / "idp.crt").write_bytes(cert_file.read_bytes())
    (work / "sp.xml").write_bytes(build_sp_metadata(entity_id=sp_entity_id(0), acs_url=sp_acs(0),
                                                    certificate=sp_key.cert))
    users = {}
    for i in range(sessions):
        c = customer_data(i)
        users[f"py{i:06d}"] = {"xUserId": [c["user_id"]], "xAccountId": [c["account_id"]], "bpId": ["bp-bench"],
                               "email": [c["email"]], "name": [c["name"]], "mobile": [c["mobile"]]}
    (work / "users.json").write_text(json.dumps(users))
