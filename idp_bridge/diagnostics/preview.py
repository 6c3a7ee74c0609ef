"""The attribute-release preview of the operator console: the Assertion a customer would get, unsigned.

Same mapping, settings and builder as a live login; no signature, no network, nothing stored.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from lxml import etree

from idp_bridge.diagnostics.exchanges import redacted_xml
from idp_bridge.errors import BridgeError
from idp_bridge.huawei.attributes import Customer, release_attributes
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.saml.responses import AssertionSpec, render_response
from idp_bridge.saml.xml import NAMEID_TRANSIENT, NS_SAML, parse_untrusted


def customer_for(bridge: IdentityProvider, user_id: str) -> Customer:
    user = bridge.store.users.get(user_id)
    if user is None:
        raise BridgeError(f"no local user {user_id!r} (add one with `idp-bridge users add`)", code="user_unknown")
    return Customer(user_id=user.user_id, email=user.email, name=user.name, mobile=user.mobile)


@dataclass(frozen=True)
class Preview:
    sp_name: str
    attributes: dict[str, list[str]]
    assertion_xml: str


def preview_assertion(bridge: IdentityProvider, customer: Customer, sp_name: str, *, now: dt.datetime | None = None) -> Preview:
    """The Assertion this customer would receive at this SP, unsigned: same mapping and settings as a live login."""
    now = now or dt.datetime.now(dt.UTC)
    sp = bridge.sps.get(sp_name)
    cfg = bridge.config
    attributes = release_attributes(customer, cfg.attributes, partner_id=cfg.partner_id)
    spec = AssertionSpec(
        issuer=cfg.entity_id, destination=sp.metadata.default_acs().location, audience=sp.metadata.entity_id,
        in_response_to="_preview-no-request", name_id="_" + secrets.token_hex(16), name_id_format=NAMEID_TRANSIENT,
        attributes=attributes, now=now, lifetime=dt.timedelta(seconds=cfg.saml.assertion_lifetime_seconds),
        not_before_skew=dt.timedelta(seconds=cfg.saml.clock_skew_seconds), session_index="_preview",
        authn_instant=now, sp_name_qualifier=sp.metadata.entity_id)
    xml = render_response(spec, bridge.keys.ring().active.signer, sign_assertion=False, sign_response=False)
    assertion = next(parse_untrusted(xml, what="preview").iter(f"{{{NS_SAML}}}Assertion"))
    return Preview(sp.name, {k: list(v) for k, v in attributes.items()},
                   redacted_xml(etree.tostring(assertion)))
