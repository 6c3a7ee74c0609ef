"""Helpers for the production-serving tests: a test CA and server certificates, Debian's nginx running the
shipped recipe, the shipped gunicorn setup (`idp-bridge serve`), stalled clients, and a bounded load of
real SSO logins. Everything binds 127.0.0.x on free ports; every wait is bounded."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from idp_bridge.deploy import deploy_file
from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, SP_ACS, Env, extract_form, make_env
from tests.servers import ServerProcess, idp_bridge_cmd

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# -- a test CA ------------------------------------------------------------------------------------
@dataclass
class TestCA:
    __test__ = False

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> TestCA:
        key = rsa.generate_private_key(65537, 2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"idp-bridge test CA {os.urandom(4).hex()}")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue(self, folder: Path, names: list[str], *, not_before: dt.datetime | None = None,
              days: int = 10) -> tuple[Path, Path]:
        """A server certificate for ``names`` (DNS names or IP addresses): (fullchain.pem, privkey.pem)."""
        key = ec.generate_private_key(ec.SECP256R1())  # fast handshakes: the tests open many connections
        start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(start)
                .not_valid_after(start + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        chain, priv = folder / "fullchain.pem", folder / "privkey.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                          + self.cert.public_bytes(serialization.Encoding.PEM))
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        priv.chmod(0o600)
        return chain, priv


# -- nginx running the shipped recipe ---------------------------------------------------------------
def render_recipe(*, server_name: str, https_port: int, http_port: int, upstream: str, chain: Path,
                  key: Path) -> str:
    """The shipped recipe with only the site-specific values replaced (each must be found, so a change to
    the recipe that the tests no longer cover fails here). IPv6 listeners are dropped (loopback v4 only)."""
    text = deploy_file("nginx-idp-bridge.conf").read_text()
    replacements = [
        ("server 127.0.0.1:8000;", f"server {upstream};"),
        ("server_name sso.partner.example;", f"server_name {server_name};"),
        ("/etc/ssl/idp-bridge/fullchain.pem", str(chain)),
        ("/etc/ssl/idp-bridge/privkey.pem", str(key)),
        ("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
    ]
    for old, new in replacements:
        assert old in text, f"the nginx recipe no longer contains {old!r}"
        text = text.replace(old, new)
    text = re.sub(r"^\s*listen \[::\].*\n", "", text, flags=re.MULTILINE)
    return text


@contextmanager
def run_nginx(root: Path, site_conf: str, *, https_port: int) -> Iterator[ServerProcess]:
    """Debian's nginx in the foreground with ``site_conf`` as its only site; temp files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "site.conf").write_text(site_conf)
    temp = "\n".join(f"    {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                        "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # root: keep the workers able to use the temp folders
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nerror_log {root / 'error.log'} info;\npid {root / 'nginx.pid'};\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log {root / 'access.log'};\n{temp}\n"
        # as in Debian's stock /etc/nginx/nginx.conf: the recipe must hold against it
        f"    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\n    ssl_prefer_server_ciphers on;\n"
        f"    include {root / 'site.conf'};\n}}\n")
    check = subprocess.run([NGINX, "-t", "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf")],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stderr
    server = ServerProcess([NGINX, "-e", str(root / "error.log"), "-p", str(root), "-c", str(root / "nginx.conf"),
                            "-g", "daemon off;"])
    try:
        wait_tcp("127.0.0.1", https_port, proc=server.proc)
        yield server
    finally:
        server.stop()


def wait_tcp(host: str, port: int, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not accept within {timeout} s")


# -- the bridge ---------------------------------------------------------------------------------------
def bridge_env(root: Path, db_url: str, base_url: str, *, trust_forwarded: bool = False) -> Env:
    from idp_bridge.config import load_config, read_raw_config, write_raw_config

    env = make_env(root, db_url, base_url=base_url)
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["bridge"]["trust_forwarded_headers"] = trust_forwarded
    write_raw_config(env.config.path, raw)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example")
    store.dispose()
    env.config = load_config(env.config.path, environ={})
    return env


def serve_cmd(env: Env, port: int, *extra: str) -> list[str]:
    """The shipped production command: `idp-bridge serve` (gunicorn, shipped config), 2 workers."""
    return idp_bridge_cmd("--config", str(env.config.path), "serve", "--port", str(port), "--workers", "2",
                          *extra)


# -- stalled clients ----------------------------------------------------------------------------------
STALLS = {
    # connects, sends nothing
    "silent": b"",
    # request line and some headers, never the blank line that ends them
    "partial-headers": b"GET /healthz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: stall\r\n",
    # complete headers of a form POST whose body never arrives
    "stalled-body": (b"POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 4096\r\n\r\nuser_id=cust"),
}


@contextmanager
def stalled_clients(host: str, port: int, counts: dict[str, int], *,
                    tls: ssl.SSLContext | None = None, server_name: str | None = None) -> Iterator[list[socket.socket]]:
    """Hold ``counts[kind]`` connections of each ``STALLS`` kind open (optionally over TLS) until the block ends."""
    held: list[socket.socket] = []
    try:
        for kind, n in counts.items():
            for _ in range(n):
                s: socket.socket = socket.create_connection((host, port), timeout=10)
                if tls is not None:
                    s = tls.wrap_socket(s, server_hostname=server_name or host)
                if STALLS[kind]:
                    s.sendall(STALLS[kind].replace(b"{host}", (server_name or host).encode()))
                held.append(s)
        time.sleep(0.5)  # let the server take them in
        yield held
    finally:
        for s in held:
            s.close()


def still_open(sockets: list[socket.socket]) -> int:
    """How many held connections the server has not closed (a closed one reads EOF at once)."""
    alive = 0
    for s in sockets:
        s.setblocking(False)
        try:
            s.recv(1)  # EOF (b"") or an error page: the server has given up on it
        except (BlockingIOError, ssl.SSLWantReadError):
            alive += 1  # nothing to read yet: still held open
        except OSError:
            pass
    return alive


# -- a bounded load of real SSO logins -------------------------------------------------------------
@dataclass
class LoginLoad:
    """Threads doing complete SSO logins (signed AuthnRequest -> sign-in -> our Response) until stopped or
    ``max_logins`` is reached. Every attempt is counted: ok, failed (with why), and each 5xx seen."""

    env: Env
    base: str
    max_logins: int = 2000
    timeout: float = 30.0
    ok: int = 0
    failed: int = 0
    status_5xx: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    verify: str | bool = True

    def _get(self, http: requests.Session, url: str, **kw: object) -> requests.Response:
        resp = http.get(url, timeout=self.timeout, verify=self.verify, **kw)  # type: ignore[arg-type]
        self._note(resp)
        return resp

    def _note(self, resp: requests.Response) -> None:
        if resp.status_code >= 500:
            with self.lock:
                self.status_5xx += 1

    def one_login(self, n: int, worker: int) -> str | None:
        http = requests.Session()  # a fresh browser each time: sign-in, then the Response
        request_id = f"_zd-{worker}-{n}-{os.urandom(4).hex()}"
        query = self.env.redirect_query(self.env.authn_request(request_id=request_id))
        first = self._get(http, self.base + "/saml/sso?" + query, allow_redirects=False)
        if first.status_code != 302:
            return f"/saml/sso: HTTP {first.status_code}"
        page = self._get(http, self.base + "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if not token:
            return f"/login: HTTP {page.status_code}, no CSRF token"
        posted = http.post(self.base + "/login", data={"user_id": "cust-1001", "password": PASSWORD,
                                                       "csrf_token": token.group(1)}, allow_redirects=False,
                           timeout=self.timeout, verify=self.verify)
        self._note(posted)
        if posted.status_code != 302:
            return f"POST /login: HTTP {posted.status_code}"
        page = self._get(http, self.base + "/saml/continue")
        form = extract_form(page.text)
        if page.status_code != 200 or form.get("action") != SP_ACS or "SAMLResponse" not in form:
            return f"/saml/continue: HTTP {page.status_code}, no Response form"
        return None

    def run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set():
            with self.lock:
                if self.ok + self.failed >= self.max_logins:
                    return
            n += 1
            try:
                error = self.one_login(n, worker)
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if error is None:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.failures.append(error[:300])
            if error is not None:
                self.stop.wait(0.2)  # a failing server is retried at a bounded rate

    @contextmanager
    def running(self, threads: int) -> Iterator[LoginLoad]:
        workers = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]
        for t in workers:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in workers:
                t.join(timeout=self.timeout + 5)

    def total(self) -> int:
        with self.lock:
            return self.ok + self.failed


def worker_pids(master_pid: int) -> set[int]:
    """The gunicorn workers of a master (its child processes, from /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{master_pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found |= {int(p) for p in children.read_text().split()}
    return found



# -- gunicorn masters we signal ----------------------------------------------------------------------
class Master:
    """A process group started for these tests (gunicorn via `idp-bridge serve`, maybe handed a listening
    socket the way systemd's socket unit does), with its output drained into ``log`` as it comes."""

    def __init__(self, args: list[str], *, held_socket: socket.socket | None = None) -> None:
        pass_fds: tuple[int, ...] = ()
        if held_socket is not None:  # what systemd does for idp-bridge.socket: fd 3, LISTEN_FDS, LISTEN_PID
            fd = held_socket.fileno()
            pass_fds = (fd,)
            hand_over = ("import os, sys\n"
                         f"if {fd} != 3:\n    os.dup2({fd}, 3)\n    os.close({fd})\n"
                         "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
                         "os.execv(sys.argv[1], sys.argv[1:])\n")
            args = [sys.executable, "-c", hand_over, *args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, pass_fds=pass_fds)
        self.pgid = self.proc.pid
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 90.0) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for m in (re.search(pattern, line) for line in list(self.lines)) if m]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise TimeoutError(f"{count} x {pattern!r} not in the server log within {timeout} s:\n{self.log[-4000:]}")

    def stop_all(self) -> None:
        """TERM the whole group (every master and worker started from here), KILL what outlives 15 s."""
        for sig, wait in ((15, 15.0), (9, 5.0)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and group_alive(self.pgid):
                time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        self._drain.join(timeout=5)


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")
