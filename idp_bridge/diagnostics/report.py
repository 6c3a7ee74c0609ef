"""A checklist: items that pass, fail (each failure carries the fix) or were not applicable."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["pass", "fail", "skip"]
MARKS: dict[str, str] = {"pass": "✓", "fail": "✗", "skip": "–"}


@dataclass(frozen=True)
class Item:
    """One checklist line. ``fix`` is required for a failure: what exactly to do about it."""

    group: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    expected: str = ""
    actual: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


@dataclass
class Report:
    title: str
    items: list[Item] = field(default_factory=list)

    def add(self, group: str, name: str, ok: bool, detail: str, fix: str = "", *, expected: str = "",
            actual: str = "") -> bool:
        if not ok and not fix:
            raise ValueError(f"check {group}/{name} failed without a fix")
        self.items.append(Item(group, name, "pass" if ok else "fail", detail, "" if ok else fix, expected, actual))
        return ok

    def skip(self, group: str, name: str, detail: str) -> None:
        self.items.append(Item(group, name, "skip", detail))

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if not i.ok]

    def item(self, group: str, name: str) -> Item:
        for i in self.items:
            if i.group == group and i.name == name:
                return i
        raise KeyError(f"{group}/{name}")

    def to_dict(self) -> dict[str, object]:
        return {"title": self.title, "ok": self.ok, "failed": len(self.failed),
                "items": [asdict(i) for i in self.items]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def render(self) -> str:
        lines = [self.title]
        group = None
        for i in self.items:
            if i.group != group:
                group = i.group
                lines.append(f"\n{group}")
            lines.append(f"  {MARKS[i.status]} {i.name}: {i.detail}")
            if i.status == "fail":
                if i.expected or i.actual:
                    lines.append(f"      expected: {i.expected}")
                    lines.append(f"      actual:   {i.actual}")
                lines.append(f"      fix: {i.fix}")
        passed = sum(1 for i in self.items if i.status == "pass")
        fails = len(self.failed)
        skipped = len(self.items) - passed - fails
        lines.append(f"\n{passed} passed, {fails} failed" + (f", {skipped} not run" if skipped else "")
                     + (" — OK" if not fails else " — NOT OK"))
        return "\n".join(lines)
