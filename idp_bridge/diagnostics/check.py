"""``idp-bridge check``: inspect a deployment and say, item by item, what is right and how to fix the rest.

Every check catches its own errors so one broken part never hides the state of the others. Network
look-ups (our served metadata and SSO URL, SP metadata URLs) go through ``fetch`` so the caller
controls timeouts; nothing here changes the deployment (no migration, no key change, no export).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from idp_bridge.config import Config, ServiceProviderConfig, load_config
from idp_bridge.diagnostics.check_keys import check_keys
from idp_bridge.diagnostics.http import HttpClient, HttpResult
from idp_bridge.diagnostics.report import Report
from idp_bridge.diagnostics.schema import schema_errors
from idp_bridge.diagnostics.tls import TlsProbe, check_public_tls, probe_tls
from idp_bridge.errors import ANY_ERROR
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.metadata import ServiceProviderMetadata, parse_sp_metadata
from idp_bridge.saml.time import format_display
from idp_bridge.saml.xml import MAX_XML_BYTES, NS_MD, parse_untrusted, qname

if TYPE_CHECKING:
    from idp_bridge.idp.identity_provider import IdentityProvider
    from idp_bridge.keys.provider import KeyRingProvider
    from idp_bridge.store import Store

Fetch = Callable[[str, str], HttpResult]  # (method, url) -> result; raises OSError when unreachable
TlsProbeFn = Callable[[str, int], TlsProbe]  # (host, port) -> the public URL's TLS; raises OSError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: The clock-offset check allows at most this much (or a third of saml.clock_skew_seconds, if smaller).
MAX_CLOCK_OFFSET_SECONDS = 60
_SECRET_RE = re.compile(r"PRIVATE KEY|passw(or)?d|passphrase|secret_key", re.IGNORECASE)


def default_fetch(method: str, url: str) -> HttpResult:
    return HttpClient(timeout=5.0).request(method, url)


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def _https_or_loopback(url: str) -> bool:
    return url.startswith("https://") or (url.startswith("http://") and _is_loopback(url))


def _entity_id_of(xml: bytes) -> str:
    root = parse_untrusted(xml, what="metadata")
    if root.tag != qname(NS_MD, "EntityDescriptor"):
        raise ValueError(f"root element is {root.tag}, not md:EntityDescriptor")
    return str(root.get("entityID") or "")


def _fmt(when: dt.datetime) -> str:
    return format_display(when)


def check_deployment(config_path: str | os.PathLike[str] | None = None, *,
                     environ: Mapping[str, str] | None = None, fetch: Fetch = default_fetch,
                     now: dt.datetime | None = None, tls_probe: TlsProbeFn = probe_tls) -> Report:
    """Run every check for the deployment described by the config file; never raises for a broken deployment."""
    now = now or dt.datetime.now(dt.UTC)
    report = Report("idp-bridge check")
    try:
        config = load_config(config_path, environ=environ)
    except ANY_ERROR as exc:
        report.add("config", "config valid", False, exc.operator,
                   "correct the config file as the message says, then run `idp-bridge check` again")
        return report
    report.add("config", "config valid", True, f"{config.path} loaded")
    _check_base_url(report, config)
    check_public_tls(report, config.base_url, now, probe=tls_probe)
    store = _check_database(report, config)
    _, keys = check_keys(report, config, store, now, environ)
    _check_our_metadata(report, config, store, keys, fetch, now)
    _check_service_providers(report, config, fetch, now)
    if store is not None:
        store.dispose()
    return report


# --------------------------------------------------------------------------- config, database


def _check_base_url(report: Report, config: Config) -> None:
    ok = _https_or_loopback(config.base_url)
    report.add("config", "base URL is https", ok, config.base_url,
               "set bridge.base_url (or IDP_BRIDGE_BASE_URL) to the public https:// address of the bridge and "
               "serve it with TLS 1.2+ (plain http is allowed only for localhost/127.0.0.1 while developing); "
               "then re-export the metadata and upload it in Partner Center",
               expected="https://… (http only for localhost)", actual=config.base_url)


def _check_database(report: Report, config: Config) -> Store | None:
    from idp_bridge.store import Store

    try:
        store = Store.from_url(config.database_url)
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        report.add("database", "database reachable", False, f"{type(exc).__name__}: {exc}",
                   "check bridge.database_url / IDP_BRIDGE_DATABASE_URL, that the database server runs and "
                   "accepts this host and user")
        report.skip("database", "database migrated", "database not reachable")
        return None
    report.add("database", "database reachable", True, store.describe())
    try:
        current, migrated = store.current_revision(), store.is_migrated()
    except Exception as exc:  # noqa: BLE001
        current, migrated = f"unreadable ({exc})", False
    from idp_bridge.store.migrate import head_revision

    head = head_revision()
    report.add("database", "database migrated", migrated, f"schema revision {current or 'none'} (code needs {head})",
               "run `idp-bridge db upgrade` (once, from one host) before starting the bridge",
               expected=head, actual=str(current or "none (empty database)"))
    if not migrated:
        store.dispose()
        return None
    return store


# --------------------------------------------------------------------------- keys


# --------------------------------------------------------------------------- our metadata


def _check_our_metadata(report: Report, config: Config, store: Store | None, keys: KeyRingProvider,
                        fetch: Fetch, now: dt.datetime) -> None:
    from idp_bridge.idp.identity_provider import IdentityProvider
    g = "our metadata"
    try:
        bridge = IdentityProvider(config, store, keys=keys)  # type: ignore[arg-type]  # store None: nothing here writes
        meta = bridge.metadata()
    except ANY_ERROR as exc:
        report.add(g, "metadata builds", False, exc.operator, "fix the key problems listed above")
        return
    xml = meta.xml
    errors = schema_errors(xml)
    report.add(g, "schema-valid", not errors, "valid against the OASIS SAML 2.0 metadata schema" if not errors
               else "; ".join(errors), "this is a bridge bug: report it with the output of `idp-bridge metadata export`")
    report.add(g, "under 2 MB", len(xml) <= MAX_XML_BYTES, f"{len(xml)} bytes",
               "publish fewer keys (retire old ones): Partner Center refuses metadata above 2 MB")
    secret = _SECRET_RE.search(xml.decode("utf-8", "replace"))
    report.add(g, "no secrets", secret is None, "public certificates only" if secret is None
               else f"contains {secret.group(0)!r}", "never publish private material: regenerate the key pair and "
               "check what was put into the config")
    report.add(g, "entity ID in metadata", _entity_id_of(xml) == config.entity_id, config.entity_id,
               "this is a bridge bug", expected=config.entity_id, actual=_entity_id_of(xml))

    exported = config.metadata_file
    if not exported.exists():
        report.add(g, "exported metadata file", False, f"{exported} does not exist",
                   "run `idp-bridge metadata export` and upload the file in Partner Center (Support > Open APIs "
                   "> Configure)")
    else:
        data = exported.read_bytes()
        report.add(g, "exported file under 2 MB", len(data) <= MAX_XML_BYTES, f"{exported}: {len(data)} bytes",
                   f"Partner Center refuses metadata above 2 MB: run `idp-bridge metadata export` to rewrite "
                   f"{exported} (never edit it by hand) and upload that file", expected=f"≤ {MAX_XML_BYTES} bytes",
                   actual=f"{len(data)} bytes")
        file_secret = _SECRET_RE.search(data.decode("utf-8", "replace"))
        report.add(g, "no secrets in exported file", file_secret is None, f"{exported}: public certificates only"
                   if file_secret is None else f"{exported} contains {file_secret.group(0)!r}",
                   f"delete {exported} and run `idp-bridge metadata export` (never edit it by hand); if that file "
                   "was uploaded or shared, treat the key as exposed: `idp-bridge keys new`, then rotate",
                   expected="no private key, password or secret", actual=file_secret.group(0) if file_secret else "")
        try:
            file_entity = _entity_id_of(data)
        except (*ANY_ERROR, ValueError) as exc:
            file_entity = f"(unreadable: {exc})"
        report.add(g, "entity ID in exported file", file_entity == config.entity_id, f"{exported}: {file_entity}",
                   "the entity ID changed since the last export: run `idp-bridge metadata export` and upload the "
                   "new file in Partner Center, or set bridge.entity_id back to the uploaded value",
                   expected=config.entity_id, actual=file_entity)
        report.add(g, "exported file is current", data == xml,
                   "identical to the metadata the bridge serves now" if data == xml
                   else "differs from the current metadata (keys or settings changed)",
                   "run `idp-bridge metadata export` and upload the new file in Partner Center")

    try:
        served = fetch("GET", config.metadata_url)
    except OSError as exc:
        report.add(g, "served metadata", False, f"{config.metadata_url} unreachable: {exc}",
                   "start the bridge (gunicorn 'idp_bridge.web:create_app()' or `idp-bridge serve`) and make the "
                   "proxy route the base URL to it")
    else:
        if served.status != 200:
            report.add(g, "served metadata", False, f"{config.metadata_url} answered HTTP {served.status}",
                       "make the proxy route /saml/metadata to the bridge")
        else:
            try:
                served_entity = _entity_id_of(served.body)
            except (*ANY_ERROR, ValueError) as exc:
                served_entity = f"(unreadable: {exc})"
            report.add(g, "entity ID in served metadata", served_entity == config.entity_id,
                       f"{config.metadata_url}: {served_entity}",
                       "the running bridge uses another config (entity ID or base URL differ): restart it with "
                       "this config, or check IDP_BRIDGE_BASE_URL on the server", expected=config.entity_id,
                       actual=served_entity)
            same = served.body == xml
            report.add(g, "served metadata is current", same,
                       "byte-identical to the metadata built from this host's keys and config" if same
                       else "differs from the metadata built here (other keys or settings on the server)",
                       "make every bridge node use the same key folder, database and config, then restart the "
                       "stale node; re-export and upload if the keys changed")
    _check_sso_url(report, config, fetch)
    _check_sample_response(report, bridge, xml, now)


#: What "the SSO URL answers" means: the bridge itself answers there, directly. Flask answers OPTIONS for
#: /saml/sso with 200 and an Allow header naming GET (the HTTP-Redirect binding Huawei uses); every answer
#: of the bridge carries X-Correlation-Id, which a proxy's own page (placeholder, login wall, error) lacks.
#: A proxy that refuses OPTIONS is asked with a bare GET, which the bridge refuses with 400 (no SAMLRequest).
#: A redirect is a failure: the metadata must name the URL that answers, Huawei sends browsers to exactly it.
_SSO_FIX_ROUTE = ("make the proxy pass {url} (GET with the query string untouched) straight to the bridge, and "
                  "set bridge.base_url to the address that answers; then re-export and upload the metadata")


def _check_sso_url(report: Report, config: Config, fetch: Fetch) -> None:
    g, url = "our metadata", config.sso_url
    expected = "the bridge answers directly: OPTIONS 2xx allowing GET (or bare GET 400), with X-Correlation-Id"
    try:
        res = fetch("OPTIONS", url)
        method = "OPTIONS"
        if res.status in (405, 501):
            res, method = fetch("GET", url), "GET"
    except OSError as exc:
        report.add(g, "SSO URL answering", False, f"{url} unreachable: {exc}",
                   "start the bridge and make the base URL reach it (Huawei redirects the browser to this URL)",
                   expected=expected, actual=f"unreachable: {exc}")
        return
    from_bridge = bool(res.headers.get("X-Correlation-Id"))
    allow = {m.strip().upper() for m in (res.headers.get("Allow") or "").split(",")}
    if method == "OPTIONS":
        ok = 200 <= res.status < 300 and from_bridge and "GET" in allow
    else:
        ok = res.status == 400 and from_bridge
    actual = f"{method} → HTTP {res.status}" + (f" → {res.location}" if res.location else "") + \
        ("" if from_bridge else " without X-Correlation-Id (not the bridge's answer)")
    if ok:
        report.add(g, "SSO URL answering", True, f"{url}: the bridge answers ({method} → HTTP {res.status})")
    elif 300 <= res.status < 400:
        report.add(g, "SSO URL answering", False, f"{url} redirects to {res.location or '(no Location)'}",
                   "the metadata must name the URL that answers itself (Huawei sends the browser to exactly that "
                   "URL, and a redirect loses the signed query on many proxies): "
                   + _SSO_FIX_ROUTE.format(url=url), expected=expected, actual=actual)
    elif res.status >= 500:
        report.add(g, "SSO URL answering", False, f"{url} answered HTTP {res.status}",
                   "the bridge (or the proxy in front of it) fails: read the bridge log, check it runs and that "
                   "the proxy's upstream points to it", expected=expected, actual=actual)
    else:
        report.add(g, "SSO URL answering", False, f"{url} answered {actual}",
                   _SSO_FIX_ROUTE.format(url=url), expected=expected, actual=actual)


def _check_sample_response(report: Report, bridge: IdentityProvider, idp_xml: bytes, now: dt.datetime) -> None:
    from idp_bridge.huawei.attributes import Customer
    from idp_bridge.idp.identity_provider import PendingLogin
    from idp_bridge.saml.response_checks import check_response, parse_idp_metadata

    g = "our metadata"
    if not bridge.config.service_providers:
        report.skip(g, "entity ID in responses", "no SP configured")
        return
    sp_cfg = bridge.config.service_providers[0]
    try:
        sp = bridge.sps.get(sp_cfg.name)
        acs = sp.metadata.default_acs().location
        pending = PendingLogin(sp.name, sp.metadata.entity_id, "_check-" + now.strftime("%H%M%S"), acs, None,
                               now.isoformat())
        form = bridge.issue_response(pending, Customer(user_id="check-sample-customer"), authn_instant=now,
                                     session_index="_check", now=now)
    except ANY_ERROR as exc:
        report.skip(g, "entity ID in responses", f"no sample Response built: {exc.operator}")
        return
    from idp_bridge.saml.bindings import decode_post

    xml = decode_post(form.saml_response)
    root = parse_untrusted(xml, what="sample Response")
    issuers = [(el.text or "").strip() for el in root.iter("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer")]
    ok = bool(issuers) and all(i == bridge.config.entity_id for i in issuers)
    report.add(g, "entity ID in responses", ok, f"Response and Assertion Issuer: {', '.join(sorted(set(issuers)))}",
               "this is a bridge bug", expected=bridge.config.entity_id, actual=", ".join(issuers))
    verdict = check_response(xml, idp=parse_idp_metadata(idp_xml), sp_entity_id=sp.metadata.entity_id,
                             acs_url=acs, expected_request_ids={pending.request_id}, now=now)
    failed = ", ".join(f"{c.name} (expected {c.expected}, got {c.actual})" for c in verdict.failed)
    report.add(g, "sample Response verifies", verdict.ok,
               f"a Response for SP {sp.name} passes all {len(verdict.checks)} SP-side checks against our metadata"
               if verdict.ok else failed, "run `idp-bridge decode` on a captured Response to see each check")


# --------------------------------------------------------------------------- service providers


def _check_service_providers(report: Report, config: Config, fetch: Fetch, now: dt.datetime) -> None:
    if not config.service_providers:
        report.add("service providers", "SP configured", False, "no [[sp]] in the config",
                   "run `idp-bridge sp add NAME --metadata https://auth.huaweicloud.com/authui/saml/metadata.xml "
                   "--site cn --x-account-type YOUR_ID`")
        return
    for sp in config.service_providers:
        _check_sp(report, config, sp, fetch, now)


def _load_sp_bytes(report: Report, g: str, sp: ServiceProviderConfig, fetch: Fetch,
                   now: dt.datetime, config: Config) -> bytes | None:
    if not sp.metadata_is_url:
        try:
            return Path(sp.metadata).read_bytes()
        except OSError as exc:
            report.add(g, "metadata loaded", False, f"cannot read {sp.metadata}: {exc}",
                       f"download the SP metadata again (e.g. {_site_metadata_url(sp)}) to that path, or use the URL")
            return None
    try:
        res = fetch("GET", sp.metadata)
    except OSError as exc:
        report.add(g, "metadata loaded", False, f"{sp.metadata} unreachable: {exc}",
                   "check outbound HTTPS from this host (proxy, firewall, DNS) to the SP metadata URL")
        report.skip(g, "clock offset", "SP metadata URL unreachable")
        return None
    _check_clock(report, g, res, now, config)
    if res.status != 200:
        report.add(g, "metadata loaded", False, f"{sp.metadata} answered HTTP {res.status}",
                   f"check the metadata URL in the config (expected something like {_site_metadata_url(sp)})")
        return None
    return res.body


def _site_metadata_url(sp: ServiceProviderConfig) -> str:
    from idp_bridge.huawei.sites import site

    return site(sp.site).login_url.replace("/authui/saml/login", "/authui/saml/metadata.xml")


def _check_clock(report: Report, g: str, res: HttpResult, now: dt.datetime, config: Config) -> None:
    date = res.headers.get("Date")
    if not date:
        report.skip(g, "clock offset", "the SP metadata response has no Date header")
        return
    try:
        remote = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        report.skip(g, "clock offset", f"unreadable Date header {date!r}")
        return
    offset = (now - remote).total_seconds()
    limit = min(MAX_CLOCK_OFFSET_SECONDS, config.saml.clock_skew_seconds // 3)
    report.add(g, "clock offset", abs(offset) <= limit + 1, f"{offset:+.0f} s against the SP's Date header",
               "synchronise this host's clock (chrony or systemd-timesyncd with NTP); assertions are only valid "
               f"within ±{config.saml.clock_skew_seconds} s", expected=f"within ±{limit} s",
               actual=f"{offset:+.0f} s")


def _check_sp(report: Report, config: Config, sp: ServiceProviderConfig, fetch: Fetch, now: dt.datetime) -> None:
    g = f"SP {sp.name} ({sp.site})"
    placeholder = sp.x_account_type.strip().upper().startswith(("YOUR_", "<")) or sp.x_account_type == "CHANGE_ME"
    report.add(g, "xAccountType set", bool(sp.x_account_type.strip()) and not placeholder,
               repr(sp.x_account_type) + (" is the README's placeholder, not your platform id" if placeholder else ""),
               "copy your platform id from Partner Center (Support > Open APIs > Configure) into x_account_type "
               f"(`idp-bridge sp add {sp.name} --replace --x-account-type ID ...`)")
    data = _load_sp_bytes(report, g, sp, fetch, now, config)
    if data is None:
        return
    try:
        meta: ServiceProviderMetadata = parse_sp_metadata(data)
    except ANY_ERROR as exc:
        report.add(g, "metadata loaded", False, exc.operator,
                   f"replace the SP metadata with a fresh copy from {_site_metadata_url(sp)}")
        return
    errors = schema_errors(data)
    report.add(g, "metadata loaded", True, f"entity ID {meta.entity_id}, {len(data)} bytes")
    report.add(g, "metadata schema-valid", not errors, "valid against the SAML 2.0 metadata schema" if not errors
               else "; ".join(errors), f"replace the SP metadata with a fresh copy from {_site_metadata_url(sp)}")
    if meta.valid_until is None:
        report.add(g, "metadata not expired", True, "no validUntil")
    else:
        report.add(g, "metadata not expired", meta.valid_until > now, f"validUntil {_fmt(meta.valid_until)}",
                   f"fetch fresh SP metadata from {_site_metadata_url(sp)}", expected=f"after {_fmt(now)}",
                   actual=_fmt(meta.valid_until))
    certs = meta.signing_certificates
    report.add(g, "signing certificate present", bool(certs),
               f"{len(certs)} signing certificate(s)" if certs else "no KeyDescriptor use=\"signing\" (or without "
               "use) with an X509Certificate", "use the SP's complete metadata: the bridge verifies every "
               "AuthnRequest and binding notification with that certificate", expected="≥ 1", actual=str(len(certs)))
    for cert in certs:
        fp = fingerprint(cert)
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        ok = start <= now < end
        report.add(g, f"signing certificate {fp.replace(':', '')[:16].lower()} valid", ok, f"{_fmt(start)} … {_fmt(end)}",
                   f"the SP certificate is outside its validity: fetch current SP metadata from "
                   f"{_site_metadata_url(sp)}", expected=f"valid at {_fmt(now)}", actual=f"{_fmt(start)} … {_fmt(end)}")
    acs = [e.location for e in meta.post_acs_endpoints]
    bad = [a for a in acs if not _https_or_loopback(a)]
    report.add(g, "ACS is https", bool(acs) and not bad, ", ".join(acs) or "none",
               "the SP's assertion consumer service must be https: check you loaded the real SP metadata",
               expected="https://…", actual=", ".join(bad or acs))
