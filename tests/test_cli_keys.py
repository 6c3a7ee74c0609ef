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
from tests.huawei_fixtures import FIXTURES
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
        return store.keyring.states()
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
        events = [e for e in store.audit.recent(20) if e.event == "key"]
    finally:
        store.dispose()
    forced = [e for e in events if e.reason_code == "key_activate_forced"]
    assert forced and forced[0].detail and forced[0].detail["reason"] == "old key leaked, INC-42"
    assert any(e.outcome == "refused" for e in events)


def set_sp(env: Env, **settings: Any) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["sp"][0] = {**raw["sp"][0], **settings}
    write_raw_config(env.config.path, raw)


def test_a_fetch_is_evidence_only_from_an_address_listed_for_the_sp(env: Env) -> None:
    from idp_bridge.web import create_app

    second = new_key(env)
    client = create_app(env.config).test_client()  # the test client's requests come from 127.0.0.1
    assert client.get("/saml/metadata").status_code == 200
    assert client.get("/saml/metadata?sp=huawei-cn").status_code == 200  # anyone can say ?sp=NAME
    # no metadata_fetchers for the SP (Huawei: upload only): no fetch counts, only confirm-published
    assert "[key_no_evidence]" in keys(env, "activate", second, ok=False).output
    status = keys(env, "status").output
    assert "2 did not" in status and "lists no metadata_fetchers" in status, status
    assert "NO EVIDENCE" in status

    set_sp(env, metadata_fetchers=["203.0.113.0/24"])  # the SP's real fetcher: not where the fetches came from
    refused = keys(env, "activate", second, ok=False).output
    assert "[key_no_evidence]" in refused and "203.0.113.0/24" in refused
    status = keys(env, "status").output
    assert "from 127.0.0.1, which is not in SP 'huawei-cn' metadata_fetchers (203.0.113.0/24)" in status, status
    assert "from 127.0.0.1, which no SP lists in metadata_fetchers" in status, status

    set_sp(env, metadata_fetchers=["203.0.113.0/24", "127.0.0.1/32"])
    status = keys(env, "status").output
    assert "fetched" in status and "2 counted as evidence, 0 did not" in status, status
    keys(env, "activate", second)


@pytest.mark.parametrize(("value", "problem"), [("not-a-network", "does not appear to be an IPv4 or IPv6"),
                                                ("10.0.0.1/8", "has host bits set"), (42, "is a int")])
def test_metadata_fetchers_are_validated(env: Env, value: object, problem: str) -> None:
    from idp_bridge.config import load_config
    from idp_bridge.errors import ConfigError

    set_sp(env, metadata_fetchers=["127.0.0.1/32", value])
    with pytest.raises(ConfigError) as exc:
        load_config(env.config.path, environ={})
    assert "sp[0].metadata_fetchers" in exc.value.operator and repr(value) in exc.value.operator
    assert problem in exc.value.operator, exc.value.operator


def test_fresh_install_commands_know_the_bootstrap_key(env: Env) -> None:
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]
    assert states(env) == {}  # a fresh init: nothing recorded yet
    refused = keys(env, "activate", first, ok=False).output
    assert "not in the key ring" not in refused and f"key {first} is active" in refused, refused
    refused = keys(env, "retire", first, ok=False).output
    assert "not in the key ring" not in refused and f"key {first} is active" in refused, refused
    assert "[key_transition]" in refused
    assert states(env) == {first: "active"}
    assert f"active:   {first}" in keys(env, "status").output


def test_metadata_lists_at_most_three_keys(env: Env, tmp_path: Path) -> None:
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]
    second, third = new_key(env), new_key(env)
    assert metadata_key_count(env) == 3
    refused = keys(env, "new", "--algorithm", "rsa-2048", ok=False).output
    assert "[key_ring_full]" in refused
    for kid in (first, second, third):
        assert kid in refused
    assert "keys retire" in refused
    key = make_key("fourth")
    (tmp_path / "k.pem").write_bytes(key.key_pem)
    (tmp_path / "c.pem").write_bytes(key.cert_pem)
    assert "[key_ring_full]" in keys(env, "import", "--key", str(tmp_path / "k.pem"), "--cert",
                                     str(tmp_path / "c.pem"), ok=False).output
    assert len(states(env)) == 3 and len(list(env.config.key_dir.glob("*.key"))) == 3  # no stray key left
    assert metadata_key_count(env) == 3
    keys(env, "retire", third)
    fourth = new_key(env)
    assert states(env)[fourth] == "next" and metadata_key_count(env) == 3


def test_the_store_refuses_a_fourth_published_key(env: Env) -> None:
    from idp_bridge.errors import KeyRingError

    store = Store.from_url(env.config.database_url)
    try:
        now = dt.datetime.now(dt.UTC)
        store.keyring.register("k1", state="active", now=now)
        store.keyring.register("k2", state="next", now=now)
        store.keyring.register("k3", state="next", now=now)
        with pytest.raises(KeyRingError) as exc:
            store.keyring.register("k4", state="next", now=now)
        assert exc.value.code == "key_ring_full"
        store.keyring.set_state("k3", "retired", now=now)
        store.keyring.register("k4", state="next", now=now)
    finally:
        store.dispose()


def use_sp_metadata(env: Env, xml: bytes) -> None:
    sp = read_raw_config(env.config.path)["sp"][0]  # type: ignore[arg-type]
    Path(sp["metadata"]).write_bytes(xml)


def test_an_ecdsa_key_is_refused_for_huawei(env: Env) -> None:
    use_sp_metadata(env, (FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes())  # advertises no SigningMethod
    (first,) = [p.stem for p in env.config.key_dir.glob("*.key")]
    out = keys(env, "new", "--algorithm", "ec-p256", "--days", "90").output
    found = re.search(r"added key ([0-9a-f]{16})", out)
    assert found
    ec_key = found.group(1)
    keys(env, "confirm-published", ec_key, "--sp", "huawei-cn")
    refused = keys(env, "activate", ec_key, ok=False).output
    assert "[key_algorithm_unsupported]" in refused and "huawei-cn" in refused and "ecdsa-sha256" in refused
    assert "does not advertise ECDSA-SHA256" in keys(env, "status").output
    assert states(env)[first] == "active"
    keys(env, "activate", ec_key, "--force", "--reason", "Huawei confirmed ECDSA by ticket 7")
    assert states(env)[ec_key] == "active"
    store = Store.from_url(env.config.database_url)
    try:
        forced = [e for e in store.audit.recent(20) if e.reason_code == "key_activate_forced"]
    finally:
        store.dispose()
    assert forced and forced[0].detail and any("ecdsa" in b for b in forced[0].detail["blockers"])


def test_an_ecdsa_key_activates_for_an_sp_that_advertises_it(env: Env) -> None:
    from idp_bridge.saml.algorithms import ECDSA_SHA256, RSA_SHA256
    from idp_bridge.saml.metadata import build_sp_metadata
    from tests.journey import SP_ACS, SP_ENTITY_ID

    use_sp_metadata(env, build_sp_metadata(entity_id=SP_ENTITY_ID, acs_url=SP_ACS,
                                           certificate=env.huawei_key.certificate,
                                           signing_methods=[RSA_SHA256, ECDSA_SHA256]))
    out = keys(env, "new", "--algorithm", "ec-p256", "--days", "90").output
    found = re.search(r"added key ([0-9a-f]{16})", out)
    assert found
    keys(env, "confirm-published", found.group(1), "--sp", "huawei-cn")
    keys(env, "activate", found.group(1))
    assert states(env)[found.group(1)] == "active"


def test_list_columns_line_up_with_an_ecdsa_key(env: Env) -> None:
    keys(env, "new", "--algorithm", "ec-p256", "--days", "90")
    lines = keys(env, "list").output.splitlines()
    header, rows = lines[0], [line for line in lines[1:] if re.match(r"[0-9a-f]{16} ", line)]
    assert {"rsa-2048", "ec-secp256r1"} <= {row.split()[2] for row in rows}
    for column, pattern in (("not-after", r"\d{4}-\d{2}-\d{2}"), ("fingerprint", r"[0-9A-F]{2}:")):
        at = header.index(column)
        for row in rows:
            found = re.search(pattern, row)
            assert found and found.start() == at, (column, header, row)


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
    keys(env, "status")  # any keys command records the bootstrap key first
    before = states(env)
    assert list(before.values()) == ["active"]
    out = keys(env, "import", "--key", str(tmp_path / "k.pem"), "--cert", str(tmp_path / "c.pem"), ok=False).output
    assert f"[{code}]" in out
    assert states(env) == before and len(list(env.config.key_dir.glob("*.key"))) == 1


def test_list_warns_of_expiry(env: Env) -> None:
    set_keys(env, expiry_warning_days=60)  # the test key is valid for 30 days
    assert "EXPIRES IN" in keys(env, "list").output
