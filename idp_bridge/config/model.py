"""What the configuration holds: one frozen dataclass per table of ``idp-bridge.toml``.

Each field is a key of its table (its type and ``setting(...)`` say what is accepted); a comment above a
field is its documentation. ``[bridge]`` keys are the fields of ``Config`` itself. Rule: a setting exists
here only when code reads it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idp_bridge.config.fields import check_url, setting
from idp_bridge.errors import ConfigError
from idp_bridge.huawei.sites import SITES

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
_PARAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEBUG_PASSWORD_MIN = 16


def _sp_name(value: str, where: str) -> str:
    if not _NAME_RE.match(value):
        raise ConfigError(f"{where}: {value!r} must be 1-64 letters, digits, '.', '_' or '-'", code="config_sp_name")
    return value


def _site(value: str, where: str) -> str:
    if value not in SITES:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(SITES)}", code="config_site")
    return value


def _x_account_type(value: str, where: str) -> str:
    if not value.strip():
        raise ConfigError(f"{where}: empty; copy it from Partner Center (Support > Open APIs > Configure)",
                          code="config_x_account_type")
    return value


def _hosts(value: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not value or not all(h and "/" not in h for h in value):
        raise ConfigError(f"{where}: {list(value)!r} must be a non-empty list of host names",
                          code="config_console_hosts")
    return value


def _networks(value: Any, where: str) -> tuple[Network, ...]:
    """IP networks such as ``"203.0.113.0/24"`` or ``"127.0.0.1/32"``."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {value!r} is a {type(value).__name__}; expected a list", code="config_type")
    networks: list[Network] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {item!r} is a {type(item).__name__}; expected a string such as "
                              "'203.0.113.0/24'", code="config_type")
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as exc:
            raise ConfigError(f"{where}: {item!r} is not an IP network ({exc}); expected e.g. '203.0.113.0/24' or "
                              "'127.0.0.1/32'", code="config_metadata_fetchers") from exc
    return tuple(networks)


def _params(value: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not all(_PARAM_RE.match(p) for p in value):
        raise ConfigError(f"{where}: {list(value)!r} must be a list of parameter names (letters, digits, '_', '.', "
                          "'-')", code="config_return_params")
    return value


def _long_secret(value: str, where: str) -> str:
    if len(value.encode()) < 32:
        raise ConfigError(f"{where}: shorter than 32 bytes; it must be a long random value", code="config_secret")
    return value


def _entity_id(value: str, where: str) -> str:
    if not value.strip() or value != value.strip():
        raise ConfigError(f"{where}: {value!r} is empty or has surrounding spaces", code="config_entity_id")
    return value


def _rs_or_es(value: str, where: str) -> str:
    if value not in ("RS256", "ES256"):
        raise ConfigError(f"{where}: {value!r} is not RS256 or ES256", code="config_algorithm")
    return value


def _pattern(value: str, where: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"{where}: {value!r} is not a regular expression ({exc})", code="config_pattern") from exc
    return value


@dataclass(frozen=True)
class HuaweiSettings:
    """``[huawei]``: the partner's Huawei id and Huawei's rules for customer attributes (checked before signing)."""

    #: The partner's own Huawei id (``bpId``).
    partner_id: str = setting("")
    #: Huawei refuses an ``email`` longer than this.
    email_max_chars: int = setting(64, minimum=3, maximum=320)
    #: Huawei's shape of ``mobile``: ``<country code>-<number>``.
    mobile_pattern: str = setting(r"^\d{1,4}-\d{4,15}$", check=_pattern)
    #: Check email, mobile and xUserId by these rules at ``users add``, on hand-off claims and before signing.
    check_attributes: bool = setting(True)


@dataclass(frozen=True)
class ServiceProviderConfig:
    """``[[sp]]``: one Huawei Cloud site (or any SAML SP) this bridge answers."""

    name: str = setting(check=_sp_name)
    site: str = setting(check=_site)
    #: A file path (absolute after loading) or an http(s) URL.
    metadata: str = setting()
    x_account_type: str = setting(check=_x_account_type)
    #: Hosts a console jump's ``service`` may point at (default: the site's console host).
    console_hosts: tuple[str, ...] = setting((), check=_hosts)
    sign_response: bool = setting(False)
    #: Overrides the site's ``/authui/saml/login`` URL (the built-in simulator, a staging IAM).
    login_url: str | None = setting(None, check=check_url)
    #: Networks this SP fetches ``/saml/metadata`` from; only such fetches are evidence for ``keys activate``.
    #: Empty (Huawei: metadata by manual upload): only ``keys confirm-published`` is.
    metadata_fetchers: tuple[Network, ...] = setting((), parse=_networks)

    @property
    def metadata_is_url(self) -> bool:
        return self.metadata.startswith(("https://", "http://"))


@dataclass(frozen=True)
class SamlSettings:
    """``[saml]``: time windows of the protocol."""

    #: Clock difference tolerated with the SP (a wide window widens the replay window too).
    clock_skew_seconds: int = setting(180, minimum=1, maximum=600)
    assertion_lifetime_seconds: int = setting(300, minimum=1, maximum=86400)
    #: How long an SP may cache our metadata (``cacheDuration``).
    metadata_cache_seconds: int = setting(86400, minimum=1, maximum=365 * 86400)
    session_lifetime_seconds: int = setting(8 * 3600, minimum=1, maximum=30 * 86400)
    #: A sign-in waiting for the customer longer than this is not answered (the SP gave up on it).
    pending_login_max_age_seconds: int = setting(600, minimum=1, maximum=86400)


@dataclass(frozen=True)
class Pkcs11KeyConfig:
    """``[[keys.pkcs11]]``: a signing key held in a PKCS#11 token (HSM); its certificate is a file."""

    module: Path = setting()
    token_label: str = setting()
    key_label: str = setting()
    certificate: Path = setting()
    pin_env: str = setting("IDP_BRIDGE_PKCS11_PIN")


@dataclass(frozen=True)
class KeySettings:
    """``[keys]``: rotation timing (see ``idp-bridge keys status``)."""

    #: How long a key must be published (state ``next``) before ``keys activate`` accepts it.
    publish_lead_seconds: int = setting(86400, minimum=0)
    #: How long a ``retiring`` key stays in metadata before ``keys retire`` accepts it.
    retiring_grace_seconds: int = setting(3600, minimum=0)
    #: How often running workers look for changed key files and key states.
    reload_seconds: float = setting(2.0, minimum=0.1, maximum=300)
    expiry_warning_days: int = setting(30, minimum=0)
    pkcs11: tuple[Pkcs11KeyConfig, ...] = setting((), in_file=False)


@dataclass(frozen=True)
class PlatformSettings:
    """``[platform]``: the partner platform the bridge serves (hand-off, binding, return, webhooks)."""

    #: Where a visitor with no session signs in (``?return_to=<our URL>`` is added); None: local form.
    login_url: str | None = setting(None, check=check_url)
    #: The platform's front page: the "back to the platform" link of error pages (else login_url, else ours).
    home_url: str | None = setting(None, check=check_url)
    #: HS256 shared secret; None: HS256 not accepted.
    handoff_secret: str | None = setting(None, env="IDP_BRIDGE_HANDOFF_SECRET", check=_long_secret, secret=True)
    #: PEM public key of the platform and its algorithm (RS256 or ES256); None: not accepted.
    handoff_public_key: Path | None = setting(None)
    handoff_public_key_algorithm: str | None = setting(None, check=_rs_or_es)
    handoff_max_lifetime_seconds: int = setting(300, minimum=0, maximum=300)
    handoff_leeway_seconds: int = setting(60, minimum=0, maximum=300)
    #: Where the customer's browser lands after Huawei's binding notification.
    bind_landing_url: str | None = setting(None, check=check_url)
    #: How long after a first-login console jump (``isFirstLogin=true``) Huawei's bind notice is accepted.
    bind_window_seconds: int = setting(3600, minimum=0, maximum=7 * 86400)
    #: Partner pages for "order payment success" and top-up returns.
    return_url: str | None = setting(None, check=check_url)
    recharge_url: str | None = setting(None, check=check_url)
    #: Query parameters passed through from Huawei's return to the platform page (names only).
    return_params: tuple[str, ...] = setting((), check=_params)
    webhook_url: str | None = setting(None, check=check_url)
    webhook_secret: str | None = setting(None, env="IDP_BRIDGE_WEBHOOK_SECRET", secret=True)
    #: Run the webhook delivery loop inside every web process (``idp-bridge webhooks run`` otherwise).
    webhook_in_process: bool = setting(True)
    #: Seconds a webhook POST may take in all (connect, send, answer); a claim's lease is twice it plus 10 s.
    webhook_timeout_seconds: int = setting(10, minimum=1, maximum=120)


@dataclass(frozen=True)
class DebugSettings:
    """``[debug]``: the operator console at ``/_bridge/`` (off unless enabled; password from the environment)."""

    enabled: bool = setting(False)
    password: str | None = setting(None, env="IDP_BRIDGE_DEBUG_PASSWORD", secret=True)
    #: Decoded SAML exchanges the console keeps (shared by every worker).
    max_exchanges: int = setting(100, minimum=1, maximum=10_000)


@dataclass(frozen=True)
class MetricsSettings:
    """``[metrics]``: ``/metrics`` for Prometheus. Off unless enabled; then only for a bearer token or an address
    in ``allow`` (default: this host only)."""

    enabled: bool = setting(False)
    #: ``Authorization: Bearer <token>`` lets a scraper in from anywhere (at least 32 characters).
    token: str | None = setting(None, env="IDP_BRIDGE_METRICS_TOKEN", check=_long_secret, secret=True)
    #: Scraper addresses let in without a token.
    allow: tuple[Network, ...] = setting((ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
                                         parse=_networks)


@dataclass(frozen=True)
class LimitSettings:
    """``[limits]``: sign-in throttling (local ``/login`` and the console), counted in the shared database."""

    #: Failed sign-ins allowed per user ID (and for the console's one operator) per window.
    login_account_attempts: int = setting(5, minimum=1, maximum=1_000_000)
    #: Failed sign-ins allowed per client address (IPv6: per /64) per window.
    login_address_attempts: int = setting(20, minimum=1, maximum=1_000_000)
    login_window_seconds: int = setting(900, minimum=1, maximum=1_000_000)
    #: How long a key stays locked once it went over its limit (answered 429 with Retry-After).
    login_lockout_seconds: int = setting(900, minimum=1, maximum=1_000_000)


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: days a row is kept before housekeeping deletes it (expired sessions, replay IDs and
    throttle windows go as soon as they expire)."""

    audit_days: int = setting(180, minimum=1, maximum=36_500)
    #: Rotation evidence: keep it longer than any key stays ``next``.
    metadata_fetch_days: int = setting(400, minimum=1, maximum=36_500)
    #: Delivered webhooks.
    outbox_days: int = setting(7, minimum=1, maximum=36_500)


#: ``[ui] default_locale``: the page language when the browser's Accept-Language names none we have.
UI_LOCALES = ("en", "zh_CN")


def _locale(value: str, where: str) -> str:
    locale = value.replace("-", "_")
    if locale not in UI_LOCALES:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(UI_LOCALES)}", code="config_range")
    return locale


@dataclass(frozen=True)
class UiSettings:
    """``[ui]``: the pages customers and operators see."""

    default_locale: str = setting("en", check=_locale)


@dataclass(frozen=True)
class Config:
    """The whole configuration. Its own fields are the ``[bridge]`` table (and ``[huawei] partner_id``)."""

    base_url: str = setting(env="IDP_BRIDGE_BASE_URL", check=check_url)
    entity_id: str = setting("", check=_entity_id)  # default: base_url + "/saml/metadata"
    key_dir: Path = setting(Path("certs"))
    metadata_dir: Path = setting(Path("metadata"))
    database_url: str = setting("sqlite:///idp-bridge.db", env="IDP_BRIDGE_DATABASE_URL")
    #: Session and CSRF signing secret (at least 32 characters).
    secret_key: str = setting("", env="IDP_BRIDGE_SECRET_KEY", secret=True)
    #: Trust X-Forwarded-For/-Proto/-Host from one reverse proxy in front.
    trust_forwarded: bool = setting(False, key="trust_forwarded_headers")
    partner_id: str = setting("", in_file=False)
    service_providers: tuple[ServiceProviderConfig, ...] = setting((), in_file=False)
    attributes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES),
                                          metadata={"in_file": False})
    key_passphrase: str | None = setting(None, in_file=False, secret=True)
    path: Path | None = setting(None, in_file=False)
    saml: SamlSettings = field(default_factory=SamlSettings, metadata={"in_file": False})
    platform: PlatformSettings = field(default_factory=PlatformSettings, metadata={"in_file": False})
    keys: KeySettings = field(default_factory=KeySettings, metadata={"in_file": False})
    debug: DebugSettings = field(default_factory=DebugSettings, metadata={"in_file": False})
    limits: LimitSettings = field(default_factory=LimitSettings, metadata={"in_file": False})
    retention: RetentionSettings = field(default_factory=RetentionSettings, metadata={"in_file": False})
    ui: UiSettings = field(default_factory=UiSettings, metadata={"in_file": False})
    metrics: MetricsSettings = field(default_factory=MetricsSettings, metadata={"in_file": False})
    huawei: HuaweiSettings = field(default_factory=HuaweiSettings, metadata={"in_file": False})

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


#: The file's tables -> the Config field each fills (``bridge`` is Config itself; ``sp`` and ``attributes``
#: are read by the loader).
SECTIONS: dict[str, type] = {"saml": SamlSettings, "platform": PlatformSettings, "keys": KeySettings,
                             "debug": DebugSettings, "limits": LimitSettings, "retention": RetentionSettings, "ui": UiSettings, "metrics": MetricsSettings,
                             "huawei": HuaweiSettings}
