"""A real local HTTP server playing the platform's webhook endpoint (records what it accepted)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from idp_bridge.partner.webhooks import verify_signature


class Receiver:
    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.status = 200
        self.delay = 0.0  # seconds to wait before answering (a slow platform)
        self.accepted: list[dict[str, Any]] = []
        self.sequence_headers: list[str | None] = []
        self.started = 0  # requests that reached the handler (accepted or not)
        self.keys: Counter[str] = Counter()
        self.bad_signatures = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.started += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                ok = verify_signature(receiver.secret, self.headers.get("X-Idp-Bridge-Timestamp", ""), body,
                                      self.headers.get("X-Idp-Bridge-Signature", ""))
                with receiver.lock:
                    status = receiver.status if ok else 401
                    if not ok:
                        receiver.bad_signatures += 1
                    elif status == 200:
                        key = self.headers.get("Idempotency-Key", "")
                        receiver.keys[key] += 1
                        receiver.accepted.append(json.loads(body))
                        receiver.sequence_headers.append(self.headers.get("X-Idp-Bridge-Sequence"))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
