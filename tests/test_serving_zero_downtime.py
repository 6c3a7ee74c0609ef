"""Zero downtime (issue 11.5): the documented procedures, followed under a bounded load of real SSO logins
against gunicorn with 2 workers (`idp-bridge serve`, the shipped config), fail no login and answer no 5xx:

- a config change: edit idp-bridge.toml, ``kill -HUP`` the master (new workers read it, old ones drain);
- an upgrade: ``kill -USR2`` the master, wait for the new master's workers' "ready" lines, ``kill -TERM``
  the old master;
- a restart: the listening socket is held outside gunicorn (systemd's idp-bridge.socket; here the test
  process holds it and hands it over exactly as systemd does: fd 3, LISTEN_FDS, LISTEN_PID), so
  ``TERM`` + start queues connections instead of refusing them.

The negative control restarts without the held socket (gunicorn binds the port itself, as the old README
command did) under the same load, and must see failed logins: the load can tell.
Every load is bounded in count (``max_logins``) and time (each wait is bounded, at most 90 s)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from idp_bridge.config import read_raw_config, write_raw_config
from tests.servers import free_port
from tests.serving_helpers import (
    LoginLoad,
    Master,
    bridge_env,
    process_gone,
    serve_cmd,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.slow

THREADS = 3
MAX_LOGINS = 1500


def progressed(load: LoginLoad, logins: int = 4) -> None:
    """Wait until ``logins`` more logins have finished (bounded)."""
    target = load.total() + logins
    wait_until(lambda: load.total() >= target, 90, f"{logins} more logins")


def healthz(base: str) -> dict[str, object]:
    resp = requests.get(base + "/healthz", timeout=10)
    body: dict[str, object] = resp.json()
    return body


def test_config_change_hup_and_upgrade_usr2_fail_no_login(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = bridge_env(tmp_path / "bridge", db_url, base)
    pidfile = tmp_path / "gunicorn.pid"
    master = Master(serve_cmd(env, port, "--pid", str(pidfile)))
    load = LoginLoad(env, base, max_logins=MAX_LOGINS)
    try:
        master.wait_for(r"idp-bridge worker \d+ ready", count=2)
        first = int(pidfile.read_text())
        assert first == master.proc.pid  # `idp-bridge serve` became the gunicorn master (exec, same pid)
        old_workers = worker_pids(first)
        assert len(old_workers) == 2
        assert healthz(base)["status"] == "ok"
        with load.running(THREADS):
            progressed(load)

            # -- config change: a setting /healthz shows (keys expiring within 400 days: "warn") -------
            raw = read_raw_config(env.config.path)  # type: ignore[arg-type]
            raw["keys"] = {"expiry_warning_days": 400}
            write_raw_config(env.config.path, raw)  # type: ignore[arg-type]
            os.kill(first, signal.SIGHUP)
            wait_until(lambda: len(worker_pids(first)) == 2 and not worker_pids(first) & old_workers, 60,
                       "HUP: both workers replaced")
            master.wait_for(r"idp-bridge worker \d+ ready", count=4)
            assert healthz(base)["status"] == "warn"  # the new config is live
            after_hup = load.total()
            progressed(load)

            # -- upgrade: USR2, the new master's workers ready, then TERM the old master ----------------
            hup_workers = worker_pids(first)
            os.kill(first, signal.SIGUSR2)
            second_pidfile = Path(str(pidfile) + ".2")
            wait_until(second_pidfile.exists, 60, "USR2: the new master's pid file")
            second = int(second_pidfile.read_text())
            assert second != first
            master.wait_for(rf"idp-bridge worker \d+ ready \(master {second}\)", count=2)
            progressed(load)
            os.kill(first, signal.SIGTERM)
            wait_until(lambda: process_gone(first), 60, "the old master exits")
            assert all(process_gone(p) for p in hup_workers)
            wait_until(lambda: pidfile.exists() and int(pidfile.read_text()) == second, 10,
                       "the new master takes over the pid file")
            after_usr2 = load.total()
            progressed(load)
        assert after_hup > 0 and after_usr2 > after_hup
    finally:
        load.stop.set()
        master.stop_all()
    print(f"\nHUP + USR2 under load: {load.ok} logins ok, {load.failed} failed, {load.status_5xx} answers 5xx")
    refusals = [line for line in master.log.splitlines() if '"outcome": "refused"' in line]
    assert load.failed == 0, (load.failures[:5], refusals[:5])
    assert load.status_5xx == 0
    assert load.ok >= 12
    assert "Traceback" not in master.log, master.log[-4000:]


def test_restart_with_the_socket_held_fails_no_login_and_without_it_does(tmp_path: Path, db_url: str) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(256)
    port = held.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    env = bridge_env(tmp_path / "bridge", db_url, base)
    masters = [Master(serve_cmd(env, port), held_socket=held)]
    load = LoginLoad(env, base, max_logins=MAX_LOGINS)
    try:
        masters[0].wait_for(r"idp-bridge worker \d+ ready", count=2)
        with load.running(THREADS):
            progressed(load)
            for _ in range(1):  # systemctl restart idp-bridge.service: the socket unit stays
                old = masters[-1]
                os.kill(old.proc.pid, signal.SIGTERM)
                old.proc.wait(timeout=60)
                masters.append(Master(serve_cmd(env, port), held_socket=held))
                masters[-1].wait_for(r"idp-bridge worker \d+ ready", count=2)
                progressed(load)
        restarted_ok, restarted_failed, restarted_5xx = load.ok, load.failed, load.status_5xx
        failures = list(load.failures)

        # -- negative control: the same restart with nobody holding the socket -------------------------
        os.kill(masters[-1].proc.pid, signal.SIGTERM)
        masters[-1].proc.wait(timeout=60)
        held.close()  # as without the socket unit: nothing listens until gunicorn binds the port again
        control = LoginLoad(env, base, max_logins=200, timeout=10)
        with control.running(THREADS):
            time.sleep(1.5)  # connections are refused while nothing listens
            masters.append(Master(serve_cmd(env, port)))
            masters[-1].wait_for(r"idp-bridge worker \d+ ready", count=2)
            progressed(control, 2)
    finally:
        load.stop.set()
        held.close()
        for m in masters:
            m.stop_all()
    print(f"\nrestarts with the socket held: {restarted_ok} logins ok, {restarted_failed} failed, {restarted_5xx} "
          f"answers 5xx; negative control: {control.ok} ok, {control.failed} failed ({control.failures[:1]})")
    assert restarted_failed == 0, failures[:5]
    assert restarted_5xx == 0
    assert restarted_ok >= 12
    assert control.failed > 0  # the load sees a refused connection as a failed login
    assert any("Connection" in f for f in control.failures), control.failures[:3]
    for m in masters:
        assert "Traceback" not in m.log, m.log[-4000:]
