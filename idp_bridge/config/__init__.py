"""Configuration: one TOML file, environment overrides for secrets, validated at start-up.

``model.py`` says what each table holds (one frozen dataclass per table), ``fields.py`` how a table is read
against its dataclass, ``loader.py`` where the file comes from and the rules across keys.
"""

from idp_bridge.config.loader import config_path, load_config, parse_config, read_raw_config, write_raw_config
from idp_bridge.config.model import (
    CUSTOMER_FIELDS,
    DEFAULT_ATTRIBUTES,
    DEFAULT_CONFIG_NAME,
    UI_LOCALES,
    Config,
    DebugSettings,
    HuaweiSettings,
    KeySettings,
    LimitSettings,
    MetricsSettings,
    Pkcs11KeyConfig,
    PlatformSettings,
    RetentionSettings,
    SamlSettings,
    ServiceProviderConfig,
    UiSettings,
)

__all__ = [
    "CUSTOMER_FIELDS", "DEFAULT_ATTRIBUTES", "DEFAULT_CONFIG_NAME", "Config", "DebugSettings", "HuaweiSettings", "KeySettings",
    "LimitSettings", "MetricsSettings", "Pkcs11KeyConfig", "PlatformSettings", "RetentionSettings", "SamlSettings", "ServiceProviderConfig", "UI_LOCALES", "UiSettings", "config_path",
    "load_config", "parse_config", "read_raw_config", "write_raw_config",
]
