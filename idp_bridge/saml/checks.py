"""The one vocabulary of checks: a named rule, whether it held, what was expected and what arrived.

Rule: every SAML rule the bridge applies, as IdP (AuthnRequests) or as a simulated SP (Responses),
is recorded as a :class:`Check`. The live path stops at the first failed check and raises its typed
error (``code`` is the stable error code); ``decode``, ``check_response`` and the simulator show every
check. A check that could not run because its input is missing is recorded as failed, and says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

NOT_CHECKED = "not checked: "


@dataclass(frozen=True)
class Check:
    """One rule's verdict. ``code`` names the refusal (the error code) when ``ok`` is false."""

    name: str
    ok: bool
    expected: str
    actual: str
    code: str = ""
    #: The operator message of the refusal (what the live path raises); empty when ok.
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "ok": self.ok, "expected": self.expected,
                                   "actual": self.actual}
        if self.code:
            data["code"] = self.code
        if self.detail:
            data["detail"] = self.detail
        return data


@dataclass
class Checks:
    """An ordered list of checks with the helpers every checker uses."""

    items: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, expected: str, actual: str, *, code: str = "", detail: str = "") -> bool:
        self.items.append(Check(name, ok, expected, actual, "" if ok else code, "" if ok else detail))
        return ok

    def equal(self, name: str, expected: str, actual: str | None, *, missing: str = "(absent)",
              code: str = "", detail: str = "") -> bool:
        return self.add(name, actual == expected, expected, missing if actual is None else actual,
                        code=code, detail=detail)

    def skip(self, name: str, expected: str, why: str, *, code: str = "") -> None:
        self.add(name, False, expected, NOT_CHECKED + why, code=code, detail=NOT_CHECKED + why)

    def __iter__(self) -> Iterator[Check]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(c.ok for c in self.items)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.items if not c.ok]

    def get(self, name: str) -> Check:
        """The check called ``name`` (KeyError if it was not recorded)."""
        for c in self.items:
            if c.name == name:
                return c
        raise KeyError(name)
