"""Judge the Responses ``bench_http.py`` received: python3-saml in strict mode, trusting only our metadata.

A sample body is the auto-POST page exactly as the load generator got it. It is correct when the form
posts to the requesting SP's ACS, its ``InResponseTo`` is one of the AuthnRequest IDs the benchmark
generated, and python3-saml (strict, signed Assertion wanted, deprecated algorithms refused) accepts it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser

from lxml import etree

NS_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


@dataclass
class Verdicts:
    judged: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, ok: bool, why: str | None) -> None:
        self.judged += 1
        if ok:
            self.ok += 1
        elif len(self.errors) < 5:
            self.errors.append(why or "rejected")


def form_fields(html: str) -> dict[str, str]:
    found: dict[str, str] = {}

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "form":
                found["action"] = a.get("action") or ""
            if tag == "input" and a.get("name"):
                found[a["name"] or ""] = a.get("value") or ""

    Parser().feed(html)
    return found


def judge(body: str, *, idp_metadata: bytes, acs_url: str, sp_entity_id: str, request_ids: set[str],
          verdicts: Verdicts) -> None:
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
    from onelogin.saml2.response import OneLogin_Saml2_Response
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    fields = form_fields(body)
    if fields.get("action") != acs_url or "SAMLResponse" not in fields:
        verdicts.add(False, f"form posts to {fields.get('action')!r}, expected {acs_url!r}")
        return
    xml = base64.b64decode(fields["SAMLResponse"])
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    in_response_to = etree.fromstring(xml, parser).get("InResponseTo") or ""
    if in_response_to not in request_ids:
        verdicts.add(False, f"InResponseTo {in_response_to!r} is not a request the benchmark sent")
        return
    idp = OneLogin_Saml2_IdPMetadataParser.parse(idp_metadata.decode())["idp"]
    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "sp": {"entityId": sp_entity_id,
               "assertionConsumerService": {"url": acs_url,
                                            "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
               "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"},
        "idp": idp,
        "security": {"wantAssertionsSigned": True, "rejectDeprecatedAlgorithm": True,
                     "wantMessagesSigned": False, "wantNameId": True},
    }, sp_validation_only=True)
    parts = acs_url.split("/", 3)
    request_data = {"https": "on" if acs_url.startswith("https") else "off", "http_host": parts[2],
                    "script_name": "/" + parts[3]}
    response = OneLogin_Saml2_Response(settings, fields["SAMLResponse"])
    ok = response.is_valid(request_data, request_id=in_response_to, raise_exceptions=False)
    if ok and not response.get_attributes().get("xUserId"):
        ok = False
    verdicts.add(bool(ok), response.get_error())
