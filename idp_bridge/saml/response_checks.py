"""What a SAML service provider (Huawei IAM) checks in a Response we send — sans-I/O.

Used by the built-in Huawei IAM simulator and by ``trust-test``. ``check_response`` never raises for
a bad Response: every check runs and is recorded with what was expected and what arrived, so an
operator sees the whole picture at once. Checks whose input is missing (for instance because the
XML did not parse) are recorded as failed with ``actual`` saying why.

Rule: every check is a :class:`~idp_bridge.saml.checks.Check` (the vocabulary decode and the simulator show); IdP
metadata is read by ``saml/idp_metadata.py``. Anti-wrapping: after the Assertion signature verifies, every later Assertion check reads only the
element ``verify_enveloped`` returned as signed — never a lookup by path in the original document.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from idp_bridge.saml.algorithms import DIGEST_ALGORITHMS, SIGNATURE_ALGORITHMS, fingerprint
from idp_bridge.saml.checks import Check, Checks
from idp_bridge.saml.errors import RequestError, SamlError
from idp_bridge.saml.idp_metadata import IdpMetadata as IdpMetadata  # re-exported: callers read both here
from idp_bridge.saml.idp_metadata import parse_idp_metadata as parse_idp_metadata
from idp_bridge.saml.signing import verify_enveloped
from idp_bridge.saml.time import format_xs_datetime, parse_instant
from idp_bridge.saml.xml import (
    CM_BEARER,
    NAMEID_TRANSIENT,
    NS_DS,
    NS_MD,
    NS_SAML,
    NS_SAMLP,
    NSMAP,
    STATUS_SUCCESS,
    parse_untrusted,
    qname,
)

DEFAULT_SKEW = timedelta(minutes=3)

#: Huawei attribute rules (shared spec §4).
EMAIL_MAX_CHARS = 64
MOBILE_PATTERN = re.compile(r"^\d{1,4}-\d{4,15}$")
# A simple RFC 5322-ish address: dot-atom local part, dotted host name with a TLD.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$")


def _fmt(when: datetime) -> str:
    return format_xs_datetime(when)


# --------------------------------------------------------------------------- the report


@dataclass
class ResponseReport:
    checks: list[Check] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    name_id: str | None = None
    name_id_format: str | None = None
    session_index: str | None = None
    in_response_to: str | None = None
    issuer: str | None = None
    assertion_xml: bytes | None = None
    signing_certificate_fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def check(self, name: str) -> Check:
        """The check called ``name`` (KeyError if it was not recorded)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view (what the simulator serves at /simulator/last.json)."""
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "attributes": self.attributes,
            "name_id": self.name_id,
            "name_id_format": self.name_id_format,
            "session_index": self.session_index,
            "in_response_to": self.in_response_to,
            "issuer": self.issuer,
            "signing_certificate_fingerprint": self.signing_certificate_fingerprint,
        }


# --------------------------------------------------------------------------- check_response

class _Recorder(Checks):
    """The SP-side recorder: failures of a Response carry no error code (nothing is raised)."""


def _text(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    return (el.text or "").strip()


def _first(el: etree._Element | None, path: str) -> etree._Element | None:
    if el is None:
        return None
    found = el.find(path, NSMAP)
    return found


def check_response(
    xml: bytes,
    *,
    idp: IdpMetadata,
    sp_entity_id: str,
    acs_url: str,
    expected_request_ids: Collection[str] | None,
    now: datetime,
    skew: timedelta = DEFAULT_SKEW,
    require_signed_assertion: bool = True,
) -> ResponseReport:
    """Check a SAML Response the way a strict SP does. Never raises for a bad Response.

    ``expected_request_ids``: the outstanding AuthnRequest IDs; ``None`` accepts an unsolicited
    Response (no InResponseTo check). ``now`` must be timezone-aware.
    """
    report = ResponseReport()
    rec = _Recorder(report.checks)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)

    # -- parse ----------------------------------------------------------------------------
    root: etree._Element | None = None
    try:
        root = parse_untrusted(xml, what="SAML Response", error=RequestError)
        rec.add("xml_parses", True, "well-formed XML without DTD or entities", f"{len(xml)} bytes, parsed")
    except SamlError as exc:
        rec.add("xml_parses", False, "well-formed XML without DTD or entities", exc.operator)
    is_response = root is not None and root.tag == qname(NS_SAMLP, "Response")
    if root is None:
        rec.skip("response_root", "samlp:Response", "XML did not parse")
    else:
        rec.equal("response_root", "samlp:Response", _pretty_tag(root))
    response = root if is_response else None
    no_response = "no samlp:Response" if root is not None else "XML did not parse"

    # -- Response-level checks ---------------------------------------------------------------
    if response is None:
        for name, expected in (("response_version", "2.0"), ("status_success", STATUS_SUCCESS),
                               ("response_destination", acs_url), ("response_issuer", idp.entity_id),
                               ("response_in_response_to", _ids_expected(expected_request_ids)),
                               ("single_assertion", "exactly one saml:Assertion, not encrypted")):
            rec.skip(name, expected, no_response)
    else:
        rec.equal("response_version", "2.0", response.get("Version"))
        status = _first(response, "samlp:Status/samlp:StatusCode")
        status_value = status.get("Value") if status is not None else None
        if status is not None and status_value != STATUS_SUCCESS:
            sub = status.find("samlp:StatusCode", NSMAP)
            msg = _text(_first(response, "samlp:Status/samlp:StatusMessage"))
            status_value = " ".join(x for x in (status_value, sub.get("Value") if sub is not None else None,
                                                repr(msg) if msg else None) if x)
        rec.equal("status_success", STATUS_SUCCESS, status_value)
        rec.equal("response_destination", acs_url, response.get("Destination"))
        rec.equal("response_issuer", idp.entity_id, _text(response.find("saml:Issuer", NSMAP)))
        _check_in_response_to(rec, "response_in_response_to", response.get("InResponseTo"),
                              expected_request_ids)
        all_assertions = response.xpath("//saml:Assertion", namespaces=NSMAP)
        encrypted = response.xpath("//saml:EncryptedAssertion", namespaces=NSMAP)
        direct = response.findall("saml:Assertion", NSMAP)
        assert isinstance(all_assertions, list) and isinstance(encrypted, list)
        n_all, n_enc = len(all_assertions), len(encrypted)
        rec.add("single_assertion", n_all == 1 and n_enc == 0 and len(direct) == 1,
                "exactly one saml:Assertion, not encrypted, a direct child of the Response",
                f"{n_all} saml:Assertion in the document ({len(direct)} direct children of the Response), "
                f"{n_enc} saml:EncryptedAssertion")
        report.in_response_to = response.get("InResponseTo")

    assertion_candidates = response.findall("saml:Assertion", NSMAP) if response is not None else []
    candidate = assertion_candidates[0] if len(assertion_candidates) == 1 else None

    # -- signature (anti-wrapping: keep only the element that was actually signed) ---------
    certs = list(idp.signing_certificates)
    cert_desc = ", ".join(fingerprint(c) for c in certs) or "(none)"
    sig_expected = f"enveloped signature on the Assertion by an IdP metadata certificate (SHA-256: {cert_desc})"
    signed: etree._Element | None = None
    if candidate is None:
        rec.skip("assertion_signature", sig_expected,
                 no_response if response is None else "no single saml:Assertion to verify")
    elif candidate.find("ds:Signature", NSMAP) is None:
        if require_signed_assertion:
            rec.add("assertion_signature", False, sig_expected, "the Assertion carries no ds:Signature")
        else:
            rec.add("assertion_signature", True, "signature optional", "unsigned Assertion accepted")
            signed = candidate
    else:
        try:
            element, cert = verify_enveloped(candidate, certs, element_id=candidate.get("ID"))
            if element.tag != qname(NS_SAML, "Assertion"):
                rec.add("assertion_signature", False, sig_expected,
                        f"the signature covers {_pretty_tag(element)}, not the Assertion")
            else:
                signed = element
                report.signing_certificate_fingerprint = fingerprint(cert)
                rec.add("assertion_signature", True, sig_expected,
                        f"verified with certificate SHA-256 {fingerprint(cert)}")
        except SamlError as exc:
            rec.add("assertion_signature", False, sig_expected, exc.operator)
        except Exception as exc:  # noqa: BLE001 - a checker must report, never crash, on peer input
            rec.add("assertion_signature", False, sig_expected, f"{type(exc).__name__}: {exc}")

    alg_expected = ("SignatureMethod one of " + ", ".join(SIGNATURE_ALGORITHMS)
                    + "; DigestMethod one of " + ", ".join(DIGEST_ALGORITHMS))
    # Read from the verified element; if verification failed, still name the algorithms the
    # Assertion claims (a SHA-1 signature fails verification and is reported here too).
    algo_source = signed if signed is not None else candidate
    sig_el = algo_source.find("ds:Signature", NSMAP) if algo_source is not None else None
    if sig_el is None:
        rec.skip("signature_algorithm", alg_expected, "no Assertion signature")
    else:
        method = _first(sig_el, "ds:SignedInfo/ds:SignatureMethod")
        digests = sig_el.findall("ds:SignedInfo/ds:Reference/ds:DigestMethod", NSMAP)
        sig_alg = method.get("Algorithm") if method is not None else None
        digest_algs = [d.get("Algorithm") or "(none)" for d in digests]
        ok = sig_alg in SIGNATURE_ALGORITHMS and bool(digest_algs) and all(
            d in DIGEST_ALGORITHMS for d in digest_algs)
        rec.add("signature_algorithm", ok, alg_expected,
                f"SignatureMethod {sig_alg}; DigestMethod {', '.join(digest_algs) or '(none)'}")

    # -- Assertion checks: read only from the signed element ----------------------------
    _check_assertion(rec, report, signed, idp=idp, sp_entity_id=sp_entity_id, acs_url=acs_url,
                     expected_request_ids=expected_request_ids, now=now, skew=skew,
                     why_missing=(no_response if response is None else
                                  "no single saml:Assertion" if candidate is None else
                                  "the Assertion signature did not verify"))
    return report


def _pretty_tag(el: etree._Element) -> str:
    qn = etree.QName(el)
    prefix = {NS_SAMLP: "samlp", NS_SAML: "saml", NS_MD: "md", NS_DS: "ds"}.get(qn.namespace or "")
    return f"{prefix}:{qn.localname}" if prefix else str(el.tag)


def _ids_expected(expected: Collection[str] | None) -> str:
    if expected is None:
        return "any (unsolicited Response allowed)"
    if not expected:
        return "one of the outstanding AuthnRequest IDs (none outstanding)"
    shown = sorted(expected)
    more = f" … (+{len(shown) - 5})" if len(shown) > 5 else ""
    return "one of " + ", ".join(shown[:5]) + more


def _check_in_response_to(rec: _Recorder, name: str, value: str | None,
                          expected: Collection[str] | None) -> None:
    if expected is None:
        rec.add(name, True, _ids_expected(expected), value or "(absent)")
    else:
        rec.add(name, value is not None and value in expected, _ids_expected(expected),
                value if value is not None else "(absent)")


def _check_assertion(rec: _Recorder, report: ResponseReport, assertion: etree._Element | None, *,
                     idp: IdpMetadata, sp_entity_id: str, acs_url: str,
                     expected_request_ids: Collection[str] | None, now: datetime, skew: timedelta,
                     why_missing: str) -> None:
    now_s, skew_s = _fmt(now), f"{int(skew.total_seconds())} s"
    expected = {
        "assertion_issuer": idp.entity_id,
        "subject_confirmation_method": CM_BEARER,
        "subject_confirmation_in_response_to": _ids_expected(expected_request_ids),
        "subject_confirmation_recipient": acs_url,
        "subject_confirmation_not_on_or_after": f"after now ({now_s}) minus skew {skew_s}",
        "conditions_not_before": f"at or before now ({now_s}) plus skew {skew_s}",
        "conditions_not_on_or_after": f"after now ({now_s}) minus skew {skew_s}",
        "audience": sp_entity_id,
        "name_id_format": f"saml:NameID with Format {NAMEID_TRANSIENT} and a value",
        "authn_statement": "one saml:AuthnStatement with AuthnInstant",
        "attribute_xUserId": "xUserId present with a non-empty value",
        "attribute_email": f"absent, or one address of at most {EMAIL_MAX_CHARS} characters (name@domain.tld)",
        "attribute_mobile": f"absent, or one value matching {MOBILE_PATTERN.pattern} (e.g. 0086-13800000000)",
    }
    if assertion is None:
        for name, exp in expected.items():
            rec.skip(name, exp, why_missing)
        return

    report.assertion_xml = etree.tostring(assertion)
    issuer = _text(assertion.find("saml:Issuer", NSMAP))
    report.issuer = issuer
    rec.equal("assertion_issuer", idp.entity_id, issuer)

    # Subject and its bearer confirmation.
    subject = assertion.find("saml:Subject", NSMAP)
    confirmations = subject.findall("saml:SubjectConfirmation", NSMAP) if subject is not None else []
    bearer = next((c for c in confirmations if c.get("Method") == CM_BEARER), None)
    methods = [c.get("Method") or "(no Method)" for c in confirmations]
    rec.add("subject_confirmation_method", bearer is not None, expected["subject_confirmation_method"],
            ", ".join(methods) or "(no SubjectConfirmation)")
    data = bearer.find("saml:SubjectConfirmationData", NSMAP) if bearer is not None else None
    if data is None:
        for name in ("subject_confirmation_in_response_to", "subject_confirmation_recipient",
                     "subject_confirmation_not_on_or_after"):
            rec.add(name, False, expected[name], "(no bearer SubjectConfirmationData)")
    else:
        _check_in_response_to(rec, "subject_confirmation_in_response_to", data.get("InResponseTo"),
                              expected_request_ids)
        rec.equal("subject_confirmation_recipient", acs_url, data.get("Recipient"))
        _check_not_on_or_after(rec, "subject_confirmation_not_on_or_after", data.get("NotOnOrAfter"),
                               now, skew, expected["subject_confirmation_not_on_or_after"], required=True)

    # Conditions.
    conditions = assertion.find("saml:Conditions", NSMAP)
    if conditions is None:
        for name in ("conditions_not_before", "conditions_not_on_or_after", "audience"):
            rec.add(name, False, expected[name], "(no saml:Conditions)")
    else:
        nb_raw = conditions.get("NotBefore")
        nb = parse_instant(nb_raw) if nb_raw else None
        if nb_raw is None:
            rec.add("conditions_not_before", True, expected["conditions_not_before"], "(absent)")
        elif nb is None:
            rec.add("conditions_not_before", False, expected["conditions_not_before"],
                    f"{nb_raw!r} is not an xs:dateTime")
        else:
            rec.add("conditions_not_before", nb <= now + skew, expected["conditions_not_before"], _fmt(nb))
        _check_not_on_or_after(rec, "conditions_not_on_or_after", conditions.get("NotOnOrAfter"), now, skew,
                               expected["conditions_not_on_or_after"], required=True)
        restrictions = conditions.findall("saml:AudienceRestriction", NSMAP)
        audiences_per = [[_text(a) or "" for a in r.findall("saml:Audience", NSMAP)] for r in restrictions]
        # Every AudienceRestriction must name us (SAML core §2.5.1.4).
        ok = bool(restrictions) and all(sp_entity_id in auds for auds in audiences_per)
        shown = "; ".join(", ".join(a) or "(empty)" for a in audiences_per) or "(no AudienceRestriction)"
        rec.add("audience", ok, sp_entity_id, shown)

    # NameID.
    name_id = subject.find("saml:NameID", NSMAP) if subject is not None else None
    if name_id is None:
        rec.add("name_id_format", False, expected["name_id_format"], "(no saml:NameID in the Subject)")
    else:
        report.name_id, report.name_id_format = _text(name_id), name_id.get("Format")
        rec.add("name_id_format", report.name_id_format == NAMEID_TRANSIENT and bool(report.name_id),
                expected["name_id_format"],
                f"Format {report.name_id_format or '(absent)'}, value {report.name_id or '(empty)'!r}")

    # AuthnStatement.
    statements = assertion.findall("saml:AuthnStatement", NSMAP)
    if statements:
        report.session_index = statements[0].get("SessionIndex")
    rec.add("authn_statement", len(statements) == 1 and bool(statements[0].get("AuthnInstant")),
            expected["authn_statement"],
            f"{len(statements)} saml:AuthnStatement"
            + (f", AuthnInstant {statements[0].get('AuthnInstant') or '(absent)'}" if statements else ""))

    # Attributes (Huawei rules, shared spec §4).
    attributes: dict[str, list[str]] = {}
    for attr in assertion.findall("saml:AttributeStatement/saml:Attribute", NSMAP):
        name = attr.get("Name") or ""
        attributes.setdefault(name, []).extend(
            (v.text or "") for v in attr.findall("saml:AttributeValue", NSMAP))
    report.attributes = attributes

    user_ids = attributes.get("xUserId")
    rec.add("attribute_xUserId", bool(user_ids) and all(v.strip() for v in user_ids or []),
            expected["attribute_xUserId"],
            "(absent)" if user_ids is None else ", ".join(repr(v) for v in user_ids) or "(no value)")

    emails = attributes.get("email")
    if emails is None:
        rec.add("attribute_email", True, expected["attribute_email"], "(absent)")
    else:
        problems = [email_problem(v) for v in emails]
        ok = len(emails) == 1 and problems[0] is None
        actual = "; ".join(f"{v!r} ({len(v)} characters)" + (f": {p}" if p else "")
                           for v, p in zip(emails, problems, strict=True)) or "(no value)"
        rec.add("attribute_email", ok, expected["attribute_email"], actual)

    mobiles = attributes.get("mobile")
    if mobiles is None:
        rec.add("attribute_mobile", True, expected["attribute_mobile"], "(absent)")
    else:
        ok = len(mobiles) == 1 and MOBILE_PATTERN.fullmatch(mobiles[0]) is not None
        rec.add("attribute_mobile", ok, expected["attribute_mobile"],
                ", ".join(repr(v) for v in mobiles) or "(no value)")


def email_problem(value: str) -> str | None:
    """Why Huawei would refuse this email value (None: it would not)."""
    if len(value) > EMAIL_MAX_CHARS:
        return f"longer than {EMAIL_MAX_CHARS} characters"
    if not EMAIL_PATTERN.fullmatch(value):
        return "not a well-formed address"
    return None


def _check_not_on_or_after(rec: _Recorder, name: str, raw: str | None, now: datetime, skew: timedelta,
                           expected: str, *, required: bool) -> None:
    if raw is None:
        rec.add(name, not required, expected, "(absent)")
        return
    when = parse_instant(raw)
    if when is None:
        rec.add(name, False, expected, f"{raw!r} is not an xs:dateTime")
        return
    rec.add(name, now - skew < when, expected, _fmt(when))
