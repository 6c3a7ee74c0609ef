"""The operator console's in-process "test login" (a developer tool, mounted by devtools/plugin.py).

It touches no network. It plays a throwaway Huawei IAM simulator (its own key)
against this bridge's real signing keys and code path: the simulator signs an AuthnRequest, the
bridge verifies and accepts it and issues the Response, the simulator checks it by Huawei's rules.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from idp_bridge.config import ServiceProviderConfig
from idp_bridge.diagnostics.preview import customer_for  # noqa: F401  (re-exported for the console)
from idp_bridge.errors import ANY_ERROR
from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.idp.service_providers import ServiceProviderRegistry

SIMULATOR_BASE = "https://iam-simulator.invalid"
SIMULATOR_X_ACCOUNT_TYPE = "debug-console-simulator"


@dataclass
class RoundTrip:
    ok: bool
    steps: list[tuple[str, bool, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None


def simulator_round_trip(bridge: IdentityProvider, customer: Customer, *, site: str = "cn") -> RoundTrip:
    """Simulator AuthnRequest → this bridge (real keys, replay store) → Response → simulator's Huawei checks."""
    from idp_bridge.devtools.simulator import SimulatorConfig, create_simulator_app

    result = RoundTrip(ok=False)
    sim = SimulatorConfig.generate(SIMULATOR_BASE, site=site,
                                   idp_metadata={SIMULATOR_X_ACCOUNT_TYPE: lambda: bridge.metadata().xml})
    app = create_simulator_app(sim)
    client = app.test_client()
    sp_xml = client.get("/authui/saml/metadata.xml").get_data()
    with tempfile.TemporaryDirectory(prefix="idp-bridge-roundtrip-") as tmp:
        meta_file = Path(tmp) / "simulator-sp.xml"
        meta_file.write_bytes(sp_xml)
        sp_cfg = ServiceProviderConfig("debug-simulator", site, str(meta_file), SIMULATOR_X_ACCOUNT_TYPE,
                                       ("console.huaweicloud.com",))
        config = dataclasses.replace(bridge.config, service_providers=(sp_cfg,), metadata_dir=Path(tmp))
        trial = IdentityProvider(config, bridge.store, keys=bridge.keys, sps=ServiceProviderRegistry(config))
        query = urlencode({"xAccountType": SIMULATOR_X_ACCOUNT_TYPE, "isFirstLogin": "false",
                           "service": "https://console.huaweicloud.com/"})
        redirect = client.get("/authui/saml/login?" + query)
        location = redirect.headers.get("Location", "")
        ok = redirect.status_code == 302 and location.startswith(config.sso_url + "?")
        result.steps.append(("simulator sends a signed AuthnRequest", ok, location[:120] if ok else
                             f"HTTP {redirect.status_code}: {redirect.get_data(as_text=True)[:300]}"))
        if not ok:
            return result
        try:
            pending = trial.accept_redirect_request(urlsplit(location).query)
            result.steps.append(("bridge verifies and accepts it", True, f"request {pending.request_id}"))
            now = dt.datetime.now(dt.UTC)
            form = trial.issue_response(pending, customer, authn_instant=now, session_index="_debug-test-login")
            result.steps.append(("bridge issues a signed Response", True, f"to {form.action}"))
        except ANY_ERROR as exc:
            result.steps.append(("bridge accepts the request and answers", False, f"[{exc.code}] {exc.operator}"))
            return result
        acs = client.post(urlsplit(form.action).path, data={"SAMLResponse": form.saml_response,
                                                              "RelayState": form.relay_state or ""})
        state = app.extensions["huawei_simulator"]
        result.report = state.last_report
        passed = acs.status_code == 302 and bool(result.report and result.report.get("ok"))
        failed = [c for c in (result.report or {}).get("checks", []) if not c["ok"]]
        result.steps.append(("simulator checks the Response by Huawei's rules", passed,
                             f"{len((result.report or {}).get('checks', []))} checks passed" if passed else
                             "; ".join(f"{c['name']}: expected {c['expected']}, got {c['actual']}" for c in failed)
                             or f"HTTP {acs.status_code}"))
        result.ok = passed
    return result
