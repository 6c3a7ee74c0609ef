"""Password guessing is throttled: every sign-in form (local ``/login``, the console's ``/_bridge/login``) asks
``begin_attempt`` before it checks a password.

Rule: one attempt is counted per account and per client address (``request.remote_addr``: ProxyFix has
set it from X-Forwarded-For when ``trust_forwarded_headers`` is on; IPv6 counted per /64) in the shared
database, before the password is checked, so parallel guesses on any number of workers and nodes count.
Over a limit the form answers 429 with ``Retry-After`` and checks nothing; each lock-out is audited when it
starts. Unknown and known accounts are counted alike, so the answer says nothing about which exist.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from flask import request

from idp_bridge.ops.audit import audit
from idp_bridge.store.throttle import ThrottleRule, Verdict
from idp_bridge.web.auth import bridge
from idp_bridge.web.security import correlation_id


def client_network(addr: str | None) -> str:
    """The counted client: an IPv4 address, or an IPv6 /64 (one subscriber's whole prefix)."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    account_key: str
    address_key: str

    @property
    def allowed(self) -> bool:
        return self.verdict.allowed

    @property
    def retry_after(self) -> int:
        return self.verdict.retry_after

    def succeeded(self) -> None:
        bridge().store.throttle.succeeded(reset=[self.account_key], refund=[self.address_key])


def begin_attempt(scope: str, account: str) -> Attempt:
    """Count this sign-in attempt (``scope``: ``login`` or ``console``); check ``allowed`` before anything else."""
    b = bridge()
    limits = b.config.limits
    window = dt.timedelta(seconds=limits.login_window_seconds)
    lockout = dt.timedelta(seconds=limits.login_lockout_seconds)
    network = client_network(request.remote_addr)
    account_key = f"{scope}:account:{account}"
    address_key = f"{scope}:address:{network}"
    verdict = b.store.throttle.reserve({
        account_key: ThrottleRule(limits.login_account_attempts, window, lockout),
        address_key: ThrottleRule(limits.login_address_attempts, window, lockout),
    }, now=dt.datetime.now(dt.UTC))
    for key in verdict.newly_locked:
        by = "account" if key == account_key else "address"
        audit(b.store, "login_lockout", "refused", reason_code=f"{scope}_locked_{by}", correlation_id=correlation_id(),
              customer=account if scope == "login" else None,
              detail={"scope": scope, "by": by, "address": network, "lockout_seconds": limits.login_lockout_seconds,
                      "limit": limits.login_account_attempts if by == "account" else limits.login_address_attempts,
                      "window_seconds": limits.login_window_seconds})
    return Attempt(verdict, account_key, address_key)
