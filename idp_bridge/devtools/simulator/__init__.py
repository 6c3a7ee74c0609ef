"""Built-in Huawei IAM simulator (a stand-in SAML SP for ``idp-bridge demo`` and the tests).

Development and test tool only: in-memory state, throwaway keys. It may import Flask; the SAML
core (``idp_bridge.saml``) never does.
"""

from idp_bridge.devtools.simulator.app import create_simulator_app
from idp_bridge.devtools.simulator.config import (
    MetadataSource,
    SimulatorConfig,
    fetch_metadata,
    generate_signer,
)

__all__ = ["MetadataSource", "SimulatorConfig", "create_simulator_app", "fetch_metadata", "generate_signer"]
