"""Reading the configuration: the TOML file, then the environment, then the rules across keys.

Where it is read from: ``--config PATH``, else ``$IDP_BRIDGE_CONFIG``, else ``./idp-bridge.toml``. Relative
paths in the file are relative to the file's own folder. Every error names the key, the value and what is
wrong (``ConfigError``, codes ``config_*``).

Environment overrides (secrets and per-deployment values stay out of the file):

=====================================  ==========================================================
``IDP_BRIDGE_SECRET_KEY``              session/CSRF signing secret
``IDP_BRIDGE_DATABASE_URL``            SQLAlchemy database URL
``IDP_BRIDGE_BASE_URL``                public base URL
``IDP_BRIDGE_KEY_PASSPHRASE``          passphrase of encrypted signing keys
``IDP_BRIDGE_KEY_PASSPHRASE_FILE``     file holding that passphrase
``IDP_BRIDGE_HANDOFF_SECRET``          HS256 secret shared with the partner platform (hand-off tokens)
``IDP_BRIDGE_WEBHOOK_SECRET``          HMAC-SHA256 secret for webhooks sent to the platform
``IDP_BRIDGE_DEBUG_PASSWORD``          operator password of the console (``[debug] enabled = true``)
=====================================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idp_bridge.config.fields import parse_section, refuse_unknown, resolve_path
from idp_bridge.config.model import (
    CUSTOMER_FIELDS,
    DEBUG_PASSWORD_MIN,
    DEFAULT_ATTRIBUTES,
    DEFAULT_CONFIG_NAME,
    SECTIONS,
    Config,
    DebugSettings,
    Pkcs11KeyConfig,
    PlatformSettings,
    ServiceProviderConfig,
)
from idp_bridge.errors import ConfigError
from idp_bridge.huawei.sites import site

TABLES = ("bridge", "attributes", "sp", *SECTIONS)


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("IDP_BRIDGE_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def read_raw_config(path: Path) -> dict[str, Any]:
    """The file as a plain dict (``init`` and ``sp`` commands edit it)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist; run `idp-bridge init --base-url URL` "
                          "or pass --config", code="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}", code="config_syntax") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}", code="config_unreadable") from exc


def write_raw_config(path: Path, raw: Mapping[str, Any]) -> None:
    """Write atomically with mode 0600 (the file may hold the session secret)."""
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(dict(raw), fh)
    os.replace(tmp, path)


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate. Raises ConfigError."""
    p = config_path(path)
    return parse_config(read_raw_config(p), base_dir=p.resolve().parent, environ=environ, path=p.resolve())


def parse_config(raw: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None,
                 path: Path | None = None) -> Config:
    env = os.environ if environ is None else environ
    refuse_unknown(raw, TABLES, "")

    def table(name: str) -> Mapping[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table ([{name}]), got {type(value).__name__}", code="config_type")
        return value

    sections: dict[str, Any] = {
        name: cls(**parse_section(cls, table(name), f"{name}.", env=env, base_dir=base_dir,
                                  **_given(name, table(name), base_dir, env)))
        for name, cls in SECTIONS.items()}
    platform: PlatformSettings = sections["platform"]
    if platform.handoff_public_key is None or platform.handoff_public_key_algorithm is None:
        # the algorithm goes with the key: RS256 unless said otherwise, nothing without a key
        sections["platform"] = dataclasses.replace(
            platform, handoff_public_key_algorithm="RS256" if platform.handoff_public_key else None)
    partner_id = sections["huawei"].partner_id
    bridge = parse_section(Config, table("bridge"), "bridge.", env=env, base_dir=base_dir)
    if "base_url" not in bridge:
        raise ConfigError("bridge.base_url: missing (required)", code="config_missing_key")
    bridge.setdefault("entity_id", bridge["base_url"] + "/saml/metadata")
    bridge["database_url"] = _sqlite_url(base_dir, bridge.get("database_url", "sqlite:///idp-bridge.db"))
    for name, default in (("key_dir", "certs"), ("metadata_dir", "metadata")):
        bridge[name] = resolve_path(base_dir, bridge.get(name, default))
    if len(bridge.get("secret_key", "")) < 32:
        raise ConfigError("bridge.secret_key: missing or shorter than 32 characters; set IDP_BRIDGE_SECRET_KEY "
                          "(or secret_key in the file) to a long random value", code="config_secret")
    config = Config(**bridge, partner_id=partner_id, path=path, key_passphrase=_passphrase(env),
                    attributes=_attributes(raw.get("attributes", DEFAULT_ATTRIBUTES)),
                    service_providers=_service_providers(raw.get("sp", []), base_dir, env), **sections)
    _check_across(config)
    return config


def _given(name: str, table: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Fields of a section that are lists of tables, read here (``[[keys.pkcs11]]``)."""
    if name != "keys":
        return {}
    items = table.get("pkcs11", [])
    if not isinstance(items, list):
        raise ConfigError(f"keys.pkcs11: expected a list of tables ([[keys.pkcs11]]), got {type(items).__name__}",
                          code="config_type")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(f"keys.pkcs11[{i}]: expected a table ([[keys.pkcs11]])", code="config_type")
        out.append(Pkcs11KeyConfig(**parse_section(Pkcs11KeyConfig, item, f"keys.pkcs11[{i}].", env=env,
                                                   base_dir=base_dir)))
    return {"pkcs11": tuple(out)}


def _service_providers(items: Any, base_dir: Path, env: Mapping[str, str]) -> tuple[ServiceProviderConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"sp: expected a list of tables ([[sp]]), got {type(items).__name__}", code="config_type")
    sps: list[ServiceProviderConfig] = []
    for i, item in enumerate(items):
        where = f"sp[{i}]."
        if not isinstance(item, Mapping):
            raise ConfigError(f"sp[{i}]: expected a table ([[sp]])", code="config_type")
        values = parse_section(ServiceProviderConfig, item, where, env=env, base_dir=base_dir)
        if any(s.name == values["name"] for s in sps):
            raise ConfigError(f"{where}name: {values['name']!r} is used by another [[sp]]", code="config_sp_name")
        if not values["metadata"].startswith(("https://", "http://")):
            values["metadata"] = str(resolve_path(base_dir, values["metadata"]))
        values.setdefault("console_hosts", (site(values["site"]).console_host,))
        sps.append(ServiceProviderConfig(**values))
    x_types = [s.x_account_type for s in sps]
    if len(set(x_types)) != len(x_types):
        raise ConfigError(f"sp: the same x_account_type appears twice: {x_types!r}", code="config_x_account_type")
    return tuple(sps)


def _attributes(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"attributes: expected a table, got {type(raw).__name__}", code="config_type")
    for attr, source in raw.items():
        if not isinstance(source, str) or (source not in CUSTOMER_FIELDS and not source.startswith("literal:")):
            raise ConfigError(f"attributes.{attr}: {source!r} is not a customer field; expected one of "
                              f"{', '.join(CUSTOMER_FIELDS)} or 'literal:VALUE'", code="config_attribute")
    if "xUserId" not in raw:
        raise ConfigError("attributes.xUserId: missing; Huawei identifies the customer by it", code="config_attribute")
    return dict(raw)


def _passphrase(env: Mapping[str, str]) -> str | None:
    passphrase = env.get("IDP_BRIDGE_KEY_PASSPHRASE")
    pass_file = env.get("IDP_BRIDGE_KEY_PASSPHRASE_FILE")
    if passphrase is None and pass_file:
        try:
            passphrase = Path(pass_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"IDP_BRIDGE_KEY_PASSPHRASE_FILE: cannot read {pass_file!r}: {exc}",
                              code="config_passphrase") from exc
    return passphrase


def _sqlite_url(base_dir: Path, url: str) -> str:
    """Make ``sqlite:///relative.db`` relative to the config folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(resolve_path(base_dir, url[len(prefix):]))
    return url


def _check_across(config: Config) -> None:
    """Rules that tie several keys together."""
    p: PlatformSettings = config.platform
    if p.handoff_public_key is not None and not p.handoff_public_key.is_file():
        raise ConfigError(f"platform.handoff_public_key: {str(p.handoff_public_key)!r} does not exist",
                          code="config_key_file")
    if p.webhook_url and (not p.webhook_secret or len(p.webhook_secret.encode()) < 32):
        raise ConfigError("platform.webhook_url is set but IDP_BRIDGE_WEBHOOK_SECRET (or platform.webhook_secret) "
                          "is missing or shorter than 32 bytes", code="config_secret")
    d: DebugSettings = config.debug
    if d.enabled and (not d.password or len(d.password) < DEBUG_PASSWORD_MIN):
        raise ConfigError(f"debug.enabled is true but the operator password (IDP_BRIDGE_DEBUG_PASSWORD or "
                          f"debug.password) is missing or shorter than {DEBUG_PASSWORD_MIN} characters",
                          code="config_debug_password")
