"""Page language: zh-CN or English, through Flask-Babel and the catalogues in ``web/translations``.

Rule: the visitor's explicit choice (the ``lang`` cookie set by ``/lang``) wins, then the browser's
``Accept-Language``, then ``[ui] default_locale``. Every string a customer or operator reads goes through
``_()`` / ``{% trans %}``; the msgids are the English text, ``zh_Hans_CN/LC_MESSAGES/messages.po`` holds the
Chinese (``scripts/i18n.sh`` extracts, updates and compiles; the compiled ``.mo`` is committed). The folder is
``zh_Hans_CN``, not ``zh_CN``: Babel resolves the locale ``zh_CN`` to ``zh_Hans_CN`` and gettext looks for that
name (or ``zh``), never ``zh_CN``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Flask, current_app, redirect, request
from flask_babel import Babel, get_locale
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header
from werkzeug.wrappers import Response

from idp_bridge.config import UI_LOCALES
from idp_bridge.web.security import safe_next

TRANSLATIONS = Path(__file__).with_name("translations")
COOKIE = "lang"

bp = Blueprint("i18n", __name__)


#: Accept-Language values up to this length have their answer remembered (browsers send a few dozen
#: characters, and a few distinct ones): parsing the header was 3 % of an SSO round trip.
MAX_CACHED_HEADER = 256


def select_locale() -> str:
    chosen = request.cookies.get(COOKIE, "")
    if chosen in UI_LOCALES:
        return chosen
    header = request.environ.get("HTTP_ACCEPT_LANGUAGE", "")
    found = _locale_for(header) if len(header) <= MAX_CACHED_HEADER else _parse_locale(header)
    return found or str(current_app.config["BABEL_DEFAULT_LOCALE"])


def _parse_locale(header: str) -> str | None:
    # Best quality first; any Chinese tag (zh, zh-CN, zh-TW, zh-Hans) means zh-CN, any English one en.
    # (werkzeug's best_match would prefer an exact "en;q=0.4" over a "zh;q=0.8" that needs a fallback.)
    for tag, _quality in parse_accept_header(header, LanguageAccept):
        primary = tag.lower().replace("_", "-").split("-")[0]
        if primary == "zh":
            return "zh_CN"
        if primary == "en":
            return "en"
    return None


_locale_for = lru_cache(maxsize=512)(_parse_locale)


def html_lang() -> str:
    """The ``<html lang>`` value of the page being rendered ("zh-CN" or "en")."""
    locale = get_locale()
    return "zh-CN" if locale is not None and locale.language == "zh" else "en"


#: Pages that a second visit would break (one-time tokens, a consumed AuthnRequest): switch back to "/".
_ONE_SHOT = {"saml.sso", "saml.sso_continue", "jump.go", "handoff.handoff", "i18n.choose"}


def language_return() -> str:
    """Where the language switch returns to: this page if showing it again is harmless, else the start page."""
    if request.method == "GET" and request.endpoint not in _ONE_SHOT and request.blueprint != "huawei":
        return request.full_path.rstrip("?")
    return "/_bridge/" if request.blueprint == "debug" else "/"


@bp.get("/lang/<locale>")
def choose(locale: str) -> Response:
    """The language switch in every page's footer: remember the choice for a year, go back to the page."""
    target = safe_next(request.args.get("next")) or "/"
    resp = redirect(target, 303)
    if locale in UI_LOCALES:
        resp.set_cookie(COOKIE, locale, max_age=365 * 86400, samesite="Lax", httponly=True,
                        secure=request.is_secure)
    return resp


def install(app: Flask, default_locale: str) -> None:
    app.config["BABEL_DEFAULT_LOCALE"] = default_locale
    Babel(app, locale_selector=select_locale, default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.globals.update(html_lang=html_lang, language_return=language_return)
    app.register_blueprint(bp)
