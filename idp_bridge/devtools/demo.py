"""``idp-bridge demo``: the bridge, a Huawei IAM simulator and a demo partner platform on 127.0.0.1.

The journey: sign in on the platform -> "Open Huawei Cloud console" (a hand-off token to the bridge's
/go) -> simulator login -> first login: bind page -> signed notification to /huawei/bind -> back on
the platform (and a webhook) -> console -> "Pay for an order" -> /huawei/return -> the platform.

Everything lives in a scratch folder: a config, a throwaway signing key, an embedded SQLite
database and demo users. The simulator has its own throwaway key and serves its SP metadata,
which the bridge loads by URL exactly as it would load Huawei's.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from idp_bridge.config import Config, load_config, write_raw_config
from idp_bridge.devtools.demo_platform import DemoPlatform, create_platform_app
from idp_bridge.devtools.simulator import SimulatorConfig, create_simulator_app
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.keys.files import generate_key, scan_key_dir
from idp_bridge.ops.periodic import Periodic
from idp_bridge.store import Store
from idp_bridge.web import create_app

DEMO_X_ACCOUNT_TYPE = "demo-platform"
DEMO_SP_NAME = "huawei-sim"


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    password: str
    name: str
    email: str
    mobile: str


DEMO_USERS = (
    DemoUser("alice", "alice-demo-password", "Alice Zhang", "alice@partner.example", "0086-13800000001"),
    DemoUser("bob", "bob-demo-password", "Bob Li", "bob@partner.example", "0086-13800000002"),
)


@dataclass
class DemoSetup:
    workdir: Path
    config: Config
    bridge_url: str
    simulator_url: str
    users: tuple[DemoUser, ...] = DEMO_USERS
    servers: list[BaseWSGIServer] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    simulator: SimulatorConfig | None = None
    platform_url: str = ""
    platform: DemoPlatform | None = None

    def shutdown(self) -> None:
        """Stop the apps' background loops (webhook delivery, purging), then the servers.

        Loops first: a webhook delivery in flight still reaches the demo platform and ends (logging its audit
        line now, not later from a POST to a server that no longer answers and only times out)."""
        for loop in self.loops():
            loop.stop(timeout=15)  # longer than a webhook POST's own timeout
        for server in self.servers:
            server.shutdown()
        for thread in self.threads:
            thread.join(timeout=5)

    def loops(self) -> list[Periodic]:
        """The apps' background loops."""
        return [loop for server in self.servers for loop in getattr(server.app, "extensions", {}).values()
                if isinstance(loop, Periodic)]


def write_demo_config(workdir: Path, *, port: int, simulator_port: int, database_url: str | None = None,
                      platform_port: int = 8002) -> Config:
    bridge_url = f"http://127.0.0.1:{port}"
    simulator_url = f"http://127.0.0.1:{simulator_port}"
    platform_url = f"http://127.0.0.1:{platform_port}"
    raw: dict[str, Any] = {
        "bridge": {"base_url": bridge_url, "entity_id": bridge_url + "/saml/metadata", "key_dir": "certs",
                   "metadata_dir": "metadata", "database_url": database_url or "sqlite:///idp-bridge.db",
                   "secret_key": secrets.token_urlsafe(48)},
        "huawei": {"partner_id": "demo-partner-0001"},
        "sp": [{"name": DEMO_SP_NAME, "site": "cn", "metadata": simulator_url + "/authui/saml/metadata.xml",
                "x_account_type": DEMO_X_ACCOUNT_TYPE, "console_hosts": ["console.huaweicloud.com"],
                "login_url": simulator_url + "/authui/saml/login"}],
        # throwaway secrets in the scratch config (a real deployment sets them in the environment)
        "platform": {"login_url": platform_url + "/login", "home_url": platform_url + "/",
                     "handoff_secret": secrets.token_urlsafe(48),
                     "bind_landing_url": platform_url + "/huawei/bound", "return_url": platform_url + "/orders",
                     "recharge_url": platform_url + "/wallet", "return_params": ["orderId"],
                     "webhook_url": platform_url + "/hooks", "webhook_secret": secrets.token_urlsafe(48)},
        # the operator console, on with a throwaway password (printed at start)
        "debug": {"enabled": True, "password": secrets.token_urlsafe(18)},
    }
    path = workdir / "idp-bridge.toml"
    write_raw_config(path, raw)
    return load_config(path, environ={})


def prepare_demo(workdir: Path | None = None, *, port: int = 8000, simulator_port: int = 8001,
                 database_url: str | None = None, platform_port: int = 8002) -> DemoSetup:
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="idp-bridge-demo-"))
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # config, keys, database: owner only
    config = write_demo_config(workdir, port=port, simulator_port=simulator_port, database_url=database_url,
                               platform_port=platform_port)
    if not scan_key_dir(config.key_dir):  # a reused --dir keeps its key ring
        generate_key(config.key_dir, common_name=config.entity_id, algorithm="rsa-2048", days=365)
    store = Store.from_url(config.database_url)
    store.upgrade()
    for user in DEMO_USERS:
        if store.users.get(user.user_id) is None:
            store.users.add(user.user_id, user.password, email=user.email, name=user.name, mobile=user.mobile)
    return DemoSetup(workdir, config, config.base_url, f"http://127.0.0.1:{simulator_port}",
                     platform_url=f"http://127.0.0.1:{platform_port}")


def start_demo(setup: DemoSetup) -> DemoSetup:
    """Serve both apps on 127.0.0.1 in background threads (the caller shuts them down)."""
    simulator = SimulatorConfig.generate(
        setup.simulator_url, site="cn",
        idp_metadata={DEMO_X_ACCOUNT_TYPE: setup.config.metadata_url},
        bind_notify_url=setup.bridge_url + "/huawei/bind",
        payment_return_url=setup.bridge_url + "/huawei/return")
    setup.simulator = simulator
    bridge_app = create_app(bridge=IdentityProvider(setup.config, Store.from_url(setup.config.database_url)))
    sim_app = create_simulator_app(simulator)
    p = setup.config.platform
    assert p.handoff_secret and p.webhook_secret
    setup.platform = DemoPlatform(
        bridge_url=setup.bridge_url, audience=setup.config.entity_id, sp_name=DEMO_SP_NAME,
        handoff_secret=p.handoff_secret, webhook_secret=p.webhook_secret,
        users={u.user_id: u.password for u in setup.users},
        profiles={u.user_id: {"name": u.name, "email": u.email, "mobile": u.mobile} for u in setup.users})
    apps = [(bridge_app, setup.bridge_url), (sim_app, setup.simulator_url)]
    if setup.platform_url:
        apps.append((create_platform_app(setup.platform), setup.platform_url))
    for app, url in apps:
        port = int(url.rsplit(":", 1)[1])
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name=f"demo-{port}", daemon=True)
        thread.start()
        setup.servers.append(server)
        setup.threads.append(thread)
    return setup


def run_demo(*, port: int = 8000, simulator_port: int = 8001, workdir: Path | None = None,
             platform_port: int = 8002) -> None:
    setup = start_demo(prepare_demo(workdir, port=port, simulator_port=simulator_port,
                                    platform_port=platform_port))
    scratch = workdir is None  # a folder we made ourselves is removed at the end; a --dir is kept
    users = "\n".join(f"    {u.user_id:<6} password: {u.password}" for u in setup.users)
    print(f"""
idp-bridge demo is running (Ctrl-C to stop).

  Open the demo partner platform:  {setup.platform_url}/

  Sign in as a demo user, then click "Open Huawei Cloud console" (first time: bind an account,
  then open the console again, "Pay for an order", "View order details"):
{users}

  Bridge:                 {setup.bridge_url}/
  Operator console:       {setup.bridge_url}/_bridge/  (password: {setup.config.debug.password})

  Bridge metadata:        {setup.config.metadata_url}
  Huawei IAM simulator:   {setup.simulator_url}/  (SP metadata {setup.simulator_url}/authui/saml/metadata.xml)
  Scratch folder:         {setup.workdir}{"  (removed when you stop; --dir DIR keeps one)" if scratch else ""}
""", flush=True)
    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # kill, systemd or docker stop clean up like Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping")
    finally:
        setup.shutdown()
        if scratch:
            shutil.rmtree(setup.workdir, ignore_errors=True)
