"""``idp-bridge trust-test``: the whole journey, headless, against the built-in simulator or a deployed bridge."""

from __future__ import annotations

from typing import Any

import click

from idp_bridge.cli import main


@main.command("trust-test")
@click.option("--sp", "sp_name", default=None, help="Configured SP to jump to (default: the first).")
@click.option("--url", "base_url", default=None,
              help="A running bridge's base URL; without it, a bridge and the Huawei IAM simulator are started "
                   "in-process on free ports.")
@click.option("--user", default="alice", show_default=True, help="Bridge user to sign in as (with --url).")
@click.option("--password", envvar="IDP_BRIDGE_TRUST_TEST_PASSWORD", default="alice-demo-password",
              show_default="the demo password; or $IDP_BRIDGE_TRUST_TEST_PASSWORD", help="That user's password.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def trust_test(ctx: click.Context, sp_name: str | None, base_url: str | None, user: str, password: str,
               as_json: bool) -> None:
    """Sign-in → login link → signed AuthnRequest → Response → ACS → binding → console → return. Exit 1 on failure.

    With --url, the bridge's --config (when readable here) explains refusals from its audit trail.
    """
    from idp_bridge.diagnostics.trust_test import run_against, run_with_builtin_simulator

    if base_url is None:
        report = run_with_builtin_simulator(sp=sp_name)
    else:
        from idp_bridge.config import load_config
        from idp_bridge.diagnostics.local import local_bridge
        from idp_bridge.errors import ConfigError

        obj: dict[str, Any] = ctx.ensure_object(dict)
        bridge = None
        try:
            bridge = local_bridge(load_config(obj.get("config_path")))
        except ConfigError:
            bridge = None
        report = run_against(base_url, user=user, password=password, sp=sp_name, bridge=bridge)
    click.echo(report.to_json() if as_json else report.render())
    ctx.exit(0 if report.ok else 1)
