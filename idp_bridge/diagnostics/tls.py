"""The TLS of the public URL, for ``idp-bridge check``: protocol version, certificate validity, hostname.

Rule: standard-library ``ssl`` only (the system trust store; ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are
honoured); every connection has a timeout; nothing is sent beyond the handshake. One verified handshake
says whether a browser would trust the server; when it fails, one unverified handshake reads what the
server presents, so the report can say why (expired, wrong name, unknown issuer). A last handshake
offering only TLS 1.0/1.1 checks that the server refuses them (when this OpenSSL can still offer them).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509

if TYPE_CHECKING:
    from idp_bridge.diagnostics.report import Report

MODERN = ("TLSv1.2", "TLSv1.3")
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_CERT_HAS_EXPIRED.
_HOSTNAME_MISMATCH, _EXPIRED = 62, 10


@dataclass(frozen=True)
class TlsProbe:
    host: str
    port: int
    protocol: str | None  # negotiated by a default (modern) client
    cipher: str | None
    trusted: bool  # the verified handshake (chain, dates and hostname) succeeded
    verify_error: str | None  # OpenSSL's reason when it did not
    not_before: dt.datetime | None
    not_after: dt.datetime | None
    names: tuple[str, ...] = field(default=())  # subjectAltName DNS names and IP addresses
    hostname_ok: bool = False
    legacy_accepted: str | None = None  # "TLSv1.1"/"TLSv1" if the server still agrees to it
    legacy_tested: bool = False


def _connect(host: str, port: int, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def hostname_matches(host: str, names: tuple[str, ...]) -> bool:
    """RFC 6125 matching on subjectAltName only: exact name, or ``*.`` for exactly one left-most label."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return any(n == str(ip) for n in names)
    host = host.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:] and name.count(".") >= 2:
            return True
    return False


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName)) + tuple(str(i) for i in san.get_values_for_type(x509.IPAddress))


def _legacy(host: str, port: int, timeout: float) -> tuple[bool, str | None]:
    """(tested, the old protocol the server accepted or None)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # offering them is the point: only to see the server refuse
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        return False, None  # this OpenSSL cannot offer TLS < 1.2 at all: nothing to learn
    try:
        with _connect(host, port, ctx, timeout) as conn:
            return True, conn.version()
    except ssl.SSLError as exc:
        if "no protocols available" in str(exc).lower():
            return False, None
        return True, None
    except OSError:
        return True, None


def probe_tls(host: str, port: int, *, timeout: float = 5.0) -> TlsProbe:
    """Handshake with ``host:port`` as a browser would; raises OSError when nothing answers there."""
    verify_error: str | None = None
    try:
        with _connect(host, port, ssl.create_default_context(), timeout) as conn:
            der = conn.getpeercert(binary_form=True)
            protocol, cipher, trusted = conn.version(), (conn.cipher() or (None,))[0], True
    except ssl.SSLCertVerificationError as exc:
        trusted = False
        verify_error = exc.verify_message or str(exc)
        if exc.verify_code == _EXPIRED:
            verify_error = "certificate has expired"
        elif exc.verify_code == _HOSTNAME_MISMATCH:
            verify_error = f"certificate is not valid for {host}"
        loose = ssl.create_default_context()
        loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
        with _connect(host, port, loose, timeout) as conn:
            der = conn.getpeercert(binary_form=True)
            protocol, cipher = conn.version(), (conn.cipher() or (None,))[0]
    except ssl.SSLError as exc:  # no TLS 1.2+ handshake at all: maybe an old protocol only
        tested, legacy = _legacy(host, port, timeout)
        if legacy is None:
            raise
        return TlsProbe(host=host, port=port, protocol=legacy, cipher=None, trusted=False,
                        verify_error=f"no TLS 1.2+ handshake ({exc.reason or exc})", not_before=None,
                        not_after=None, legacy_accepted=legacy, legacy_tested=tested)
    cert = x509.load_der_x509_certificate(der) if der else None
    names = _names(cert) if cert is not None else ()
    tested, legacy = _legacy(host, port, timeout)
    return TlsProbe(host=host, port=port, protocol=protocol, cipher=cipher, trusted=trusted,
                    verify_error=verify_error, not_before=cert.not_valid_before_utc if cert else None,
                    not_after=cert.not_valid_after_utc if cert else None, names=names,
                    hostname_ok=hostname_matches(host, names), legacy_accepted=legacy, legacy_tested=tested)


_FIX_PROXY = ("serve the bridge behind the shipped nginx recipe (docs/deployment.md): ssl_protocols TLSv1.2 TLSv1.3 "
              "and a certificate for the public name from a CA browsers trust; then `nginx -t && systemctl reload "
              "nginx`")


def check_public_tls(report: Report, base_url: str, now: dt.datetime, *,
                     probe: Callable[[str, int], TlsProbe] = probe_tls) -> None:
    """Rows in group "TLS" for an https base URL it can reach (skipped otherwise, with why)."""
    g = "TLS"
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        report.skip(g, "public URL TLS", f"{base_url} is not https")
        return
    host, port = parts.hostname, parts.port or 443
    try:
        tls = probe(host, port)
    except OSError as exc:
        report.skip(g, "public URL TLS", f"{host}:{port} not reachable from here ({exc}); run `idp-bridge check` "
                    "where the public URL answers to see its TLS")
        return
    modern = tls.protocol in MODERN
    report.add(g, "protocol TLS 1.2+", modern, f"{host}:{port} negotiates {tls.protocol}"
               + (f" ({tls.cipher})" if tls.cipher else ""),
               _FIX_PROXY, expected="TLSv1.2 or TLSv1.3", actual=str(tls.protocol))
    if not tls.legacy_tested:
        report.skip(g, "TLS 1.0/1.1 refused", "this host's OpenSSL cannot offer TLS 1.0/1.1 to test it")
    else:
        report.add(g, "TLS 1.0/1.1 refused", tls.legacy_accepted is None,
                   "the server refuses TLS 1.0 and 1.1" if tls.legacy_accepted is None
                   else f"the server still accepts {tls.legacy_accepted}", _FIX_PROXY,
                   expected="handshake refused", actual=tls.legacy_accepted or "refused")
    if tls.not_after is None or tls.not_before is None:
        for name in ("certificate valid", "certificate hostname"):
            report.skip(g, name, f"not checked: {tls.verify_error or 'the server presented no certificate'}")
        return
    in_dates = tls.not_before <= now < tls.not_after
    days = (tls.not_after - now).days
    chain_ok = tls.trusted or (tls.verify_error or "").startswith("certificate is not valid for")
    ok = in_dates and chain_ok
    if not in_dates:
        why = f"expired on {tls.not_after:%Y-%m-%d %H:%M}Z" if now >= tls.not_after \
            else f"not valid before {tls.not_before:%Y-%m-%d %H:%M}Z"
    elif not chain_ok:
        why = f"not trusted: {tls.verify_error}"
    else:
        why = f"trusted, valid until {tls.not_after:%Y-%m-%d %H:%M}Z ({days} days left)"
    report.add(g, "certificate valid", ok, why,
               "renew the certificate (e.g. certbot renew) and reload nginx; use the full chain (fullchain.pem) "
               "so browsers and Huawei can build the path to a trusted root",
               expected=f"trusted and valid at {now:%Y-%m-%d %H:%M}Z",
               actual=f"{tls.not_before:%Y-%m-%d}…{tls.not_after:%Y-%m-%d}"
               + ("" if chain_ok else f", {tls.verify_error}"))
    report.add(g, "certificate hostname", tls.hostname_ok,
               f"{host} is in the certificate's names ({', '.join(tls.names)})" if tls.hostname_ok
               else f"{host} is not among the certificate's names ({', '.join(tls.names) or 'none'})",
               "issue the certificate for the bridge's public name (subjectAltName) and point "
               "ssl_certificate at it", expected=host, actual=", ".join(tls.names) or "no subjectAltName")
