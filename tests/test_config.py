"""config/: every ConfigError code the loader gives, the "did you mean" hint, defaults and environment overrides."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from idp_bridge.config import load_config, parse_config
from idp_bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 40


def _raw() -> dict[str, Any]:
    return {"bridge": {"base_url": "https://sso.example", "secret_key": SECRET},
            "sp": [{"name": "huawei-cn", "site": "cn", "metadata": "sp.xml", "x_account_type": "acct"}]}


def _parse(raw: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    return parse_config(raw, base_dir=tmp_path, environ=env or {})


Mutation = Callable[[dict[str, Any]], None]
CASES: dict[str, tuple[str, Mutation, str]] = {
    "unknown table": ("config_unknown_key", lambda r: r.update(sam={}), "did you mean 'saml'"),
    "unknown key": ("config_unknown_key", lambda r: r.update(saml={"clock_skew": 10}),
                    "did you mean 'clock_skew_seconds'"),
    "unknown sp key": ("config_unknown_key", lambda r: r["sp"][0].update(x_acount_type="a"), "x_account_type"),
    "missing base_url": ("config_missing_key", lambda r: r["bridge"].pop("base_url"), "bridge.base_url"),
    "missing sp key": ("config_missing_key", lambda r: r["sp"][0].pop("site"), "sp[0].site"),
    "wrong type": ("config_type", lambda r: r.update(saml={"clock_skew_seconds": "180"}), "expected a whole number"),
    "bool for int": ("config_type", lambda r: r.update(limits={"login_window_seconds": True}), "login_window_seconds"),
    "table not a table": ("config_type", lambda r: r.update(saml=3), "saml"),
    "sp not a list": ("config_type", lambda r: r.update(sp={"name": "x"}), "[[sp]]"),
    "pattern": ("config_pattern", lambda r: r.update(huawei={"mobile_pattern": "(["}), "regular expression"),
    "locale": ("config_range", lambda r: r.update(ui={"default_locale": "fr"}), "en, zh_CN"),
    "range": ("config_range", lambda r: r.update(saml={"clock_skew_seconds": 601}), "between 1 and 600"),
    "negative": ("config_range", lambda r: r.update(keys={"publish_lead_seconds": -1}), "at least 0"),
    "url": ("config_url", lambda r: r["bridge"].update(base_url="sso.example"), "absolute http(s) URL"),
    "url query": ("config_url", lambda r: r.update(platform={"return_url": "https://p.example/?a=1"}), "query"),
    "secret": ("config_secret", lambda r: r["bridge"].update(secret_key="short"), "32 characters"),
    "handoff secret": ("config_secret", lambda r: r.update(platform={"handoff_secret": "short"}), "32 bytes"),
    "webhook secret": ("config_secret", lambda r: r.update(platform={"webhook_url": "https://p.example/h"}),
                       "IDP_BRIDGE_WEBHOOK_SECRET"),
    "entity id": ("config_entity_id", lambda r: r["bridge"].update(entity_id=" x "), "surrounding spaces"),
    "sp name": ("config_sp_name", lambda r: r["sp"][0].update(name="bad name"), "letters, digits"),
    "sp name twice": ("config_sp_name", lambda r: r["sp"].append({**r["sp"][0], "x_account_type": "b"}), "another"),
    "site": ("config_site", lambda r: r["sp"][0].update(site="xx"), "cn, intl, eu"),
    "x_account_type": ("config_x_account_type", lambda r: r["sp"][0].update(x_account_type=" "), "Partner Center"),
    "x_account_type twice": ("config_x_account_type",
                             lambda r: r["sp"].append({**r["sp"][0], "name": "other"}), "appears twice"),
    "console hosts": ("config_console_hosts", lambda r: r["sp"][0].update(console_hosts=[]), "non-empty"),
    "fetchers": ("config_metadata_fetchers", lambda r: r["sp"][0].update(metadata_fetchers=["10.0.0.1/8"]),
                 "not an IP network"),
    "return params": ("config_return_params", lambda r: r.update(platform={"return_params": ["a b"]}),
                      "parameter names"),
    "algorithm": ("config_algorithm", lambda r: r.update(platform={"handoff_public_key_algorithm": "HS256"}),
                  "RS256 or ES256"),
    "key file": ("config_key_file", lambda r: r.update(platform={"handoff_public_key": "nope.pem"}),
                 "does not exist"),
    "debug password": ("config_debug_password", lambda r: r.update(debug={"enabled": True}), "operator password"),
    "attribute source": ("config_attribute", lambda r: r.update(attributes={"xUserId": "user_id", "x": "nope"}),
                         "not a customer field"),
    "attribute xUserId": ("config_attribute", lambda r: r.update(attributes={"email": "email"}), "xUserId"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_mistake_names_key_value_and_code(name: str, tmp_path: Path) -> None:
    code, mutate, says = CASES[name]
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as exc:
        _parse(raw, tmp_path)
    assert exc.value.code == code, exc.value
    assert says in exc.value.operator, exc.value.operator


def test_every_config_code_has_a_case() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "idp_bridge" / "config").glob("*.py"))
    raised = set(re.findall(r'code="(config_[a-z_]+)"', source))
    covered = {code for code, _, _ in CASES.values()} | {"config_missing", "config_syntax", "config_unreadable",
                                                         "config_passphrase"}
    assert raised <= covered, sorted(raised - covered)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent.toml", environ={})
    assert exc.value.code == "config_missing" and "idp-bridge init" in exc.value.operator
    bad = tmp_path / "bad.toml"
    bad.write_text("[bridge\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad, environ={})
    assert exc.value.code == "config_syntax"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError) as exc:
        load_config(binary, environ={})
    assert exc.value.code == "config_unreadable"
    with pytest.raises(ConfigError) as exc:
        _parse(_raw(), tmp_path, env={"IDP_BRIDGE_KEY_PASSPHRASE_FILE": str(tmp_path / "none")})
    assert exc.value.code == "config_passphrase"


def test_defaults_paths_and_environment(tmp_path: Path) -> None:
    cfg = _parse(_raw(), tmp_path)
    assert cfg.entity_id == "https://sso.example/saml/metadata"
    assert cfg.key_dir == tmp_path / "certs" and cfg.metadata_dir == tmp_path / "metadata"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'idp-bridge.db'}"
    assert cfg.service_providers[0].metadata == str(tmp_path / "sp.xml")
    assert cfg.service_providers[0].console_hosts == ("console.huaweicloud.com",)
    assert cfg.saml.clock_skew_seconds == 180 and cfg.keys.reload_seconds == 2.0
    env = {"IDP_BRIDGE_BASE_URL": "https://other.example/", "IDP_BRIDGE_HANDOFF_SECRET": "h" * 32,
           "IDP_BRIDGE_DATABASE_URL": "postgresql+psycopg://db/x"}
    cfg = _parse(_raw(), tmp_path, env=env)
    assert cfg.base_url == "https://other.example" and cfg.platform.handoff_secret == "h" * 32
    assert cfg.database_url == "postgresql+psycopg://db/x"
    assert "h" * 32 not in repr(cfg) and SECRET not in repr(cfg)  # secrets stay out of repr


def test_handoff_key_algorithm_goes_with_the_key(tmp_path: Path) -> None:
    (tmp_path / "platform.pem").write_text("-----BEGIN PUBLIC KEY-----\n")
    raw = _raw()
    raw["platform"] = {"handoff_public_key": "platform.pem"}
    assert _parse(raw, tmp_path).platform.handoff_public_key_algorithm == "RS256"
    raw["platform"] = {"handoff_public_key_algorithm": "ES256"}
    assert _parse(raw, tmp_path).platform.handoff_public_key_algorithm is None


def test_pkcs11_tables(tmp_path: Path) -> None:
    raw = _raw()
    raw["keys"] = {"pkcs11": [{"module": "/usr/lib/softhsm/libsofthsm2.so", "token_label": "t", "key_label": "k",
                               "certificate": "k.crt"}]}
    token = _parse(raw, tmp_path).keys.pkcs11[0]
    assert token.certificate == tmp_path / "k.crt" and token.pin_env == "IDP_BRIDGE_PKCS11_PIN"
    raw["keys"]["pkcs11"][0]["pin"] = "1234"
    with pytest.raises(ConfigError) as exc:
        _parse(raw, tmp_path)
    assert exc.value.code == "config_unknown_key" and "pin_env" in exc.value.operator
