"""`idp-bridge trust-test`: passes against `idp-bridge demo` (a real process); fails with the right reason
against a bridge whose SP metadata is stale (the simulator rotated its key after the bridge loaded it)."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from idp_bridge.cli import main
from idp_bridge.devtools.builtin_trust_test import run_with_builtin_simulator
from idp_bridge.devtools.demo import DEMO_USERS, DemoSetup, prepare_demo, start_demo
from idp_bridge.devtools.simulator import SimulatorConfig, create_simulator_app
from idp_bridge.diagnostics.trust_test import run_against
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.store import Store
from tests.servers import ServerProcess, free_port, idp_bridge_cmd, wait_http

JOURNEY = ["IdP metadata", "sign-in", "login link", "signed AuthnRequest", "bridge answers with a Response",
           "ACS verification", "first-login binding", "console", "return after checkout"]


@pytest.mark.slow
def test_passes_against_idp_bridge_demo_process(tmp_path: Path) -> None:
    port, sim_port = free_port(), free_port()
    demo_dir = tmp_path / "demo"
    with ServerProcess(idp_bridge_cmd("demo", "--dir", str(demo_dir), "--port", str(port),
                                      "--simulator-port", str(sim_port), "--platform-port", str(free_port()))) as demo:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc=demo.proc)
        wait_http(f"http://127.0.0.1:{sim_port}/authui/saml/metadata.xml", proc=demo.proc)
        result = subprocess.run(idp_bridge_cmd("--config", str(demo_dir / "idp-bridge.toml"), "trust-test",
                                               "--url", base, "--json"),
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [i["name"] for i in report["items"]] == JOURNEY
    statuses = {i["name"]: i["status"] for i in report["items"]}
    assert all(s == "pass" for s in statuses.values()), report


def _rotate_simulator_key(setup: DemoSetup) -> SimulatorConfig:
    """Replace the running simulator by one with a fresh key on the same port (what a key rotation at Huawei is)."""
    old_server, old_thread = setup.servers[1], setup.threads[1]
    old_server.shutdown()
    old_server.server_close()
    old_thread.join(5)
    assert setup.simulator is not None
    fresh = SimulatorConfig.generate(setup.simulator_url, site="cn", idp_metadata=setup.simulator.idp_metadata,
                                     bind_notify_url=setup.simulator.bind_notify_url,
                                     payment_return_url=setup.simulator.payment_return_url)
    port = int(setup.simulator_url.rsplit(":", 1)[1])
    server = make_server("127.0.0.1", port, create_simulator_app(fresh), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    setup.servers[1], setup.threads[1] = server, thread
    return fresh


def test_fails_with_the_reason_when_the_bridge_holds_stale_sp_metadata(tmp_path: Path) -> None:
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    store = Store.from_url(setup.config.database_url)
    user = DEMO_USERS[0]
    try:
        first = run_against(setup.bridge_url, user=user.user_id, password=user.password,
                            bridge=IdentityProvider(setup.config, store))
        assert first.ok, first.render()  # the bridge now holds the simulator's metadata (cached for an hour)
        assert setup.simulator is not None
        old_fp = setup.simulator.signer.certificate
        fresh = _rotate_simulator_key(setup)
        second = run_against(setup.bridge_url, user=DEMO_USERS[1].user_id, password=DEMO_USERS[1].password,
                             bridge=IdentityProvider(setup.config, store))
    finally:
        setup.shutdown()
        store.dispose()
    assert not second.ok
    failed = second.failed
    assert [i.name for i in failed] == ["bridge answers with a Response"], second.render()
    item = failed[0]
    from idp_bridge.saml.algorithms import fingerprint

    assert "signature" in item.detail.lower()
    assert "SP metadata is stale" in item.detail
    assert fingerprint(old_fp) in item.detail and fingerprint(fresh.signer.certificate) in item.detail
    assert "refresh the SP metadata" in item.fix
    # the steps before passed, the ones after were not run
    assert second.item("journey", "signed AuthnRequest").status == "pass"
    assert second.item("journey", "console").status == "skip"


def test_without_a_local_config_the_refusal_points_to_the_correlation_id(tmp_path: Path) -> None:
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    user = DEMO_USERS[0]
    try:
        assert run_against(setup.bridge_url, user=user.user_id, password=user.password).ok
        _rotate_simulator_key(setup)
        report = run_against(setup.bridge_url, user=user.user_id, password=user.password)
    finally:
        setup.shutdown()
    item = report.item("journey", "bridge answers with a Response")
    assert item.status == "fail" and "correlation id" in item.detail and "HTTP 400" in item.detail


def test_wrong_password_fails_at_sign_in(tmp_path: Path) -> None:
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    try:
        report = run_against(setup.bridge_url, user="alice", password="wrong")
    finally:
        setup.shutdown()
    assert report.item("journey", "sign-in").status == "fail"
    assert "--user/--password" in report.item("journey", "sign-in").fix


def test_builtin_simulator_run_passes() -> None:
    report = run_with_builtin_simulator()
    assert report.ok, report.render()
    assert [i.name for i in report.items] == JOURNEY


def test_cli_fails_with_the_stale_metadata_reason(tmp_path: Path) -> None:
    """`idp-bridge --config <the bridge's> trust-test --url …` exits non-zero and says why."""
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    user = DEMO_USERS[0]
    store = Store.from_url(setup.config.database_url)
    try:
        assert run_against(setup.bridge_url, user=user.user_id, password=user.password,
                           bridge=IdentityProvider(setup.config, store)).ok  # the bridge now holds the simulator's metadata
        _rotate_simulator_key(setup)
        result = CliRunner().invoke(main, ["--config", str(setup.config.path), "trust-test", "--url",
                                           setup.bridge_url, "--user", user.user_id, "--password", user.password])
    finally:
        setup.shutdown()
        store.dispose()
    assert result.exit_code == 1, result.output
    assert "✗ bridge answers with a Response" in result.stdout
    assert "SP metadata is stale" in result.stdout
    assert "fix: refresh the SP metadata on the bridge" in result.stdout
    assert "NOT OK" in result.stdout


def test_cli_unknown_sp_in_the_local_config_is_an_operator_mistake(tmp_path: Path) -> None:
    """With the bridge's config readable, `--sp nosuch` is refused before any request: exit 2 (docs/cli.md)."""
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    user = DEMO_USERS[0]
    try:
        result = CliRunner().invoke(main, ["--config", str(setup.config.path), "trust-test", "--url",
                                           setup.bridge_url, "--sp", "nosuch", "--user", user.user_id,
                                           "--password", user.password])
    finally:
        setup.shutdown()
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: --sp 'nosuch' is not in your config {setup.config.path} (configured: huawei-sim); pass one of "
        "those, or `idp-bridge sp add` it first [sp_unknown]"], result.output
    assert "Traceback" not in result.output


def test_cli_unknown_sp_without_config_is_named_plainly_by_the_bridge(tmp_path: Path) -> None:
    """Without a local config the run goes ahead; the bridge's refusal makes the verdict NOT OK: exit 1."""
    setup = start_demo(prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(),
                                     platform_port=free_port()))
    user = DEMO_USERS[0]
    try:
        result = CliRunner().invoke(main, ["--config", str(tmp_path / "nonexistent.toml"), "trust-test", "--url",
                                           setup.bridge_url, "--sp", "nosuch", "--user", user.user_id,
                                           "--password", user.password])
    finally:
        setup.shutdown()
    assert result.exit_code == 1, result.output
    assert f"✗ login link: SP 'nosuch' is unknown to the bridge at {setup.bridge_url} (it knows: huawei-sim)" \
        in result.stdout, result.stdout
    assert "pass --sp with the name of a configured SP" in result.stdout
    assert "HTTP 500" not in result.stdout
    assert "sign-in" in result.stdout and "✗ sign-in" not in result.stdout


def test_cli_builtin_run_passes_with_a_clean_stderr() -> None:
    """No werkzeug request lines and no audit JSON lines from the throwaway in-process servers."""
    result = subprocess.run(idp_bridge_cmd("trust-test"), capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 passed, 0 failed — OK" in result.stdout
    assert result.stderr == ""


def test_cli_builtin_unknown_sp_is_an_operator_mistake_in_one_line() -> None:
    """Without --url only the built-in SP exists: another --sp is refused before anything starts (exit 2)."""
    result = subprocess.run(idp_bridge_cmd("trust-test", "--sp", "nosuch"), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --sp 'nosuch': without --url the built-in run starts its own bridge, whose only SP is "
        "'huawei-sim'; to test your SP, run your bridge and pass --url https://… --sp nosuch [sp_unknown]"]


def test_other_servers_in_the_process_still_log_requests_after_a_builtin_run(
        caplog: pytest.LogCaptureFixture) -> None:
    """The silencing is for trust-test's own servers only: a werkzeug server started afterwards logs as usual."""
    assert run_with_builtin_simulator().ok
    from flask import Flask

    app = Flask("other")
    app.add_url_rule("/", "index", lambda: "hi")
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            wait_http(f"http://127.0.0.1:{port}/")
    finally:
        server.shutdown()
        thread.join(5)
    assert any('"GET / HTTP/1.1" 200' in r.getMessage() for r in caplog.records if r.name == "werkzeug")
