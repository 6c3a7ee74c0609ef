"""The production serving files shipped inside the package, and the gunicorn command line that uses them.

Rule: the files here are the ones docs/deployment.md tells operators to use (found after ``pip install .``
with ``deploy_file``); this package imports nothing of the bridge, so the gunicorn master stays small.

- ``gunicorn_conf.py``: the gunicorn config (``gunicorn -c python:idp_bridge.deploy.gunicorn_conf``).
- ``nginx-idp-bridge.conf``: the TLS-terminating reverse proxy recipe (nginx from Debian, TLS 1.2+).
- ``idp-bridge.socket`` / ``idp-bridge.service``: systemd units; the socket unit holds the listening
  socket so a restart or upgrade queues connections instead of refusing them.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUNICORN_CONF_MODULE = "idp_bridge.deploy.gunicorn_conf"
SHIPPED = ("gunicorn_conf.py", "nginx-idp-bridge.conf", "idp-bridge.socket", "idp-bridge.service")


def deploy_file(name: str) -> Path:
    """The installed path of one shipped deployment file (``SHIPPED``)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped deployment file {name!r}; expected one of {', '.join(SHIPPED)}")
    return HERE / name


def gunicorn_executable() -> str:
    """The ``gunicorn`` script of this Python environment (its master re-executes it on USR2)."""
    beside = Path(sys.executable).parent / "gunicorn"
    if beside.exists():
        return str(beside)
    found = shutil.which("gunicorn")
    if found is None:
        raise FileNotFoundError("gunicorn is not installed in this environment (pip install idp-bridge brings it)")
    return found


def gunicorn_command(*, bind: str | None = None, workers: int | None = None, threads: int | None = None,
                     pidfile: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``gunicorn -c python:idp_bridge.deploy.gunicorn_conf`` plus the overrides given."""
    argv = [gunicorn_executable(), "-c", f"python:{GUNICORN_CONF_MODULE}"]
    if bind is not None:
        argv += ["--bind", bind]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if pidfile is not None:
        argv += ["--pid", pidfile]
    return [*argv, *extra]
