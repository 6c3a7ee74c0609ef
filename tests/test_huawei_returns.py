"""Return after checkout: only configured pages, only configured parameters, never another host."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from idp_bridge.errors import ConfigError
from idp_bridge.huawei.returns import return_target

PAGE = "https://shop.example/orders"
EVIL = ["//evil.example", "/\\evil.example", "https:evil.example", "https://shop.example@evil.example/",
        "https://evil.example%2F%2F@shop.example", "%2F%2Fevil.example", "/%2F%2Fevil.example", "javascript:alert(1)",
        "https://shop.example.evil.example/", "\\\\evil.example", "http://[::1]/", "https://evil.example#@shop.example"]


@pytest.mark.parametrize("value", EVIL)
def test_hostile_values_stay_values(value: str) -> None:
    params = [("orderId", value), ("next", value), ("return_to", value), ("url", value), ("redirect", value)]
    url, kept = return_target(PAGE, params, allowed=["orderId"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == ("https", "shop.example", "/orders", "")
    assert kept == {"orderId": value} and dict(parse_qsl(parts.query)) == {"orderId": value}


def test_only_allowed_params_first_value_bounded() -> None:
    url, kept = return_target(PAGE, [("orderId", "CS1"), ("orderId", "CS2"), ("amount", "x" * 300),
                                     ("secret", "s"), ("orderId\r\n", "y")], allowed=["orderId", "amount"])
    assert kept == {"orderId": "CS1"} and url == PAGE + "?orderId=CS1"
    assert return_target(PAGE, [], allowed=["orderId"])[0] == PAGE


def test_unconfigured_page_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        return_target(None, [("orderId", "1")], allowed=["orderId"])
    assert info.value.code == "return_not_configured"
    with pytest.raises(ConfigError):
        return_target("javascript:alert(1)", [], allowed=[])
