"""The one bounded HTTP(S) fetcher for documents the bridge reads from a URL (SP metadata, IdP metadata).

Rule: only http(s) URLs; every fetch has a timeout and a size cap (the body is read to at most
``max_bytes + 1``, never in full); every failure is a typed ``MetadataError`` naming the URL
(``metadata_url``, ``metadata_fetch``, ``metadata_too_large``). Standard library only: a metadata
fetch is rare and small, so a client library would buy nothing here.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from idp_bridge.saml.errors import MetadataError
from idp_bridge.saml.xml import MAX_XML_BYTES

DEFAULT_TIMEOUT_SECONDS = 10.0
#: Huawei's own limit for uploaded metadata (2 MB) is the XML parser's limit too.
DEFAULT_MAX_BYTES = MAX_XML_BYTES


def fetch_bounded(url: str, *, what: str = "metadata", timeout: float = DEFAULT_TIMEOUT_SECONDS,
                  max_bytes: int = DEFAULT_MAX_BYTES, headers: Mapping[str, str] | None = None) -> bytes:
    """GET ``url`` and return the body; ``what`` names the document in errors ("SP metadata" …)."""
    if not url.startswith(("https://", "http://")):
        raise MetadataError(f"{what} URL {url!r} is not http(s)", code="metadata_url")
    request = urllib.request.Request(url, headers={"User-Agent": "idp-bridge", **(headers or {})})  # noqa: S310 - scheme checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            data: bytes = resp.read(max_bytes + 1)
    except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
        raise MetadataError(f"cannot fetch {what} from {url!r}: {exc}", code="metadata_fetch") from exc
    if len(data) > max_bytes:
        raise MetadataError(f"{what} at {url!r} is larger than {max_bytes} bytes", code="metadata_too_large")
    return data
