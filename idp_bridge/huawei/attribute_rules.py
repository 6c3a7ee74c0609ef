"""Huawei's rules for the customer attributes, applied before we sign, at ``users add`` and on hand-off claims.

Huawei refuses a login whose ``email`` is longer than 64 characters or not a well-formed address, whose
``mobile`` is not ``<country code>-<number>`` (``0086-13800000000``), or that has no ``xUserId``. The same
rules judge Responses in the SP-side checks (``saml/response_checks.py``, the simulator and ``decode``);
they are written there once and read here. ``[huawei]`` in the configuration can loosen or turn them off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from idp_bridge.errors import BridgeError
from idp_bridge.saml.response_checks import EMAIL_MAX_CHARS, EMAIL_PATTERN, MOBILE_PATTERN


class AttributeRuleError(BridgeError):
    """A customer's attribute would be refused by Huawei: the login is stopped before anything is signed."""

    code = "attribute_invalid"
    status = 422


@dataclass(frozen=True)
class AttributeRules:
    """``[huawei]`` email_max_chars, mobile_pattern, check_attributes."""

    email_max_chars: int = EMAIL_MAX_CHARS
    mobile_pattern: str = MOBILE_PATTERN.pattern
    enabled: bool = True

    def problems(self, attributes: Mapping[str, Sequence[str]]) -> list[str]:
        """What Huawei would refuse in these released attributes (empty: nothing)."""
        if not self.enabled:
            return []
        found: list[str] = []
        if not [v for v in attributes.get("xUserId", ()) if v.strip()]:
            found.append("xUserId is missing or empty; Huawei identifies the customer by it")
        for value in attributes.get("email", ()):
            problem = self.email_problem(value)
            if problem:
                found.append(f"email {value!r}: {problem}")
        for value in attributes.get("mobile", ()):
            problem = self.mobile_problem(value)
            if problem:
                found.append(f"mobile {value!r}: {problem}")
        return found

    def email_problem(self, value: str) -> str | None:
        if not self.enabled:
            return None
        if len(value) > self.email_max_chars:
            return f"{len(value)} characters; Huawei accepts at most {self.email_max_chars}"
        if not EMAIL_PATTERN.fullmatch(value):
            return "not a well-formed address (name@domain.tld)"
        return None

    def mobile_problem(self, value: str) -> str | None:
        if not self.enabled or re.fullmatch(self.mobile_pattern, value):
            return None
        return f"expected <country code>-<number>, e.g. 0086-13800000000 (pattern {self.mobile_pattern})"

    def check_customer(self, *, email: str | None, mobile: str | None, where: str) -> None:
        """Refuse a customer record whose email or mobile Huawei would refuse (``users add``, hand-off claims)."""
        problems = []
        if email and (problem := self.email_problem(email)):
            problems.append(f"email {email!r}: {problem}")
        if mobile and (problem := self.mobile_problem(mobile)):
            problems.append(f"mobile {mobile!r}: {problem}")
        if problems:
            raise AttributeRuleError(f"{where}: {'; '.join(problems)}", code="attribute_invalid")

    def check_release(self, user_id: str, attributes: Mapping[str, Sequence[str]]) -> None:
        """Refuse to sign attributes Huawei would refuse; the operator reads which and why."""
        problems = self.problems(attributes)
        if problems:
            raise AttributeRuleError(f"customer {user_id!r}: not signed, Huawei would refuse it: {'; '.join(problems)}"
                                     " (fix the customer's record on the platform, or see [huawei] in the config)",
                                     code="attribute_invalid")
