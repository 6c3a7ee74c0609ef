"""The ``idp-bridge`` command (click, which Flask already brings).

One module per command group; each registers itself on ``main`` when imported below.
"""

from __future__ import annotations

from typing import Any

import click

from idp_bridge.config import Config, load_config
from idp_bridge.errors import ANY_ERROR


class BridgeGroup(click.Group):
    """Turns a BridgeError into one clear line and exit status 2 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ANY_ERROR as exc:
            click.echo(f"error: {exc.operator} [{exc.code}]", err=True)
            ctx.exit(2)


def _config(ctx: click.Context) -> Config:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
    cfg: Config = obj["config"]
    return cfg


def _bridge(ctx: click.Context) -> Any:
    from idp_bridge.idp.identity_provider import IdentityProvider
    from idp_bridge.store import Store

    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "bridge" not in obj:
        cfg = _config(ctx)
        store = Store.from_url(cfg.database_url)
        if not store.is_migrated():
            store.upgrade()
        obj["bridge"] = IdentityProvider(cfg, store)
    return obj["bridge"]


@click.group(cls=BridgeGroup)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Config file (default: $IDP_BRIDGE_CONFIG or ./idp-bridge.toml).")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """idp-bridge: the SAML identity provider that sends a partner platform's customers into Huawei Cloud."""
    ctx.ensure_object(dict)["config_path"] = config_file




from idp_bridge.cli import audit, bindings, commands  # noqa: E402,F401  (registers the commands)

__all__ = ["main"]
from idp_bridge.cli import check, decode, keys  # noqa: E402,F401


def _load_plugins() -> None:
    """Commands that other packages add (``idp_bridge.plugins`` entry points: the developer tools' demo and
    trust-test), the way Flask finds ``flask.commands``."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="idp_bridge.plugins"):
        register = getattr(entry.load(), "register_cli", None)
        if register is not None:
            register(main)


_load_plugins()
