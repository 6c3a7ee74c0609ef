"""The real Huawei artefacts copied into tests/fixtures/huawei (see its README), and the values in them."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "huawei"
HUAWEI_CN_SP_METADATA = FIXTURES / "huawei-cn-sp-metadata.xml"
HUAWEI_ENTITY_ID = "https://auth.huaweicloud.com/"
HUAWEI_ACS = "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer"
