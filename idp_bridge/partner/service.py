"""The partner-platform side of the bridge: hand-off tokens, Huawei binding notifications, binding state.

Glue between the sans-I/O checks (handoff.py, huawei/binding.py), the configuration and the store;
no Flask. The web layer and the CLI call these; each raises one typed BridgeError on refusal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509

from idp_bridge.errors import BridgeError
from idp_bridge.huawei.binding import BindingError, BindNotification, verify_bind_notification
from idp_bridge.idp.identity_provider import IdentityProvider, utcnow
from idp_bridge.partner.handoff import HandoffClaims, HandoffError, HandoffKeys, verify_handoff_token
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.store import bind_guard


def handoff_keys(bridge: IdentityProvider) -> HandoffKeys:
    p = bridge.config.platform
    return _handoff_keys(p.handoff_secret, p.handoff_public_key, p.handoff_public_key_algorithm)


@lru_cache(maxsize=8)
def _handoff_keys(secret: str | None, public_key_file: Path | None, algorithm: str | None) -> HandoffKeys:
    """Read (and parse the public key file) once per process and setting."""
    return HandoffKeys.from_settings(secret=secret, public_key_file=public_key_file,
                                     public_key_algorithm=algorithm)


def accept_handoff(bridge: IdentityProvider, token: str, *, now: dt.datetime | None = None) -> HandoffClaims:
    """Verify a hand-off token and claim its ``jti`` once (across every process sharing the database)."""
    now = now or utcnow()
    p = bridge.config.platform
    leeway = dt.timedelta(seconds=p.handoff_leeway_seconds)
    claims = verify_handoff_token(token, keys=handoff_keys(bridge), audience=bridge.config.entity_id, now=now,
                                  max_lifetime=dt.timedelta(seconds=p.handoff_max_lifetime_seconds), leeway=leeway)
    customer = claims.customer
    bridge.attribute_rules.check_customer(email=customer.email, mobile=customer.mobile,
                                          where=f"hand-off token for {customer.user_id!r}")
    issuer = claims.issuer or "platform"
    if not bridge.store.replay.claim("handoff_jti", f"{issuer}|{claims.jti}"[:512], issuer=issuer,
                                   expires_at=claims.expires_at + leeway, now=now):
        raise HandoffError(f"hand-off token jti {claims.jti!r} (sub {claims.customer.user_id!r}) was already "
                           "used; each token is accepted once", code="handoff_replayed")
    return claims


def huawei_certificates(bridge: IdentityProvider) -> list[tuple[str, x509.Certificate]]:
    """(SP name, certificate) for every configured Huawei SP's metadata signing certificates."""
    found: list[tuple[str, x509.Certificate]] = []
    for sp in bridge.config.service_providers:
        for cert in bridge.sps.get(sp.name).metadata.signing_certificates:
            found.append((sp.name, cert))
    return found


def record_first_login_jump(bridge: IdentityProvider, x_user_id: str, *, sp_name: str | None,
                            now: dt.datetime | None = None) -> dt.datetime:
    """The bridge sends ``x_user_id`` to Huawei with ``isFirstLogin=true``: one bind notice is allowed until
    the returned expiry (``platform.bind_window_seconds``). Called by ``/go``."""
    now = now or utcnow()
    expires_at = now + dt.timedelta(seconds=bridge.config.platform.bind_window_seconds)
    bridge.store.bind_guard.record_jump(x_user_id, sp=sp_name, now=now, expires_at=expires_at)
    return expires_at


@dataclass(frozen=True)
class BindOutcome:
    notification: BindNotification
    sp_name: str | None
    changed: bool
    webhook_key: str | None
    replayed: bool = False  # this very notice was applied before: nothing changed, nothing queued


def accept_bind_notification(bridge: IdentityProvider, form: Mapping[str, str], *, now: dt.datetime | None = None
                             ) -> BindOutcome:
    """Verify Huawei's binding notification and apply it at most once (store/bind_guard.py).

    A replay of an applied notice returns ``replayed=True`` and changes nothing. A new bind with no
    pending first-login jump for the customer, or a new unbind that does not name the customer's
    current binding, is refused (BindingError, HTTP 409). Nothing is stored on refusal.
    """
    certs = huawei_certificates(bridge)
    if not certs:
        raise BridgeError("no Huawei SP is configured, so no certificate can verify a binding notification",
                          code="bind_no_sp", status=500)
    note = verify_bind_notification(form, [c for _, c in certs])
    sp_name = next((name for name, c in certs if fingerprint(c) == fingerprint(note.certificate)), None)
    result = bridge.store.bind_guard.apply_notice(
        digest=note.digest, x_user_id=note.x_user_id, bound=note.bound, domain_id=note.domain_id,
        domain_name=note.domain_name, bind_action=note.bind_action, payload=note.payload,
        source=f"huawei:{note.signed_octets}", now=now or utcnow(),
        notify=bridge.config.platform.webhook_url is not None)
    if result.outcome == bind_guard.UNSOLICITED:
        raise BindingError(
            f"bind notice for xUserId {note.x_user_id!r} (domainId {note.domain_id!r}) refused: the bridge has no "
            f"pending first-login jump for this customer (none sent with isFirstLogin=true in the last "
            f"{bridge.config.platform.bind_window_seconds} s, or its one bind was used); expected Huawei's notice "
            "right after a /go jump", code="bind_unsolicited", status=409)
    if result.outcome == bind_guard.NOT_CURRENT:
        current = bridge.store.bindings.get(note.x_user_id)
        now_bound = f"bound to domainId {current.domain_id!r}" if current and current.bound else "not bound"
        raise BindingError(
            f"unbind notice for xUserId {note.x_user_id!r} names domainId {note.domain_id!r} but the customer is "
            f"{now_bound}; an unbind applies only to the current binding", code="unbind_not_current", status=409)
    return BindOutcome(note, sp_name, result.changed, result.webhook_key, result.outcome == bind_guard.REPLAYED)
