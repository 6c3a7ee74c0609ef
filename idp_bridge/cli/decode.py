"""``idp-bridge decode``: a captured SAMLRequest, SAMLResponse or bindRequest, decoded and checked."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from idp_bridge.cli import EXIT_OK, EXIT_VERDICT, main
from idp_bridge.errors import ANY_ERROR


def _read_argument(value: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if len(value) < 4096 and not value.startswith(("http://", "https://", "<")) and "=" not in value[:64]:
        path = Path(value)
        try:
            if path.is_file():
                return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            pass
    return value


_PATH_SUFFIXES = (".xml", ".txt", ".html", ".htm")


def _looks_like_path(value: str) -> bool:
    """What an operator meant as a file name. Checked only after the value failed to decode: base64 has '/'."""
    return len(value) < 4096 and ("/" in value or value.lower().endswith(_PATH_SUFFIXES)) and \
        not value.startswith(("http://", "https://", "<")) and "=" not in value[:64]


@main.command()
@click.argument("value")
@click.option("--sp", "sp_name", default=None, help="Check a Response as this configured SP (default: by Destination).")
@click.option("--request-id", default=None, help="The AuthnRequest ID a Response should answer (InResponseTo).")
@click.option("--at", "at", default=None, help="Evaluate time checks at this ISO time instead of now (old captures).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def decode(ctx: click.Context, value: str, sp_name: str | None, request_id: str | None, at: str | None,
           as_json: bool) -> None:
    """Decode VALUE (a bare value, a whole URL, a form body, an HTML page, or a FILE holding one; - for stdin).

    Prints the XML or JSON and every check an SP or IdP runs, expected vs actual. Exit 1 on any ✗.
    """
    from idp_bridge.config import load_config
    from idp_bridge.diagnostics.decode import decode_message
    from idp_bridge.diagnostics.local import local_bridge
    from idp_bridge.errors import ConfigError

    obj: dict[str, Any] = ctx.ensure_object(dict)
    bridge = None
    try:
        bridge = local_bridge(load_config(obj.get("config_path")))
    except ConfigError as exc:
        click.echo(f"note: no usable configuration ({exc.operator}); decoding without signature checks", err=True)
    now = None
    if at:
        try:
            now = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise click.BadParameter(f"{at!r} is not an ISO time", param_hint="--at") from exc
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
    try:
        result = decode_message(_read_argument(value), bridge=bridge, sp_name=sp_name, request_id=request_id,
                                now=now)
    except ANY_ERROR:
        if value != "-" and _looks_like_path(value) and not Path(value).exists():
            raise click.BadParameter(f"file {value} does not exist (and it is not a SAML message either)",
                                     param_hint="VALUE") from None
        raise
    click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if as_json else result.render())
    ctx.exit(EXIT_OK if result.report.ok else EXIT_VERDICT)
