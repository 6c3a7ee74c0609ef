"""``idp-bridge keys ...``: the signing key ring and its rotation (see idp_bridge.keys.rotation)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import click

from idp_bridge.cli import _bridge, main
from idp_bridge.keys.files import ALGORITHMS, DEFAULT_ALGORITHM
from idp_bridge.keys.ring import KeyEntry
from idp_bridge.keys.rotation import Rotation
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.certificates import load_certificate_pem

#: wide enough for every algorithm name KeyEntry.algorithm gives (``ec-secp256r1`` is the longest)
ALG_WIDTH = 12


def _rotation(ctx: click.Context) -> Rotation:
    """Every ``keys`` command first records the bootstrap state (the single key of a fresh install is
    active), so that what it reads and says matches the key that signs."""
    rot = Rotation(_bridge(ctx))
    rot.bootstrap()
    return rot


def _step(ctx: click.Context) -> None:
    click.echo(_rotation(ctx).status_lines()[-1])


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
    rot = _rotation(ctx)
    for line in rot.status_lines():
        click.echo(line)
