"""Issue 11.1, for real: a broken ACTIVE key file under gunicorn (2 workers) never takes the node down.

The active key file is corrupted, then truncated, then half-replaced (a copy of another key interrupted
half-way over it), each while logins run from several threads; during each fault every worker is replaced
twice - by SIGHUP (all workers at once) and by gunicorn's ``max_requests`` recycling - and the new workers
must sign with the last verified copy. Every Response is checked (signature included) against the metadata
the SP held before the fault. Counted over the whole run: failed logins and 5xx answers, both zero; /healthz
says ``fail`` naming the broken file while it is broken and ``ok`` once it is restored.

Then the case without a verified copy: the bridge starts with its active key broken from the start. The
master and its workers stay up (no crash loop, also across a SIGHUP), sign-ins get 503 naming nothing
secret, /healthz says why, and restoring the file heals the node without a restart.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import requests

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.saml.response_checks import IdpMetadata, check_response, parse_idp_metadata
from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, SP_ACS, SP_ENTITY_ID, Env, decode_response, extract_form, make_env
from tests.login_load import LoginLoad, page_says, sign_in, wait_for
from tests.pki import make_key
from tests.servers import ServerProcess, free_port, gunicorn_cmd

pytestmark = pytest.mark.slow

THREADS = 3
MAX_REQUESTS = 60  # each worker is recycled after this many requests
RELOAD = 0.2
#: generous: on a loaded 2-core machine a booting worker can keep a queued request waiting for seconds; a
#: request that takes longer still counts as a failed login
TIMEOUT = 30


def _status(url: str) -> int:
    """The HTTP status, or 0 when nothing answered (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        if _status(url):
            return
        time.sleep(0.1)
    raise TimeoutError(url)


def healed(base: str) -> bool:
    """Every worker serves again. Each picks a fixed file up within its own reload_seconds, so the first
    worker to answer 200 says nothing of the other: ten answers in a row, each on a new connection (spread
    over the workers), must all be 200."""
    return all(_status(base + path) == 200 for path in ("/healthz", "/saml/metadata") * 5)


def workers_of(master: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                found.add(int(entry))
    return found


class Load(LoginLoad):
    """Complete logins from several threads; counts Responses that pass every SP check, failures, and 5xx."""

    fresh_session_every = 5

    def __init__(self, env: Env, base: str, idp: IdpMetadata) -> None:
        super().__init__()
        self.env, self.base, self.idp = env, base, idp
        self.five_xx: Counter[str] = Counter()

    def _count_5xx(self, resp: requests.Response) -> requests.Response:
        if resp.status_code >= 500:
            with self.lock:
                self.five_xx[self.phase] += 1
        return resp

    def one_login(self, http: requests.Session, n: int, worker: int) -> str | None:
        request_id = f"_fault-{worker}-{n}"
        query = self.env.redirect_query(self.env.authn_request(request_id=request_id))
        page = self._count_5xx(http.get(self.base + "/saml/sso?" + query, timeout=TIMEOUT))
        posted_status = None
        if "/login" in page.url:
            posted = sign_in(http, self.base, timeout=TIMEOUT)
            if isinstance(posted, str):
                return posted
            posted_status = self._count_5xx(posted).status_code
            page = self._count_5xx(http.get(self.base + "/saml/continue", timeout=TIMEOUT))
        if page.status_code != 200:
            return f"HTTP {page.status_code}"
        form = extract_form(page.text)
        if "SAMLResponse" not in form:
            return (f"no SAMLResponse: HTTP {page.status_code} {page.url}, sign-in POST {posted_status} "
                    f"({page_says(page.text)})")
        report = check_response(decode_response(form["SAMLResponse"]), idp=self.idp, sp_entity_id=SP_ENTITY_ID,
                                acs_url=SP_ACS, expected_request_ids=[request_id], now=dt.datetime.now(dt.UTC))
        return None if report.ok else "; ".join(f"{c.name}: {c.actual}" for c in report.failed)[:300]


def _env(tmp_path: Path, db_url: str, port: int) -> Env:
    env = make_env(tmp_path / "bridge", db_url, base_url=f"http://127.0.0.1:{port}")
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["keys"] = {"reload_seconds": RELOAD}
    write_raw_config(env.config.path, raw)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD)
    store.dispose()
    return env


def _drain(server: ServerProcess) -> list[bytes]:
    lines: list[bytes] = []
    assert server.proc.stdout is not None
    threading.Thread(target=lambda: lines.extend(iter(server.proc.stdout.readline, b"")),  # type: ignore[union-attr]
                     daemon=True).start()  # a full pipe would block the workers' log writes
    return lines


def corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\x00" * 64 + data[middle + 64:]


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 3]


def half_replace(data: bytes) -> bytes:
    other = make_key("replacement").key_pem
    return other[: len(other) // 2] + data[len(data) // 2:]


def test_a_broken_active_key_file_never_takes_the_node_down(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(tmp_path, db_url, port)
    (key_path,) = env.config.key_dir.glob("*.key")
    good = key_path.read_bytes()
    cmd = [*gunicorn_cmd(port), "--max-requests", str(MAX_REQUESTS)]
    with ServerProcess(cmd, env={"IDP_BRIDGE_CONFIG": str(env.config.path)}, stream=True) as server:
        wait_answering(base + "/healthz", server.proc)
        log = _drain(server)
        master = server.proc.pid
        copy = env.config.key_dir / ".verified" / key_path.name
        assert wait_for(copy.exists, 10), "no verified copy was kept"
        assert copy.read_bytes() == good and (copy.stat().st_mode & 0o777) == 0o600
        assert (copy.parent.stat().st_mode & 0o777) == 0o700
        assert requests.get(base + "/healthz", timeout=TIMEOUT).json()["status"] in ("ok", "warn")
        idp = parse_idp_metadata(requests.get(base + "/saml/metadata", timeout=TIMEOUT).content)
        load = Load(env, base, idp)
        threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(THREADS)]
        for t in threads:
            t.start()
        replaced = 0
        try:
            assert wait_for(lambda: load.ok["before"] + load.failed["before"] >= 5, 60)
            for name, damage in (("corrupted", corrupt), ("truncated", truncate), ("half-replaced", half_replace)):
                load.phase = name
                with open(key_path, "r+b") as fh:  # in place, as a bad copy or a full disk leaves it
                    fh.write(damage(good))
                    fh.truncate()
                time.sleep(RELOAD * 5)  # the running workers have seen it
                health = requests.get(base + "/healthz", timeout=TIMEOUT)
                assert health.status_code == 503, (name, health.text)
                assert health.json()["status"] == "fail" and str(key_path) in health.json()["key_file_error"]
                if True:  # replace every worker: HUP, then let max_requests recycle them
                    before = workers_of(master)
                    os.kill(master, signal.SIGHUP)
                    assert wait_for(lambda b=before: len(workers_of(master) - b) >= 2 and
                                    not (workers_of(master) & b), 30), (name, "the workers were not replaced")
                    replaced += 2
                    time.sleep(1.0)
                    assert server.proc.poll() is None, (name, "the master shut down")
                booted = workers_of(master)
                served = sum(load.ok.values())
                assert wait_for(lambda b=booted: not (workers_of(master) & b), 60), (name, "max_requests recycling")
                replaced += 2
                assert wait_for(lambda s=served: sum(load.ok.values()) > s, 30), (
                    name, "no login went through after the recycle")
                health = requests.get(base + "/healthz", timeout=TIMEOUT).json()
                assert health["status"] == "fail" and str(key_path) in health["key_file_error"], (name, health)
                assert [k["source"] for k in health["keys"]] == ["verified copy"], (name, health)
                key_path.write_bytes(good)  # the operator restores it
                assert wait_for(lambda: healed(base), 30), (name, "did not heal")
            load.phase = "restored"
            assert wait_for(lambda: load.ok["restored"] + load.failed["restored"] >= 5, 60)
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=15)
        assert server.proc.poll() is None
        server_log = b"".join(log).decode(errors="replace")
    print(f"\nlogins ok per phase {dict(load.ok)}, failed {dict(load.failed)}, 5xx {dict(load.five_xx)}, "
          f"workers replaced {replaced}")
    assert not load.failures, load.failures[:5] + [server_log[-4000:]]
    assert sum(load.five_xx.values()) == 0, dict(load.five_xx)
    assert all(load.ok[p] > 0 for p in ("before", "corrupted", "truncated", "half-replaced", "restored")), load.ok
    assert "signing with its last verified copy" in server_log, server_log[-3000:]
    assert "Traceback" not in server_log, server_log[-3000:]


def test_without_a_verified_copy_the_node_stays_up_and_answers_503(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(tmp_path, db_url, port)
    (key_path,) = env.config.key_dir.glob("*.key")
    good = key_path.read_bytes()
    key_path.write_bytes(truncate(good))  # broken before any worker could verify it
    with ServerProcess(gunicorn_cmd(port), env={"IDP_BRIDGE_CONFIG": str(env.config.path)}, stream=True) as server:
        wait_answering(base + "/healthz", server.proc)
        log = _drain(server)
        master = server.proc.pid
        health = requests.get(base + "/healthz", timeout=TIMEOUT)
        assert health.status_code == 503 and health.json()["status"] == "fail", health.text
        assert str(key_path) in health.json()["key_file_error"], health.text
        statuses: Counter[int] = Counter()
        http = requests.Session()
        for i in range(6):
            query = env.redirect_query(env.authn_request(request_id=f"_nokey-{i}"))
            statuses[http.get(base + "/saml/sso?" + query, timeout=TIMEOUT).status_code] += 1
            statuses[requests.get(base + "/saml/metadata", timeout=TIMEOUT).status_code] += 1
        assert set(statuses) == {503}, statuses  # a clear refusal, never a 500 or a dropped connection
        before = workers_of(master)
        os.kill(master, signal.SIGHUP)
        assert wait_for(lambda: len(workers_of(master) - before) >= 2 and not (workers_of(master) & before), 30)
        time.sleep(1.0)
        assert server.proc.poll() is None, "the master shut down"
        assert len(workers_of(master)) == 2
        key_path.write_bytes(good)  # the operator restores the file: no restart needed
        assert wait_for(lambda: healed(base), 30), "did not heal"
        attempt = iter(range(10_000))

        def signs_in_again() -> bool:
            """Ten sign-in starts in a row, fresh AuthnRequests on new connections, all sent on to sign in (302):
            /healthz answering 200 ten times may all have come from the worker that reloaded first."""
            for _ in range(10):
                query = env.redirect_query(env.authn_request(request_id=f"_healed-{next(attempt)}"))
                if requests.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=TIMEOUT).status_code != 302:
                    return False
            return True

        assert wait_for(signs_in_again, 30), "sign-ins did not come back after the key file was restored"
        assert requests.get(base + "/saml/metadata", timeout=TIMEOUT).status_code == 200
        server.stop()
        server_log = b"".join(log).decode(errors="replace")
    assert "no signing key can be loaded" in server_log and "idp-bridge check" in server_log, server_log[-3000:]
    assert "Worker failed to boot" not in server_log, server_log[-3000:]
