"""Acceptance: a key rotation under load (gunicorn, 2 workers) with not one failed login, and a negative
control that proves the test can fail.

A load client runs complete SSO logins (signed AuthnRequest -> our Response) from several threads.
A test SP refreshes our metadata (``/saml/metadata?sp=huawei-cn``, from 127.0.0.1, the address listed in
its ``metadata_fetchers``) at random moments and checks every Response against the metadata it held when
that login STARTED (``check_response``, signature included): an SP that receives a Response signed by a key
it learnt about only mid-login would be lucky, not correct.
Meanwhile the rotation is driven through the real command line: ``keys new`` -> (the SP's fetch counts as
evidence, ``keys status`` says so) ``keys confirm-published`` -> ``keys activate`` (not forced: the
evidence gate must pass) -> ``keys retire``. Then the negative control: ``keys new`` + ``keys activate
--force`` before the SP has fetched the new metadata must make the SP refuse Responses. Failures are
counted over the whole run, after the load has stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.saml.response_checks import check_response, parse_idp_metadata
from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, SP_ACS, SP_ENTITY_ID, Env, decode_response, extract_form, make_env
from tests.login_load import LoginLoad, page_says, sign_in, wait_for
from tests.servers import ServerProcess, free_port, gunicorn_cmd, idp_bridge_cmd, wait_http

pytestmark = pytest.mark.slow

THREADS = 4
#: every step must see at least this many logins complete (counted, never timed: the rate is measured by
#: bench/bench_rotation.py); each step waits for them, up to STEP_TIMEOUT seconds
LOGINS_PER_STEP = 20
STEP_TIMEOUT = 120
LEAD, GRACE, RELOAD = 3, 3, 0.5


class RefreshingSp:
    """Holds the metadata it last fetched; refreshes it at random moments."""

    def __init__(self, base: str, interval: tuple[float, float]) -> None:
        self.base, self.interval = base, interval
        self.held = parse_idp_metadata(requests.get(base + "/saml/metadata?sp=huawei-cn", timeout=10).content)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.fetches = 0

    def run(self) -> None:
        while not self.stop.wait(random.uniform(*self.interval)):
            if self.paused.is_set():
                continue
            resp = requests.get(self.base + "/saml/metadata?sp=huawei-cn", timeout=10)
            if resp.status_code == 200:
                self.held = parse_idp_metadata(resp.content)
                self.fetches += 1


class Load(LoginLoad):
    def __init__(self, env: Env, base: str, sp: RefreshingSp) -> None:
        super().__init__()
        self.env, self.base, self.sp = env, base, sp

    def one_login(self, http: requests.Session, n: int, worker: int) -> str | None:
        held = self.sp.held  # the metadata the SP holds when the login starts (before the AuthnRequest)
        request_id = f"_load-{worker}-{n}-{random.getrandbits(32):08x}"
        query = self.env.redirect_query(self.env.authn_request(request_id=request_id))
        page = http.get(self.base + "/saml/sso?" + query, timeout=10)
        if "/login" in page.url:  # a fresh session: sign in, then continue
            answer = sign_in(http, self.base, timeout=10)
            if isinstance(answer, str):
                return answer
            if answer.status_code not in (302, 303):
                return f"sign-in: HTTP {answer.status_code} {page_says(answer.text)}"
            page = http.get(self.base + "/saml/continue", timeout=10)
        if page.status_code != 200:
            return f"HTTP {page.status_code} {page.url} {page_says(page.text)}"
        form = extract_form(page.text)
        if "SAMLResponse" not in form:
            return f"no SAMLResponse in the page {page.url}: {page_says(page.text)}"
        report = check_response(decode_response(form["SAMLResponse"]), idp=held, sp_entity_id=SP_ENTITY_ID,
                                acs_url=SP_ACS, expected_request_ids=[request_id], now=dt.datetime.now(dt.UTC))
        if not report.ok:
            return "; ".join(f"{c.name}: {c.actual}" for c in report.failed)[:300]
        return None


def keys_cmd(env: Env, *args: str, ok: bool = True) -> str:
    proc = subprocess.run(idp_bridge_cmd("--config", str(env.config.path), "keys", *args), capture_output=True,
                          text=True, timeout=60, env={**os.environ, "IDP_BRIDGE_CONFIG": str(env.config.path)})
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def new_key(env: Env) -> str:
    found = re.search(r"added key ([0-9a-f]{16})", keys_cmd(env, "new", "--algorithm", "rsa-2048", "--days", "90"))
    assert found
    return found.group(1)


def test_rotation_under_load_has_no_failed_login_and_the_negative_control_fails(tmp_path: Path,
                                                                               db_url: str) -> None:
    started = time.monotonic()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = make_env(tmp_path / "bridge", db_url, base_url=base)
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["keys"] = {"publish_lead_seconds": LEAD, "retiring_grace_seconds": GRACE, "reload_seconds": RELOAD}
    raw["sp"][0]["metadata_fetchers"] = ["127.0.0.1/32"]  # where the test SP fetches from
    write_raw_config(env.config.path, raw)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example")
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]

    with ServerProcess(gunicorn_cmd(port), env={"IDP_BRIDGE_CONFIG": str(env.config.path)}, stream=True) as server:
        wait_http(base + "/healthz", proc=server.proc)
        server_log: list[bytes] = []
        drain = threading.Thread(target=lambda: server_log.extend(iter(server.proc.stdout.readline, b"")),  # type: ignore[union-attr]
                                 daemon=True)  # a full pipe would block the workers' log writes
        drain.start()
        sp = RefreshingSp(base, (0.2, 1.2))
        load = Load(env, base, sp)
        threads = [threading.Thread(target=sp.run, daemon=True)]
        threads += [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(THREADS)]
        for t in threads:
            t.start()

        def step_done(phase: str) -> None:
            """A step ends only once enough logins completed in it (a slow machine makes the test longer, never
            red)."""
            assert wait_for(lambda: load.ok[phase] + load.failed[phase] >= LOGINS_PER_STEP, STEP_TIMEOUT), (
                phase, dict(load.ok), dict(load.failed))

        try:
            # -- the rotation, by the book ---------------------------------------------------------
            step_done("before")
            load.phase = "published"
            second = new_key(env)
            assert wait_for(lambda: second in {k for f in store.keyring.fetches_with_key(second) if f.sp for k in f.key_ids},
                            10), "the test SP never fetched metadata holding the new key"
            status = keys_cmd(env, "status")
            assert re.search(r"SP huawei-cn: fetched .*from 127\.0\.0\.1, listed in sp huawei-cn", status), status
            keys_cmd(env, "confirm-published", second, "--sp", "huawei-cn", "--note", "load test")
            time.sleep(LEAD + 0.5)
            step_done("published")
            load.phase = "activated"
            out = keys_cmd(env, "activate", second)  # not forced: the evidence gate must pass
            assert f"{first} is retiring" in out
            time.sleep(GRACE + 0.5)
            step_done("activated")
            load.phase = "retired"
            keys_cmd(env, "retire", first)
            time.sleep(3)
            step_done("retired")
            positive_ok = sum(load.ok.values())  # for the printout only; failures are judged on the final totals
            positive_seconds = time.monotonic() - started

            # -- negative control: switch before the SP has the new metadata --------------------
            sp.paused.set()  # the SP keeps the metadata it holds now, without the next key
            third = new_key(env)
            load.phase = "forced"
            keys_cmd(env, "activate", third, "--force", "--reason", "negative control")
            assert wait_for(lambda: load.failed["forced"] > 0, STEP_TIMEOUT)
            sp.paused.clear()
        finally:
            load.stop.set()
            sp.stop.set()
            for t in threads:
                t.join(timeout=15)
        refusals = Counter(f"{e.event}/{e.reason_code}" for e in store.audit.recent(10_000, outcome="refused"))
        store.dispose()
        server.stop()
        drain.join(timeout=10)
        log = b"".join(server_log).decode(errors="replace")
    # what the bridge said about any refusal, so a failure explains itself
    explained = {"refused (audit)": dict(refusals),
                 "server log": [line for line in log.splitlines() if re.search(r"error|warn|refus", line, re.I)][-8:]}

    # final totals, after every load thread has stopped
    positive = ("before", "published", "activated", "retired")
    positive_failed = sum(load.failed[p] for p in positive)
    positive_failures = [f for f in load.failures if not f.startswith("[forced]")]
    negative_failures = [f for f in load.failures if f.startswith("[forced]")]
    print(f"\npositive run: {positive_ok} logins in {positive_seconds:.1f} s, "
          f"{positive_failed} failed (final totals), SP refreshed {sp.fetches} times; per phase ok={dict(load.ok)} "
          f"failed={dict(load.failed)}")
    print(f"negative control: {load.ok['forced']} ok, {load.failed['forced']} failed; first 3:",
          negative_failures[:3])
    assert positive_failed == 0, (positive_failures[:5], explained)
    assert len(positive_failures) == 0
    assert all(load.ok[p] >= LOGINS_PER_STEP for p in positive), load.ok
    assert load.failed["forced"] > 0  # the negative control shows the test can fail
    assert any("signature" in f for f in negative_failures), negative_failures[:3]
    assert "Traceback" not in log, log[-3000:]
