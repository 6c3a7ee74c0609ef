"""`idp-bridge check`'s TLS report on the public URL (issue 12.7) against real TLS servers (the standard
library's, with certificates from a test CA; nginx itself is in tests/test_serving_https.py): a good
certificate passes; an expired one, one for another name, one from an unknown CA and a server still
accepting TLS 1.1 each fail with the reason; an unreachable or plain-http URL is skipped, not failed."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from idp_bridge.diagnostics.report import Report
from idp_bridge.diagnostics.tls import check_public_tls, hostname_matches
from tests.serving_helpers import TestCA

NOW = dt.datetime.now(dt.UTC)
pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")  # the 1.1 server


@contextmanager
def tls_server(chain: Path, key: Path, *, max_version: ssl.TLSVersion | None = None) -> Iterator[int]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    if max_version is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, max_version
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestCA:
    ca = TestCA.create()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.write_ca(tmp_path / "ca.pem")))  # the only trusted root
    return ca


def tls_rows(base_url: str) -> dict[str, tuple[str, str]]:
    report = Report("t")
    check_public_tls(report, base_url, NOW)
    return {i.name: (i.status, i.detail) for i in report.items if i.group == "TLS"}


def test_a_good_certificate_passes(tmp_path: Path, ca: TestCA) -> None:
    with tls_server(*ca.issue(tmp_path / "good", ["localhost"])) as port:
        rows = tls_rows(f"https://localhost:{port}")
    assert rows["protocol TLS 1.2+"][0] == "pass" and "TLSv1.3" in rows["protocol TLS 1.2+"][1]
    assert rows["certificate valid"][0] == "pass" and "days left" in rows["certificate valid"][1]
    assert rows["certificate hostname"] == ("pass", "localhost is in the certificate's names (localhost)")
    assert rows["TLS 1.0/1.1 refused"][0] in ("pass", "skip")


def test_an_expired_certificate_fails(tmp_path: Path, ca: TestCA) -> None:
    old = ca.issue(tmp_path / "old", ["localhost"], not_before=NOW - dt.timedelta(days=20), days=10)
    with tls_server(*old) as port:
        rows = tls_rows(f"https://localhost:{port}")
    assert rows["certificate valid"][0] == "fail" and rows["certificate valid"][1].startswith("expired on ")
    assert rows["certificate hostname"][0] == "pass"
    assert rows["protocol TLS 1.2+"][0] == "pass"


def test_a_certificate_for_another_name_fails(tmp_path: Path, ca: TestCA) -> None:
    with tls_server(*ca.issue(tmp_path / "other", ["sso.other.example"])) as port:
        rows = tls_rows(f"https://localhost:{port}")
    assert rows["certificate hostname"] == ("fail", "localhost is not among the certificate's names "
                                                    "(sso.other.example)")
    assert rows["certificate valid"][0] == "pass"  # the chain and dates are fine: only the name is wrong


def test_a_certificate_from_an_unknown_ca_fails(tmp_path: Path, ca: TestCA) -> None:
    stranger = TestCA.create()
    with tls_server(*stranger.issue(tmp_path / "stranger", ["localhost"])) as port:
        rows = tls_rows(f"https://localhost:{port}")
    status, detail = rows["certificate valid"]
    assert status == "fail" and detail.startswith("not trusted: ") and ("issuer" in detail or "self-signed" in detail)


def test_a_server_accepting_tls_1_1_fails(tmp_path: Path, ca: TestCA) -> None:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.set_ciphers("DEFAULT:@SECLEVEL=0")
        probe.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all")
    with tls_server(*ca.issue(tmp_path / "legacy", ["localhost"]), max_version=ssl.TLSVersion.TLSv1_1) as port:
        rows = tls_rows(f"https://localhost:{port}")
    if rows["TLS 1.0/1.1 refused"][0] == "skip":
        pytest.skip(rows["TLS 1.0/1.1 refused"][1])
    assert rows["protocol TLS 1.2+"][0] == "fail", rows
    assert rows["TLS 1.0/1.1 refused"] == ("fail", "the server still accepts TLSv1.1")


def test_unreachable_and_plain_http_are_skipped() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    assert tls_rows(f"https://localhost:{port}")["public URL TLS"][0] == "skip"
    assert tls_rows("http://127.0.0.1:8000")["public URL TLS"][0] == "skip"


@pytest.mark.parametrize(("host", "names", "ok"), [
    ("sso.partner.example", ("sso.partner.example",), True),
    ("SSO.Partner.Example.", ("sso.partner.example",), True),
    ("sso.partner.example", ("*.partner.example",), True),
    ("a.sso.partner.example", ("*.partner.example",), False),
    ("partner.example", ("*.partner.example",), False),
    ("sso.partner.example", ("*.example",), False),
    ("127.0.0.1", ("127.0.0.1",), True),
    ("127.0.0.1", ("localhost",), False),
])
def test_hostname_matching(host: str, names: tuple[str, ...], ok: bool) -> None:
    assert hostname_matches(host, names) is ok
