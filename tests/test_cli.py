"""The commands users start with, run as the installed `idp-bridge` console script would run them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from idp_bridge.cli import main
from idp_bridge.config import load_config
from tests.huawei_fixtures import FIXTURES


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("IDP_BRIDGE_CONFIG", "IDP_BRIDGE_DATABASE_URL", "IDP_BRIDGE_SECRET_KEY", "IDP_BRIDGE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run(*args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_init_writes_config_key_and_metadata(workdir: Path) -> None:
    out = run("init", "--base-url", "https://sso.partner.example", "--entity-id", "https://sso.partner.example/idp")
    config = load_config(workdir / "idp-bridge.toml", environ={})
    assert config.entity_id == "https://sso.partner.example/idp"
    (key_file,) = list((workdir / "certs").glob("*.key"))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((workdir / "idp-bridge.toml").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(key_file.with_suffix(".crt").read_bytes())
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    from idp_bridge.store import Store

    assert Store.from_url(config.database_url).keyring.states() == {key_file.stem: "active"}  # recorded, not implied
    exported = workdir / "metadata" / "IDP Metadata.xml"
    assert exported.exists() and "IDP Metadata.xml" in out
    text = exported.read_text(encoding="utf-8")
    assert 'entityID="https://sso.partner.example/idp"' in text
    assert "PRIVATE" not in text
    before = exported.read_bytes()
    out = run("metadata", "export")
    assert "unchanged" in out and exported.read_bytes() == before


def test_init_refuses_to_overwrite(workdir: Path) -> None:
    run("init", "--base-url", "https://sso.partner.example")
    result = CliRunner().invoke(main, ["init", "--base-url", "https://sso.partner.example"])
    assert result.exit_code != 0 and "--force" in result.output


def test_init_refuses_bad_base_url(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["init", "--base-url", "sso.partner.example"])
    assert result.exit_code == 2
    assert "bridge.base_url" in result.output and "sso.partner.example" in result.output


def test_sp_add_reads_huawei_cn_fixture(workdir: Path) -> None:
    run("init", "--base-url", "https://sso.partner.example")
    out = run("sp", "add", "huawei-cn", "--metadata", str(FIXTURES / "huawei-cn-sp-metadata.xml"),
              "--site", "cn", "--x-account-type", "partner_x_123")
    assert "entityID:             https://auth.huaweicloud.com/" in out
    assert "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer (HTTP-POST)" in out
    assert "AuthnRequestsSigned:  true" in out
    assert "valid until 2028-06-18" in out
    config = load_config(workdir / "idp-bridge.toml", environ={})
    (sp,) = config.service_providers
    assert (sp.name, sp.site, sp.x_account_type) == ("huawei-cn", "cn", "partner_x_123")
    assert sp.console_hosts == ("console.huaweicloud.com",)
    listing = run("sp", "list")
    assert listing.startswith("NAME") and "huawei-cn" in listing and " https://auth.huaweicloud.com/ " in listing


def test_sp_add_refuses_metadata_that_is_not_sp_metadata(workdir: Path) -> None:
    run("init", "--base-url", "https://sso.partner.example")
    result = CliRunner().invoke(main, ["sp", "add", "x", "--metadata", "metadata/IDP Metadata.xml", "--site", "cn",
                                       "--x-account-type", "t"])
    assert result.exit_code == 2 and "metadata_no_sp_descriptor" in result.output


def test_users_add_reads_password_from_stdin(workdir: Path) -> None:
    from idp_bridge.store import Store

    run("init", "--base-url", "https://sso.partner.example")
    run("users", "add", "cust-1", "--email", "c1@partner.example", "--name", "C One", "--mobile", "0086-1380000",
        input="a long enough password\n")
    store = Store.from_url(load_config(workdir / "idp-bridge.toml", environ={}).database_url)
    assert store.users.authenticate("cust-1", "a long enough password") is not None
    assert store.users.authenticate("cust-1", "wrong") is None
    result = CliRunner().invoke(main, ["users", "add", "cust-2"], input="short\n")
    assert result.exit_code != 0


def test_config_from_environment_variable(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = workdir / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("IDP_BRIDGE_CONFIG", str(other / "bridge.toml"))
    run("init", "--base-url", "https://sso.partner.example")
    assert (other / "bridge.toml").exists() and (other / "certs").is_dir()
    assert os.path.exists(other / "metadata" / "IDP Metadata.xml")
