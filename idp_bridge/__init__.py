"""idp-bridge: the SAML 2.0 identity provider between a partner sales platform and Huawei Cloud IAM."""

__version__ = "0.1.0"
