"""Where the customer lands after paying or topping up on Huawei Cloud (shared spec §6), sans-I/O.

The target is always a page from configuration. From the request we keep only the query
parameters named in configuration, re-encoded as plain values: a parameter can never change the
scheme, host, path or fragment of the target, so the customer never leaves the configured host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

from idp_bridge.errors import ConfigError

MAX_VALUE_LENGTH = 256
MAX_VALUES = 20


def return_target(page: str | None, params: Iterable[tuple[str, str]], *, allowed: Sequence[str],
                  what: str = "platform.return_url") -> tuple[str, dict[str, str]]:
    """The configured ``page`` with only the ``allowed`` parameters from ``params`` appended.

    Returns (url, kept). Values longer than MAX_VALUE_LENGTH or with control characters are
    dropped; for a repeated name the first value wins.
    """
    if not page:
        raise ConfigError(f"{what} is not configured; set it in [platform] to the partner page customers "
                          "should land on", code="return_not_configured")
    parts = urlsplit(page)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{what}: {page!r} is not an absolute http(s) URL without query", code="config_url")
    allow = set(allowed)
    kept: dict[str, str] = {}
    for name, value in params:
        if name in allow and name not in kept and len(kept) < MAX_VALUES and len(value) <= MAX_VALUE_LENGTH \
                and not any(ord(c) < 32 or ord(c) == 127 for c in value):
            kept[name] = value
    query = urlencode(kept)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, "")), kept
