"""Where the real Huawei artefacts live (../shared/fixtures, read in place, never copied) and the values in them."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
HUAWEI_CN_SP_METADATA = FIXTURES / "huawei-cn-sp-metadata.xml"
HUAWEI_ENTITY_ID = "https://auth.huaweicloud.com/"
HUAWEI_ACS = "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer"
