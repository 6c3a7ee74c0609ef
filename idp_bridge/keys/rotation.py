"""Key rotation with evidence: what `idp-bridge keys ...` does, without the command-line layer.

The rule: a key signs only once every configured SP has evidence that it holds metadata listing
that key - a fetch of ``/saml/metadata`` whose key set included it, made from an address the
operator listed for that SP (``[[sp]] metadata_fetchers``; a ``?sp=NAME`` tag, if given, must name
that SP), or an operator's ``keys confirm-published`` (Huawei gets our metadata by manual upload in
Partner Center and never fetches it) - and once it has been published (state ``next``) for
``[keys] publish_lead_seconds``. An ECDSA key also needs every SP to advertise ECDSA-SHA256 in its
metadata (``alg:SigningMethod``). ``force`` skips the gate but needs a reason, which goes into the
audit log. At most three keys are published at once (next, active, retiring).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp_bridge.config import Config, ServiceProviderConfig
from idp_bridge.errors import ANY_ERROR, KeyRingError, SigningKeyError
from idp_bridge.keys.files import (
    check_certificate_key,
    check_not_expired,
    generate_key,
    key_id_for,
    scan_key_dir,
    write_pair,
)
from idp_bridge.keys.provider import KeyRingProvider
from idp_bridge.keys.ring import PUBLISHED_STATES
from idp_bridge.ops.audit import audit
from idp_bridge.saml.algorithms import ECDSA_SHA256
from idp_bridge.saml.certificates import load_certificate_pem
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.store import Store
from idp_bridge.store.keyring import KeyStateRecord, MetadataFetch

PARTNER_CENTER = "Partner Center (Support > Open APIs > Configure)"
MAX_PUBLISHED_KEYS = 3  # next + active + retiring


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Evidence:
    sp: str
    kind: str  # "confirmed" or "fetched"
    at: dt.datetime
    detail: str


@dataclass(frozen=True)
class FetchJudgement:
    """One recorded fetch of our metadata, and whether it is evidence for an SP (``counted_for``)."""

    fetch: MetadataFetch
    counted_for: str | None
    why: str


def judge_fetch(fetch: MetadataFetch, sps: Sequence[ServiceProviderConfig]) -> FetchJudgement:
    """A fetch is evidence for an SP only when it came from a network listed in that SP's
    ``metadata_fetchers``; a ``?sp=NAME`` tag must then name that SP. Anyone can send ``?sp=NAME``."""
    tag = f"?sp={fetch.sp} " if fetch.sp else ""
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(fetch.remote_addr or "")
    except ValueError:
        return FetchJudgement(fetch, None, f"{tag}from {fetch.remote_addr or 'an unknown address'!r}, which is "
                                           "not an IP address")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    listed = [sp for sp in sps if any(addr in net for net in sp.metadata_fetchers)]
    if fetch.sp:
        named = next((sp for sp in sps if sp.name == fetch.sp), None)
        if named is None:
            return FetchJudgement(fetch, None, f"{tag}from {addr}: no SP {fetch.sp!r} is configured")
        if named in listed:
            return FetchJudgement(fetch, named.name, f"{tag}from {addr}, listed in sp {named.name} "
                                                     "metadata_fetchers")
        if not named.metadata_fetchers:
            return FetchJudgement(fetch, None, f"{tag}from {addr}, but SP {named.name!r} lists no "
                                               "metadata_fetchers (only `keys confirm-published` counts for it)")
        nets = ", ".join(str(n) for n in named.metadata_fetchers)
        return FetchJudgement(fetch, None, f"{tag}from {addr}, which is not in SP {named.name!r} "
                                           f"metadata_fetchers ({nets})")
    if len(listed) == 1:
        return FetchJudgement(fetch, listed[0].name, f"from {addr}, listed in sp {listed[0].name} "
                                                     "metadata_fetchers")
    if listed:
        return FetchJudgement(fetch, None, f"from {addr}, which several SPs list ("
                                           f"{', '.join(sp.name for sp in listed)}); fetch with ?sp=NAME")
    return FetchJudgement(fetch, None, f"{tag}from {addr}, which no SP lists in metadata_fetchers")


@dataclass(frozen=True)
class ActivationCheck:
    key_id: str
    state: str
    published_at: dt.datetime | None
    lead: dt.timedelta
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)
    blockers: list[str] = field(default_factory=list)
    #: fetches of metadata listing the key that are NOT evidence, with the reason (newest first)
    ignored_fetches: list[FetchJudgement] = field(default_factory=list)
    #: SPs whose metadata does not advertise the key's signature algorithm (ECDSA keys)
    unsupported_by: list[str] = field(default_factory=list)

    @property
    def missing_sps(self) -> list[str]:
        return [sp for sp, ev in self.evidence.items() if not ev]


class _ServiceProviders(Protocol):
    def get(self, name: str) -> Any: ...  # a loaded SP: ``.metadata`` is its parsed SAML metadata


class RotationHost(Protocol):
    """What rotation needs of the identity provider (``idp.IdentityProvider`` is one). Declared here, so the
    keys package does not import the package that uses it (arrows point down)."""

    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> Store: ...
    @property
    def keys(self) -> KeyRingProvider: ...
    @property
    def sps(self) -> _ServiceProviders: ...

    def export_metadata(self) -> tuple[bool, Any]: ...


class Rotation:
    def __init__(self, bridge: RotationHost) -> None:
        self.bridge = bridge
        self.config = bridge.config
        self.store = bridge.store

    # -- reading ------------------------------------------------------------------------------
    def records(self) -> dict[str, KeyStateRecord]:
        return self.store.keyring.records()

    def bootstrap(self, now: dt.datetime | None = None) -> None:
        """Record the single key of a fresh install as active (the bootstrap rule, made explicit).
        Every ``keys`` command runs this first, so what it reads and says matches what signs."""
        if self.store.keyring.states():
            return
        ids = [key_path.stem for key_path, _ in scan_key_dir(self.config.key_dir)]
        if self.config.keys.pkcs11:
            ids += [s.key_id for s in self.bridge.keys.hsm_signers()]
        if len(ids) == 1:
            try:
                self.store.keyring.register(ids[0], state="active", now=now or utcnow())
            except (KeyRingError, SigningKeyError) as exc:
                if exc.code not in ("key_exists", "key_active_exists"):  # another command recorded it first
                    raise

    def _certificate(self, key_id: str) -> x509.Certificate | None:
        try:
            return load_certificate_pem((self.config.key_dir / f"{key_id}.crt").read_bytes())
        except (OSError, ValueError):
            pass
        if self.config.keys.pkcs11:
            for signer in self.bridge.keys.hsm_signers():
                if signer.key_id == key_id:
                    return signer.certificate
        return None

    def _algorithm_blockers(self, key_id: str) -> tuple[list[str], list[str]]:
        """An ECDSA key may sign only for SPs whose metadata advertises ECDSA-SHA256."""
        cert = self._certificate(key_id)
        if cert is None or not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
            return [], []
        blockers: list[str] = []
        unsupported: list[str] = []
        for sp in self.config.service_providers:
            try:
                meta = self.bridge.sps.get(sp.name).metadata
            except ANY_ERROR as exc:
                unsupported.append(sp.name)
                blockers.append(f"key {key_id} is ECDSA and SP {sp.name!r} metadata cannot be read to see whether "
                                f"it accepts ECDSA: {exc.operator}")
                continue
            if ECDSA_SHA256 not in meta.signing_methods:
                unsupported.append(sp.name)
                advertised = ", ".join(meta.signing_methods) or "none"
                blockers.append(f"key {key_id} is ECDSA P-256 but SP {sp.name!r} ({meta.entity_id}) does not "
                                f"advertise {ECDSA_SHA256} in its metadata (alg:SigningMethod advertised: "
                                f"{advertised}); use an RSA key for it")
        return blockers, unsupported

    def _check_room(self, adding: str) -> None:
        """Metadata lists at most three signing keys: refuse a fourth."""
        published = {k: r.state for k, r in self.records().items() if r.state in PUBLISHED_STATES}
        if len(published) >= MAX_PUBLISHED_KEYS:
            order = {s: i for i, s in enumerate(PUBLISHED_STATES)}
            listed = ", ".join(f"{state} {kid}" for kid, state in sorted(published.items(),
                                                                         key=lambda kv: order[kv[1]]))
            retirable = [k for k, st in published.items() if st != "active"]
            raise KeyRingError(f"refusing to {adding}: the metadata already lists {len(published)} signing keys "
                            f"({listed}) and holds at most {MAX_PUBLISHED_KEYS} (next, active, retiring). "
                            "Retire one first: `idp-bridge keys retire ID` ("
                            f"{' or '.join(retirable) or 'a next or retiring key'}; a retiring key after its "
                            "grace period)", code="key_ring_full")

    def activation_check(self, key_id: str, *, now: dt.datetime | None = None) -> ActivationCheck:
        now = now or utcnow()
        record = self.records().get(key_id)
        lead = dt.timedelta(seconds=self.config.keys.publish_lead_seconds)
        if record is None:
            return ActivationCheck(key_id, "unknown", None, lead, blockers=[f"key {key_id} is not in the key ring"])
        sps = self.config.service_providers
        evidence: dict[str, list[Evidence]] = {sp.name: [] for sp in sps}
        for pub in self.store.keyring.publications(key_id):
            if pub.sp in evidence:
                evidence[pub.sp].append(Evidence(pub.sp, "confirmed", pub.at, pub.note or "confirm-published"))
        ignored: list[FetchJudgement] = []
        for fetch in self.store.keyring.fetches_with_key(key_id, since=record.published_at):
            judged = judge_fetch(fetch, sps)
            if judged.counted_for is None:
                ignored.append(judged)
                continue
            evidence[judged.counted_for].append(Evidence(judged.counted_for, "fetched", fetch.at,
                                                         f"GET /saml/metadata {judged.why} (ETag {fetch.etag})"))
        blockers: list[str] = []
        if record.state not in ("next", "retiring"):
            blockers.append(f"key {key_id} is {record.state}; only a next (or retiring) key can be activated")
        for sp_cfg in sps:
            if not evidence[sp_cfg.name]:
                how = (f"no fetch of /saml/metadata listing it from its metadata_fetchers "
                       f"({', '.join(str(n) for n in sp_cfg.metadata_fetchers)}) and "
                       if sp_cfg.metadata_fetchers else "")
                blockers.append(f"SP {sp_cfg.name!r} has no evidence of metadata holding key {key_id}: {how}no "
                                f"`keys confirm-published {key_id} --sp {sp_cfg.name}`")
        algorithm_blockers, unsupported = self._algorithm_blockers(key_id)
        blockers += algorithm_blockers
        published = record.published_at
        if record.state == "next" and published is not None and now - published < lead:
            blockers.append(f"key {key_id} has been published for {int((now - published).total_seconds())} s; "
                            f"the lead time is {int(lead.total_seconds())} s (ready at "
                            f"{(published + lead):%Y-%m-%dT%H:%M:%SZ})")
        return ActivationCheck(key_id, record.state, published, lead, evidence, blockers, ignored, unsupported)

    # -- changing -----------------------------------------------------------------------------
    def _after_change(self) -> None:
        self.bridge.keys.invalidate()
        self.bridge.export_metadata()

    def new_key(self, *, algorithm: str, days: int, now: dt.datetime | None = None) -> str:
        now = now or utcnow()
        self.bootstrap(now)
        self._check_room("add a key")
        kid, key_path, cert_path = generate_key(self.config.key_dir, common_name=self.config.entity_id,
                                                algorithm=algorithm, days=days, passphrase=self.config.key_passphrase)
        try:
            self.store.keyring.register(kid, state="next", now=now)
        except (KeyRingError, SigningKeyError):  # e.g. another command filled the ring meanwhile: leave no stray key behind
            cert_path.unlink(missing_ok=True)
            key_path.unlink(missing_ok=True)
            raise
        audit(self.store, "key", "ok", reason_code="key_new", detail={"key_id": kid, "algorithm": algorithm,
                                                                       "days": days}, now=now)
        self._after_change()
        return kid

    def import_key(self, key_pem: bytes, cert_pem: bytes, *, passphrase: str | None,
                   now: dt.datetime | None = None) -> str:
        now = now or utcnow()
        try:
            cert = load_certificate_pem(cert_pem)
        except ValueError as exc:
            raise KeyRingError(f"the certificate is not PEM: {exc}", code="key_cert_unreadable") from exc
        try:
            private_key = serialization.load_pem_private_key(key_pem, password=passphrase.encode() if passphrase
                                                             else None)
        except TypeError as exc:
            raise KeyRingError(f"the private key: {exc} (IDP_BRIDGE_KEY_PASSPHRASE or --passphrase-file)",
                            code="key_passphrase") from exc
        except ValueError as exc:
            raise KeyRingError(f"the private key cannot be read (wrong passphrase or not PEM): {exc}",
                            code="key_unreadable") from exc
        if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyRingError(f"the private key is {type(private_key).__name__}; expected RSA or ECDSA",
                            code="key_algorithm")
        check_certificate_key(cert, "imported certificate")
        PrivateKeySigner(private_key, cert)  # size and key/certificate match
        check_not_expired(cert, "imported certificate", now)
        kid = key_id_for(cert)
        if kid in self.records() or (self.config.key_dir / f"{kid}.key").exists():
            raise KeyRingError(f"key {kid} is already in the key ring", code="key_exists")
        self.bootstrap(now)
        self._check_room("import a key")
        _, key_path, cert_path = write_pair(self.config.key_dir, private_key, cert,
                                            passphrase=self.config.key_passphrase)
        try:
            self.store.keyring.register(kid, state="next", now=now)
        except (KeyRingError, SigningKeyError):
            cert_path.unlink(missing_ok=True)
            key_path.unlink(missing_ok=True)
            raise
        audit(self.store, "key", "ok", reason_code="key_import", detail={"key_id": kid}, now=now)
        self._after_change()
        return kid

    def confirm_published(self, key_id: str, sp: str, *, note: str | None = None,
                          now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        self.config.sp(sp)  # ConfigError for an unknown SP name
        record = self.records().get(key_id)
        if record is None or record.state == "retired":
            raise KeyRingError(f"key {key_id} is {record.state if record else 'not in the key ring'}; only a "
                            "published key can be confirmed", code="key_unknown")
        self.store.keyring.confirm_published(key_id, sp, now=now, note=note)
        audit(self.store, "key", "ok", reason_code="key_confirm_published", sp=sp,
              detail={"key_id": key_id, "note": note}, now=now)

    def activate(self, key_id: str, *, force: bool = False, reason: str | None = None,
                 now: dt.datetime | None = None) -> str | None:
        now = now or utcnow()
        if force and not (reason or "").strip():
            raise KeyRingError("--force needs --reason (it goes into the audit log)", code="key_force_reason")
        check = self.activation_check(key_id, now=now)
        if check.state not in ("next", "retiring"):
            raise KeyRingError(check.blockers[0], code="key_transition")
        ring = self.bridge.keys.load(states={key_id: "active"}, now=now)
        usable = [e for e in ring.entries if e.key_id == key_id and e.source != "verified copy"]
        if not usable:
            why = "; ".join(p.message for p in ring.problems if p.key_id == key_id) or "no key file for it"
            audit(self.store, "key", "refused", reason_code="key_activate", detail={"key_id": key_id, "why": why},
                  now=now)
            raise KeyRingError(f"key {key_id} cannot sign: {why}", code="key_unusable")
        if check.blockers and not force:
            audit(self.store, "key", "refused", reason_code="key_activate",
                  detail={"key_id": key_id, "blockers": check.blockers}, now=now)
            if check.unsupported_by:
                raise KeyRingError("refusing to activate: " + "; ".join(check.blockers) + ". Activate an RSA key, "
                                "or pass --force --reason TEXT if the SP accepts ECDSA without advertising it",
                                code="key_algorithm_unsupported")
            raise KeyRingError("refusing to activate: " + "; ".join(check.blockers) + ". Upload the metadata "
                            f"({self.config.metadata_file}) in {PARTNER_CENTER}, record it with `idp-bridge keys "
                            f"confirm-published {key_id} --sp NAME`, or pass --force --reason TEXT",
                            code="key_no_evidence")
        demoted = self.store.keyring.set_state(key_id, "active", now=now)
        audit(self.store, "key", "ok", reason_code="key_activate_forced" if check.blockers else "key_activate",
              detail={"key_id": key_id, "demoted": demoted, "reason": reason, "blockers": check.blockers or None},
              now=now)
        self._after_change()
        return demoted

    def retire(self, key_id: str, *, force: bool = False, reason: str | None = None,
               now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        if force and not (reason or "").strip():
            raise KeyRingError("--force needs --reason (it goes into the audit log)", code="key_force_reason")
        record = self.records().get(key_id)
        if record is None:
            raise KeyRingError(f"key {key_id} is not in the key ring", code="key_unknown")
        grace = dt.timedelta(seconds=self.config.keys.retiring_grace_seconds)
        if record.state == "retiring" and now - record.changed_at < grace and not force:
            raise KeyRingError(f"key {key_id} has been retiring for {int((now - record.changed_at).total_seconds())} s"
                            f"; keep it published for the grace period of {int(grace.total_seconds())} s (until "
                            f"{(record.changed_at + grace):%Y-%m-%dT%H:%M:%SZ}) so Responses already signed with "
                            "it still verify, or pass --force --reason TEXT", code="key_grace")
        self.store.keyring.set_state(key_id, "retired", now=now)
        self.bridge.keys.verified.discard(key_id)
        audit(self.store, "key", "ok", reason_code="key_retire_forced" if force else "key_retire",
              detail={"key_id": key_id, "reason": reason, "was": record.state}, now=now)
        self._after_change()

    # -- status -------------------------------------------------------------------------------
    def status(self, *, now: dt.datetime | None = None) -> RotationStatus:
        """Where the rotation stands (the CLI prints it: ``idp-bridge keys status``)."""
        now = now or utcnow()
        records = self.records()
        grace = dt.timedelta(seconds=self.config.keys.retiring_grace_seconds)
        checks = {r.key_id: self.activation_check(r.key_id, now=now) for r in records.values() if r.state == "next"}
        grace_ends = {r.key_id: r.changed_at + grace for r in records.values() if r.state == "retiring"}
        return RotationStatus(records, checks, grace_ends, self.config.metadata_file,
                              _next_step(checks, grace_ends, now))


@dataclass(frozen=True)
class NextStep:
    """What the operator does next. ``action``: ``upload`` (metadata to the ``missing_sps``), ``wait``
    (``blocker`` says for what), ``activate``, ``wait_grace`` (``until``), ``retire``, or ``start`` (no
    rotation in progress)."""

    action: str
    key_id: str | None = None
    missing_sps: tuple[str, ...] = ()
    blocker: str | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class RotationStatus:
    records: dict[str, KeyStateRecord]
    #: every next key's activation check
    checks: dict[str, ActivationCheck]
    #: every retiring key's end of grace
    grace_ends: dict[str, dt.datetime]
    metadata_file: Path
    next_step: NextStep


def _next_step(checks: dict[str, ActivationCheck], grace_ends: dict[str, dt.datetime], now: dt.datetime) -> NextStep:
    for kid, check in checks.items():
        if check.missing_sps:
            return NextStep("upload", kid, missing_sps=tuple(check.missing_sps))
        if check.blockers:
            return NextStep("wait", kid, blocker=check.blockers[0])
        return NextStep("activate", kid)
    for kid, grace_end in grace_ends.items():
        if now < grace_end:
            return NextStep("wait_grace", kid, until=grace_end)
        return NextStep("retire", kid)
    return NextStep("start")
