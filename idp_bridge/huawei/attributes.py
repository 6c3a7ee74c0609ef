"""The customer, and the attributes Huawei receives for them (shared spec §4, mapping configurable)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from idp_bridge.errors import BridgeError


@dataclass(frozen=True)
class Customer:
    """Who is logged in on the partner platform, as the bridge knows them."""

    user_id: str
    account_id: str | None = None
    email: str | None = None
    name: str | None = None
    mobile: str | None = None
    bound: bool | None = None  # the platform says the customer already has a Huawei account

    def field(self, name: str, *, partner_id: str) -> str | None:
        if name == "partner_id":
            return partner_id or None
        if name == "account_id":
            return self.account_id or self.user_id
        value = getattr(self, name, None)
        return value if isinstance(value, str) else None


class AttributeError_(BridgeError):  # noqa: N801 - not the builtin AttributeError
    code = "attribute_invalid"
    status = 400


def release_attributes(customer: Customer, mapping: Mapping[str, str], *, partner_id: str) -> dict[str, list[str]]:
    """Attribute name -> values for this customer. Empty values are left out; ``xUserId`` is required."""
    released: dict[str, list[str]] = {}
    for attr, source in mapping.items():
        value = source[len("literal:"):] if source.startswith("literal:") else customer.field(source,
                                                                                           partner_id=partner_id)
        if value:
            released[attr] = [value]
    if not released.get("xUserId"):
        raise AttributeError_(f"customer {customer.user_id!r} has no value for required attribute xUserId "
                              f"(mapped from {mapping.get('xUserId')!r})", code="attribute_missing_xuserid")
    return released
