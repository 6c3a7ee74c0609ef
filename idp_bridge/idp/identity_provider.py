"""The identity provider as a service object: metadata, AuthnRequest acceptance, Response issuing.

This is the one place that ties the sans-I/O SAML core to configuration, keys and storage. The
Flask layer and the CLI call it; it never imports Flask. Every method either returns a value or
raises one typed ``BridgeError``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes

from idp_bridge.config import Config
from idp_bridge.errors import ReplayError, RequestError, StatusResponseError
from idp_bridge.huawei.attribute_rules import AttributeRules
from idp_bridge.huawei.attributes import Customer, release_attributes
from idp_bridge.huawei.login_link import check_service_url, console_login_url
from idp_bridge.idp.metadata_fetches import FetchRecorder
from idp_bridge.idp.service_providers import LoadedServiceProvider, ServiceProviderRegistry
from idp_bridge.keys.provider import KeyRingProvider
from idp_bridge.keys.ring import KeyEntry, KeyRing
from idp_bridge.ops.metrics import SIGNING_SECONDS
from idp_bridge.saml.bindings import decode_redirect, encode_post
from idp_bridge.saml.metadata import build_idp_metadata, metadata_etag
from idp_bridge.saml.requests import judge_authn_request, parse_authn_request
from idp_bridge.saml.responses import (
    STATUS_NO_PASSIVE,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
    build_error_response,
    build_response,
)
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, NAMEID_TRANSIENT
from idp_bridge.store import Store


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PendingLogin:
    """An accepted AuthnRequest waiting for a logged-in customer. Kept server-side only."""

    sp_name: str
    sp_entity_id: str
    request_id: str
    acs_url: str
    relay_state: str | None
    received_at: str
    force_authn: bool = False
    is_passive: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingLogin:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def needs_fresh_login(self, authn_instant: dt.datetime) -> bool:
        """ForceAuthn: the customer must have authenticated after this request arrived."""
        return self.force_authn and authn_instant < dt.datetime.fromisoformat(self.received_at)


@dataclass(frozen=True)
class PostForm:
    """What the browser auto-POSTs to the SP's ACS."""

    action: str
    saml_response: str
    relay_state: str | None
    #: The key that signed it (for the audit row and the console; never looked up again afterwards).
    key_id: str


class AnsweredRefusal(RequestError):
    """A trusted AuthnRequest refused with a signed Response (``form``) for the SP's ACS, not an error page.

    The request's ID is already claimed. The web layer auto-POSTs ``form``; left unhandled it is a 400.
    """

    def __init__(self, operator: str, *, code: str, pending: PendingLogin, form: PostForm) -> None:
        super().__init__(operator, code=code)
        self.pending = pending
        self.form = form


@dataclass(frozen=True)
class Metadata:
    xml: bytes
    etag: str
    key_ids: tuple[str, ...]


#: Request IDs this process has claimed (or seen refused) recently: a replay that comes back to the
#: same worker is refused before anything is signed. The database claim stays the rule across workers.
RECENT_CLAIMS = 8192


def _replayed(request_id: str, issuer: str) -> ReplayError:
    return ReplayError(f"AuthnRequest ID {request_id!r} from {issuer!r} was already used; "
                       "each request is accepted once", code="request_replayed")


class IdentityProvider:
    def __init__(self, config: Config, store: Store, *, keys: KeyRingProvider | None = None,
                 sps: ServiceProviderRegistry | None = None) -> None:
        self.config = config
        self.store = store
        self.keys = keys or KeyRingProvider(config, states=store.keyring.states)
        self.sps = sps or ServiceProviderRegistry(config)
        self.fetches = FetchRecorder(store, config.service_providers)
        self._metadata: tuple[KeyRing, tuple[tuple[str, bytes], ...], Metadata] | None = None
        self._recent_claims: OrderedDict[str, None] = OrderedDict()
        self._claims_lock = threading.Lock()
        h = config.huawei
        self.attribute_rules = AttributeRules(email_max_chars=h.email_max_chars, mobile_pattern=h.mobile_pattern,
                                              enabled=h.check_attributes)

    # -- metadata ---------------------------------------------------------------------------
    def metadata(self) -> Metadata:
        """Our IdP metadata: deterministic for a given key set (byte-identical re-exports).

        Built once per key set and kept: the ring object is compared first (free), then, after a
        reload, the published key IDs and certificates; only a different set rebuilds the XML.
        """
        ring = self.keys.ring()
        cached = self._metadata
        if cached is not None and cached[0] is ring:
            return cached[2]
        published = ring.published
        key = tuple((e.key_id, e.certificate.fingerprint(hashes.SHA256())) for e in published)
        if cached is not None and cached[1] == key:
            self._metadata = (ring, key, cached[2])
            return cached[2]
        meta = self._build_metadata(published)
        self._metadata = (ring, key, meta)
        return meta

    def _build_metadata(self, published: Sequence[KeyEntry]) -> Metadata:
        certs = [e.certificate for e in published]
        valid_until = min(c.not_valid_after_utc for c in certs)
        xml = build_idp_metadata(
            entity_id=self.config.entity_id,
            sso_url=self.config.sso_url,
            certificates=certs,
            valid_until=valid_until,
            cache_duration=dt.timedelta(seconds=self.config.saml.metadata_cache_seconds),
            post_binding=False,
        )
        return Metadata(xml, metadata_etag(xml), tuple(e.key_id for e in published))

    def export_metadata(self) -> tuple[bool, Metadata]:
        """Write ``metadata/IDP Metadata.xml``; returns (changed, metadata). Unchanged files are not touched."""
        meta = self.metadata()
        path = self.config.metadata_file
        if path.exists() and path.read_bytes() == meta.xml:
            return False, meta
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(meta.xml)
        tmp.replace(path)
        return True, meta

    def record_metadata_fetch(self, *, remote_addr: str | None, user_agent: str | None, meta: Metadata,
                              sp: str | None, now: dt.datetime) -> bool:
        """Keep the fetch as rotation evidence when it is news (see ``idp.metadata_fetches``)."""
        return self.fetches.record(remote_addr=remote_addr, user_agent=user_agent, etag=meta.etag,
                                   key_ids=meta.key_ids, sp=sp, now=now)

    # -- SSO ----------------------------------------------------------------------------------
    def accept_redirect_request(self, raw_query: str, *, now: dt.datetime | None = None) -> PendingLogin:
        """Decode, verify and check an HTTP-Redirect AuthnRequest, and claim its ID once.

        The rules are :func:`~idp_bridge.saml.requests.judge_authn_request`'s (the ones ``decode`` shows);
        the first that fails is raised. A request we trust but whose NameIDPolicy we cannot satisfy raises
        :class:`AnsweredRefusal` carrying the signed ``InvalidNameIDPolicy`` Response for its ACS.
        """
        now = now or utcnow()
        pending = self.check_redirect_request(raw_query, now=now)
        self.claim_request(pending, now=now)
        return pending

    def claim_request(self, pending: PendingLogin, *, now: dt.datetime) -> None:
        """Claim the request's ID in the database (ReplayError if it was used). Call it inside the request's
        ``store.transaction()`` so the claim commits with the audit row and the session."""
        self._claim(pending.request_id, pending.sp_entity_id, now,
                    dt.timedelta(seconds=self.config.saml.clock_skew_seconds))

    def check_redirect_request(self, raw_query: str, *, now: dt.datetime | None = None) -> PendingLogin:
        """Decode, verify and check an HTTP-Redirect AuthnRequest; its ID is not claimed yet (``claim_request``)."""
        now = now or utcnow()
        self.keys.ring()  # nothing can sign (HTTP 503): say so before the customer types a password
        msg = decode_redirect(raw_query)
        request = parse_authn_request(msg.xml)
        sp = self.sps.by_entity_id(request.issuer)
        skew = dt.timedelta(seconds=self.config.saml.clock_skew_seconds)
        verdict = judge_authn_request(request, sp=sp.metadata, sso_urls=[self.config.sso_url], now=now, skew=skew,
                                      redirect=msg)
        try:
            accepted = verdict.accept()
        except StatusResponseError as exc:
            self._claim(request.id, request.issuer, now, skew)
            pending = PendingLogin(sp.name, sp.metadata.entity_id, request.id, exc.acs_url, msg.relay_state,
                                   now.isoformat())
            form = self.issue_status(pending, sub_status=exc.sub_status, message=None, now=now)
            raise AnsweredRefusal(exc.operator, code=exc.code, pending=pending, form=form) from exc
        if request.id in self._recent_claims:  # a replay to this worker: refused before anything is signed
            raise _replayed(request.id, request.issuer)
        return PendingLogin(sp.name, sp.metadata.entity_id, request.id, accepted.acs_url, msg.relay_state,
                            now.isoformat(), force_authn=request.force_authn, is_passive=request.is_passive)

    def _claim(self, request_id: str, issuer: str, now: dt.datetime, skew: dt.timedelta) -> None:
        # The ID's shape (bounded xs:ID) is a parse rule of saml/requests.py: decode applies it too.
        expires = now + 2 * skew + dt.timedelta(seconds=self.config.saml.assertion_lifetime_seconds)
        with self._claims_lock:
            self._recent_claims[request_id] = None
            while len(self._recent_claims) > RECENT_CLAIMS:
                self._recent_claims.popitem(last=False)
        if not self.store.replay.claim("authn_request", request_id, issuer=issuer, expires_at=expires, now=now):
            raise _replayed(request_id, issuer)

    def pending_login(self, data: dict[str, Any], *, now: dt.datetime | None = None) -> PendingLogin:
        """The pending login a session holds, refused once older than ``saml.pending_login_max_age_seconds``.

        An abandoned sign-in must not be answered much later (the SP gave up on it long ago, and a
        Response then is a Response nobody waits for).
        """
        pending = PendingLogin.from_dict(data)
        self.check_pending_age(pending, now=now)
        return pending

    def check_pending_age(self, pending: PendingLogin, *, now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        max_age = dt.timedelta(seconds=self.config.saml.pending_login_max_age_seconds)
        received = dt.datetime.fromisoformat(pending.received_at)
        if now - received > max_age:
            raise RequestError(f"pending sign-in for AuthnRequest {pending.request_id} from SP {pending.sp_name} "
                               f"was received at {received.isoformat(timespec='seconds')}, "
                               f"{int((now - received).total_seconds())} s ago; requests older than "
                               f"{int(max_age.total_seconds())} s (saml.pending_login_max_age_seconds) are not "
                               "answered", code="pending_login_expired")

    def issue_response(self, pending: PendingLogin, customer: Customer, *, authn_instant: dt.datetime,
                       session_index: str, now: dt.datetime | None = None) -> PostForm:
        now = now or utcnow()
        self.check_pending_age(pending, now=now)
        sp = self.sps.config_of(pending.sp_name)  # the request was checked against its metadata already
        attributes = release_attributes(customer, self.config.attributes, partner_id=self.config.partner_id)
        self.attribute_rules.check_release(customer.user_id, attributes)  # nothing Huawei would refuse is signed
        signer = self.keys.ring().active.signer
        started = time.perf_counter()
        xml = build_response(
            issuer=self.config.entity_id,
            destination=pending.acs_url,
            audience=pending.sp_entity_id,
            in_response_to=pending.request_id,
            name_id="_" + secrets.token_hex(16),
            name_id_format=NAMEID_TRANSIENT,
            attributes=attributes,
            now=now,
            lifetime=dt.timedelta(seconds=self.config.saml.assertion_lifetime_seconds),
            not_before_skew=dt.timedelta(seconds=self.config.saml.clock_skew_seconds),
            session_index=session_index,
            authn_instant=authn_instant,
            authn_context=AUTHN_PASSWORD_PROTECTED,
            signer=signer,
            sign_assertion=True,
            sign_response=sp.sign_response,
            sp_name_qualifier=pending.sp_entity_id,
        )
        SIGNING_SECONDS.observe(time.perf_counter() - started)
        return PostForm(pending.acs_url, encode_post(xml), pending.relay_state, signer.key_id)

    def issue_no_passive(self, pending: PendingLogin, *, now: dt.datetime | None = None) -> PostForm:
        """IsPassive and nobody (freshly) signed in: tell the SP so, signed, instead of showing a login page."""
        return self.issue_status(pending, status=STATUS_RESPONDER, sub_status=STATUS_NO_PASSIVE, now=now)

    def issue_status(self, pending: PendingLogin, *, sub_status: str, status: str = STATUS_REQUESTER,
                     message: str | None = None, now: dt.datetime | None = None) -> PostForm:
        """A signed Response without an Assertion (``status``/``sub_status``) for the pending request's ACS."""
        now = now or utcnow()
        self.check_pending_age(pending, now=now)
        signer = self.keys.ring().active.signer
        xml = build_error_response(issuer=self.config.entity_id, destination=pending.acs_url,
                                   in_response_to=pending.request_id, now=now, status=status,
                                   sub_status=sub_status, message=message, signer=signer)
        return PostForm(pending.acs_url, encode_post(xml), pending.relay_state, signer.key_id)

    # -- console jump -----------------------------------------------------------------------
    def console_link(self, sp: LoadedServiceProvider, *, service: str | None, first_login: bool) -> str:
        target = check_service_url(service or sp.site.console_url, sp.config.console_hosts)
        return console_login_url(login_url=sp.config.login_url or sp.site.login_url, x_account_type=sp.config.x_account_type,
                                 first_login=first_login, service=target)

    def is_first_login(self, customer: Customer) -> bool:
        """``isFirstLogin`` for the console jump: true when the customer has no Huawei account bound yet.

        True when the store has no current binding for the customer (Huawei's binding notifications,
        ``bindings import``) and the platform did not say it is bound (hand-off claim ``bound``,
        e.g. created through Huawei's Create Customer API).
        """
        if customer.bound:
            return False
        binding = self.store.bindings.get(customer.user_id)
        return binding is None or not binding.bound
