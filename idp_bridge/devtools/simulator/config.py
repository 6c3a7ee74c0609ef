"""Configuration of the Huawei IAM simulator, and how it fetches the IdP metadata it trusts."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from idp_bridge.errors import ConfigError
from idp_bridge.fetch import fetch_bounded
from idp_bridge.huawei.sites import SITES, Site
from idp_bridge.saml.signing import PrivateKeySigner, Signer

#: Where the simulator finds the IdP metadata uploaded for one xAccountType: an http(s) URL fetched
#: fresh on every use (so a stale or rotated metadata shows up at once), the metadata bytes
#: themselves, or a callable returning them (handy in tests that rotate keys).
MetadataSource = str | bytes | Callable[[], bytes]

FETCH_TIMEOUT_SECONDS = 5.0
FETCH_MAX_BYTES = 2 * 1024 * 1024  # Huawei's own limit for uploaded metadata (shared spec §7)


@dataclass
class SimulatorConfig:
    """Settings of one simulated Huawei IAM site.

    ``base_url`` is where the simulator itself is served (e.g. ``http://127.0.0.1:8001``): its SP
    entityID is ``base_url + "/"`` and its ACS ``base_url + "/authui/saml/SAMLAssertionConsumer"``,
    the same shape as Huawei's real ones.
    """

    base_url: str
    signer: Signer
    idp_metadata: dict[str, MetadataSource] = field(default_factory=dict)
    site: str = "cn"
    #: The partner's binding-notification URL (Partner Center setting, shared spec §5).
    bind_notify_url: str | None = None
    #: The partner's "order payment success" return URL (shared spec §6).
    payment_return_url: str | None = None
    #: Clock skew the SP-side checks allow.
    skew: dt.timedelta = dt.timedelta(minutes=3)
    #: Clock for every time-dependent step (tests may pin it).
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.site not in SITES:
            raise ConfigError(f"simulator site {self.site!r} is unknown; expected one of {', '.join(SITES)}")

    @property
    def huawei_site(self) -> Site:
        return SITES[self.site]

    @property
    def entity_id(self) -> str:
        return self.base_url + "/"

    @property
    def acs_url(self) -> str:
        return self.base_url + "/authui/saml/SAMLAssertionConsumer"

    @property
    def login_url(self) -> str:
        return self.base_url + "/authui/saml/login"

    @property
    def metadata_url(self) -> str:
        return self.base_url + "/authui/saml/metadata.xml"

    @classmethod
    def generate(cls, base_url: str, site: str = "cn", *,
                 idp_metadata: dict[str, MetadataSource] | None = None,
                 bind_notify_url: str | None = None,
                 payment_return_url: str | None = None) -> SimulatorConfig:
        """A simulator with a freshly generated throwaway RSA-2048 key (never stored anywhere)."""
        return cls(base_url=base_url, signer=generate_signer(f"Huawei IAM simulator ({site})"),
                   idp_metadata=dict(idp_metadata or {}), site=site, bind_notify_url=bind_notify_url,
                   payment_return_url=payment_return_url)


def generate_signer(common_name: str) -> PrivateKeySigner:
    """Throwaway RSA-2048 key and self-signed certificate valid for 30 days."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(63) + 1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return PrivateKeySigner(key, cert)


def fetch_metadata(source: MetadataSource) -> bytes:
    """The IdP metadata bytes from ``source``; MetadataError (naming the URL) when it cannot be read."""
    if isinstance(source, bytes):
        return source
    if callable(source):
        return source()
    return fetch_bounded(source, what="IdP metadata", timeout=FETCH_TIMEOUT_SECONDS, max_bytes=FETCH_MAX_BYTES,
                         headers={"Accept": "application/samlmetadata+xml, */*"})
