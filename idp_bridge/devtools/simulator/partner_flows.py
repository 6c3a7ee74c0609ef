"""Huawei-side steps after login that call back into the partner platform (shared spec §5, §6).

- First-login binding: Huawei reports the bound account to the partner's notification URL through
  the browser, as a form POST of ``bindRequest`` (base64 of a JSON object), ``SigAlg`` and
  ``Signature`` (RSA-SHA256 over the ``bindRequest`` value, verified with the SP metadata cert).
- Payment: Huawei's "order paid" page links "View order details" to the partner's return URL.
"""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import urlencode, urlsplit, urlunsplit

from idp_bridge.saml.signing import Signer

BIND_ACTION_BIND = 0  # Huawei's bindAction: 0 bind, 1 unbind


def build_bind_notification(signer: Signer, *, x_user_id: str, domain_name: str, domain_id: str,
                            bind_action: int = BIND_ACTION_BIND) -> dict[str, str]:
    """The form fields Huawei POSTs to the partner's binding-notification URL.

    The signed octets are the ``bindRequest`` value exactly as sent (ASCII base64), which is our
    reading of Huawei's undocumented rule (shared spec §5, [assumed]).
    """
    payload = {"xUserId": x_user_id, "domainName": domain_name, "domainId": domain_id,
               "bindAction": bind_action}
    bind_request = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode("utf-8")).decode("ascii")
    signature = signer.sign(bind_request.encode("ascii"))
    return {"bindRequest": bind_request, "SigAlg": signer.algorithm,
            "Signature": base64.b64encode(signature).decode("ascii")}


def new_domain_id() -> str:
    """A Huawei-account-id-shaped value (32 hex characters)."""
    return secrets.token_hex(16)


def new_order_id() -> str:
    """A Huawei-order-id-shaped value (CS + digits)."""
    return "CS" + "".join(secrets.choice("0123456789") for _ in range(18))


def payment_return_link(return_url: str, order_id: str) -> str:
    """``return_url`` with ``orderId=<order_id>`` added to its query."""
    parts = urlsplit(return_url)
    extra = urlencode({"orderId": order_id})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
