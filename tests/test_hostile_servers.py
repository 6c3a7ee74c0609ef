"""Hostile raw HTTP at real servers: `idp-bridge serve` and gunicorn with two workers, on the configured
database. Every request (bytes no HTTP library would send: NUL, bad UTF-8, bad chunking, forged
X-Forwarded-For, deep JSON, huge headers) is refused with a 4xx, redirects nowhere, logs no error; the honest
SSO round trip passes on the same server afterwards."""

from __future__ import annotations

import base64
import re
import socket
from pathlib import Path

import pytest

from idp_bridge.config import read_raw_config, write_raw_config
from tests.servers import ServerProcess, free_port, gunicorn_cmd, idp_bridge_cmd, wait_http
from tests.test_server_journey import _env_with_user, sso_round_trip

pytestmark = pytest.mark.slow


def _b64(text: str) -> bytes:
    return base64.b64encode(text.encode()).replace(b"+", b"%2B").replace(b"/", b"%2F").replace(b"=", b"%3D")


def _get(target: bytes, headers: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers + b"\r\n"


def _post(target: bytes, body: bytes, ctype: bytes = b"application/x-www-form-urlencoded") -> bytes:
    return (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


_DEEP = _b64("[" * 5000 + "]" * 5000)
_JWT_DEEP = base64.urlsafe_b64encode(("[" * 1500 + "]" * 1500).encode()).rstrip(b"=")
HOSTILE: dict[str, bytes] = {
    "login NUL": _post(b"/login", b"user_id=cust-1001%00&password=x&csrf_token=x"),
    "login raw NUL": _post(b"/login", b"user_id=cu\x00st&password=x"),
    "login long": _post(b"/login", b"user_id=" + b"a" * 5000 + b"&password=x"),
    "login bad UTF-8": _post(b"/login", b"user_id=%ff%fe&password=%c3"),
    "login escape": _post(b"/login", b"user_id=%1b%5b2J&password=x"),
    "login file": _post(b"/login", b'--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nxx\r\n--b--\r\n',
                        b"multipart/form-data; boundary=b"),
    "login many fields": _post(b"/login", b"&".join(b"f%d=1" % i for i in range(2000))),
    "login query NUL": _get(b"/login?user_id=%00"),
    "login off-site next": _get(b"/login?next=https://evil.example/"),
    "home smuggled parameter": _get(b"/?continue=//evil.example"),
    "logout NUL": _post(b"/logout", b"csrf_token=%00"),
    "sso NUL": _get(b"/saml/sso?SAMLRequest=%00%00"),
    "sso 8-bit": _get(b"/saml/sso?SAMLRequest=\xff\xfe"),
    "sso RelayState NUL": _get(b"/saml/sso?SAMLRequest=abc&RelayState=%00"),
    "sso empty": _get(b"/saml/sso"),
    "continue": _get(b"/saml/continue"),
    "metadata sp NUL": _get(b"/saml/metadata?sp=%00"),
    "forged X-Forwarded-For": _get(b"/saml/metadata", b"X-Forwarded-For: " + b"x" * 300 + b"\r\n"),
    "long User-Agent": _get(b"/saml/metadata", b"User-Agent: " + b"M" * 2000 + b"\r\n"),
    "go NUL": _get(b"/go?sp=%00"),
    "go off-site service": _get(b"/go?sp=huawei-cn&service=https://evil.example/"),
    "go javascript": _get(b"/go?service=javascript:alert(1)"),
    "handoff deep JWT": _get(b"/handoff?token=" + _JWT_DEEP + b"." + _JWT_DEEP + b".x"),
    "handoff off-site next": _get(b"/handoff?next=//evil.example&token=x.y.z"),
    "handoff empty": _get(b"/handoff"),
    "bind deep JSON": _post(b"/huawei/bind", b"bindRequest=" + _DEEP + b"&SigAlg=x&Signature=AA%3D%3D"),
    "bind NUL in JSON": _post(b"/huawei/bind", b"bindRequest=" + _b64('{"xUserId":"a\\u0000"}') + b"&Signature=AA%3D%3D"),
    "bind NaN": _post(b"/huawei/bind", b"bindRequest=" + _b64('{"xUserId":NaN}') + b"&Signature=AA%3D%3D"),
    "bind empty": _post(b"/huawei/bind", b""),
    "bind too big": _post(b"/huawei/bind", b"bindRequest=" + b"A" * (2 * 1024 * 1024)),
    "return NUL": _get(b"/huawei/return?orderId=%00"),
    "console NUL": _post(b"/_bridge/login", b"password=%00"),
    "console preview NUL": _get(b"/_bridge/preview?user_id=%00"),
    "console test-login NUL": _post(b"/_bridge/test-login", b"user_id=%00&site=cn"),
    "traversal": _get(b"/static/../../etc/passwd"),
    "encoded traversal": _get(b"/static/..%2f..%2fetc%2fpasswd"),
    "NUL path": _get(b"/%00"),
    "unknown method": b"FOO / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "TLS at plain HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "bad Host": _get(b"/login").replace(b"Host: 127.0.0.1", b"Host: a b<>"),
    "huge header": _get(b"/", b"X-Junk: " + b"j" * 20000 + b"\r\n"),
    "long URL": _get(b"/login?x=" + b"a" * 20000),
    "bad chunking": b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: "
                    b"application/x-www-form-urlencoded\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "short body": b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\nContent-Type: "
                  b"application/x-www-form-urlencoded\r\nConnection: close\r\n\r\nuser_id=a",
    "forged session cookie": _get(b"/", b"Cookie: idpb_session=" + b"a" * 5000 + b"\r\n"),
    "control in cookie": _get(b"/", b"Cookie: idpb_session=\x01\x02\r\n"),
}


def _send(port: int, request: bytes) -> bytes:
    """The server's whole answer. A server may answer an oversize request (413) and close before it has read
    all of it: then the shutdown or a late read fails, and what arrived until then is the answer."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # closed by the server already (ENOTCONN, EPIPE, ECONNRESET)
            pass
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _attack(port: int) -> dict[str, str]:
    """name -> what was wrong, for every hostile request not refused cleanly."""
    wrong: dict[str, str] = {}
    for name, request in HOSTILE.items():
        answer = _send(port, request).decode("latin-1")
        status_line, *headers = answer.split("\r\n\r\n", 1)[0].split("\r\n")
        parts = status_line.split()
        status = int(parts[1]) if status_line.startswith("HTTP/") and len(parts) > 1 else 0
        if not status and (m := re.search(r"Error code: (\d{3})", answer)):  # http.server's HTTP/0.9-style answer
            status, headers = int(m.group(1)), []
        if not 400 <= status < 500:
            wrong[name] = status_line or "(no answer)"
        if any(h.lower().startswith("location:") for h in headers):
            wrong[name] = "redirected: " + status_line
        if any(h.lower().startswith("set-cookie:") and "idpb_session=" in h and "Max-Age=0" not in h
               and "expires=Thu, 01 Jan 1970" not in h for h in headers):
            wrong[name] = "set a session cookie"
    return wrong


def _hostile_env(tmp_path: Path, db_url: str, port: int):  # type: ignore[no-untyped-def]
    env = _env_with_user(tmp_path, db_url, port)
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["bridge"]["trust_forwarded_headers"] = True
    raw["debug"] = {"enabled": True, "password": "operator-password-for-tests"}
    raw["platform"] = {"handoff_secret": "hand-off-shared-secret-" + "x" * 24,
                       "return_url": "https://shop.example/orders"}
    write_raw_config(env.config.path, raw)
    return env


@pytest.mark.parametrize("server", ["serve", "gunicorn"])
def test_hostile_requests_refused_by_real_servers(tmp_path: Path, db_url: str, server: str) -> None:
    port = free_port()
    env = _hostile_env(tmp_path, db_url, port)
    cmd = (idp_bridge_cmd("--config", str(env.config.path), "serve", "--port", str(port)) if server == "serve"
           else gunicorn_cmd(port))
    with ServerProcess(cmd, env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc.proc)
        assert _attack(port) == {}
        sso_round_trip(env, f"http://127.0.0.1:{port}", f"_after-attack-{server}")  # the honest trip still works
        output = proc.stop()
    assert '"event": "error"' not in output and "Internal Server Error" not in output, output[-4000:]
