"""``idp-bridge check``: the deployment checklist."""

from __future__ import annotations

from typing import Any

import click

from idp_bridge.cli import EXIT_OK, EXIT_VERDICT, main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checklist as JSON.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Inspect this deployment: config, keys, metadata, SPs, clock, database. Exit 1 on any ✗."""
    from idp_bridge.diagnostics.check import check_deployment

    obj: dict[str, Any] = ctx.ensure_object(dict)
    report = check_deployment(obj.get("config_path"))
    click.echo(report.to_json() if as_json else report.render())
    ctx.exit(EXIT_OK if report.ok else EXIT_VERDICT)
