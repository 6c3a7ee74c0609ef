"""``idp-bridge bindings list|import`` and ``idp-bridge webhooks run``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import click

from idp_bridge.cli import _bridge, main

MAX_IMPORT_BYTES = 64 * 1024 * 1024


@main.group()
def bindings() -> None:
    """Which customers are bound to a Huawei account."""


@bindings.command("list")
@click.option("--bound-only", is_flag=True, help="Only customers bound now.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("-n", "limit", default=1000, show_default=True, type=int)
@click.pass_context
def bindings_list(ctx: click.Context, bound_only: bool, as_json: bool, limit: int) -> None:
    """List bindings."""
    rows = _bridge(ctx).store.bindings.all(limit=limit, only_bound=bound_only)
    for b in rows:
        if as_json:
            click.echo(json.dumps({"xUserId": b.x_user_id, "bound": b.bound, "domainId": b.domain_id,
                                   "domainName": b.domain_name, "bindAction": b.bind_action,
                                   "updated_at": b.updated_at.isoformat()}, ensure_ascii=False))
        else:
            click.echo(f"{b.x_user_id}\t{'bound' if b.bound else 'unbound'}\t{b.domain_id or '-'}\t"
                       f"{b.domain_name or '-'}\t{b.updated_at.isoformat()}")
    if not as_json:
        click.echo(f"{len(rows)} binding(s)", err=True)


def _records(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if len(data) > MAX_IMPORT_BYTES:
        raise click.ClickException(f"{path}: larger than {MAX_IMPORT_BYTES} bytes")
    text = data.decode("utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise click.ClickException(f"{path}: not valid JSON: {exc}") from None
        items = loaded if isinstance(loaded, list) else loaded.get("customers", loaded.get("bindings"))
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise click.ClickException(f"{path}: expected a JSON list of objects (or {{'customers': [...]}})")
        return items
    return list(csv.DictReader(io.StringIO(text)))


def _field(record: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = record.get(name)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


@bindings.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--notify", is_flag=True, help="Also send a webhook for each change (off: the platform made them).")
@click.pass_context
def bindings_import(ctx: click.Context, file: Path, notify: bool) -> None:
    """Import bindings from the platform's Create Customer records (CSV with a header row, or JSON).

    Columns/keys: xUserId (or xaccount_id, x_user_id), domainId (or customer_id, domain_id),
    optional domainName (domain_name) and bound (default true; false/0/no unbinds).
    """
    store = _bridge(ctx).store
    changed = same = 0
    now = dt.datetime.now(dt.UTC)
    for i, record in enumerate(_records(file), start=1):
        x_user_id = _field(record, "xUserId", "xaccount_id", "x_user_id")
        domain_id = _field(record, "domainId", "customer_id", "domain_id")
        bound_text = (_field(record, "bound") or "true").lower()
        bound = bound_text not in ("false", "0", "no", "unbound")
        if not x_user_id or len(x_user_id) > 128 or (bound and not domain_id):
            raise click.ClickException(f"{file}: record {i}: needs xUserId (1-128 characters) and, when bound, "
                                       f"domainId; got {record!r}"[:400])
        did_change, _ = store.bindings.apply(
            x_user_id=x_user_id, bound=bound, domain_id=domain_id,
            domain_name=_field(record, "domainName", "domain_name"), bind_action="0" if bound else "1",
            payload={"import": file.name, "record": i}, source="import", now=now, notify=notify)
        changed, same = changed + did_change, same + (not did_change)
    from idp_bridge.ops.audit import audit

    audit(store, "binding", "ok", reason_code="import", detail={"file": file.name, "changed": changed,
                                                               "unchanged": same})
    click.echo(f"imported {changed + same} record(s): {changed} changed, {same} unchanged")


@main.group()
def webhooks() -> None:
    """Webhook delivery to the partner platform."""


@webhooks.command("run")
@click.option("--once", is_flag=True, help="One delivery pass, then exit.")
@click.option("--interval", default=2.0, show_default=True, type=float, help="Seconds between passes.")
@click.pass_context
def webhooks_run(ctx: click.Context, once: bool, interval: float) -> None:
    """Deliver queued binding webhooks (safe alongside the web processes' own delivery loops)."""
    from idp_bridge.partner.webhooks import deliver_due, settings_from_config

    bridge = _bridge(ctx)
    p = bridge.config.platform
    settings = settings_from_config(p.webhook_url, p.webhook_secret, timeout=p.webhook_timeout_seconds)
    if settings is None:
        raise click.ClickException("platform.webhook_url and IDP_BRIDGE_WEBHOOK_SECRET are not both set")
    while True:
        results = deliver_due(bridge.store, settings)
        for r in results:
            click.echo(f"{r.key}\t{'delivered' if r.ok else 'failed'}\t{r.status or '-'}\t{r.error or ''}")
        if once:
            pending = bridge.store.outbox.pending_count()
            click.echo(f"{sum(r.ok for r in results)} delivered, {pending} pending", err=True)
            return
        if not results:
            time.sleep(interval)
