"""``idp-bridge audit tail``: the audit trail, newest last, filtered by correlation id, time and outcome."""

from __future__ import annotations

import datetime as dt
import json
import re

import click

from idp_bridge.cli import _bridge, fail, main

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, *, now: dt.datetime) -> dt.datetime:
    """``10m``, ``2h``, ``1d`` (that long ago) or an ISO time (``2026-12-01T10:00:00+00:00``; UTC when bare)."""
    match = _DURATION.match(value.strip())
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"--since {value!r} is neither a duration (30s, 10m, 2h, 1d) nor an ISO time "
             "(2026-12-01T10:00:00+00:00)", code="usage")
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@main.group()
def audit() -> None:
    """The audit trail (logins, rejections, bindings, webhooks, returns)."""


@audit.command("tail")
@click.option("-n", "limit", default=20, show_default=True, type=click.IntRange(1, 10000), help="How many events.")
@click.option("--correlation-id", default=None, help="Only this request (the reference a customer's page shows).")
@click.option("--since", default=None, help="Only events since then: 30s, 10m, 2h, 1d or an ISO time.")
@click.option("--outcome", default=None, help="Only this outcome: ok, refused, error, replay, …")
@click.option("--event", default=None, help="Only this event: login, sso, rejection, binding, webhook, …")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (no header).")
@click.pass_context
def audit_tail(ctx: click.Context, limit: int, correlation_id: str | None, since: str | None, outcome: str | None,
               event: str | None, as_json: bool) -> None:
    """The latest events, oldest first."""
    after = parse_since(since, now=dt.datetime.now(dt.UTC)) if since else None
    events = list(reversed(_bridge(ctx).store.audit.recent(limit, correlation_id=correlation_id, since=after,
                                                            outcome=outcome, event=event)))
    if as_json:
        for e in events:
            click.echo(json.dumps({"id": e.id, "at": e.at.isoformat(), "event": e.event, "outcome": e.outcome,
                                   "reason": e.reason_code, "correlation_id": e.correlation_id, "sp": e.sp,
                                   "customer": e.customer, "detail": e.detail}, ensure_ascii=False, default=str))
        return
    if not events:
        click.echo("no audit events match" + (" these filters" if correlation_id or since or outcome or event else ""))
        return
    click.echo(f"{'TIME (UTC)':<25} {'EVENT':<12} {'OUTCOME':<8} {'REASON':<24} {'CUSTOMER':<16} {'SP':<12} "
               "CORRELATION ID")
    for e in events:
        at = e.at if e.at.tzinfo else e.at.replace(tzinfo=dt.UTC)
        click.echo(f"{at.astimezone(dt.UTC).isoformat(timespec='seconds'):<25} {e.event:<12} {e.outcome:<8} "
                   f"{e.reason_code or '-':<24} {e.customer or '-':<16} {e.sp or '-':<12} {e.correlation_id or ''}")
