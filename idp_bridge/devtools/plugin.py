"""How the developer tools plug into the ``idp-bridge`` command and the operator console.

Production code never imports ``devtools``: this module is found through the ``idp_bridge.plugins``
entry point (pyproject.toml), the way Flask finds ``flask.commands``. It adds the ``demo`` and
``trust-test`` commands and the console's in-process "test login" against a throwaway simulator.
"""

from __future__ import annotations

import click
from flask import Flask


def register_cli(main: click.Group) -> None:
    from idp_bridge.devtools import cli

    main.add_command(cli.demo)
    main.add_command(cli.trust_test)


def register_web(app: Flask) -> None:
    from idp_bridge.devtools import console

    app.register_blueprint(console.bp)
