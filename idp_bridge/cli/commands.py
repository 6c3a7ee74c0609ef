"""Setting up and running the bridge: init, sp, users, metadata, db, serve (``demo`` is in devtools/cli.py)."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import click

from idp_bridge.cli import _bridge, _config, ensure_port_free, fail, main
from idp_bridge.config import config_path, load_config, parse_config, read_raw_config, write_raw_config
from idp_bridge.errors import ANY_ERROR
from idp_bridge.huawei.sites import SITES, site
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.metadata import parse_sp_metadata


# -- init -------------------------------------------------------------------------------------------
@main.command()
@click.option("--base-url", required=True, help="Public https URL of this bridge, e.g. https://sso.partner.example")
@click.option("--entity-id", default=None, help="IdP entityID (default: BASE_URL/saml/metadata).")
@click.option("--algorithm", default="rsa-3072", show_default=True,
              type=click.Choice(["rsa-2048", "rsa-3072", "rsa-4096", "ec-p256"]))
@click.option("--days", default=730, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the self-signed certificate.")
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@click.pass_context
def init(ctx: click.Context, base_url: str, entity_id: str | None, algorithm: str, days: int, force: bool) -> None:
    """Write the config, create the first signing key and export metadata/IDP Metadata.xml."""
    from idp_bridge.keys.files import generate_key, scan_key_dir
    from idp_bridge.keys.rotation import Rotation
    path = config_path(ctx.obj.get("config_path"))
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it", code="config_exists")
    raw: dict[str, Any] = {"bridge": {
        "base_url": base_url.rstrip("/"),
        "entity_id": entity_id or base_url.rstrip("/") + "/saml/metadata",
        "key_dir": "certs",
        "metadata_dir": "metadata",
        "database_url": "sqlite:///idp-bridge.db",
        "secret_key": secrets.token_urlsafe(48),
    }, "huawei": {"partner_id": ""}}
    parse_config(raw, base_dir=path.resolve().parent, path=path.resolve())  # refuse before writing anything
    write_raw_config(path, raw)
    cfg = load_config(path)
    ctx.obj["config"] = cfg
    if scan_key_dir(cfg.key_dir):
        click.echo(f"signing key: keeping the existing key(s) in {cfg.key_dir}")
    else:
        kid, key_path, cert_path = generate_key(cfg.key_dir, common_name=cfg.entity_id, algorithm=algorithm,
                                                days=days, passphrase=cfg.key_passphrase)
        click.echo(f"signing key: {kid} ({algorithm}) -> {key_path} (mode 0600), certificate {cert_path}")
    bridge = _bridge(ctx)
    Rotation(bridge).bootstrap()  # the first key is recorded as active, so states exist from the start
    _, meta = bridge.export_metadata()
    click.echo(f"config:      {path}")
    click.echo(f"entity ID:   {cfg.entity_id}")
    click.echo(f"metadata:    {cfg.metadata_file} (upload it in Partner Center: Support > Open APIs > Configure)")


# -- service providers ----------------------------------------------------------------------------
@main.group()
def sp() -> None:
    """Service providers (Huawei Cloud sites)."""


@sp.command("add")
@click.argument("name")
@click.option("--metadata", "metadata_src", required=True, help="SP metadata file or http(s) URL.")
@click.option("--site", "site_name", required=True, type=click.Choice(list(SITES)))
@click.option("--x-account-type", required=True, help="Your platform id from Partner Center.")
@click.option("--console-host", "console_hosts", multiple=True,
              help="Allowed console host for `service` (repeatable; default: the site's console host).")
@click.option("--login-url", default=None, help="Override the IAM login URL (simulator or staging only).")
@click.option("--sign-response", is_flag=True, help="Also sign the Response element.")
@click.option("--replace", is_flag=True, help="Replace an SP of the same name.")
@click.pass_context
def sp_add(ctx: click.Context, name: str, metadata_src: str, site_name: str, x_account_type: str,
           console_hosts: tuple[str, ...], login_url: str | None, sign_response: bool, replace: bool) -> None:
    """Add a service provider from its metadata and show what was read from it."""
    from idp_bridge.idp.service_providers import fetch_url

    path = config_path(ctx.obj.get("config_path"))
    raw = read_raw_config(path)
    is_url = metadata_src.startswith(("https://", "http://"))
    data = fetch_url(metadata_src) if is_url else _read_metadata_file(metadata_src)
    meta = parse_sp_metadata(data)
    stored_src = metadata_src if is_url else str(Path(metadata_src).resolve())
    entry: dict[str, Any] = {"name": name, "site": site_name, "metadata": stored_src,
                             "x_account_type": x_account_type,
                             "console_hosts": list(console_hosts) or [site(site_name).console_host]}
    if login_url:
        entry["login_url"] = login_url
    if sign_response:
        entry["sign_response"] = True
    sps = [s for s in raw.get("sp", []) if s.get("name") != name]
    if len(sps) != len(raw.get("sp", [])) and not replace:
        fail(f"an SP named {name!r} exists; pass --replace to overwrite it", code="sp_exists")
    _write_validated(path, {**raw, "sp": [*sps, entry]})  # a refused SP never reaches the file
    click.echo(f"added SP {name!r} (site {site_name}, xAccountType {x_account_type})")
    click.echo(f"  entityID:             {meta.entity_id}")
    for ep in meta.acs_endpoints:
        click.echo(f"  ACS:                  {ep.location} ({ep.binding.rsplit(':', 1)[-1]})")
    click.echo(f"  AuthnRequestsSigned:  {str(meta.authn_requests_signed).lower()}")
    click.echo(f"  WantAssertionsSigned: {str(meta.want_assertions_signed).lower()}")
    for cert in meta.signing_certificates:
        click.echo(f"  signing certificate:  SHA-256 {fingerprint(cert)}, valid until "
                   f"{cert.not_valid_after_utc:%Y-%m-%d}")


def _read_metadata_file(src: str) -> bytes:
    try:
        return Path(src).read_bytes()
    except FileNotFoundError:
        fail(f"metadata file {src!r} does not exist; pass the path of the SP metadata you saved (or its URL, e.g. "
             "https://auth.huaweicloud.com/authui/saml/metadata.xml)", code="sp_metadata_missing")
    except OSError as exc:
        fail(f"metadata file {src!r} cannot be read: {exc.strerror}", code="sp_metadata_unreadable")


def _write_validated(path: Path, raw: dict[str, Any]) -> None:
    """Write the config only once the whole new version validates (the old file stays as it was otherwise)."""
    parse_config(raw, base_dir=path.resolve().parent, path=path.resolve())
    write_raw_config(path, raw)


@sp.command("list")
@click.pass_context
def sp_list(ctx: click.Context) -> None:
    """List configured service providers, their metadata and its age."""
    bridge = _bridge(ctx)
    sps = bridge.config.service_providers
    if not sps:
        click.echo("no service providers yet: `idp-bridge sp add NAME --site cn --x-account-type ID --metadata FILE`")
        return
    click.echo(f"{'NAME':<16} {'SITE':<5} {'XACCOUNTTYPE':<20} {'CERTS':<5} {'ENTITY ID':<40} METADATA")
    for sp_config in sps:
        try:
            m = bridge.sps.get(sp_config.name).metadata
            entity, certs = m.entity_id, str(len(m.signing_certificates))
        except ANY_ERROR as exc:
            entity, certs = f"(unreadable: {exc.code})", "-"
        click.echo(f"{sp_config.name:<16} {sp_config.site:<5} {sp_config.x_account_type:<20} {certs:<5} "
                   f"{entity:<40} {sp_config.metadata}")


@sp.command("remove")
@click.argument("name")
@click.pass_context
def sp_remove(ctx: click.Context, name: str) -> None:
    """Remove a service provider from the config (its customers can no longer jump to that site)."""
    path = config_path(ctx.obj.get("config_path"))
    raw = read_raw_config(path)
    sps = raw.get("sp", [])
    kept = [s for s in sps if s.get("name") != name]
    if len(kept) == len(sps):
        known = ", ".join(str(s.get("name")) for s in sps) or "none"
        fail(f"no SP named {name!r} in {path} (configured: {known})", code="sp_unknown")
    _write_validated(path, {**raw, "sp": kept})
    click.echo(f"removed SP {name!r}; restart or HUP the bridge to apply it")


@sp.command("refresh")
@click.argument("name", required=False)
@click.pass_context
def sp_refresh(ctx: click.Context, name: str | None) -> None:
    """Read SP metadata again now (URL or file) and show what changed; the cached copy is updated."""
    bridge = _bridge(ctx)
    names = [name] if name else [s.name for s in bridge.config.service_providers]
    for sp_name in names:
        before = {fingerprint(c) for c in bridge.sps.get(sp_name).metadata.signing_certificates}
        loaded = bridge.sps.refresh(sp_name)
        after = {fingerprint(c) for c in loaded.metadata.signing_certificates}
        change = "unchanged" if before == after else (
            f"certificates added: {', '.join(sorted(after - before)) or 'none'}; "
            f"removed: {', '.join(sorted(before - after)) or 'none'}")
        click.echo(f"{sp_name}: {loaded.metadata.entity_id} from {loaded.config.metadata}: {change}")


# -- users ------------------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """Local accounts (demos, development, small platforms)."""


@users.command("add")
@click.argument("user_id")
@click.option("--email", default=None)
@click.option("--name", default=None)
@click.option("--mobile", default=None, help="<country code>-<number>, e.g. 0086-13800000000")
@click.pass_context
def users_add(ctx: click.Context, user_id: str, email: str | None, name: str | None, mobile: str | None) -> None:
    """Add a user; the password is read from standard input (one line)."""
    bridge = _bridge(ctx)
    bridge.attribute_rules.check_customer(email=email, mobile=mobile, where=f"users add {user_id}")
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise click.ClickException("the password (read from stdin) must have at least 8 characters")
    bridge.store.users.add(user_id, password, email=email, name=name, mobile=mobile)
    click.echo(f"added user {user_id!r}")


# -- metadata ---------------------------------------------------------------------------------------
@main.group()
def metadata() -> None:
    """Our IdP metadata."""


@metadata.command("export")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of metadata/IDP Metadata.xml ('-' for stdout).")
@click.pass_context
def metadata_export(ctx: click.Context, out: str | None) -> None:
    """Export IDP Metadata.xml (byte-identical when nothing changed)."""
    bridge = _bridge(ctx)
    if out == "-":
        sys.stdout.buffer.write(bridge.metadata().xml)
        return
    if out:
        meta = bridge.metadata()
        target = Path(out)
        if target.exists() and target.read_bytes() == meta.xml:
            click.echo(f"{target}: unchanged (ETag {meta.etag})")
            return
        target.write_bytes(meta.xml)
        click.echo(f"{target}: written (ETag {meta.etag}, keys {', '.join(meta.key_ids)})")
        return
    changed, meta = bridge.export_metadata()
    click.echo(f"{bridge.config.metadata_file}: {'written' if changed else 'unchanged'} "
               f"(ETag {meta.etag}, keys {', '.join(meta.key_ids)})")


# -- database ---------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply schema migrations (Alembic)."""
    from idp_bridge.store import Store

    cfg = _config(ctx)
    store = Store.from_url(cfg.database_url)
    store.upgrade()
    click.echo(f"database at revision {store.current_revision()}")


@db.command("purge")
@click.pass_context
def db_purge(ctx: click.Context) -> None:
    """Delete expired replay ids and sessions, and delivered webhooks past retention (web workers also do
    this every 10 minutes)."""
    from idp_bridge.ops.housekeeping import purge_once
    from idp_bridge.store import Store

    cfg = _config(ctx)
    counts = purge_once(Store.from_url(cfg.database_url), retention=cfg.retention)
    click.echo("deleted: " + ", ".join(f"{name} {n}" for name, n in counts.items()))


# -- serve -----------------------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (the reverse proxy's upstream).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes (default 2; production: about 2 x CPUs).")
@click.option("--threads", type=click.IntRange(1, 64), default=None, help="Threads per worker (default 16).")
@click.option("--pid", "pidfile", type=click.Path(dir_okay=False), default=None,
              help="Write the master's pid here (for HUP/USR2; see docs/deployment.md).")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int | None, threads: int | None, pidfile: str | None,
          gunicorn_args: tuple[str, ...]) -> None:
    """Run the bridge under gunicorn with the shipped production config (idp_bridge/deploy/gunicorn_conf.py).

    Put nginx in front (docs/deployment.md). The process becomes the gunicorn master: HUP reloads the config
    with new workers, USR2 starts an upgraded master, TERM stops gracefully. Extra arguments after `--` go to
    gunicorn unchanged.
    """
    import os

    from idp_bridge.deploy import gunicorn_command

    cfg = _config(ctx)  # a broken config is one clear line here, not a traceback in every worker
    if not os.environ.get("LISTEN_FDS"):  # under systemd's socket unit the port is held for us, on purpose
        ensure_port_free(host, port)
    argv = gunicorn_command(bind=f"{host}:{port}", workers=workers, threads=threads, pidfile=pidfile,
                            extra=gunicorn_args)
    env = dict(os.environ)
    if cfg.path is not None:
        env["IDP_BRIDGE_CONFIG"] = str(cfg.path.resolve())
    click.echo(f"idp-bridge: gunicorn on http://{host}:{port}/ (public URL {cfg.base_url}, metadata: "
               f"{cfg.metadata_url})", err=True)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)  # noqa: S606 - the same pid: systemd's LISTEN_PID and HUP/USR2 reach gunicorn itself
