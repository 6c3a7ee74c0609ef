"""`idp-bridge keys ...`: the rotation driven from the command line, the evidence gate and its refusals."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization

from idp_bridge.cli import main
from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.saml.response_checks import parse_idp_metadata
from idp_bridge.store import Store
from tests.journey import Env, make_env
from tests.pki import make_key


@pytest.fixture
def env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Env:
    for var in ("IDP_BRIDGE_CONFIG", "IDP_BRIDGE_DATABASE_URL", "IDP_BRIDGE_KEY_PASSPHRASE",
                "IDP_BRIDGE_KEY_PASSPHRASE_FILE"):
        monkeypatch.delenv(var, raising=False)
    e = make_env(tmp_path / "bridge", db_url, key_days=30)  # a 30-day key: the expiry-warning tests rely on it
    set_keys(e, publish_lead_seconds=0, retiring_grace_seconds=0)
    return e


def set_keys(env: Env, **settings: Any) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["keys"] = {**raw.get("keys", {}), **settings}
    write_raw_config(env.config.path, raw)


def keys(env: Env, *args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, ["--config", str(env.config.path), "keys", *args], catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result


def states(env: Env) -> dict[str, str]:
    store = Store.from_url(env.config.database_url)
    try:
        return store.key_states()
    finally:
        store.dispose()


def metadata_key_count(env: Env) -> int:
    return len(parse_idp_metadata(env.config.metadata_file.read_bytes()).signing_certificates)


def new_key(env: Env) -> str:
    out = keys(env, "new", "--algorithm", "rsa-2048", "--days", "90").output
    found = re.search(r"added key ([0-9a-f]{16})", out)
    assert found, out
    return found.group(1)


def test_whole_rotation_from_the_command_line(env: Env) -> None:
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]
    second = new_key(env)
    assert states(env) == {first: "active", second: "next"}  # the bootstrap key got recorded as active
    assert metadata_key_count(env) == 2  # exported right away: next + active

    status = keys(env, "status").output
    assert "NO EVIDENCE" in status and "Partner Center (Support > Open APIs > Configure)" in status
    assert str(env.config.metadata_file) in status and f"confirm-published {second} --sp NAME" in status

    refused = keys(env, "activate", second, ok=False)
    assert "[key_no_evidence]" in refused.output and "huawei-cn" in refused.output
    assert states(env)[first] == "active"

    keys(env, "confirm-published", second, "--sp", "huawei-cn", "--note", "uploaded by ops")
    assert f"keys activate {second}" in keys(env, "status").output
    out = keys(env, "activate", second).output
    assert f"{first} is retiring" in out
    assert states(env) == {first: "retiring", second: "active"}
    assert metadata_key_count(env) == 2

    refused = keys(env, "retire", second, ok=False)
    assert "[key_transition]" in refused.output
    keys(env, "retire", first)
    assert states(env) == {first: "retired", second: "active"}
    assert metadata_key_count(env) == 1
    listing = keys(env, "list").output
    assert re.search(rf"{first}\s+retired", listing) and re.search(rf"{second}\s+active\s+rsa-2048", listing)
    assert "no rotation in progress" in keys(env, "status").output


def test_activate_waits_for_the_lead_time(env: Env) -> None:
    set_keys(env, publish_lead_seconds=3600)
    second = new_key(env)
    keys(env, "confirm-published", second, "--sp", "huawei-cn")
    refused = keys(env, "activate", second, ok=False).output
    assert "lead time is 3600 s" in refused
    assert "wait:" in keys(env, "status").output


def test_force_needs_a_reason_and_is_audited(env: Env) -> None:
    second = new_key(env)
    assert "[key_no_evidence]" in keys(env, "activate", second, ok=False).output
    assert "[key_force_reason]" in keys(env, "activate", second, "--force", ok=False).output
    keys(env, "activate", second, "--force", "--reason", "old key leaked, INC-42")
    assert states(env)[second] == "active"
    store = Store.from_url(env.config.database_url)
    try:
        events = [e for e in store.recent_events(20) if e.event == "key"]
    finally:
        store.dispose()
    forced = [e for e in events if e.reason_code == "key_activate_forced"]
    assert forced and forced[0].detail and forced[0].detail["reason"] == "old key leaked, INC-42"
    assert any(e.outcome == "refused" for e in events)


def test_fetch_attributed_to_the_sp_is_evidence(env: Env) -> None:
    from idp_bridge.web import create_app

    second = new_key(env)
    app = create_app(env.config)
    client = app.test_client()
    assert client.get("/saml/metadata").status_code == 200  # unattributed: not evidence
    assert "[key_no_evidence]" in keys(env, "activate", second, ok=False).output
    assert client.get("/saml/metadata?sp=huawei-cn").status_code == 200
    assert "fetched" in keys(env, "status").output
    keys(env, "activate", second)


def test_retiring_key_is_kept_for_the_grace_period(env: Env) -> None:
    set_keys(env, retiring_grace_seconds=3600)
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]
    second = new_key(env)
    keys(env, "activate", second, "--force", "--reason", "test")
    assert "[key_grace]" in keys(env, "retire", first, ok=False).output
    assert "wait until" in keys(env, "status").output
    keys(env, "retire", first, "--force", "--reason", "test")
    assert states(env)[first] == "retired"


def test_import_passphrase_protected_key(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_key("imported", bits=3072)
    key_file, cert_file, pass_file = tmp_path / "in.key", tmp_path / "in.crt", tmp_path / "pass.txt"
    key_file.write_bytes(key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret passphrase")))
    cert_file.write_bytes(key.cert_pem)
    pass_file.write_text("s3cret passphrase\n")
    refused = keys(env, "import", "--key", str(key_file), "--cert", str(cert_file), ok=False).output
    assert "[key_passphrase]" in refused
    out = keys(env, "import", "--key", str(key_file), "--cert", str(cert_file), "--passphrase-file",
               str(pass_file)).output
    kid = re.search(r"imported key ([0-9a-f]{16})", out)
    assert kid and states(env)[kid.group(1)] == "next"
    assert "[key_exists]" in keys(env, "import", "--key", str(key_file), "--cert", str(cert_file),
                                  "--passphrase-file", str(pass_file), ok=False).output
    assert re.search(rf"{kid.group(1)}\s+next\s+rsa-3072", keys(env, "list").output)


@pytest.mark.parametrize(("case", "code"), [("small", "key_too_small"), ("mismatch", "key_cert_mismatch"),
                                             ("expired", "key_expired")])
def test_import_refusals(env: Env, tmp_path: Path, case: str, code: str) -> None:
    key = make_key("bad", bits=1024 if case == "small" else 2048,
                   not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=400) if case == "expired" else None)
    cert = make_key("other").cert_pem if case == "mismatch" else key.cert_pem
    (tmp_path / "k.pem").write_bytes(key.key_pem)
    (tmp_path / "c.pem").write_bytes(cert)
    before = states(env)
    out = keys(env, "import", "--key", str(tmp_path / "k.pem"), "--cert", str(tmp_path / "c.pem"), ok=False).output
    assert f"[{code}]" in out
    assert states(env) == before and len(list(env.config.key_dir.glob("*.key"))) == 1


def test_list_warns_of_expiry(env: Env) -> None:
    set_keys(env, expiry_warning_days=60)  # the test key is valid for 30 days
    assert "EXPIRES IN" in keys(env, "list").output
