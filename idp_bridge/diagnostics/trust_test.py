"""``idp-bridge trust-test``: the whole Huawei journey, headless, step by step, against real HTTP endpoints.

our metadata → sign-in (the bridge's local form) → login link → signed AuthnRequest → Response →
ACS verification → first-login binding → console → return after checkout. (The customer signs in
first, as on the partner platform's start page, then clicks the console link.)

The client is a plain cookie-keeping HTTP client that looks at every hop (no redirect is followed
blindly). It plays the customer's browser; the SP side is the built-in Huawei IAM simulator (started
in-process on free ports when no ``base_url`` is given, or whatever simulator/staging IAM the deployed
bridge's SP points to). Each step is checked independently of what the servers claim: the
AuthnRequest signature against the SP's published metadata, the Response by the SP-side rules
(``check_response``) against our published metadata.

With a local ``IdentityProvider`` (config and database of the bridge under test), a refusal is explained with
the exact reason from the audit trail, and stale SP metadata is detected by comparing the
certificate the SP signs with against the one the bridge holds.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urljoin, urlsplit

from idp_bridge.diagnostics.http import HttpClient, HttpResult
from idp_bridge.diagnostics.report import Report
from idp_bridge.errors import ANY_ERROR
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.bindings import decode_post, decode_redirect, verify_redirect_signature
from idp_bridge.saml.metadata import ServiceProviderMetadata, parse_sp_metadata
from idp_bridge.saml.requests import parse_authn_request
from idp_bridge.saml.response_checks import IdpMetadata, check_response, parse_idp_metadata

if TYPE_CHECKING:
    from idp_bridge.idp.identity_provider import IdentityProvider

G = "journey"


class StepFailed(Exception):
    """Stops the journey: later steps depend on this one."""


@dataclass
class _Form:
    action: str
    fields: dict[str, str]


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.links: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(_Form(a.get("action") or "", {}))
        elif tag == "input" and a.get("name") and self.forms:
            self.forms[-1].fields.setdefault(a["name"] or "", a.get("value") or "")
        elif tag == "a" and a.get("id") and a.get("href"):
            self.links[a["id"] or ""] = a.get("href") or ""


def _parse(page: HttpResult) -> _Forms:
    p = _Forms()
    p.feed(page.text)
    return p


def _cert_fps(meta: ServiceProviderMetadata) -> list[str]:
    return [fingerprint(c) for c in meta.signing_certificates]


class TrustTest:
    def __init__(self, base_url: str, *, user: str, password: str, sp: str | None = None,
                 bridge: IdentityProvider | None = None, timeout: float = 15.0) -> None:
        self.base = base_url.rstrip("/")
        self.user, self.password, self.sp = user, password, sp
        self.bridge = bridge
        self.http = HttpClient(timeout=timeout)
        self.report = Report(f"idp-bridge trust-test against {self.base}")
        self.idp: IdpMetadata | None = None
        self.sp_meta: ServiceProviderMetadata | None = None
        self.sp_base = ""
        self.request_id = ""
        self.first_login = False
        self.login_link = ""
        self.sso_url = ""
        self.form = _Form("", {})
        self.after_acs = ""

    # -- plumbing --------------------------------------------------------------------------------
    def ok(self, name: str, detail: str) -> None:
        self.report.add(G, name, True, detail)

    def fail(self, name: str, detail: str, fix: str, *, expected: str = "", actual: str = "") -> StepFailed:
        self.report.add(G, name, False, detail, fix, expected=expected, actual=actual)
        return StepFailed(name)

    def get(self, name: str, url: str) -> HttpResult:
        try:
            return self.http.get(url)
        except OSError as exc:
            raise self.fail(name, f"GET {url}: {exc}", "check the address and that the server runs") from exc

    def post(self, name: str, url: str, form: dict[str, str]) -> HttpResult:
        try:
            return self.http.post(url, form)
        except OSError as exc:
            raise self.fail(name, f"POST {url}: {exc}", "check the address and that the server runs") from exc

    def refusal(self, res: HttpResult) -> tuple[str | None, str]:
        """(reason code from the bridge's audit trail when readable, the refusal explained)."""
        cid = res.headers.get("X-Correlation-Id") or ""
        if self.bridge is not None and cid:
            try:
                for ev in self.bridge.store.audit.recent(200):
                    if ev.correlation_id == cid and ev.outcome != "ok":
                        reason = (ev.detail or {}).get("reason") or ""
                        return ev.reason_code, f"[{ev.reason_code}] {reason} (correlation id {cid})"
            except Exception as exc:  # noqa: BLE001 - the report says it could not look
                return None, f"HTTP {res.status}, correlation id {cid} (audit trail unreadable: {exc})"
        return None, (f"HTTP {res.status}, correlation id {cid or '?'}: look it up with `idp-bridge audit` or in "
                      "the bridge log (run trust-test with --config of that bridge to see the reason here)")

    def refusal_reason(self, res: HttpResult) -> str:
        return self.refusal(res)[1]

    def offered_sps(self) -> list[str] | None:
        """The SPs the bridge offers the signed-in customer (its start page's console links); None if unknown."""
        try:
            page = self.http.get(self.base + "/")
        except OSError:
            return None
        if page.status != 200:
            return None
        prefix = "open-console-"
        return [i[len(prefix):] for i in _parse(page).links if i.startswith(prefix)] or None

    # -- the journey -------------------------------------------------------------------------------
    def run(self) -> Report:
        steps = (self.step_metadata, self.step_sign_in, self.step_login_link, self.step_authn_request,
                 self.step_response, self.step_acs, self.step_binding, self.step_console, self.step_return)
        for i, step in enumerate(steps):
            try:
                step()
            except StepFailed:
                for later in steps[i + 1:]:
                    self.report.skip(G, _STEP_NAMES[later.__name__], "not run: an earlier step failed")
                break
        return self.report

    def step_metadata(self) -> None:
        name = "IdP metadata"
        res = self.get(name, self.base + "/saml/metadata")
        if res.status != 200:
            raise self.fail(name, f"{self.base}/saml/metadata answered HTTP {res.status}",
                            "check the base URL and that the bridge runs", expected="200", actual=str(res.status))
        try:
            self.idp = parse_idp_metadata(res.body)
        except ANY_ERROR as exc:
            raise self.fail(name, exc.operator, "run `idp-bridge check` on the bridge host") from exc
        self.ok(name, f"entity ID {self.idp.entity_id}, {len(self.idp.signing_certificates)} signing "
                f"certificate(s), SSO {self.idp.sso_redirect_url}")

    def step_sign_in(self) -> None:
        name = "sign-in"
        page = self.get(name, self.base + "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if page.status != 200 or not token:
            raise self.fail(name, f"{self.base}/login answered HTTP {page.status} without a sign-in form",
                            "trust-test signs in with the bridge's local form (demo users or `idp-bridge users "
                            "add`); a bridge that signs in through the platform needs a local test user")
        res = self.post(name, self.base + "/login", {"user_id": self.user, "password": self.password,
                                                     "csrf_token": token.group(1)})
        if res.status not in (302, 303):
            raise self.fail(name, f"sign-in as {self.user!r} refused (HTTP {res.status})",
                            "pass --user/--password of a user the bridge knows (`idp-bridge users add`)")
        self.ok(name, f"signed in as {self.user!r} on the partner platform side")

    def step_login_link(self) -> None:
        name = "login link"
        res = self.get(name, self.base + "/go" + (f"?sp={self.sp}" if self.sp else ""))
        link = res.location
        if res.status not in (302, 303) or not link:
            code, reason = self.refusal(res)
            if self.sp and 400 <= res.status < 500:
                offered = self.offered_sps()
                if code == "sp_unknown" or (offered is not None and self.sp not in offered):
                    known = ", ".join(offered) if offered else "see `idp-bridge sp list` on the bridge host"
                    raise self.fail(name, f"SP {self.sp!r} is unknown to the bridge at {self.base} (it knows: "
                                    f"{known}); /go?sp={self.sp} was refused: {reason}",
                                    "pass --sp with the name of a configured SP (`idp-bridge sp list`), or add "
                                    "this one with `idp-bridge sp add`", expected=f"one of: {known}",
                                    actual=self.sp)
            raise self.fail(name, f"/go answered HTTP {res.status}: {reason}",
                            "configure an SP (`idp-bridge sp add`) and check `idp-bridge check`")
        parts = urlsplit(link)
        q = parse_qs(parts.query)
        missing = [p for p in ("xAccountType", "service") if not q.get(p)]
        if missing or not parts.path.endswith("/authui/saml/login"):
            raise self.fail(name, f"link {link}", "the link must be <IAM host>/authui/saml/login?xAccountType=…"
                            "&isFirstLogin=…&service=…", expected="xAccountType, isFirstLogin, service",
                            actual=f"missing {', '.join(missing)}" if missing else parts.path)
        self.first_login = (q.get("isFirstLogin") or ["false"])[0] == "true"
        self.sp_base = f"{parts.scheme}://{parts.netloc}"
        self.login_link = link
        self.ok(name, f"{parts.scheme}://{parts.netloc}{parts.path} xAccountType={q['xAccountType'][0]} "
                f"isFirstLogin={str(self.first_login).lower()} service={q['service'][0]}")

    def step_authn_request(self) -> None:
        name = "signed AuthnRequest"
        meta_url = self.sp_base + "/authui/saml/metadata.xml"
        meta = self.get(name, meta_url)
        try:
            self.sp_meta = parse_sp_metadata(meta.body)
        except ANY_ERROR as exc:
            raise self.fail(name, f"SP metadata at {meta_url}: {exc.operator}", "check the SP's login URL") from exc
        res = self.get(name, self.login_link)
        target = res.location or ""
        assert self.idp is not None
        if res.status not in (302, 303) or not target.startswith(self.idp.sso_redirect_url + "?"):
            raise self.fail(name, f"the SP answered HTTP {res.status} → {target or '(no redirect)'}: "
                            f"{_page_message(res)}", "the SP must know our metadata under this xAccountType: "
                            "upload the current metadata in Partner Center", expected=self.idp.sso_redirect_url,
                            actual=target or f"HTTP {res.status}")
        try:
            msg = decode_redirect(target.split("?", 1)[1])
            req = parse_authn_request(msg.xml)
            cert = verify_redirect_signature(msg, self.sp_meta.signing_certificates, required=True)
        except ANY_ERROR as exc:
            raise self.fail(name, exc.operator, "the SP's request does not verify against its own metadata") from exc
        self.request_id = req.id
        self.sso_url = target
        self.ok(name, f"ID {req.id} from {req.issuer}, {msg.sig_alg} by {fingerprint(cert) if cert else '?'}")

    def stale_sp_metadata(self) -> str | None:
        """When the bridge holds SP certificates other than those the SP publishes now, say so."""
        if self.bridge is None or self.sp_meta is None:
            return None
        cfg = self.bridge.config
        for sp in cfg.service_providers:
            path = cfg.metadata_dir / f"sp-{sp.name}.xml" if sp.metadata_is_url else Path(sp.metadata)
            try:
                held = parse_sp_metadata(path.read_bytes())
            except (OSError, *ANY_ERROR):
                continue
            if held.entity_id != self.sp_meta.entity_id:
                continue
            now_fps, held_fps = _cert_fps(self.sp_meta), _cert_fps(held)
            if not set(now_fps) & set(held_fps):
                return (f"SP metadata is stale: the bridge holds SP {sp.name} signing certificate(s) "
                        f"{', '.join(held_fps)}, the SP now signs with {', '.join(now_fps)}")
        return None

    def step_response(self) -> None:
        name = "bridge answers with a Response"
        res = self.get(name, self.sso_url)
        if res.status != 200:
            stale = self.stale_sp_metadata()
            raise self.fail(name, f"the bridge refused the AuthnRequest: {self.refusal_reason(res)}"
                            + (f"; {stale}" if stale else ""),
                            "refresh the SP metadata on the bridge (restart it, or `idp-bridge sp add NAME --metadata "
                            "URL --replace`), then run trust-test again" if stale else
                            "run `idp-bridge decode` on the SSO URL to see each check",
                            expected="HTTP 200 with the auto-POST form", actual=f"HTTP {res.status}")
        forms = [f for f in _parse(res).forms if "SAMLResponse" in f.fields]
        if not forms:
            raise self.fail(name, "HTTP 200 without a SAMLResponse form (did the session survive sign-in?)",
                            "check cookies/session settings (SESSION_COOKIE_SECURE needs https)")
        self.form = forms[0]
        assert self.idp is not None and self.sp_meta is not None
        xml = decode_post(self.form.fields["SAMLResponse"])
        acs = self.form.action
        verdict = check_response(xml, idp=self.idp, sp_entity_id=self.sp_meta.entity_id, acs_url=acs,
                                 expected_request_ids={self.request_id}, now=dt.datetime.now(dt.UTC))
        in_meta = acs in self.sp_meta.acs_locations
        if not verdict.ok or not in_meta:
            bad = "; ".join(f"{c.name}: expected {c.expected}, got {c.actual}" for c in verdict.failed)
            raise self.fail(name, bad or f"form posts to {acs}, not an ACS of the SP metadata",
                            "run `idp-bridge decode` on the form to see every check")
        self.ok(name, f"signed Response to {acs}; all {len(verdict.checks)} SP-side checks pass against our "
                f"published metadata; xUserId={verdict.attributes.get('xUserId')}")

    def step_acs(self) -> None:
        name = "ACS verification"
        res = self.post(name, self.form.action, {k: v for k, v in self.form.fields.items()
                                                 if k in ("SAMLResponse", "RelayState")})
        if res.status not in (302, 303):
            detail = _simulator_refusal(self) or _page_message(res)
            raise self.fail(name, f"the SP refused the Response (HTTP {res.status}): {detail}",
                            "compare with `idp-bridge decode` on the captured form; upload current metadata")
        self.after_acs = res.location or ""
        self.ok(name, f"accepted by the SP; next {self.after_acs}")

    def step_binding(self) -> None:
        name = "first-login binding"
        if not self.first_login:
            self.report.skip(G, name, "the customer is already bound (isFirstLogin=false)")
            return
        bind_url = urljoin(self.sp_base + "/", "authui/bind")
        page = self.get(name, bind_url)
        if page.status == 404:
            self.report.skip(G, name, "not available: the SP has no bind page")
            return
        done = self.post(name, bind_url, {"action": "bind", "domain_name": f"hw_{self.user}"})
        forms = [f for f in _parse(done).forms if "bindRequest" in f.fields]
        if not forms:
            raise self.fail(name, f"the SP sent no binding notification (HTTP {done.status})",
                            "set the binding-notification URL (Partner Center) to <base>/huawei/bind")
        note = forms[0]
        res = self.post(name, note.action, note.fields)
        if res.status == 404:
            self.report.skip(G, name, f"not available: {note.action} does not exist on this bridge")
            return
        if res.status >= 400:
            raise self.fail(name, f"the bridge refused the binding notification: {self.refusal_reason(res)}",
                            "run `idp-bridge decode` on the notification form to see the signature check")
        self.ok(name, f"notification posted to {note.action}, bridge answered HTTP {res.status}")

    def step_console(self) -> None:
        name = "console"
        res = self.get(name, self.sp_base + "/console")
        if res.status != 200 or self.user not in res.text:
            raise self.fail(name, f"console answered HTTP {res.status}", "see the ACS step",
                            expected=f"a console page for {self.user}", actual=f"HTTP {res.status}")
        self.ok(name, f"console opened for {self.user}")

    def step_return(self) -> None:
        name = "return after checkout"
        paid = self.post(name, self.sp_base + "/order/pay", {})
        if paid.status == 404:
            self.report.skip(G, name, "not available: the SP has no order page")
            return
        link = _parse(paid).links.get("order-details")
        if not link:
            raise self.fail(name, "the payment page has no 'View order details' link back to the partner",
                            "set the payment-success return URL (Partner Center) to <base>/huawei/return")
        res = self.get(name, link)
        if res.status == 404:
            self.report.skip(G, name, f"not available: {link} does not exist on this bridge")
            return
        if res.status not in (302, 303) or not res.location:
            raise self.fail(name, f"{link} answered HTTP {res.status}: {self.refusal_reason(res)}",
                            "set [platform] return_url to the partner page for paid orders")
        self.ok(name, f"{urlsplit(link).path} → {res.location}")


_STEP_NAMES = {
    "step_metadata": "IdP metadata", "step_sign_in": "sign-in", "step_login_link": "login link",
    "step_authn_request": "signed AuthnRequest", "step_response": "bridge answers with a Response",
    "step_acs": "ACS verification", "step_binding": "first-login binding", "step_console": "console",
    "step_return": "return after checkout",
}


def _page_message(res: HttpResult) -> str:
    text = re.sub(r"<[^>]+>", " ", res.text)
    return re.sub(r"\s+", " ", text).strip()[:300]


def _simulator_refusal(t: TrustTest) -> str | None:
    try:
        res = t.http.get(t.sp_base + "/simulator/last.json")
    except OSError:
        return None
    if res.status != 200:
        return None
    import json

    try:
        data = json.loads(res.body)
    except ValueError:
        return None
    failed = [c for c in data.get("checks", []) if not c.get("ok")]
    return "; ".join(f"{c['name']}: expected {c['expected']}, got {c['actual']}" for c in failed) or None


# --------------------------------------------------------------------------- entry points


def run_against(base_url: str, *, user: str, password: str, sp: str | None = None,
                bridge: IdentityProvider | None = None) -> Report:
    return TrustTest(base_url, user=user, password=password, sp=sp, bridge=bridge).run()
