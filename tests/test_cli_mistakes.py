"""Operator mistakes at the command line: each ends in ONE line on stderr (``error: … [code]``), a non-zero
exit status, no traceback, and leaves the config file byte for byte as it was."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.huawei_fixtures import HUAWEI_CN_SP_METADATA
from tests.servers import idp_bridge_cmd

BASE = "https://sso.partner.example"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-mistakes")
    done = _run(root, "init", "--base-url", BASE, "--algorithm", "rsa-2048")
    assert done.returncode == 0, done.stderr
    done = _run(root, "sp", "add", "huawei-cn", "--site", "cn", "--x-account-type", "acct-1",
                "--metadata", str(HUAWEI_CN_SP_METADATA))
    assert done.returncode == 0, done.stderr
    (root / "not-metadata.xml").write_text("<hello/>")
    (root / "broken.toml").write_text("[bridge\n")
    return root


def _run(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_BRIDGE_")}
    return subprocess.run(idp_bridge_cmd(*args), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# name -> (arguments, stdin, the stderr line must contain)
MISTAKES: dict[str, tuple[list[str], str, str]] = {
    "unknown command": (["spp"], "", "No such command 'spp'"),
    "missing option": (["sp", "add", "x"], "", "Missing option"),
    "bad choice": (["sp", "add", "x", "--site", "mars", "--x-account-type", "a", "--metadata", "f"], "", "mars"),
    "metadata file missing": (["sp", "add", "huawei-intl", "--site", "intl", "--x-account-type", "acct-2",
                               "--metadata", "no-such-file.xml"], "", "does not exist"),
    "metadata not SAML": (["sp", "add", "huawei-intl", "--site", "intl", "--x-account-type", "acct-2",
                           "--metadata", "not-metadata.xml"], "", "EntityDescriptor"),
    "sp exists": (["sp", "add", "huawei-cn", "--site", "cn", "--x-account-type", "acct-9",
                   "--metadata", str(HUAWEI_CN_SP_METADATA)], "", "--replace"),
    "x_account_type reused": (["sp", "add", "huawei-eu", "--site", "eu", "--x-account-type", "acct-1",
                               "--metadata", str(HUAWEI_CN_SP_METADATA)], "", "x_account_type appears twice"),
    "sp remove unknown": (["sp", "remove", "nope"], "", "no SP named 'nope'"),
    "init over existing": (["init", "--base-url", BASE], "", "--force"),
    "init bad url": (["--config", "fresh.toml", "init", "--base-url", "sso.example"], "", "absolute http(s) URL"),
    "users add bad email": (["users", "add", "c2", "--email", "not-an-email"], "long-password\n", "well-formed"),
    "users add short password": (["users", "add", "c3"], "short\n", "at least 8"),
    "config missing": (["--config", "absent.toml", "sp", "list"], "", "does not exist"),
    "config broken": (["--config", "broken.toml", "sp", "list"], "", "not valid TOML"),
    "audit since": (["audit", "tail", "--since", "yesterday"], "", "--since"),
    "keys activate unknown": (["keys", "activate", "k-nope"], "", "k-nope"),
    "trust-test unknown sp": (["trust-test", "--sp", "nope", "--url", "http://127.0.0.1:9"], "", "huawei-cn"),
    "trust-test built-in sp": (["trust-test", "--sp", "huawei-cn"], "", "--url"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_operator_mistake_is_one_clear_line(name: str, workdir: Path) -> None:
    args, stdin, says = MISTAKES[name]
    config = workdir / "idp-bridge.toml"
    before = config.read_bytes()
    done = _run(workdir, *args, stdin=stdin)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert says in lines[0], lines[0]
    assert config.read_bytes() == before
    assert not (workdir / "fresh.toml").exists()


def test_port_in_use_is_said_plainly(workdir: Path, busy_port: int) -> None:
    done = _run(workdir, "serve", "--port", str(busy_port))
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == (f"error: port {busy_port} on 127.0.0.1 is already in use; stop what listens there "
                                   "or choose another with --port N [port_in_use]")


def test_sp_list_remove_and_refresh(workdir: Path, tmp_path: Path) -> None:
    listing = _run(workdir, "sp", "list")
    assert listing.returncode == 0 and listing.stdout.splitlines()[0].startswith("NAME")
    assert "huawei-cn" in listing.stdout and "https://auth.huaweicloud.com/" in listing.stdout
    refreshed = _run(workdir, "sp", "refresh", "huawei-cn")
    assert refreshed.returncode == 0 and "unchanged" in refreshed.stdout, refreshed.stderr
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in workdir.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    (copy / "certs").symlink_to(workdir / "certs")
    removed = _run(copy, "sp", "remove", "huawei-cn")
    assert removed.returncode == 0, removed.stderr
    assert "huawei-cn" not in (copy / "idp-bridge.toml").read_text()


def test_check_flags_the_readme_placeholder(tmp_path: Path) -> None:
    assert _run(tmp_path, "init", "--base-url", BASE, "--algorithm", "rsa-2048").returncode == 0
    assert _run(tmp_path, "sp", "add", "huawei-cn", "--site", "cn", "--x-account-type", "YOUR_X_ACCOUNT_TYPE",
                "--metadata", str(HUAWEI_CN_SP_METADATA)).returncode == 0
    done = _run(tmp_path, "check")
    assert done.returncode == 1
    assert "placeholder" in done.stdout


def test_audit_tail_has_a_header_and_filters(workdir: Path) -> None:
    done = _run(workdir, "audit", "tail", "--since", "1d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("TIME (UTC)", "no audit events"))
    none = _run(workdir, "audit", "tail", "--correlation-id", "no-such-id", "--outcome", "refused")
    assert none.returncode == 0 and none.stdout.strip() == "no audit events match these filters"
