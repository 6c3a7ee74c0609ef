"""Complete SSO logins from several threads against a served bridge, counted per phase (the load of the
rotation and key-fault tests): each test says what one login is, this runs and counts them."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests

from tests.journey import PASSWORD


def wait_for(predicate: Callable[..., object], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def page_says(html: str) -> str:
    """The page's visible text, shortened: what a failure reports about the page it got."""
    text = re.sub(r"<(script|style)\b.*?</\1>|<[^>]+>", " ", html, flags=re.S)
    return " ".join(text.split())[:240]


class LoginLoad:
    """Runs ``one_login`` in a loop per thread until ``stop``; a login returns None or what went wrong.

    Every ``fresh_session_every``-th login starts from a new browser session (a password sign-in).
    """

    fresh_session_every = 10

    def __init__(self) -> None:
        self.phase = "before"
        self.ok: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def one_login(self, http: requests.Session, n: int, worker: int) -> str | None:
        raise NotImplementedError

    def run(self, worker: int) -> None:
        http = requests.Session()
        n = 0
        while not self.stop.is_set():
            n += 1
            if n % self.fresh_session_every == 0:
                http = requests.Session()
            phase = self.phase
            try:
                error = self.one_login(http, n, worker)
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if error is None:
                    self.ok[phase] += 1
                else:
                    self.failed[phase] += 1
                    self.failures.append(f"[{phase}] {error}")


def sign_in(http: requests.Session, base: str, *, timeout: float) -> requests.Response | str:
    """The local password sign-in as a browser does it: the form's CSRF token, then the POST (not followed).
    Returns the POST's answer, or what was wrong with the form."""
    page = http.get(base + "/login", timeout=timeout)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if token is None:
        return f"no sign-in form: HTTP {page.status_code} {page.url} {page_says(page.text)}"
    return http.post(base + "/login", data={"user_id": "cust-1001", "password": PASSWORD,
                                            "csrf_token": token.group(1)}, allow_redirects=False, timeout=timeout)
