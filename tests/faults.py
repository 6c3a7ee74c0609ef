"""Fault-test harness: gunicorn with two workers on a free port, sign-ins counted by outcome, and the
worker crashes and audit events read back afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import func, select

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.store import Store
from idp_bridge.store.tables import AuditEventRow
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env, make_env
from tests.servers import free_port, gunicorn_cmd, stop_group, wait_http

USER = "cust-1001"


def fault_env(root: Path, db_url: str, *, port: int, platform: dict[str, Any] | None = None) -> Env:
    env = make_env(root, db_url, base_url=f"http://127.0.0.1:{port}")
    raw = read_raw_config(env.config.path)  # type: ignore[arg-type]
    raw["limits"] = {"login_account_attempts": 10_000, "login_address_attempts": 10_000}
    if platform:
        raw["platform"] = platform
    write_raw_config(env.config.path, raw)  # type: ignore[arg-type]
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    try:
        store.upgrade()
        if store.users.get(USER) is None:
            store.users.add(USER, PASSWORD)
    finally:
        store.dispose()
    return env


@dataclass
class Gunicorn:
    """gunicorn -w 2 for ``env``; its output goes to a file the test can read while it runs."""

    env: Env
    port: int
    prefix: Sequence[str] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log = self.env.root / f"gunicorn-{self.port}.log"
        self._out = self.log.open("wb")
        environ = {**os.environ, "IDP_BRIDGE_CONFIG": str(self.env.config.path),
                   "IDP_BRIDGE_SPOOL_DIR": str(self.env.root / "spool"), **self.extra_env}
        self.proc = subprocess.Popen([*self.prefix, *gunicorn_cmd(self.port)], env=environ, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.base + "/healthz", proc=self.proc, timeout=60)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def booted(self) -> int:
        return len(re.findall(r"Booting worker with pid", self.output()))

    def crashes(self) -> list[str]:
        """Workers that died of a signal or an error (not a graceful reload)."""
        # SIGTERM is gunicorn's own (reload, shutdown); any other signal, an error exit or a failed boot is a crash
        return re.findall(r".*(?:was sent SIG(?!TERM)\w+|exited with code [1-9]|Worker failed to boot|SIGBUS|SIGSEGV).*",
                          self.output())

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["ps", "--ppid", str(self.proc.pid), "-o", "pid="], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def reload(self, timeout: float = 30) -> None:
        """SIGHUP: gunicorn replaces both workers with new ones (fresh database connections)."""
        before = self.booted()
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.booted() < before + 2:
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)  # the old workers finish; the new ones load the app
        self.answering(timeout=timeout)

    def answering(self, *, timeout: float) -> None:
        """Until /healthz gives any HTTP answer (it is 503 while the database is away)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.base + "/healthz", timeout=5)
                return
            except requests.RequestException:
                assert time.monotonic() < deadline, self.output()[-3000:]
                time.sleep(0.1)

    def stop(self) -> str:
        stop_group(self.proc, timeout=15)
        self._out.close()
        return self.output()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        output = self.stop()
        if exc_type is not None:
            print(f"--- gunicorn output ---\n{output[-8000:]}")


@dataclass
class Tally:
    """Outcomes of sign-ins: ok (302 onwards), 503 (the fault page), anything else (the bugs)."""

    counts: Counter[str] = field(default_factory=Counter)
    other: list[str] = field(default_factory=list)

    def sign_in(self, base: str) -> str:
        outcome = sign_in(base)
        self.counts[outcome] += 1
        if outcome not in ("ok", "503"):
            self.other.append(outcome)
        return outcome

    def until_ok(self, base: str, *, timeout: float) -> float:
        """Sign in until it works; seconds it took (AssertionError after ``timeout``)."""
        started = time.monotonic()
        while self.sign_in(base) != "ok":
            assert time.monotonic() - started < timeout, f"no recovery within {timeout} s: {self.counts}"
            time.sleep(0.2)
        return time.monotonic() - started


def sign_in(base: str) -> str:
    """One local sign-in through /login: "ok", "503" (with the fault page), or what went wrong."""
    http = requests.Session()
    try:
        page = http.get(base + "/login", timeout=30)
        if page.status_code != 200:
            return _status(page)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if token is None:
            return "no csrf token"
        resp = http.post(base + "/login", data={"user_id": USER, "password": PASSWORD, "csrf_token": token.group(1)},
                         allow_redirects=False, timeout=30)
    except requests.RequestException as exc:
        return f"connection: {type(exc).__name__}"
    if resp.status_code == 302 and "idpb_session" in resp.cookies:
        return "ok"
    return _status(resp)


def _status(resp: requests.Response) -> str:
    if resp.status_code == 503:
        # the fault page, and nothing of a login: no session cookie, no redirect
        if 'id="correlation-id"' in resp.text and "Set-Cookie" not in resp.headers and "Location" not in resp.headers:
            return "503"
        return "503 without the fault page"
    return f"HTTP {resp.status_code}"


def store_unavailable_events(db_url: str) -> tuple[int, int]:
    """(events with reason store_unavailable, distinct event ids among them) in the database."""
    store = Store.from_url(db_url)
    try:
        with store.engine.connect() as conn:
            where = AuditEventRow.reason_code == "store_unavailable"
            total = conn.execute(select(func.count()).select_from(AuditEventRow).where(where)).scalar_one()
            distinct = conn.execute(select(func.count(func.distinct(AuditEventRow.event_uid))).where(where)).scalar_one()
        return int(total), int(distinct)
    finally:
        store.dispose()


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def new_port() -> int:
    return free_port()
