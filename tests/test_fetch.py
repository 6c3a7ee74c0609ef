"""idp_bridge/fetch.py: the one bounded fetcher (SP metadata URLs, the simulator's IdP metadata)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from idp_bridge.devtools.simulator import fetch_metadata
from idp_bridge.fetch import fetch_bounded
from idp_bridge.idp.service_providers import fetch_url
from idp_bridge.saml.errors import MetadataError

SMALL = b"<md:EntityDescriptor/>"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = SMALL if self.path == "/small" else b"x" * (64 * 1024)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetches_within_the_bound(server: str) -> None:
    assert fetch_bounded(server + "/small") == SMALL
    assert fetch_url(server + "/small") == SMALL and fetch_metadata(server + "/small") == SMALL


def test_refuses_a_body_over_the_bound_without_reading_it_all(server: str) -> None:
    with pytest.raises(MetadataError) as exc:
        fetch_bounded(server + "/big", max_bytes=1024, what="SP metadata")
    assert exc.value.code == "metadata_too_large" and "SP metadata" in exc.value.operator
    assert fetch_bounded(server + "/big", max_bytes=64 * 1024) == b"x" * (64 * 1024)  # exactly at the bound


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1/x"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(MetadataError) as exc:
        fetch_bounded(url)
    assert exc.value.code == "metadata_url"


def test_unreachable_is_a_typed_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        with pytest.raises(MetadataError) as exc:
            fetch_bounded(f"http://127.0.0.1:{port}/md.xml", timeout=2)
    assert exc.value.code == "metadata_fetch" and str(port) in exc.value.operator
