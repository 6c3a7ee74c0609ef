"""The ``idp-bridge`` command (click, which Flask already brings).

One module per command group; each registers itself on ``main`` when imported below. Every mistake an
operator can make ends in one line on stderr, ``error: <what was expected and what arrived> [code]``, and
an exit status (docs/cli.md):

====  =====================================================================================
0     done
1     the command ran and its verdict is "not OK" (``check``, ``trust-test``, ``decode``)
2     an operator mistake or a refusal: usage, configuration, a file, a value the bridge refuses
3     something the command needs is unavailable (the database, a URL it fetches, a port)
70    an internal error (a bug): the line names the exception; ``IDP_BRIDGE_TRACEBACK=1`` shows where
====  =====================================================================================
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from idp_bridge.config import Config, load_config
from idp_bridge.errors import ANY_ERROR

EXIT_OK, EXIT_VERDICT, EXIT_MISTAKE, EXIT_UNAVAILABLE, EXIT_INTERNAL = 0, 1, 2, 3, 70


def fail(message: str, *, code: str, status: int = EXIT_MISTAKE) -> NoReturn:
    """End the command with the one error line (for commands that find a mistake themselves)."""
    click.echo(f"error: {message} [{code}]", err=True)
    sys.exit(status)


def ensure_port_free(host: str, port: int, *, option: str = "--port") -> None:
    """Say plainly that a port is taken (and how to choose another) before a server tries to bind it."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as servers bind (gunicorn too): a listener still fails, connections in TIME_WAIT do not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                why = "already in use" if exc.errno == errno.EADDRINUSE else "not allowed for this user"
                fail(f"port {port} on {host} is {why}; stop what listens there or choose another with {option} N",
                     code="port_in_use", status=EXIT_UNAVAILABLE)
            raise


class BridgeGroup(click.Group):
    """Turns every failure into one clear line and a documented exit status instead of a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102 - click's entry point
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("aborted", code="aborted", status=EXIT_MISTAKE)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "idp-bridge"
            fail(f"{exc.format_message()} (see `{where} --help`)", code="usage")
        except click.ClickException as exc:
            fail(exc.format_message(), code="refused")
        except ANY_ERROR as exc:
            fail(exc.operator, code=exc.code, status=EXIT_UNAVAILABLE if exc.status == 503 else EXIT_MISTAKE)
        except OSError as exc:
            what = f"{exc.filename}: " if exc.filename else ""
            fail(f"{what}{exc.strerror or exc}", code="os_error",
                 status=EXIT_UNAVAILABLE if isinstance(exc, ConnectionError | TimeoutError) else EXIT_MISTAKE)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            if os.environ.get("IDP_BRIDGE_TRACEBACK"):
                raise
            fail(f"internal error {type(exc).__name__}: {exc} (a bug; IDP_BRIDGE_TRACEBACK=1 shows where)",
                 code="internal", status=EXIT_INTERNAL)
        sys.exit(result if isinstance(result, int) else 0)


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
