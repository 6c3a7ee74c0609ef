"""``idp-bridge keys ...``: the signing key ring and its rotation (see idp_bridge.keys.rotation)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

from idp_bridge.cli import _bridge, main
from idp_bridge.keys.files import ALGORITHMS, DEFAULT_ALGORITHM
from idp_bridge.keys.ring import KeyEntry
from idp_bridge.keys.rotation import PARTNER_CENTER, NextStep, Rotation, RotationStatus
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.certificates import load_certificate_pem

#: wide enough for every algorithm name KeyEntry.algorithm gives (``ec-secp256r1`` is the longest)
ALG_WIDTH = 12
#: ignored metadata fetches shown per next key in ``keys status``
SHOWN_IGNORED_FETCHES = 5


def _rotation(ctx: click.Context) -> Rotation:
    """Every ``keys`` command first records the bootstrap state (the single key of a fresh install is
    active), so that what it reads and says matches the key that signs."""
    rot = Rotation(_bridge(ctx))
    rot.bootstrap()
    return rot


def _step(ctx: click.Context) -> None:
    status = _rotation(ctx).status()
    click.echo("next step: " + next_step_line(status.next_step, status.metadata_file))


def next_step_line(step: NextStep, meta: Path) -> str:
    if step.action == "upload":
        return (f"export the metadata and upload it in {PARTNER_CENTER}: `idp-bridge metadata export` writes {meta}; "
                f"then record it with `idp-bridge keys confirm-published {step.key_id} --sp NAME` for each of: "
                f"{', '.join(step.missing_sps)}")
    if step.action == "wait":
        return f"wait: {step.blocker}; then `idp-bridge keys activate {step.key_id}`"
    if step.action == "activate":
        return f"`idp-bridge keys activate {step.key_id}` (evidence complete for every SP)"
    if step.action == "wait_grace" and step.until is not None:
        return f"wait until {step.until:%Y-%m-%dT%H:%M:%SZ}, then `idp-bridge keys retire {step.key_id}`"
    if step.action == "retire":
        return (f"`idp-bridge keys retire {step.key_id}`, then export the metadata and upload it in {PARTNER_CENTER} "
                f"({meta}) so the old certificate is no longer trusted")
    return (f"no rotation in progress; to start one: `idp-bridge keys new`, then export the metadata and upload it "
            f"in {PARTNER_CENTER} ({meta})")


def status_lines(status: RotationStatus) -> list[str]:
    """``keys status``: each key's state, the evidence for every next key, and the next step."""
    records = status.records
    lines: list[str] = []
    if not records:
        lines.append("no key states recorded (a fresh install: the single key in the key folder is active)")
    for r in (r for r in records.values() if r.state == "active"):
        lines.append(f"active:   {r.key_id} (signing since {r.changed_at:%Y-%m-%dT%H:%M:%SZ})")
    for kid, grace_end in status.grace_ends.items():
        lines.append(f"retiring: {kid} (still published until its grace ends at {grace_end:%Y-%m-%dT%H:%M:%SZ})")
    for kid, check in status.checks.items():
        published = records[kid].published_at
        lines.append(f"next:     {kid} (published {published:%Y-%m-%dT%H:%M:%SZ})" if published else f"next:     {kid}")
        for sp, ev in check.evidence.items():
            if ev:
                latest = max(ev, key=lambda e: e.at)
                lines.append(f"  SP {sp}: {latest.kind} {latest.at:%Y-%m-%dT%H:%M:%SZ} ({latest.detail})")
            else:
                lines.append(f"  SP {sp}: NO EVIDENCE that it holds metadata with {kid}")
        for sp in check.unsupported_by:
            lines.append(f"  SP {sp}: does not advertise ECDSA-SHA256; this ECDSA key cannot sign for it")
        counted = sum(len([e for e in ev if e.kind == "fetched"]) for ev in check.evidence.values())
        if counted or check.ignored_fetches:
            lines.append(f"  fetches of metadata listing {kid}: {counted} counted as evidence, "
                         f"{len(check.ignored_fetches)} did not")
        for judged in check.ignored_fetches[:SHOWN_IGNORED_FETCHES]:
            lines.append(f"    did not count: {judged.fetch.at:%Y-%m-%dT%H:%M:%SZ} {judged.why}")
        if len(check.ignored_fetches) > SHOWN_IGNORED_FETCHES:
            lines.append(f"    ... and {len(check.ignored_fetches) - SHOWN_IGNORED_FETCHES} more")
    lines.append("")
    lines.append("next step: " + next_step_line(status.next_step, status.metadata_file))
    return lines


@main.group()
def keys() -> None:
    """Signing keys: list, add, rotate with evidence, retire."""


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key: id, state, algorithm, not-after, days left, SHA-256 fingerprint (expiry warning 30 days ahead)."""
    rot = _rotation(ctx)
    cfg = rot.config
    records = rot.records()
    ring = rot.bridge.keys.load(states={k: v.state for k, v in records.items()})
    now = dt.datetime.now(dt.UTC)
    loaded: dict[str, KeyEntry] = {e.key_id: e for e in ring.entries}
    click.echo(f"{'id':<17} {'state':<9} {'algorithm':<{ALG_WIDTH}} {'not-after':<10}  {'days':>4}  "
               "fingerprint (SHA-256)")
    ids = list(dict.fromkeys([*loaded, *records]))
    for kid in ids:
        entry = loaded.get(kid)
        state = entry.state if entry else records[kid].state
        if entry is not None:
            cert, alg = entry.certificate, entry.algorithm
        else:
            cert_path = cfg.key_dir / f"{kid}.crt"
            try:
                cert = load_certificate_pem(cert_path.read_bytes())
            except (OSError, ValueError):
                click.echo(f"{kid:<17} {state:<9} (no readable certificate file)")
                continue
            alg = "-"
        days = (cert.not_valid_after_utc - now).days
        warn = ""
        if state != "retired" and days < cfg.keys.expiry_warning_days:
            warn = "  EXPIRED" if days < 0 else f"  EXPIRES IN {days} DAYS"
        click.echo(f"{kid:<17} {state:<9} {alg:<{ALG_WIDTH}} {cert.not_valid_after_utc:%Y-%m-%d}  {days:>4}  "
                   f"{fingerprint(cert)}{warn}")
    for p in ring.problems:
        click.echo(f"REFUSED {p.key_id} ({p.path}): {p.message} [{p.code}]")


@keys.command("new")
@click.option("--algorithm", default=DEFAULT_ALGORITHM, show_default=True, type=click.Choice(list(ALGORITHMS)))
@click.option("--days", default=730, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the self-signed certificate.")
@click.pass_context
def keys_new(ctx: click.Context, algorithm: str, days: int) -> None:
    """Add a key in state next: published in metadata, not signing yet."""
    rot = _rotation(ctx)
    kid = rot.new_key(algorithm=algorithm, days=days)
    click.echo(f"added key {kid} ({algorithm}, {days} days) as next; metadata: {rot.config.metadata_file}")
    _step(ctx)


@keys.command("import")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File with the passphrase of an encrypted key (default: $IDP_BRIDGE_KEY_PASSPHRASE).")
@click.pass_context
def keys_import(ctx: click.Context, key_file: str, cert_file: str, passphrase_file: str | None) -> None:
    """Import a key pair (PEM, optionally passphrase-protected) as next."""
    rot = _rotation(ctx)
    passphrase = os.environ.get("IDP_BRIDGE_KEY_PASSPHRASE")
    if passphrase_file:
        passphrase = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
    kid = rot.import_key(Path(key_file).read_bytes(), Path(cert_file).read_bytes(), passphrase=passphrase)
    stored = "encrypted with IDP_BRIDGE_KEY_PASSPHRASE" if rot.config.key_passphrase else "unencrypted (mode 0600)"
    click.echo(f"imported key {kid} as next, stored {stored} in {rot.config.key_dir}")
    _step(ctx)


@keys.command("confirm-published")
@click.argument("key_id")
@click.option("--sp", "sp_name", required=True, help="The configured SP (name) that now holds the metadata.")
@click.option("--note", default=None, help="e.g. who uploaded it, ticket number.")
@click.pass_context
def keys_confirm(ctx: click.Context, key_id: str, sp_name: str, note: str | None) -> None:
    """Record that an SP holds metadata with KEY_ID (e.g. uploaded in Partner Center)."""
    rot = _rotation(ctx)
    rot.confirm_published(key_id, sp_name, note=note)
    click.echo(f"recorded: SP {sp_name!r} holds metadata with key {key_id}")
    _step(ctx)


@keys.command("activate")
@click.argument("key_id")
@click.option("--force", is_flag=True, help="Skip the evidence and lead-time checks (needs --reason).")
@click.option("--reason", default=None, help="Why --force; written to the audit log.")
@click.pass_context
def keys_activate(ctx: click.Context, key_id: str, force: bool, reason: str | None) -> None:
    """Make KEY_ID the signing key; the active one becomes retiring (still published)."""
    rot = _rotation(ctx)
    demoted = rot.activate(key_id, force=force, reason=reason)
    click.echo(f"key {key_id} is active{' (forced: ' + (reason or '') + ')' if force else ''}"
               f"{'; ' + demoted + ' is retiring' if demoted else ''}; workers switch within "
               f"{rot.config.keys.reload_seconds:g} s")
    _step(ctx)


@keys.command("retire")
@click.argument("key_id")
@click.option("--force", is_flag=True, help="Skip the retiring grace period (needs --reason).")
@click.option("--reason", default=None)
@click.pass_context
def keys_retire(ctx: click.Context, key_id: str, force: bool, reason: str | None) -> None:
    """Remove KEY_ID from metadata (a next or retiring key; the active key cannot be retired)."""
    rot = _rotation(ctx)
    rot.retire(key_id, force=force, reason=reason)
    click.echo(f"key {key_id} is retired (not in metadata, not loaded)")
    _step(ctx)


@keys.command("status")
@click.pass_context
def keys_status(ctx: click.Context) -> None:
    """Where the rotation stands and the concrete next step."""
    for line in status_lines(_rotation(ctx).status()):
        click.echo(line)
