"""The signing key ring and the one way it is assembled (``load_ring``): key files, PKCS#11 keys, states.

States (``next``, ``active``, ``retiring``, ``retired``) are kept in the database so that every
worker and node agrees; this module takes them as a mapping. A single key with no recorded state
is the active one (a fresh ``idp-bridge init``, bootstrap rule); once states are recorded, a key
file with no state is not used (it is being added, or it is a stray file). ``retired`` keys are not
loaded at all.

Fail-closed per key: a key that does not load (see ``files.load_pair``; also an expired certificate
on the active key, a file named for another certificate) is refused with a :class:`KeyProblem`.
A refused published key is then taken, in this order, as ``previous`` held it (a running worker:
its old state too, so a refused key never becomes the signer) or from its last verified copy
(``verified``: a worker starting beside a broken file); a key taken so still carries its problem.
``strict`` (start-up): an active key that cannot be taken either way raises ``KeyRingError``; a next or
retiring key only drops out, so a bad file beside the signing key never stops a worker.

``cache`` keeps each parsed pair under its files' ``os.stat`` (inode, size, times, mode): a pair is
parsed again only when one of its files changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp_bridge.errors import KeyRingError
from idp_bridge.keys.files import (
    LoadedPair,
    check_certificate_key,
    check_not_expired,
    file_stat,
    key_id_for,
    load_pair,
    scan_key_dir,
)
from idp_bridge.keys.verified import VerifiedCopies
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.signing import Signer

PUBLISHED_STATES = ("next", "active", "retiring")


@dataclass(frozen=True)
class KeyEntry:
    key_id: str
    certificate: x509.Certificate
    signer: Signer
    key_path: Path
    cert_path: Path
    state: str
    #: "file", "pkcs11", or "verified copy" (the key file is broken; see keys.verified)
    source: str = "file"

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def algorithm(self) -> str:
        key = self.certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            return f"rsa-{key.key_size}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            return f"ec-{key.curve.name}"
        return type(key).__name__


@dataclass(frozen=True)
class KeyProblem:
    """A key file (or PKCS#11 key) that was refused, and why; ``state`` is the key's recorded state."""

    key_id: str
    path: str
    code: str
    message: str
    state: str = ""


@dataclass(frozen=True)
class KeyRing:
    entries: tuple[KeyEntry, ...]
    problems: tuple[KeyProblem, ...] = ()

    @property
    def active(self) -> KeyEntry:
        active = [e for e in self.entries if e.state == "active"]
        if len(active) != 1:
            ids = ", ".join(e.key_id for e in active) or "none"
            raise KeyRingError(f"exactly one signing key must be active; active now: {ids}", code="key_no_active")
        return active[0]

    @property
    def published(self) -> tuple[KeyEntry, ...]:
        """Keys listed in metadata: next, active and retiring, in that order."""
        order = {s: i for i, s in enumerate(PUBLISHED_STATES)}
        return tuple(sorted((e for e in self.entries if e.state in order), key=lambda e: order[e.state]))

    def get(self, key_id: str) -> KeyEntry:
        for e in self.entries:
            if e.key_id == key_id:
                return e
        raise KeyRingError(f"no key {key_id!r} in the key ring (have: {', '.join(e.key_id for e in self.entries)})",
                        code="key_unknown")


class PairCache:
    """Parsed pairs by path, valid while both files' ``os.stat`` stays the same (refusals are kept too)."""

    def __init__(self) -> None:
        self._pairs: dict[Path, tuple[tuple[tuple[int, ...], tuple[int, ...]], LoadedPair | KeyRingError]] = {}

    def load(self, key_path: Path, cert_path: Path, passphrase: str | None) -> tuple[LoadedPair, bool]:
        """The pair and whether it was parsed just now; raises the (cached) refusal."""
        try:
            stamp = (file_stat(key_path), file_stat(cert_path))
        except OSError:
            stamp = None
        cached = self._pairs.get(key_path)
        if stamp is not None and cached is not None and cached[0] == stamp:
            if isinstance(cached[1], KeyRingError):
                raise cached[1]
            return cached[1], False
        try:
            pair: LoadedPair | KeyRingError = load_pair(key_path, cert_path, passphrase=passphrase)
        except KeyRingError as exc:
            pair = exc
        if stamp is not None:
            self._pairs[key_path] = (stamp, pair)
        if isinstance(pair, KeyRingError):
            raise pair
        return pair, True

    def retain(self, key_paths: set[Path]) -> None:
        """Forget pairs whose files are gone."""
        for path in set(self._pairs) - key_paths:
            del self._pairs[path]


def load_ring(key_dir: Path, *, states: Mapping[str, str] | None = None, passphrase: str | None = None,
              hsm: Sequence[Signer] = (), hsm_failures: Mapping[str, KeyRingError] | None = None,
              previous: KeyRing | None = None, strict: bool = True, now: dt.datetime | None = None,
              cache: PairCache | None = None, verified: VerifiedCopies | None = None) -> KeyRing:
    """Assemble the key ring from ``key_dir`` and the PKCS#11 keys ``hsm`` (``hsm_failures``: key id -> why a
    configured token key could not be opened). See the module docstring for the rules."""
    states = dict(states or {})
    now = now or dt.datetime.now(dt.UTC)
    failures = dict(hsm_failures or {})
    pairs = scan_key_dir(key_dir)
    bootstrap = not states and len(pairs) + len(hsm) + len(failures) == 1
    previous_by_id = {e.key_id: e for e in previous.entries} if previous else {}
    cache = cache or PairCache()
    entries: list[KeyEntry] = []
    problems: list[KeyProblem] = []
    seen: set[str] = set()

    def take_copy(kid: str, state: str) -> LoadedPair | None:
        if verified is None:
            return None
        pair = verified.load(kid, passphrase=passphrase)
        if pair is not None and state == "active":
            try:
                check_not_expired(pair.certificate, f"verified copy of key {kid}", now)
            except KeyRingError:
                return None
        return pair

    def refuse(kid: str, path: str, state: str, exc: KeyRingError) -> None:
        kept = previous_by_id.get(kid)
        if kept is not None:  # as it was: its old state too, so a refused key never becomes the signer
            entries.append(kept)
            problems.append(KeyProblem(kid, path, exc.code, f"{exc.operator}; the key loaded before keeps "
                                       f"serving as {kept.state} in this process", state))
            return
        copy = take_copy(kid, state) if exc.code != "key_expired" else None
        if copy is not None:
            key_copy, cert_copy = verified.paths(kid) if verified else (Path(path), Path(path))
            entries.append(KeyEntry(kid, copy.certificate, copy.signer, key_copy, cert_copy, state,
                                    source="verified copy"))
            problems.append(KeyProblem(kid, path, exc.code, f"{exc.operator}; signing with its last verified "
                                       f"copy {str(key_copy)!r} - restore the file (e.g. `cp -p {key_copy} "
                                       f"{path}` when it is the key file that broke)", state))
            return
        if strict and state == "active":
            raise exc
        problems.append(KeyProblem(kid, path, exc.code, exc.operator, state))

    for key_path, cert_path in pairs:
        file_id = key_path.stem
        seen.add(file_id)
        state = states.get(file_id) or ("active" if bootstrap else None)
        if state not in PUBLISHED_STATES:
            continue  # retired keys are not loaded; unrecorded keys are not used
        try:
            pair, fresh = cache.load(key_path, cert_path, passphrase)
            kid = key_id_for(pair.certificate)
            if kid != file_id:
                raise KeyRingError(f"{str(cert_path)!r} holds certificate {kid}, not {file_id} (the file name "
                                "must be the key id)", code="key_id_mismatch")
            if state == "active":
                check_not_expired(pair.certificate, str(cert_path), now)
        except KeyRingError as exc:
            refuse(file_id, str(key_path), state, exc)
            continue
        if fresh and verified is not None:
            verified.save(kid, pair)
        entries.append(KeyEntry(kid, pair.certificate, pair.signer, key_path, cert_path, state))
    for signer in hsm:
        seen.add(signer.key_id)
        state = states.get(signer.key_id) or ("active" if bootstrap else None)
        if state not in PUBLISHED_STATES:
            continue
        where = f"pkcs11:{signer.key_id}"
        try:
            check_certificate_key(signer.certificate, f"PKCS#11 key {signer.key_id}")
            if state == "active":
                check_not_expired(signer.certificate, f"PKCS#11 key {signer.key_id}", now)
        except KeyRingError as exc:
            refuse(signer.key_id, where, state, exc)
            continue
        entries.append(KeyEntry(signer.key_id, signer.certificate, signer, Path(where), Path(where), state,
                                source="pkcs11"))
    for kid, failure in failures.items():
        seen.add(kid)
        state = states.get(kid) or ("active" if bootstrap else "")
        if state in PUBLISHED_STATES:
            refuse(kid, f"pkcs11:{kid}", state, failure)
    for kid, state in sorted(states.items()):
        if state == "active" and kid not in seen:  # the signing key's files are gone (or only half there)
            missing = [p for p in (key_dir / f"{kid}.key", key_dir / f"{kid}.crt") if not p.exists()]
            refuse(kid, str(missing[0] if missing else key_dir / f"{kid}.key"), state, KeyRingError(
                f"the active key {kid} has no {' and no '.join(repr(str(p)) for p in missing) or 'key file'}",
                code="key_missing"))
    cache.retain({key_path for key_path, _ in pairs})
    if not entries and not problems:
        raise KeyRingError(f"no usable signing key in {str(key_dir)!r} (states: "
                        f"{', '.join(f'{k}={v}' for k, v in sorted(states.items())) or 'none recorded'}); "
                        "run `idp-bridge init` or `idp-bridge keys new`", code="key_none")
    return KeyRing(tuple(entries), tuple(problems))


def expiring(entries: Sequence[KeyEntry], *, days: int = 30, now: dt.datetime | None = None) -> list[KeyEntry]:
    """Keys whose certificate ends within ``days``."""
    now = now or dt.datetime.now(dt.UTC)
    return [e for e in entries if e.not_after - now < dt.timedelta(days=days)]
