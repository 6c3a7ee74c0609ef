"""``idp-bridge audit tail``."""

from __future__ import annotations

import json

import click

from idp_bridge.cli import _bridge, main


@main.group()
def audit() -> None:
    """The audit trail (logins, rejections, bindings, webhooks, returns)."""


@audit.command("tail")
@click.option("-n", "limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def audit_tail(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The latest events, oldest first."""
    events = list(reversed(_bridge(ctx).store.audit.recent(limit)))
    for e in events:
        if as_json:
            click.echo(json.dumps({"id": e.id, "at": e.at.isoformat(), "event": e.event, "outcome": e.outcome,
                                   "reason": e.reason_code, "correlation_id": e.correlation_id, "sp": e.sp,
                                   "customer": e.customer, "detail": e.detail}, ensure_ascii=False, default=str))
        else:
            click.echo(f"{e.at.isoformat(timespec='seconds')} {e.event:<12} {e.outcome:<7} {e.reason_code or '-':<22} "
                       f"{e.customer or '-':<16} {e.sp or '-'} {e.correlation_id or ''}")
