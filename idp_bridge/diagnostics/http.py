"""A tiny HTTP client on the standard library (``requests`` is a test-only dependency).

Cookies are kept per client, redirects are never followed automatically (the trust test looks at
every hop), bodies are capped, and every call has a timeout.
"""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class HttpResult:
    url: str
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self) -> str | None:
        loc = self.headers.get("Location")
        return urllib.parse.urljoin(self.url, loc) if loc else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpClient:
    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def request(self, method: str, url: str, *, form: dict[str, str] | None = None) -> HttpResult:
        """One request; any HTTP status is a result, a network failure raises OSError."""
        if not url.startswith(("http://", "https://")):
            raise OSError(f"not an http(s) URL: {url!r}")
        data = urllib.parse.urlencode(form).encode("ascii") if form is not None else None
        req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 - scheme checked above
                                     headers={"User-Agent": "idp-bridge-diagnostics"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return HttpResult(resp.geturl(), resp.status, resp.headers, resp.read(MAX_BODY_BYTES))
        except urllib.error.HTTPError as exc:
            body = exc.read(MAX_BODY_BYTES) if exc.fp is not None else b""
            return HttpResult(url, exc.code, exc.headers, body)

    def get(self, url: str) -> HttpResult:
        return self.request("GET", url)

    def post(self, url: str, form: dict[str, str]) -> HttpResult:
        return self.request("POST", url, form=form)

