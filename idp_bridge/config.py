"""Configuration: one TOML file, environment overrides for secrets, validated at start-up.

Where it is read from: ``--config PATH``, else ``$IDP_BRIDGE_CONFIG``, else ``./idp-bridge.toml``.
Relative paths in the file are relative to the file's own folder. Every validation error
names the key, the value and what is wrong.

Environment overrides (secrets and per-deployment values stay out of the file):

=============================  ===========================================
``IDP_BRIDGE_SECRET_KEY``      session/CSRF signing secret
``IDP_BRIDGE_DATABASE_URL``    SQLAlchemy database URL
``IDP_BRIDGE_BASE_URL``        public base URL
``IDP_BRIDGE_KEY_PASSPHRASE``  passphrase of encrypted signing keys
``IDP_BRIDGE_KEY_PASSPHRASE_FILE``  file holding that passphrase
``IDP_BRIDGE_HANDOFF_SECRET``  HS256 secret shared with the partner platform (hand-off tokens)
``IDP_BRIDGE_WEBHOOK_SECRET``  HMAC-SHA256 secret for webhooks sent to the platform
``IDP_BRIDGE_DEBUG_PASSWORD``  operator password of the debug console (``[debug] enabled = true``)
=============================  ===========================================
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from idp_bridge.errors import ConfigError
from idp_bridge.huawei.sites import SITES, site

DEFAULT_CONFIG_NAME = "idp-bridge.toml"

#: SAML attribute name -> customer field. ``partner_id`` is the ``[huawei] partner_id`` setting.
DEFAULT_ATTRIBUTES: dict[str, str] = {
    "xUserId": "user_id",
    "xAccountId": "account_id",
    "bpId": "partner_id",
    "email": "email",
    "name": "name",
    "mobile": "mobile",
}
CUSTOMER_FIELDS = ("user_id", "account_id", "partner_id", "email", "name", "mobile")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ServiceProviderConfig:
    name: str
    site: str
    metadata: str  # a file path (absolute after loading) or an http(s) URL
    x_account_type: str
    console_hosts: tuple[str, ...]
    sign_response: bool = False
    #: Overrides the site's ``/authui/saml/login`` URL (the built-in simulator, a staging IAM).
    login_url: str | None = None
    #: Networks this SP fetches ``/saml/metadata`` from; only such fetches are evidence for ``keys activate``.
    #: Empty (Huawei: metadata by manual upload): only ``keys confirm-published`` is.
    metadata_fetchers: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def metadata_is_url(self) -> bool:
        return self.metadata.startswith(("https://", "http://"))


@dataclass(frozen=True)
class SamlSettings:
    clock_skew_seconds: int = 180
    assertion_lifetime_seconds: int = 300
    metadata_valid_days: int = 30
    metadata_cache_seconds: int = 86400
    session_lifetime_seconds: int = 8 * 3600
    post_binding: bool = True
    #: A sign-in waiting for the customer longer than this is not answered (the SP gave up on it).
    pending_login_max_age_seconds: int = 600


@dataclass(frozen=True)
class Pkcs11KeyConfig:
    """``[[keys.pkcs11]]``: a signing key held in a PKCS#11 token (HSM); its certificate is a file."""

    module: Path
    token_label: str
    key_label: str
    certificate: Path
    pin_env: str = "IDP_BRIDGE_PKCS11_PIN"


@dataclass(frozen=True)
class KeySettings:
    """``[keys]``: rotation timing (see ``idp-bridge keys status``)."""

    #: How long a key must be published (state ``next``) before ``keys activate`` accepts it.
    publish_lead_seconds: int = 86400
    #: How long a ``retiring`` key stays in metadata before ``keys retire`` accepts it.
    retiring_grace_seconds: int = 3600
    #: How often running workers re-read the key folder and the key states.
    reload_seconds: float = 2.0
    expiry_warning_days: int = 30
    pkcs11: tuple[Pkcs11KeyConfig, ...] = ()


HANDOFF_ALGORITHMS = ("HS256", "RS256", "ES256")


@dataclass(frozen=True)
class PlatformSettings:
    """``[platform]``: the partner platform the bridge serves (hand-off, binding, return, webhooks)."""

    #: Where a visitor with no session signs in (``?return_to=<our URL>`` is added); None: local form.
    login_url: str | None = None
    #: HS256 shared secret (``IDP_BRIDGE_HANDOFF_SECRET``); None: HS256 not accepted.
    handoff_secret: str | None = None
    #: PEM public key of the platform and its algorithm (RS256 or ES256); None: not accepted.
    handoff_public_key: Path | None = None
    handoff_public_key_algorithm: str | None = None
    handoff_max_lifetime_seconds: int = 300
    handoff_leeway_seconds: int = 60
    #: Where the customer's browser lands after Huawei's binding notification.
    bind_landing_url: str | None = None
    #: Partner pages for "order payment success" and top-up returns.
    return_url: str | None = None
    recharge_url: str | None = None
    #: Query parameters passed through from Huawei's return to the platform page (names only).
    return_params: tuple[str, ...] = ()
    webhook_url: str | None = None
    webhook_secret: str | None = None  # IDP_BRIDGE_WEBHOOK_SECRET
    #: Run the webhook delivery loop inside every web process (``idp-bridge webhooks run`` otherwise).
    webhook_in_process: bool = True
    #: Seconds a webhook POST may take in all (connect, send, answer); a claim's lease is twice it plus 10 s.
    webhook_timeout_seconds: int = 10


@dataclass(frozen=True)
class DebugSettings:
    """``[debug]``: the operator console at ``/_bridge/`` (off unless enabled; password from the environment)."""

    enabled: bool = False
    password: str | None = field(default=None, repr=False)  # IDP_BRIDGE_DEBUG_PASSWORD
    #: Decoded SAML exchanges kept in memory per process for the console.
    max_exchanges: int = 100


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: sign-in throttling (local ``/login`` and the console), counted in the shared database."""

    #: Failed sign-ins allowed per user ID (and for the console's one operator) per window.
    login_account_attempts: int = 5
    #: Failed sign-ins allowed per client address (IPv6: per /64) per window.
    login_address_attempts: int = 20
    login_window_seconds: int = 900
    #: How long a key stays locked once it went over its limit (answered 429 with Retry-After).
    login_lockout_seconds: int = 900


@dataclass(frozen=True)
class Config:
    base_url: str
    entity_id: str
    key_dir: Path
    metadata_dir: Path
    database_url: str
    secret_key: str
    partner_id: str = ""
    service_providers: tuple[ServiceProviderConfig, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    saml: SamlSettings = field(default_factory=SamlSettings)
    key_passphrase: str | None = None
    path: Path | None = None
    trust_forwarded: bool = False
    platform: PlatformSettings = field(default_factory=PlatformSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    debug: DebugSettings = field(default_factory=lambda: DebugSettings())
    limits: LimitSettings = field(default_factory=LimitSettings)

    @property
    def sso_url(self) -> str:
        return self.base_url + "/saml/sso"

    @property
    def metadata_url(self) -> str:
        return self.base_url + "/saml/metadata"

    @property
    def metadata_file(self) -> Path:
        return self.metadata_dir / "IDP Metadata.xml"

    def sp(self, name: str) -> ServiceProviderConfig:
        for sp in self.service_providers:
            if sp.name == name:
                return sp
        known = ", ".join(s.name for s in self.service_providers) or "none configured"
        raise ConfigError(f"no service provider named {name!r} (known: {known})", code="sp_unknown")


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("IDP_BRIDGE_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate. Raises ConfigError."""
    p = config_path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist; run `idp-bridge init --base-url URL` "
                          "or pass --config", code="config_missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}", code="config_syntax") from exc
    return parse_config(raw, base_dir=p.resolve().parent, environ=environ, path=p.resolve())


def _get(table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}{key}: missing (required)", code="config_missing_key")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: {value!r} is a {type(value).__name__}; expected {want}",
                          code="config_type")
    return value


def _check_url(value: str, key: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {value!r} is not an absolute http(s) URL", code="config_url")
    if parts.query or parts.fragment:
        raise ConfigError(f"{key}: {value!r} must not carry a query or fragment", code="config_url")
    return value.rstrip("/")


def _resolve(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _sqlite_url(base_dir: Path, url: str) -> str:
    """Make ``sqlite:///relative.db`` relative to the config folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + str(_resolve(base_dir, url[len(prefix):]))
    return url


def _metadata_fetchers(values: list[Any], where: str
                       ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``[[sp]] metadata_fetchers``: IP networks such as ``"203.0.113.0/24"`` or ``"127.0.0.1/32"``."""
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where}metadata_fetchers: {value!r} is a {type(value).__name__}; expected a "
                              "string such as '203.0.113.0/24'", code="config_type")
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError as exc:
            raise ConfigError(f"{where}metadata_fetchers: {value!r} is not an IP network ({exc}); expected e.g. "
                              "'203.0.113.0/24' or '127.0.0.1/32'", code="config_metadata_fetchers") from exc
    return tuple(networks)


def parse_config(raw: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None,
                 path: Path | None = None) -> Config:
    env = os.environ if environ is None else environ
    bridge = _get(raw, "bridge", "", dict, {})
    unknown = set(raw) - {"bridge", "saml", "attributes", "huawei", "sp", "platform", "keys", "debug",
                            "limits"}
    if unknown:
        raise ConfigError(f"unknown top-level table(s): {', '.join(sorted(unknown))}; expected bridge, saml, "
                          "attributes, huawei, sp", code="config_unknown_key")

    base_url = env.get("IDP_BRIDGE_BASE_URL") or _get(bridge, "base_url", "bridge.", str)
    base_url = _check_url(base_url, "bridge.base_url")
    entity_id = _get(bridge, "entity_id", "bridge.", str, base_url + "/saml/metadata")
    if not entity_id.strip() or entity_id != entity_id.strip():
        raise ConfigError(f"bridge.entity_id: {entity_id!r} is empty or has surrounding spaces",
                          code="config_entity_id")
    key_dir = _resolve(base_dir, _get(bridge, "key_dir", "bridge.", str, "certs"))
    metadata_dir = _resolve(base_dir, _get(bridge, "metadata_dir", "bridge.", str, "metadata"))
    database_url = env.get("IDP_BRIDGE_DATABASE_URL") or _get(bridge, "database_url", "bridge.", str,
                                                             "sqlite:///idp-bridge.db")
    database_url = _sqlite_url(base_dir, database_url)
    secret_key = env.get("IDP_BRIDGE_SECRET_KEY") or _get(bridge, "secret_key", "bridge.", str, "")
    if len(secret_key) < 32:
        raise ConfigError("bridge.secret_key: missing or shorter than 32 characters; set IDP_BRIDGE_SECRET_KEY "
                          "(or secret_key in the file) to a long random value", code="config_secret")
    passphrase = env.get("IDP_BRIDGE_KEY_PASSPHRASE")
    pass_file = env.get("IDP_BRIDGE_KEY_PASSPHRASE_FILE")
    if passphrase is None and pass_file:
        try:
            passphrase = Path(pass_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"IDP_BRIDGE_KEY_PASSPHRASE_FILE: cannot read {pass_file!r}: {exc}",
                              code="config_passphrase") from exc
    trust_forwarded = _get(bridge, "trust_forwarded_headers", "bridge.", bool, False)

    saml_raw = _get(raw, "saml", "", dict, {})
    saml_kwargs: dict[str, Any] = {}
    for name, default in SamlSettings().__dict__.items():
        if name in saml_raw:
            value = _get(saml_raw, name, "saml.", type(default))
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise ConfigError(f"saml.{name}: {value!r} must be a positive number", code="config_range")
            saml_kwargs[name] = value
    extra = set(saml_raw) - set(SamlSettings().__dict__)
    if extra:
        raise ConfigError(f"saml: unknown key(s) {', '.join(sorted(extra))}", code="config_unknown_key")
    saml = SamlSettings(**saml_kwargs)
    if saml.clock_skew_seconds > 600:
        raise ConfigError(f"saml.clock_skew_seconds: {saml.clock_skew_seconds} is above the 600 s ceiling "
                          "(a wide window widens the replay window too)", code="config_range")

    attributes = dict(_get(raw, "attributes", "", dict, DEFAULT_ATTRIBUTES))
    for attr, source in attributes.items():
        if not isinstance(source, str) or (source not in CUSTOMER_FIELDS and not source.startswith("literal:")):
            raise ConfigError(f"attributes.{attr}: {source!r} is not a customer field; expected one of "
                              f"{', '.join(CUSTOMER_FIELDS)} or 'literal:VALUE'", code="config_attribute")
    if "xUserId" not in attributes:
        raise ConfigError("attributes.xUserId: missing; Huawei identifies the customer by it",
                          code="config_attribute")

    huawei = _get(raw, "huawei", "", dict, {})
    partner_id = _get(huawei, "partner_id", "huawei.", str, "")

    sps: list[ServiceProviderConfig] = []
    for i, sp_raw in enumerate(_get(raw, "sp", "", list, [])):
        where = f"sp[{i}]."
        if not isinstance(sp_raw, dict):
            raise ConfigError(f"sp[{i}]: expected a table ([[sp]])", code="config_type")
        name = _get(sp_raw, "name", where, str)
        if not _NAME_RE.match(name):
            raise ConfigError(f"{where}name: {name!r} must be 1-64 letters, digits, '.', '_' or '-'",
                              code="config_sp_name")
        if any(s.name == name for s in sps):
            raise ConfigError(f"{where}name: {name!r} is used by another [[sp]]", code="config_sp_name")
        site_name = _get(sp_raw, "site", where, str)
        if site_name not in SITES:
            raise ConfigError(f"{where}site: {site_name!r} is not one of {', '.join(SITES)}", code="config_site")
        metadata = _get(sp_raw, "metadata", where, str)
        if not metadata.startswith(("https://", "http://")):
            metadata = str(_resolve(base_dir, metadata))
        x_account_type = _get(sp_raw, "x_account_type", where, str)
        if not x_account_type.strip():
            raise ConfigError(f"{where}x_account_type: empty; copy it from Partner Center "
                              "(Support > Open APIs > Configure)", code="config_x_account_type")
        hosts = _get(sp_raw, "console_hosts", where, list, [site(site_name).console_host])
        if not hosts or not all(isinstance(h, str) and h and "/" not in h for h in hosts):
            raise ConfigError(f"{where}console_hosts: {hosts!r} must be a non-empty list of host names",
                              code="config_console_hosts")
        sign_response = _get(sp_raw, "sign_response", where, bool, False)
        login_url = _get(sp_raw, "login_url", where, str, None)
        if login_url is not None:
            login_url = _check_url(login_url, where + "login_url")
        fetchers = _metadata_fetchers(_get(sp_raw, "metadata_fetchers", where, list, []), where)
        unknown_sp = set(sp_raw) - {"name", "site", "metadata", "x_account_type", "console_hosts",
                                    "sign_response", "login_url", "metadata_fetchers"}
        if unknown_sp:
            raise ConfigError(f"{where[:-1]}: unknown key(s) {', '.join(sorted(unknown_sp))}",
                              code="config_unknown_key")
        sps.append(ServiceProviderConfig(name, site_name, metadata, x_account_type, tuple(hosts), sign_response,
                                         login_url, fetchers))
    x_types = [s.x_account_type for s in sps]
    if len(set(x_types)) != len(x_types):
        raise ConfigError(f"sp: the same x_account_type appears twice: {x_types!r}", code="config_x_account_type")

    return Config(
        base_url=base_url, entity_id=entity_id, key_dir=key_dir, metadata_dir=metadata_dir,
        database_url=database_url, secret_key=secret_key, partner_id=partner_id,
        service_providers=tuple(sps), attributes=attributes, saml=saml, key_passphrase=passphrase,
        path=path, trust_forwarded=trust_forwarded,
        platform=_parse_platform(_get(raw, "platform", "", dict, {}), base_dir, env),
        keys=_parse_keys(_get(raw, "keys", "", dict, {}), base_dir),
        debug=_parse_debug(_get(raw, "debug", "", dict, {}), env),
        limits=_parse_limits(_get(raw, "limits", "", dict, {})),
    )


def _parse_limits(raw: Mapping[str, Any]) -> LimitSettings:
    """``[limits]``: whole numbers from 1 to 1,000,000."""
    fields = LimitSettings.__dataclass_fields__
    unknown = set(raw) - set(fields)
    if unknown:
        raise ConfigError(f"limits: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(fields)}",
                          code="config_unknown_key")
    values = {name: _get(raw, name, "limits.", int, getattr(LimitSettings(), name)) for name in fields}
    for name, value in values.items():
        if not 1 <= value <= 1_000_000:
            raise ConfigError(f"limits.{name}: {value!r} must be between 1 and 1000000", code="config_range")
    return LimitSettings(**values)


DEBUG_PASSWORD_MIN = 16


def _parse_debug(raw: Mapping[str, Any], env: Mapping[str, str]) -> DebugSettings:
    """``[debug]``: enabled, password (better: IDP_BRIDGE_DEBUG_PASSWORD), max_exchanges. Fails closed."""
    unknown = set(raw) - {"enabled", "password", "max_exchanges"}
    if unknown:
        raise ConfigError(f"debug: unknown key(s) {', '.join(sorted(unknown))}; expected enabled, password, "
                          "max_exchanges", code="config_unknown_key")
    enabled = _get(raw, "enabled", "debug.", bool, False)
    password = env.get("IDP_BRIDGE_DEBUG_PASSWORD") or _get(raw, "password", "debug.", str, None)
    max_exchanges = _get(raw, "max_exchanges", "debug.", int, 100)
    if not 1 <= max_exchanges <= 10_000:
        raise ConfigError(f"debug.max_exchanges: {max_exchanges} must be between 1 and 10000", code="config_range")
    if enabled and (not password or len(password) < DEBUG_PASSWORD_MIN):
        raise ConfigError(f"debug.enabled is true but the operator password (IDP_BRIDGE_DEBUG_PASSWORD or "
                          f"debug.password) is missing or shorter than {DEBUG_PASSWORD_MIN} characters",
                          code="config_debug_password")
    return DebugSettings(enabled=enabled, password=password, max_exchanges=max_exchanges)


_PARAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _parse_platform(raw: Mapping[str, Any], base_dir: Path, env: Mapping[str, str]) -> PlatformSettings:
    """``[platform]``. URLs are absolute http(s) without query or fragment; secrets come from the environment."""
    w = "platform."
    known = set(PlatformSettings.__dataclass_fields__) - {"handoff_secret", "webhook_secret"}
    unknown = set(raw) - known - {"handoff_secret", "webhook_secret"}
    if unknown:
        raise ConfigError(f"platform: unknown key(s) {', '.join(sorted(unknown))}; expected "
                          f"{', '.join(sorted(known))}", code="config_unknown_key")
    urls: dict[str, str | None] = {}
    for key in ("login_url", "bind_landing_url", "return_url", "recharge_url", "webhook_url"):
        value = _get(raw, key, w, str, None)
        urls[key] = _check_url(value, w + key) if value is not None else None
    secret = env.get("IDP_BRIDGE_HANDOFF_SECRET") or _get(raw, "handoff_secret", w, str, None)
    if secret is not None and len(secret.encode()) < 32:
        raise ConfigError("platform.handoff_secret (IDP_BRIDGE_HANDOFF_SECRET): shorter than 32 bytes; HS256 "
                          "needs a long random shared secret", code="config_secret")
    key_file = _get(raw, "handoff_public_key", w, str, None)
    key_path = _resolve(base_dir, key_file) if key_file is not None else None
    key_alg = _get(raw, "handoff_public_key_algorithm", w, str, "RS256" if key_path else None)
    if key_alg is not None and key_alg not in ("RS256", "ES256"):
        raise ConfigError(f"platform.handoff_public_key_algorithm: {key_alg!r} is not RS256 or ES256",
                          code="config_algorithm")
    if key_path is not None and not key_path.is_file():
        raise ConfigError(f"platform.handoff_public_key: {str(key_path)!r} does not exist", code="config_key_file")
    numbers: dict[str, int] = {}
    for key, default, floor, ceiling in (("handoff_max_lifetime_seconds", 300, 0, 300),
                                         ("handoff_leeway_seconds", 60, 0, 300), ("webhook_timeout_seconds", 10, 1, 120)):
        value = _get(raw, key, w, int, default)
        if not floor <= value <= ceiling:
            raise ConfigError(f"{w}{key}: {value!r} must be between {floor} and {ceiling}", code="config_range")
        numbers[key] = value
    params = _get(raw, "return_params", w, list, [])
    if not all(isinstance(p, str) and _PARAM_RE.match(p) for p in params):
        raise ConfigError(f"platform.return_params: {params!r} must be a list of parameter names "
                          "(letters, digits, '_', '.', '-')", code="config_return_params")
    webhook_secret = env.get("IDP_BRIDGE_WEBHOOK_SECRET") or _get(raw, "webhook_secret", w, str, None)
    if urls["webhook_url"] and (not webhook_secret or len(webhook_secret.encode()) < 32):
        raise ConfigError("platform.webhook_url is set but IDP_BRIDGE_WEBHOOK_SECRET (or platform.webhook_secret) "
                          "is missing or shorter than 32 bytes", code="config_secret")
    return PlatformSettings(
        login_url=urls["login_url"], handoff_secret=secret, handoff_public_key=key_path,
        handoff_public_key_algorithm=key_alg if key_path else None,
        handoff_max_lifetime_seconds=numbers["handoff_max_lifetime_seconds"],
        handoff_leeway_seconds=numbers["handoff_leeway_seconds"],
        bind_landing_url=urls["bind_landing_url"], return_url=urls["return_url"],
        recharge_url=urls["recharge_url"], return_params=tuple(params), webhook_url=urls["webhook_url"],
        webhook_secret=webhook_secret, webhook_in_process=_get(raw, "webhook_in_process", w, bool, True),
        webhook_timeout_seconds=numbers["webhook_timeout_seconds"],
    )


def read_raw_config(path: Path) -> dict[str, Any]:
    """The file as a plain dict, for commands that edit it (``init``, ``sp add``)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist; run `idp-bridge init --base-url URL` "
                          "first", code="config_missing") from None


def write_raw_config(path: Path, raw: Mapping[str, Any]) -> None:
    """Write atomically with mode 0600 (the file may hold the session secret)."""
    import tomli_w

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        tomli_w.dump(dict(raw), fh)
    os.replace(tmp, path)


def _parse_keys(raw: Mapping[str, Any], base_dir: Path) -> KeySettings:
    """``[keys]``: non-negative whole seconds (reload may be fractional), optional ``[[keys.pkcs11]]``."""
    w = "keys."
    defaults = KeySettings()
    unknown = set(raw) - set(KeySettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"keys: unknown key(s) {', '.join(sorted(unknown))}; expected "
                          f"{', '.join(KeySettings.__dataclass_fields__)}", code="config_unknown_key")
    values: dict[str, Any] = {}
    for name in ("publish_lead_seconds", "retiring_grace_seconds", "expiry_warning_days"):
        value = _get(raw, name, w, int, getattr(defaults, name))
        if value < 0:
            raise ConfigError(f"{w}{name}: {value!r} must not be negative", code="config_range")
        values[name] = value
    reload = _get(raw, "reload_seconds", w, (int, float), defaults.reload_seconds)
    if isinstance(reload, bool) or not 0.1 <= reload <= 300:
        raise ConfigError(f"{w}reload_seconds: {reload!r} must be between 0.1 and 300", code="config_range")
    hsm: list[Pkcs11KeyConfig] = []
    for i, item in enumerate(_get(raw, "pkcs11", w, list, [])):
        where = f"keys.pkcs11[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"keys.pkcs11[{i}]: expected a table ([[keys.pkcs11]])", code="config_type")
        extra = set(item) - set(Pkcs11KeyConfig.__dataclass_fields__)
        if extra:
            raise ConfigError(f"{where[:-1]}: unknown key(s) {', '.join(sorted(extra))}", code="config_unknown_key")
        hsm.append(Pkcs11KeyConfig(
            module=_resolve(base_dir, _get(item, "module", where, str)),
            token_label=_get(item, "token_label", where, str),
            key_label=_get(item, "key_label", where, str),
            certificate=_resolve(base_dir, _get(item, "certificate", where, str)),
            pin_env=_get(item, "pin_env", where, str, "IDP_BRIDGE_PKCS11_PIN")))
    return KeySettings(reload_seconds=float(reload), pkcs11=tuple(hsm), **values)
