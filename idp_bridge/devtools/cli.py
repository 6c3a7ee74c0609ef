"""The developer commands: ``idp-bridge demo`` and ``idp-bridge trust-test`` (added through devtools/plugin.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the bridge.")
@click.option("--simulator-port", default=8001, show_default=True, type=int, help="Port of the Huawei IAM simulator.")
@click.option("--platform-port", default=8002, show_default=True, type=int, help="Port of the demo partner platform.")
@click.option("--dir", "workdir", type=click.Path(file_okay=False), default=None,
              help="Scratch folder (default: a new temporary folder).")
def demo(port: int, simulator_port: int, platform_port: int, workdir: str | None) -> None:
    """Start the bridge, a Huawei IAM simulator and a demo partner platform on 127.0.0.1 (throwaway keys)."""
    from idp_bridge.cli import ensure_port_free
    from idp_bridge.devtools.demo import run_demo

    for value, option in ((port, "--port"), (simulator_port, "--simulator-port"), (platform_port, "--platform-port")):
        ensure_port_free("127.0.0.1", value, option=option)
    run_demo(port=port, simulator_port=simulator_port, platform_port=platform_port,
             workdir=Path(workdir) if workdir else None)


@click.command("trust-test")
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
    from idp_bridge.cli import EXIT_OK, EXIT_VERDICT, fail

    if base_url is None:
        from idp_bridge.devtools.builtin_trust_test import run_with_builtin_simulator
        from idp_bridge.devtools.demo import DEMO_SP_NAME

        if sp_name not in (None, DEMO_SP_NAME):
            fail(f"--sp {sp_name!r}: without --url the built-in run starts its own bridge, whose only SP is "
                 f"{DEMO_SP_NAME!r}; to test your SP, run your bridge and pass --url https://… --sp {sp_name}",
                 code="sp_unknown")
        report = run_with_builtin_simulator(sp=sp_name)
    else:
        from idp_bridge.config import load_config
        from idp_bridge.diagnostics.local import local_bridge
        from idp_bridge.diagnostics.trust_test import run_against
        from idp_bridge.errors import ConfigError

        obj: dict[str, Any] = ctx.ensure_object(dict)
        try:
            bridge = local_bridge(load_config(obj.get("config_path")))
        except ConfigError:
            bridge = None
        known = [s.name for s in bridge.config.service_providers] if bridge else None
        if bridge and sp_name and sp_name not in (known or []):
            fail(f"--sp {sp_name!r} is not in your config {bridge.config.path} (configured: "
                 f"{', '.join(known or []) or 'none'}); pass one of those, or `idp-bridge sp add` it first",
                 code="sp_unknown")
        report = run_against(base_url, user=user, password=password, sp=sp_name, bridge=bridge)
    click.echo(report.to_json() if as_json else report.render())
    ctx.exit(EXIT_OK if report.ok else EXIT_VERDICT)
