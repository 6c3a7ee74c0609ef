"""The errors of the SAML core: what it refuses, each with a stable code, an operator message and a status.

Every error carries a stable ``code`` (for logs, audit rows and tests), an ``operator`` message that says
exactly what was expected and what arrived, and the HTTP status a web layer should answer with. The
browser never sees ``operator``: it gets a plain page and a correlation id.

The rest of the bridge has its own tree in ``idp_bridge/errors.py`` (``BridgeError`` and below), which
also lists every stable code; the SAML core stays free of it so that it imports nothing outside itself.
"""

from __future__ import annotations


class CodedError(Exception):
    """The shape of every refusal, the SAML core's and the bridge's (``idp_bridge.errors.BridgeError``):
    a stable ``code``, an ``operator`` message and an HTTP ``status``. Subclasses set ``code`` and ``status``."""

    code: str = "error"
    status: int = 400

    def __init__(self, operator: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(operator)
        self.operator = operator
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"[{self.code}] {self.operator}"


class SamlError(CodedError):
    """Base class of the SAML core's errors."""

    code = "saml_error"


class RequestError(SamlError):
    """A SAML message from a peer was malformed, unsigned, forged, stale or replayed."""

    code = "request_invalid"
    status = 400


class SignatureError(RequestError):
    code = "signature_invalid"


class ReplayError(RequestError):
    code = "request_replayed"


class StatusResponseError(RequestError):
    """A trusted AuthnRequest we refuse by answering the SP, not with an error page.

    Raised only once every trust rule held (the SP is known, the signature verified, ``acs_url`` comes
    from the SP's metadata): the caller posts a signed Response with status ``Requester``/``sub_status``
    and ``InResponseTo`` = ``in_response_to`` to ``acs_url``. Unhandled, it is an ordinary 400 refusal.
    """

    code = "status_response"

    def __init__(self, operator: str, *, code: str | None = None, sub_status: str, acs_url: str,
                 in_response_to: str) -> None:
        super().__init__(operator, code=code)
        self.sub_status = sub_status
        self.acs_url = acs_url
        self.in_response_to = in_response_to


class MetadataError(SamlError):
    """SP metadata (or our own) could not be read, built, or does not say what we need."""

    code = "metadata_invalid"
    status = 500


class SigningKeyError(SamlError):
    """A key or certificate handed to the signer cannot sign what was asked (size, type, mismatch, algorithm)."""

    code = "key_invalid"
    status = 500
