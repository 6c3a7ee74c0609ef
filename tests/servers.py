"""Start real server processes on 127.0.0.1 for journey tests, and stop them (bounded waits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else "(see the server's output below)"
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_group(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """TERM a server's whole process group (started with ``start_new_session``); KILL it after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class ServerProcess:
    """A server in its own process group. Its output goes to a temporary file, not a pipe: a pipe nobody reads
    fills up (~64 KiB, a few hundred audit lines) and then blocks the server. ``stream=True`` gives a pipe
    instead (``proc.stdout``) for a test that reads the lines as they come; it must keep draining it."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 stream: bool = False) -> None:
        self._log = None if stream else tempfile.TemporaryFile()  # noqa: SIM115 - read in output()
        self.proc = subprocess.Popen(list(args), env={**os.environ, **(env or {})}, cwd=cwd,
                                     stdout=subprocess.PIPE if stream else self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        """What the server printed so far (with ``stream=True``: what is left in the pipe)."""
        if self._log is None:
            return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> str:
        stop_group(self.proc, timeout=10)
        return self.output()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        output = self.stop()
        if exc_type is not None:  # pytest shows captured stdout with the failure: the server's side of it
            print(f"--- output of {self.proc.args!r} (exit {self.proc.returncode}) ---\n{output[-6000:]}")


def idp_bridge_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "idp-bridge"), *args]


def gunicorn_cmd(port: int, *, workers: int = 2) -> list[str]:
    """The documented production command: gunicorn with the shipped config (idp_bridge/deploy/gunicorn_conf.py)."""
    return [str(VENV_BIN / "gunicorn"), "-c", "python:idp_bridge.deploy.gunicorn_conf", "-w", str(workers),
            "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
