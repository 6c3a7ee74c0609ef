"""The catalogue's own strings, to catch a page in the wrong language: English msgids must not show on a zh-CN
page, Chinese msgstrs must not show on an English one (only phrases: single words and characters are skipped,
they also occur in data such as attribute names)."""

from __future__ import annotations

import re
from functools import cache

from babel.messages.pofile import read_po

from idp_bridge.web.i18n import TRANSLATIONS

PO = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
_SPLIT = re.compile(r"<code>.*?</code>|%\([a-z_]+\)[sd]|<[^>]+>")  # code samples are not language
_CJK = re.compile(r"[\u4e00-\u9fff]")


@cache
def catalogue() -> dict[str, str]:
    """msgid -> msgstr (plural forms: each English form -> the one Chinese form)."""
    out: dict[str, str] = {}
    with PO.open("rb") as fh:
        for m in read_po(fh):
            ids = m.id if isinstance(m.id, tuple) else (m.id,)
            strings = m.string if isinstance(m.string, tuple) else (m.string,)
            for msgid in ids:
                if msgid:
                    out[str(msgid)] = str(strings[0])
    return out


def _fragments(text: str) -> list[str]:
    return [f.strip(" .:;,()（）。：，") for f in _SPLIT.split(text)]


@cache
def english_phrases() -> frozenset[str]:
    return frozenset(f for msgid in catalogue() for f in _fragments(msgid) if " " in f and len(f) >= 8)


@cache
def chinese_phrases() -> frozenset[str]:
    return frozenset(f for msgstr in catalogue().values() for f in _fragments(msgstr)
                     if len(_CJK.findall(f)) >= 2)


def foreign_strings_in(text: str, locale: str) -> list[str]:
    """Catalogue phrases of the other language found in a page's visible text."""
    phrases = english_phrases() if locale == "zh-CN" else chinese_phrases()
    return sorted(p for p in phrases if p in text)
