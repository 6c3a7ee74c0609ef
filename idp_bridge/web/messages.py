"""What the customer reads when a request is refused: one message family per cause, in the customer's terms.

Rule: a family says what happened and what to do next, never why in protocol terms; the exact reason
(``BridgeError.code`` and ``operator``) stays in the log, the audit trail and the operator console.
Family names differ from every error code (the page must not name the code).
``family_for`` maps a stable error code (else the HTTP status) to a family; unknown codes fall back by status.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class Family:
    name: str
    title: LazyString
    what: LazyString
    next_step: LazyString


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("link-used", _l("This link has already been used or has expired"),
           _l("For your security, each link from the platform to Huawei Cloud works only once and only for a "
              "few minutes."),
           _l("Go back to the platform and open the Huawei Cloud console again.")),
    Family("handoff-invalid", _l("The platform's sign-in link could not be checked"),
           _l("The link that brought you here is incomplete or was not issued by your platform."),
           _l("Go back to the platform and open the Huawei Cloud console from there. If it keeps happening, "
              "contact the platform's support and quote the reference below.")),
    Family("request-expired", _l("The Huawei Cloud sign-in request has expired"),
           _l("Too much time passed between Huawei Cloud sending you here and this page opening."),
           _l("Start again from the platform.")),
    Family("page-reused", _l("This sign-in step has already been completed"),
           _l("The page was reloaded or opened again after the sign-in had finished, or the sign-in "
              "waited too long."),
           _l("Start again from the platform; you do not need to do anything else.")),
    Family("site-unknown", _l("This Huawei Cloud site is not available here"),
           _l("The link names a Huawei Cloud site that this platform is not connected to."),
           _l("Go back to the platform and use its Huawei Cloud console button.")),
    Family("page-not-allowed", _l("This page cannot be opened from the platform"),
           _l("The link asks for a page outside the Huawei Cloud console."),
           _l("Open the Huawei Cloud console from the platform and go to the page from there.")),
    Family("session-expired", _l("Your session has expired"),
           _l("The page was open for too long, or it was sent from another window."),
           _l("Go back to the platform, sign in again and repeat the last step.")),
    Family("not-verified", _l("Huawei Cloud's request could not be verified"),
           _l("The sign-in request that arrived from Huawei Cloud did not pass our security checks, so nobody "
              "was signed in."),
           _l("Start again from the platform.")),
    Family("binding-failed", _l("Your Huawei Cloud account could not be linked"),
           _l("The account-binding message from Huawei Cloud could not be processed; nothing was changed."),
           _l("Go back to the platform and open the Huawei Cloud console again to repeat the binding.")),
    Family("too-many", _l("Too many attempts"),
           _l("There were too many attempts in a short time, so we are pausing for a moment."),
           _l("Wait a few minutes, then try again.")),
    Family("unavailable", _l("The service is temporarily unavailable"),
           _l("We cannot complete sign-ins right now. This is not a problem with your account."),
           _l("Try again in a few minutes.")),
    Family("not-found", _l("Page not found"),
           _l("There is no page at this address."),
           _l("Go back to the platform and start from there.")),
    Family("setup", _l("The service is not set up correctly"),
           _l("A configuration problem on our side stopped the sign-in. This is not a problem with your "
              "account."),
           _l("Try again later. If it keeps happening, contact the platform's support and quote the "
              "reference below.")),
    Family("generic", _l("The request could not be completed"),
           _l("Something in the request was not as expected, so nobody was signed in."),
           _l("Start again from the platform. If it keeps happening, contact the platform's support and "
              "quote the reference below.")),
)}

_BY_CODE: dict[str, str] = {
    "handoff_replayed": "link-used", "handoff_expired": "link-used", "handoff_not_yet_valid": "link-used",
    "handoff_signature": "handoff-invalid", "handoff_malformed": "handoff-invalid",
    "handoff_claims": "handoff-invalid", "handoff_audience": "handoff-invalid",
    "handoff_alg_refused": "handoff-invalid", "handoff_lifetime": "handoff-invalid",
    "request_stale": "request-expired", "request_from_future": "request-expired",
    "request_replayed": "page-reused", "no_pending_request": "page-reused",
    "sp_unknown": "site-unknown", "sp_none_configured": "site-unknown", "unknown_issuer": "site-unknown",
    "service_not_allowed": "page-not-allowed", "service_too_long": "page-not-allowed",
    "csrf_failed": "session-expired", "session_expired": "session-expired",
    "bind_malformed": "binding-failed", "bind_missing_field": "binding-failed", "bind_too_large": "binding-failed",
    "bind_signature": "binding-failed",
    "input_jwt": "handoff-invalid",  # web/validation.py: the token is not a bounded, readable JWT
    "handoff_switch_unknown": "session-expired", "handoff_switch_expired": "link-used",  # web/handoff.py
}
#: Code prefixes of SAML requests from Huawei that did not verify: "start again from the platform".
_SIGNATURE_PREFIXES = ("signature_", "sigalg_", "embedded_signature", "destination_", "acs_")


def family_for(code: str | None, status: int, endpoint: str | None = None) -> Family:
    if status == 429:
        return FAMILIES["too-many"]
    if status == 503:
        return FAMILIES["unavailable"]
    if code in _BY_CODE:
        return FAMILIES[_BY_CODE[code]]
    if endpoint == "huawei.bind" and status < 500:  # whatever was wrong with it, the binding did not happen
        return FAMILIES["binding-failed"]
    if code and code.startswith(_SIGNATURE_PREFIXES) and status < 500:
        return FAMILIES["not-verified"]
    if status == 404:
        return FAMILIES["not-found"]
    return FAMILIES["setup"] if status >= 500 else FAMILIES["generic"]
