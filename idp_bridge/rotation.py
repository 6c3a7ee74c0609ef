"""Key rotation with evidence: what `idp-bridge keys ...` does, without the command-line layer.

The rule: a key signs only once every configured SP has evidence that it holds metadata listing
that key - a ``/saml/metadata?sp=NAME`` fetch whose key set included it, or an operator's
``keys confirm-published`` (Huawei gets our metadata by manual upload in Partner Center) - and
once it has been published (state ``next``) for ``[keys] publish_lead_seconds``. ``force`` skips
the gate but needs a reason, which goes into the audit log.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .audit import audit
from .bridge import Bridge
from .keys import (
    check_certificate_key,
    check_not_expired,
    generate_key,
    key_id_for,
    load_key_ring,
    scan_key_dir,
    write_pair,
)
from .saml.errors import KeyError_
from .saml.signing import PrivateKeySigner
from .store.keyring import KeyStateRecord

PARTNER_CENTER = "Partner Center (Support > Open APIs > Configure)"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Evidence:
    sp: str
    kind: str  # "confirmed" or "fetched"
    at: dt.datetime
    detail: str


@dataclass(frozen=True)
class ActivationCheck:
    key_id: str
    state: str
    published_at: dt.datetime | None
    lead: dt.timedelta
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    blockers: list[str] = field(default_factory=list)

    @property
    def missing_sps(self) -> list[str]:
        return [sp for sp, ev in self.evidence.items() if not ev]

    @property
    def ready(self) -> bool:
        return not self.blockers


class Rotation:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.config = bridge.config
        self.store = bridge.store

    # -- reading ------------------------------------------------------------------------------
    def records(self) -> dict[str, KeyStateRecord]:
        return self.store.key_records()

    def bootstrap(self, now: dt.datetime | None = None) -> None:
        """Record the single key of a fresh install as active (the bootstrap rule, made explicit)."""
        if self.store.key_states():
            return
        pairs = scan_key_dir(self.config.key_dir)
        if len(pairs) == 1:
            self.store.register_key(pairs[0][0].stem, state="active", now=now or utcnow())

    def activation_check(self, key_id: str, *, now: dt.datetime | None = None) -> ActivationCheck:
        now = now or utcnow()
        record = self.records().get(key_id)
        lead = dt.timedelta(seconds=self.config.keys.publish_lead_seconds)
        if record is None:
            return ActivationCheck(key_id, "unknown", None, lead, blockers=[f"key {key_id} is not in the key ring"])
        evidence: dict[str, list[Evidence]] = {sp.name: [] for sp in self.config.service_providers}
        for pub in self.store.key_publications(key_id):
            if pub.sp in evidence:
                evidence[pub.sp].append(Evidence(pub.sp, "confirmed", pub.at, pub.note or "confirm-published"))
        for fetch in self.store.fetches_with_key(key_id, since=record.published_at):
            if fetch.sp in evidence:
                evidence[fetch.sp].append(Evidence(fetch.sp, "fetched", fetch.at,
                                                   f"GET /saml/metadata from {fetch.remote_addr or '?'} "
                                                   f"(ETag {fetch.etag})"))
        blockers: list[str] = []
        if record.state not in ("next", "retiring"):
            blockers.append(f"key {key_id} is {record.state}; only a next (or retiring) key can be activated")
        for sp, ev in evidence.items():
            if not ev:
                blockers.append(f"SP {sp!r} has no evidence of metadata holding key {key_id}: no fetch of "
                                f"/saml/metadata?sp={sp} listing it and no `keys confirm-published {key_id} "
                                f"--sp {sp}`")
        published = record.published_at
        if record.state == "next" and published is not None and now - published < lead:
            blockers.append(f"key {key_id} has been published for {int((now - published).total_seconds())} s; "
                            f"the lead time is {int(lead.total_seconds())} s (ready at "
                            f"{(published + lead):%Y-%m-%dT%H:%M:%SZ})")
        return ActivationCheck(key_id, record.state, published, lead, evidence, blockers)

    # -- changing -----------------------------------------------------------------------------
    def _after_change(self) -> None:
        self.bridge.keys.invalidate()
        self.bridge.export_metadata()

    def new_key(self, *, algorithm: str, days: int, now: dt.datetime | None = None) -> str:
        now = now or utcnow()
        self.bootstrap(now)
        kid, _, _ = generate_key(self.config.key_dir, common_name=self.config.entity_id, algorithm=algorithm,
                                 days=days, passphrase=self.config.key_passphrase)
        self.store.register_key(kid, state="next", now=now)
        audit(self.store, "key", "ok", reason_code="key_new", detail={"key_id": kid, "algorithm": algorithm,
                                                                       "days": days}, now=now)
        self._after_change()
        return kid

    def import_key(self, key_pem: bytes, cert_pem: bytes, *, passphrase: str | None,
                   now: dt.datetime | None = None) -> str:
        now = now or utcnow()
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise KeyError_(f"the certificate is not PEM: {exc}", code="key_cert_unreadable") from exc
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=passphrase.encode() if passphrase
                                                             else None)
        except TypeError as exc:
            raise KeyError_(f"the private key: {exc} (IDP_BRIDGE_KEY_PASSPHRASE or --passphrase-file)",
                            code="key_passphrase") from exc
        except ValueError as exc:
            raise KeyError_(f"the private key cannot be read (wrong passphrase or not PEM): {exc}",
                            code="key_unreadable") from exc
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyError_(f"the private key is {type(private_key).__name__}; expected RSA or ECDSA",
                            code="key_algorithm")
        check_certificate_key(cert, "imported certificate")
        PrivateKeySigner(private_key, cert)  # size and key/certificate match
        check_not_expired(cert, "imported certificate", now)
        kid = key_id_for(cert)
        if kid in self.records() or (self.config.key_dir / f"{kid}.key").exists():
            raise KeyError_(f"key {kid} is already in the key ring", code="key_exists")
        self.bootstrap(now)
        write_pair(self.config.key_dir, private_key, cert, passphrase=self.config.key_passphrase)
        self.store.register_key(kid, state="next", now=now)
        audit(self.store, "key", "ok", reason_code="key_import", detail={"key_id": kid}, now=now)
        self._after_change()
        return kid

    def confirm_published(self, key_id: str, sp: str, *, note: str | None = None,
                          now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        self.config.sp(sp)  # ConfigError for an unknown SP name
        record = self.records().get(key_id)
        if record is None or record.state == "retired":
            raise KeyError_(f"key {key_id} is {record.state if record else 'not in the key ring'}; only a "
                            "published key can be confirmed", code="key_unknown")
        self.store.confirm_published(key_id, sp, now=now, note=note)
        audit(self.store, "key", "ok", reason_code="key_confirm_published", sp=sp,
              detail={"key_id": key_id, "note": note}, now=now)

    def activate(self, key_id: str, *, force: bool = False, reason: str | None = None,
                 now: dt.datetime | None = None) -> str | None:
        now = now or utcnow()
        if force and not (reason or "").strip():
            raise KeyError_("--force needs --reason (it goes into the audit log)", code="key_force_reason")
        check = self.activation_check(key_id, now=now)
        if check.state not in ("next", "retiring"):
            raise KeyError_(check.blockers[0], code="key_transition")
        ring = load_key_ring(self.config.key_dir, states={key_id: "active"}, passphrase=self.config.key_passphrase,
                             strict=False, extra_signers=self.bridge.keys.hsm_signers(), now=now)
        usable = [e for e in ring.entries if e.key_id == key_id]
        if not usable:
            why = "; ".join(p.message for p in ring.problems if p.key_id == key_id) or "no key file for it"
            audit(self.store, "key", "refused", reason_code="key_activate", detail={"key_id": key_id, "why": why},
                  now=now)
            raise KeyError_(f"key {key_id} cannot sign: {why}", code="key_unusable")
        if check.blockers and not force:
            audit(self.store, "key", "refused", reason_code="key_activate",
                  detail={"key_id": key_id, "blockers": check.blockers}, now=now)
            raise KeyError_("refusing to activate: " + "; ".join(check.blockers) + ". Upload the metadata "
                            f"({self.config.metadata_file}) in {PARTNER_CENTER}, record it with `idp-bridge keys "
                            f"confirm-published {key_id} --sp NAME`, or pass --force --reason TEXT",
                            code="key_no_evidence")
        demoted = self.store.set_key_state(key_id, "active", now=now)
        audit(self.store, "key", "ok", reason_code="key_activate_forced" if check.blockers else "key_activate",
              detail={"key_id": key_id, "demoted": demoted, "reason": reason, "blockers": check.blockers or None},
              now=now)
        self._after_change()
        return demoted

    def retire(self, key_id: str, *, force: bool = False, reason: str | None = None,
               now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        if force and not (reason or "").strip():
            raise KeyError_("--force needs --reason (it goes into the audit log)", code="key_force_reason")
        record = self.records().get(key_id)
        if record is None:
            raise KeyError_(f"key {key_id} is not in the key ring", code="key_unknown")
        grace = dt.timedelta(seconds=self.config.keys.retiring_grace_seconds)
        if record.state == "retiring" and now - record.changed_at < grace and not force:
            raise KeyError_(f"key {key_id} has been retiring for {int((now - record.changed_at).total_seconds())} s"
                            f"; keep it published for the grace period of {int(grace.total_seconds())} s (until "
                            f"{(record.changed_at + grace):%Y-%m-%dT%H:%M:%SZ}) so Responses already signed with "
                            "it still verify, or pass --force --reason TEXT", code="key_grace")
        self.store.set_key_state(key_id, "retired", now=now)
        audit(self.store, "key", "ok", reason_code="key_retire_forced" if force else "key_retire",
              detail={"key_id": key_id, "reason": reason, "was": record.state}, now=now)
        self._after_change()

    # -- status -------------------------------------------------------------------------------
    def status_lines(self, *, now: dt.datetime | None = None) -> list[str]:
        now = now or utcnow()
        records = self.records()
        meta = self.config.metadata_file
        lines: list[str] = []
        if not records:
            lines.append("no key states recorded (a fresh install: the single key in the key folder is active)")
        active = [r for r in records.values() if r.state == "active"]
        for r in active:
            lines.append(f"active:   {r.key_id} (signing since {r.changed_at:%Y-%m-%dT%H:%M:%SZ})")
        for r in (r for r in records.values() if r.state == "retiring"):
            grace_end = r.changed_at + dt.timedelta(seconds=self.config.keys.retiring_grace_seconds)
            lines.append(f"retiring: {r.key_id} (still published until its grace ends at "
                         f"{grace_end:%Y-%m-%dT%H:%M:%SZ})")
        nexts = [r for r in records.values() if r.state == "next"]
        for r in nexts:
            lines.append(f"next:     {r.key_id} (published {r.published_at:%Y-%m-%dT%H:%M:%SZ})")
            check = self.activation_check(r.key_id, now=now)
            for sp, ev in check.evidence.items():
                if ev:
                    latest = max(ev, key=lambda e: e.at)
                    lines.append(f"  SP {sp}: {latest.kind} {latest.at:%Y-%m-%dT%H:%M:%SZ} ({latest.detail})")
                else:
                    lines.append(f"  SP {sp}: NO EVIDENCE that it holds metadata with {r.key_id}")
        lines.append("")
        lines.append("next step: " + self._next_step(nexts, records, meta, now))
        return lines

    def _next_step(self, nexts: list[KeyStateRecord], records: dict[str, KeyStateRecord], meta: Path,
                   now: dt.datetime) -> str:
        for r in nexts:
            check = self.activation_check(r.key_id, now=now)
            if check.missing_sps:
                sps = ", ".join(check.missing_sps)
                return (f"export the metadata and upload it in {PARTNER_CENTER}: `idp-bridge metadata export` "
                        f"writes {meta}; then record it with `idp-bridge keys confirm-published {r.key_id} "
                        f"--sp NAME` for each of: {sps}")
            if check.blockers:
                return f"wait: {check.blockers[0]}; then `idp-bridge keys activate {r.key_id}`"
            return f"`idp-bridge keys activate {r.key_id}` (evidence complete for every SP)"
        retiring = [r for r in records.values() if r.state == "retiring"]
        for r in retiring:
            grace_end = r.changed_at + dt.timedelta(seconds=self.config.keys.retiring_grace_seconds)
            if now < grace_end:
                return f"wait until {grace_end:%Y-%m-%dT%H:%M:%SZ}, then `idp-bridge keys retire {r.key_id}`"
            return (f"`idp-bridge keys retire {r.key_id}`, then export the metadata and upload it in "
                    f"{PARTNER_CENTER} ({meta}) so the old certificate is no longer trusted")
        return ("no rotation in progress; to start one: `idp-bridge keys new`, then export the metadata and "
                f"upload it in {PARTNER_CENTER} ({meta})")
