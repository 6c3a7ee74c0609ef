"""`idp-bridge check` against a table of broken deployments: each gives the right ✗ and fix; a clean one passes."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.server
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from sqlalchemy import text
from werkzeug.serving import make_server

from idp_bridge.cli import main
from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.devtools.simulator import SimulatorConfig, create_simulator_app
from idp_bridge.diagnostics.check import check_deployment, default_fetch
from idp_bridge.diagnostics.http import HttpResult
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.keys.files import generate_key, self_signed_certificate, write_pair
from idp_bridge.saml.metadata import build_sp_metadata
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.journey import SP_ENTITY_ID, Env, make_env
from tests.pki import make_key

Fetch = Callable[[str, str], HttpResult]


def app_fetch(env: Env) -> Fetch:
    """Our running bridge, reached through Flask's test client (no socket needed); other URLs over the network."""
    app = create_app(env.config.path)
    client = app.test_client()
    base = env.config.base_url

    def fetch(method: str, url: str) -> HttpResult:
        if not url.startswith(base):
            return default_fetch(method, url)
        resp = client.open(url[len(base):], method=method)
        from email.message import Message

        headers = Message()
        for k, v in resp.headers.items():
            headers[k] = v
        return HttpResult(url, resp.status_code, headers, resp.get_data())

    return fetch


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    e = make_env(tmp_path / "bridge", db_url)
    store = Store.from_url(db_url)
    IdentityProvider(e.config, store).export_metadata()
    store.dispose()
    return e


def edit_config(env: Env, change: Callable[[dict[str, Any]], None]) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    change(raw)
    write_raw_config(env.config.path, raw)


def run(env: Env, fetch: Fetch, environ: dict[str, str] | None = None) -> Any:
    return check_deployment(env.config.path, environ=environ or {}, fetch=fetch)


def only_key(env: Env) -> tuple[Path, Path]:
    (key_path,) = env.config.key_dir.glob("*.key")
    return key_path, key_path.with_suffix(".crt")


def sp_metadata_path(env: Env) -> Path:
    return Path(env.config.service_providers[0].metadata)


def test_clean_deployment_passes(env: Env) -> None:
    report = run(env, app_fetch(env))
    assert report.ok, report.render()
    names = {(i.group, i.name) for i in report.items}
    assert ("database", "database migrated") in names
    assert ("our metadata", "schema-valid") in names
    assert ("our metadata", "sample Response verifies") in names
    assert ("SP huawei-cn (cn)", "ACS is https") in names


# -- the broken deployments --------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a breaker may need: a second, empty database; servers it starts (stopped after the test);
    URL paths of the bridge it re-routes to such a server (a misconfigured proxy in front of the bridge)."""

    empty_db_url: str
    stack: contextlib.ExitStack
    routes: dict[str, str] = field(default_factory=dict)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's (status, headers, body); its Date header is skewed."""

    server: _Server

    def _answer(self) -> None:
        status, headers, body = self.server.answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_OPTIONS = do_HEAD = _answer

    def date_time_string(self, timestamp: float | None = None) -> str:
        return email.utils.format_datetime(dt.datetime.now(dt.UTC) + self.server.skew, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    answer: tuple[int, dict[str, str], bytes]
    skew: dt.timedelta


@contextlib.contextmanager
def serving(status: int, body: bytes = b"", headers: dict[str, str] | None = None, *,
            skew: dt.timedelta = dt.timedelta(0)) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that gives one fixed answer; yields its base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.answer, server.skew = (status, headers or {}, body), skew
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def break_entity_id(env: Env, ctx: Ctx) -> dict[str, str] | None:
    edit_config(env, lambda raw: raw["bridge"].__setitem__("entity_id", "https://other.example/idp"))
    return None


def break_expired_certificate(env: Env, ctx: Ctx) -> dict[str, str] | None:
    key_path, cert_path = only_key(env)
    key_path.unlink()
    cert_path.unlink()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    write_pair(env.config.key_dir, private, self_signed_certificate(private, common_name="old", days=30, now=past))
    return None


def break_world_readable_key(env: Env, ctx: Ctx) -> dict[str, str] | None:
    os.chmod(only_key(env)[0], 0o644)
    return None


def break_truncated_active_key(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """The running bridge verified the key (and kept its copy); then the file was cut short."""
    key_path = only_key(env)[0]
    key_path.write_bytes(key_path.read_bytes()[:300])
    return None


def break_http_base_url(env: Env, ctx: Ctx) -> dict[str, str] | None:
    edit_config(env, lambda raw: raw["bridge"].__setitem__("base_url", "http://sso.partner.example"))
    return None


def _sp_metadata_without(env: Env, drop: str) -> None:
    key = make_key("huawei-sp-again")
    xml = build_sp_metadata(entity_id=SP_ENTITY_ID, acs_url="https://auth.huaweicloud.com/authui/saml/"
                            "SAMLAssertionConsumer", certificate=key.certificate)
    root = etree.fromstring(xml)
    for el in root.iter("{urn:oasis:names:tc:SAML:2.0:metadata}" + drop):
        el.getparent().remove(el)
    sp_metadata_path(env).write_bytes(etree.tostring(root))


def break_sp_without_signing_certificate(env: Env, ctx: Ctx) -> dict[str, str] | None:
    _sp_metadata_without(env, "KeyDescriptor")
    return None


def break_sp_acs_http(env: Env, ctx: Ctx) -> dict[str, str] | None:
    key = make_key("huawei-sp-http")
    sp_metadata_path(env).write_bytes(build_sp_metadata(
        entity_id=SP_ENTITY_ID, acs_url="http://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer",
        certificate=key.certificate))
    return None


def break_sp_metadata_expired(env: Env, ctx: Ctx) -> dict[str, str] | None:
    path = sp_metadata_path(env)
    root = etree.fromstring(path.read_bytes())
    root.set("validUntil", "2020-01-01T00:00:00Z")
    path.write_bytes(etree.tostring(root))
    return None


def break_sp_certificate_expired(env: Env, ctx: Ctx) -> dict[str, str] | None:
    key = make_key("huawei-sp-expired")
    private = key.private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    old = self_signed_certificate(private, common_name="huawei old", days=10,
                                  now=dt.datetime.now(dt.UTC) - dt.timedelta(days=100))
    sp_metadata_path(env).write_bytes(build_sp_metadata(
        entity_id=SP_ENTITY_ID, acs_url="https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer",
        certificate=old))
    return None


def break_key_certificate_mismatch(env: Env, ctx: Ctx) -> dict[str, str] | None:
    _, cert_path = only_key(env)
    other = make_key("someone-else")
    from cryptography.hazmat.primitives import serialization

    cert_path.write_bytes(other.certificate.public_bytes(serialization.Encoding.PEM))
    return None


def break_exported_file_missing(env: Env, ctx: Ctx) -> dict[str, str] | None:
    env.config.metadata_file.unlink()
    return None


def break_unmigrated_database(env: Env, ctx: Ctx) -> dict[str, str] | None:
    return {"IDP_BRIDGE_DATABASE_URL": ctx.empty_db_url}


def break_config_invalid(env: Env, ctx: Ctx) -> dict[str, str] | None:
    edit_config(env, lambda raw: raw["bridge"].__setitem__("secret_key", "short"))
    return None


def break_clock_offset(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """The SP metadata by URL, from a server whose clock (its Date header) is 10 minutes ahead of ours."""
    url = ctx.stack.enter_context(serving(200, sp_metadata_path(env).read_bytes(),
                                          {"Content-Type": "application/samlmetadata+xml"},
                                          skew=dt.timedelta(minutes=10)))
    edit_config(env, lambda raw: raw["sp"][0].__setitem__("metadata", url + "/authui/saml/metadata.xml"))
    return None


def _route_sso(ctx: Ctx, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
    ctx.routes["/saml/sso"] = ctx.stack.enter_context(serving(status, body, headers))


def break_sso_redirects(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """A proxy that sends /saml/sso elsewhere (e.g. to a company login wall)."""
    _route_sso(ctx, 302, {"Location": "https://login.partner.example/wall"})
    return None


def break_sso_proxy_placeholder(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """The proxy answers 200 with its own page: no X-Correlation-Id, so not the bridge."""
    _route_sso(ctx, 200, {"Allow": "GET, HEAD, OPTIONS", "Content-Type": "text/html"}, b"<h1>It works!</h1>")
    return None


def break_sso_not_found(env: Env, ctx: Ctx) -> dict[str, str] | None:
    _route_sso(ctx, 404, {"Content-Type": "text/html"}, b"not found")
    return None


def break_sso_bad_gateway(env: Env, ctx: Ctx) -> dict[str, str] | None:
    _route_sso(ctx, 502, {"Content-Type": "text/html"}, b"bad gateway")
    return None


def break_no_active_key_two_unrecorded_pairs(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """A second pair copied into key_dir by hand (not `keys new`): the bridge records its first key as active at
    start-up, so the copy is a stray the key ring never uses — check names it."""
    generate_key(env.config.key_dir, common_name="copied-in", algorithm="rsa-2048", days=365)
    return None


def break_only_key_recorded_as_next(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """The database says the only key is `next`: nothing signs."""
    store = Store.from_url(env.config.database_url)
    try:
        # by hand, as a bad restore or a manual edit would leave it (the commands never allow this)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE key_states SET state = 'next' WHERE key_id = :kid"),
                         {"kid": only_key(env)[0].stem})
    finally:
        store.dispose()
    return None


def break_rsa_1024(env: Env, ctx: Ctx) -> dict[str, str] | None:
    key_path, cert_path = only_key(env)
    key_path.unlink()
    cert_path.unlink()
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the broken case
    write_pair(env.config.key_dir, private, self_signed_certificate(private, common_name="weak", days=365))
    return None


def break_exported_file_with_private_key(env: Env, ctx: Ctx) -> dict[str, str] | None:
    """An operator pasted the signing key (generated at test time) into the exported file before uploading it."""
    path = env.config.metadata_file
    pem = only_key(env)[0].read_text()
    path.write_bytes(path.read_bytes() + f"<!-- {pem} -->\n".encode())
    return None


def break_exported_file_over_2mb(env: Env, ctx: Ctx) -> dict[str, str] | None:
    path = env.config.metadata_file
    path.write_bytes(path.read_bytes() + b"<!-- " + b"x" * (2 * 1024 * 1024) + b" -->\n")
    return None


def break_empty_x_account_type(env: Env, ctx: Ctx) -> dict[str, str] | None:
    edit_config(env, lambda raw: raw["sp"][0].__setitem__("x_account_type", "  "))
    return None


SP = "SP huawei-cn (cn)"
CASES: list[tuple[str, Callable[..., dict[str, str] | None], str, str, str, str]] = [
    # (case, breaker, group, item, words the fix must contain, words the detail/expected/actual must contain)
    ("wrong entity ID", break_entity_id, "our metadata", "entity ID in exported file", "metadata export",
     "https://other.example/idp"),
    ("bridge still serving the old entity ID", break_entity_id, "our metadata", "served metadata is current",
     "restart the stale node", "differs"),
    ("expired certificate", break_expired_certificate, "keys", "{kid} expiry", "idp-bridge keys new", "valid until"),
    ("world-readable key", break_world_readable_key, "keys", "{kid} permissions", "chmod 600", "0644"),
    ("active key file truncated", break_truncated_active_key, "keys", "active key file loads", "last verified copy",
     "cannot be read as PEM"),
    ("http base URL", break_http_base_url, "config", "base URL is https", "https://", "http://sso.partner.example"),
    ("SP metadata without signing certificate", break_sp_without_signing_certificate, SP,
     "signing certificate present", "complete metadata", "no KeyDescriptor"),
    ("SP ACS over http", break_sp_acs_http, SP, "ACS is https", "https", "http://auth.huaweicloud.com"),
    ("SP metadata expired", break_sp_metadata_expired, SP, "metadata not expired", "fresh SP metadata", "2020-01-01"),
    ("SP certificate expired", break_sp_certificate_expired, SP, "signing certificate {spfp} valid",
     "current SP metadata", ""),
    ("key and certificate do not match", break_key_certificate_mismatch, "keys", "{kid} key matches certificate",
     "matching private key", ""),
    ("exported metadata missing", break_exported_file_missing, "our metadata", "exported metadata file",
     "idp-bridge metadata export", "does not exist"),
    ("unmigrated database", break_unmigrated_database, "database", "database migrated", "idp-bridge db upgrade",
     "revision none"),
    ("config invalid", break_config_invalid, "config", "config valid", "correct the config file", "secret_key"),
    ("clock 10 minutes off the SP's Date header", break_clock_offset, SP, "clock offset", "NTP", "within ±60 s"),
    ("SSO URL redirects elsewhere", break_sso_redirects, "our metadata", "SSO URL answering",
     "URL that answers itself", "redirects to https://login.partner.example/wall"),
    ("SSO URL answered by the proxy, not the bridge", break_sso_proxy_placeholder, "our metadata",
     "SSO URL answering", "straight to the bridge", "not the bridge's answer"),
    ("SSO URL not found", break_sso_not_found, "our metadata", "SSO URL answering", "straight to the bridge",
     "HTTP 404"),
    ("SSO URL bad gateway", break_sso_bad_gateway, "our metadata", "SSO URL answering", "read the bridge log",
     "HTTP 502"),
    ("a second pair copied in without `keys new`", break_no_active_key_two_unrecorded_pairs, "keys",
     "every key file recorded", "idp-bridge keys import", "not in the key ring"),
    ("only key recorded as next", break_only_key_recorded_as_next, "keys", "key states", "idp-bridge keys activate",
     "active now: none"),
    ("RSA-1024 key", break_rsa_1024, "keys", "{kid} size", "RSA-2048 or more", "RSA-1024"),
    ("exported file carries a private key", break_exported_file_with_private_key, "our metadata",
     "no secrets in exported file", "treat the key as exposed", "PRIVATE KEY"),
    ("exported file over 2 MB", break_exported_file_over_2mb, "our metadata", "exported file under 2 MB",
     "refuses metadata above 2 MB", "bytes"),
    ("empty xAccountType (refused by config validation)", break_empty_x_account_type, "config", "config valid",
     "correct the config file", "x_account_type: empty"),
]


def routed(env: Env, fetch: Fetch, routes: dict[str, str]) -> Fetch:
    """``fetch``, except that the bridge's paths in ``routes`` are answered over HTTP by another server."""
    base = env.config.base_url

    def go(method: str, url: str) -> HttpResult:
        path = url[len(base):] if url.startswith(base) else None
        if path in routes:
            return default_fetch(method, routes[path] + path)
        return fetch(method, url)

    return go


@pytest.mark.parametrize(("case", "breaker", "group", "item", "fix_words", "detail_words"), CASES, ids=[c[0] for c in CASES])
def test_broken_deployment_gives_the_right_failure_and_fix(env: Env, empty_db_url: str, case: str,
                                                           breaker: Callable[..., dict[str, str] | None],
                                                           group: str, item: str, fix_words: str,
                                                           detail_words: str) -> None:
    fetch = app_fetch(env)  # the bridge as it was started, before the breakage
    with contextlib.ExitStack() as stack:
        ctx = Ctx(empty_db_url, stack)
        environ = breaker(env, ctx)
        report = run(env, routed(env, fetch, ctx.routes), environ)
    assert not report.ok, report.render()
    if "{kid}" in item:
        item = item.format(kid=only_key(env)[0].stem)
    if "{spfp}" in item:
        failed = [i for i in report.failed if i.group == group and i.name.startswith("signing certificate ")]
        assert failed, report.render()
        item = failed[0].name
    found = report.item(group, item)
    assert found.status == "fail", report.render()
    assert fix_words in found.fix, found
    assert detail_words in " | ".join((found.detail, found.expected, found.actual)), found


def test_unmigrated_database_is_not_migrated_by_check(env: Env, empty_db_url: str) -> None:
    run(env, app_fetch(env), {"IDP_BRIDGE_DATABASE_URL": empty_db_url})
    store = Store.from_url(empty_db_url)
    try:
        assert not store.is_migrated()
    finally:
        store.dispose()


def test_unreachable_bridge_fails_served_metadata_and_sso(env: Env) -> None:
    def nothing(method: str, url: str) -> HttpResult:
        raise OSError("connection refused")

    report = run(env, nothing)
    assert report.item("our metadata", "served metadata").status == "fail"
    assert report.item("our metadata", "SSO URL answering").status == "fail"
    assert "start the bridge" in report.item("our metadata", "SSO URL answering").fix


def test_cli_check_json_and_exit_status(env: Env) -> None:
    runner = CliRunner()
    edit_config(env, lambda raw: raw["bridge"].__setitem__("base_url", "http://sso.partner.example"))
    result = runner.invoke(main, ["--config", str(env.config.path), "check", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["ok"] is False
    failed = {i["name"] for i in data["items"] if i["status"] == "fail"}
    assert "base URL is https" in failed
    assert all(i["fix"] for i in data["items"] if i["status"] == "fail")
    text = runner.invoke(main, ["--config", str(env.config.path), "check"])
    assert "✗ base URL is https" in text.output and "fix:" in text.output


def test_cli_check_passes_on_clean_deployment_with_running_bridge(tmp_path: Path, db_url: str) -> None:
    from tests.servers import free_port

    port = free_port()
    e = make_env(tmp_path / "b", db_url, base_url=f"http://127.0.0.1:{port}")
    store = Store.from_url(db_url)
    IdentityProvider(e.config, store).export_metadata()
    store.dispose()
    server = make_server("127.0.0.1", port, create_app(load_config(e.config.path, environ={})), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = CliRunner().invoke(main, ["--config", str(e.config.path), "check"])
    finally:
        server.shutdown()
        thread.join(5)
    assert result.exit_code == 0, result.output
    assert "✗" not in result.output


def test_sp_metadata_by_url_for_all_three_sites_with_clock_offset(env: Env) -> None:
    """`sp add --metadata URL` against simulators of cn, intl and eu; check reads each URL and its Date header."""
    running = []
    try:
        for site_name in ("cn", "intl", "eu"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            sim = SimulatorConfig.generate(f"http://127.0.0.1:{port}", site=site_name)
            server = make_server("127.0.0.1", port, create_simulator_app(sim), threaded=True)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            running.append((server, thread))
            result = CliRunner().invoke(main, ["--config", str(env.config.path), "sp", "add", f"sim-{site_name}",
                                               "--metadata", sim.metadata_url, "--site", site_name,
                                               "--x-account-type", f"x-{site_name}", "--login-url", sim.login_url])
            assert result.exit_code == 0, result.output
        store = Store.from_url(env.config.database_url)
        IdentityProvider(load_config(env.config.path, environ={}), store).export_metadata()
        store.dispose()
        report = run(env, app_fetch(env))
    finally:
        for server, thread in running:
            server.shutdown()
            thread.join(5)
    assert report.ok, report.render()
    for site_name in ("cn", "intl", "eu"):
        group = f"SP sim-{site_name} ({site_name})"
        assert report.item(group, "clock offset").status == "pass"
        assert report.item(group, "metadata loaded").status == "pass"
        assert report.item(group, "ACS is https").status == "pass"  # loopback http allowed while developing
