"""CLI: bindings import/list, webhooks run --once against a real local endpoint, audit tail."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from idp_bridge.cli import main
from tests.platform_env import WEBHOOK_SECRET, platform_env
from tests.webhook_receiver import Receiver


def test_bindings_import_list_webhooks_and_audit(tmp_path: Path, db_url: str) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    try:
        env = platform_env(tmp_path / "b", db_url, webhook_url=receiver.url)
        cfg = ["--config", str(env.config.path)]
        runner = CliRunner()
        (tmp_path / "c.csv").write_text("xaccount_id,customer_id,domainName\nalice,d-a,hw_alice\nbob,d-b,\n")
        (tmp_path / "c.json").write_text(json.dumps([{"xUserId": "carol", "domainId": "d-c"},
                                                     {"xUserId": "bob", "bound": "false"}]))
        out = runner.invoke(main, [*cfg, "bindings", "import", str(tmp_path / "c.csv")])
        assert out.exit_code == 0 and "2 changed, 0 unchanged" in out.output, out.output
        out = runner.invoke(main, [*cfg, "bindings", "import", "--notify", str(tmp_path / "c.json")])
        assert out.exit_code == 0 and "2 changed" in out.output, out.output
        listed = runner.invoke(main, [*cfg, "bindings", "list", "--json"]).output.splitlines()
        rows = {r["xUserId"]: r["bound"] for r in map(json.loads, listed)}
        assert rows == {"alice": True, "bob": False, "carol": True}
        run = runner.invoke(main, [*cfg, "webhooks", "run", "--once"])
        assert run.exit_code == 0 and "2 delivered, 0 pending" in run.output, run.output
        assert sorted(m["xUserId"] for m in receiver.accepted) == ["bob", "carol"]
        tail = runner.invoke(main, [*cfg, "audit", "tail", "-n", "5"]).output
        assert "webhook" in tail and "binding" in tail
        bad = tmp_path / "bad.csv"
        bad.write_text("xUserId,domainId\n,\n")
        assert runner.invoke(main, [*cfg, "bindings", "import", str(bad)]).exit_code != 0
    finally:
        receiver.stop()
