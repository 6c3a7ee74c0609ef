"""Writes docs/error-codes.md: every stable error code the bridge can give, where it comes from, and what it says.

    python scripts/error_codes.py          # rewrite docs/error-codes.md
    python scripts/error_codes.py --check  # exit 1 when the file is not up to date (tests run this)

The codes are read from the source: every ``code="..."`` keyword on a raised error and every ``code = "..."``
class attribute. The message is the operator text's opening words, so the table says what the error means.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "idp_bridge"
DOC = ROOT / "docs" / "error-codes.md"
AREAS = {
    "saml": "SAML core (requests, signatures, metadata, responses)",
    "huawei": "Huawei profile (attributes, binding notice, console link, returns)",
    "keys": "Signing keys (files, PKCS#11, rotation)",
    "partner": "Partner platform (hand-off tokens, binding, webhooks)",
    "store": "Storage",
    "web": "Web layer",
    "cli": "Command line",
    "diagnostics": "Diagnostics (check, decode, trust-test)",
    "devtools": "Developer tools (demo, simulator)",
}


def _text(node: ast.expr | None) -> str:
    """The literal opening of a message (f-string placeholders shown as …)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return ""


def collect() -> dict[str, dict[str, set[str]]]:
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"where": set(), "error": set(), "says": set()})
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign | ast.AnnAssign) and isinstance(stmt.value, ast.Constant)
                            and isinstance(stmt.value.value, str)):
                        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                        if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                            entry = found[stmt.value.value]
                            entry["where"].add(rel)
                            entry["error"].add(node.name)
                            doc = ast.get_docstring(node)
                            if doc:
                                entry["says"].add(doc.splitlines()[0])
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                        entry = found[kw.value.value]
                        entry["where"].add(rel)
                        if isinstance(node.func, ast.Name) and node.func.id[:1].isupper():
                            entry["error"].add(node.func.id)
                        if node.args:
                            said = _text(node.args[0]).strip()
                            if said:
                                entry["says"].add(said)
    return found


def _cell(text: str, limit: int = 140) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render() -> str:
    found = collect()
    by_area: dict[str, list[str]] = defaultdict(list)
    for code, entry in found.items():
        area = sorted(entry["where"])[0].split("/")[1]
        by_area[area if area in AREAS else "other"].append(code)
    out = ["# Error codes", "",
           "Every refusal the bridge gives carries one of these stable codes: in the log line, the audit row",
           "(`idp-bridge audit tail`), `check` and `decode` output, and the CLI's `error: … [code]` line. The",
           "customer's page shows only a plain message and the correlation id; look the id up in the audit",
           "trail to find the code, then here to find what it means.", "",
           "This file is generated from the source by `python scripts/error_codes.py` (a test fails when it",
           "is out of date). \"Says\" is the opening of the operator message; `…` stands for the values it",
           "names (the entity ID, URL, fingerprint, algorithm or time that was expected and that arrived).", ""]
    for area in [*AREAS, "other"]:
        codes = sorted(by_area.get(area, []))
        if not codes:
            continue
        out += [f"## {AREAS.get(area, 'Other')}", "", "| code | error | says | raised in |", "|---|---|---|---|"]
        for code in codes:
            e = found[code]
            says = " / ".join(sorted(e["says"], key=lambda t: (len(t), t))[:2])
            out.append(f"| `{code}` | {', '.join(sorted(e['error'])) or '—'} | {_cell(says)} | "
                       f"{', '.join(f'`{w}`' for w in sorted(e['where']))} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print("docs/error-codes.md is out of date: run `python scripts/error_codes.py`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} ({text.count(chr(10) + '| `')} codes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
