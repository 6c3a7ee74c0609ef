"""The auto-submitting form to the SP's ACS, rendered from a cached skeleton.

Rule: ``post_form.html`` is rendered through Jinja once per (app, locale, with/without RelayState) with
placeholder values; each answer then fills the placeholders in a single pass with the HTML-escaped values
(``markupsafe.escape``: exactly what Jinja's autoescape would emit). Rendering the template for every SSO
cost about a tenth of the whole round trip (template calls, a dozen ``gettext`` lookups, escaping); the
skeleton costs one string join. ``tests/test_post_form.py`` holds the cached page equal to a direct
render, for both languages and hostile values.

Placeholders are plain ASCII words that no translation contains and escaping leaves alone; a value that
itself contains a placeholder's text is inserted as data and never scanned again.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g, render_template
from markupsafe import escape

from idp_bridge.web.i18n import select_locale

if TYPE_CHECKING:
    from idp_bridge.idp.identity_provider import PostForm

_TOKEN = secrets.token_hex(8)  # per process: a stable placeholder that no page text contains
SLOTS = {name: f"idpbslot{name}{_TOKEN}" for name in ("action", "samlresponse", "relaystate", "nonce")}
_SLOT_RE = re.compile("|".join(re.escape(s) for s in SLOTS.values()))
_NAME_BY_SLOT = {slot: name for name, slot in SLOTS.items()}


@dataclass(frozen=True)
class _SlotForm:
    """What the template reads of a form, with placeholders for values."""

    action: str
    saml_response: str
    relay_state: str | None


def _skeleton(with_relay_state: bool) -> list[str]:
    """The page split at its placeholders: literal, slot name, literal, slot name, ..., literal."""
    form = _SlotForm(SLOTS["action"], SLOTS["samlresponse"], SLOTS["relaystate"] if with_relay_state else None)
    had_nonce, old_nonce = "csp_nonce" in g, g.get("csp_nonce")
    g.csp_nonce = SLOTS["nonce"]
    try:
        page = render_template("post_form.html", form=form)
    finally:
        if had_nonce:
            g.csp_nonce = old_nonce
        else:
            g.pop("csp_nonce", None)
    parts: list[str] = []
    pos = 0
    for m in _SLOT_RE.finditer(page):
        parts += [page[pos:m.start()], _NAME_BY_SLOT[m.group(0)]]
        pos = m.end()
    parts.append(page[pos:])
    return parts


def render_post_form(form: PostForm, nonce: str) -> str:
    """``post_form.html`` for ``form`` in the request's language, with ``nonce`` on its script and style."""
    cache: dict[tuple[str, bool], list[str]] = current_app.extensions.setdefault("idp_bridge_post_form", {})
    # The language Flask-Babel would pick is select_locale()'s answer; asked directly, it skips Babel's locale
    # parsing (the skeleton for a new key is rendered through Babel, with that same answer).
    key = (select_locale(), form.relay_state is not None)
    parts = cache.get(key)
    if parts is None:
        parts = cache[key] = _skeleton(key[1])
    values = {"action": str(escape(form.action)), "samlresponse": str(escape(form.saml_response)),
              "relaystate": str(escape(form.relay_state or "")), "nonce": str(escape(nonce))}
    return "".join(part if i % 2 == 0 else values[part] for i, part in enumerate(parts))
