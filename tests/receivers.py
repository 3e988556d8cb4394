"""A real HTTP receiver on 127.0.0.1 for tests: it records what it gets and answers as told."""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the client's address and port: which process sent it

    def json(self) -> dict:
        return json.loads(self.body)


Body = str | Callable[[Received], str]


class Receiver:
    """An HTTP server in a thread: each request takes the next scripted answer, then the default (200)."""

    def __init__(self, port: int = 0) -> None:
        """On ``port`` (a free one unless given: a test may aim at a port first and bring the receiver up later)."""
        self.requests: list[Received] = []
        self._script: list[tuple[int, Body, float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, status: int, body: Body = '{"ok": true}', delay: float = 0.0,
               headers: dict[str, str] | None = None) -> None:
        self._script.append((status, body, delay, headers or {}))

    def _next(self) -> tuple[int, Body, float, dict[str, str]]:
        with self._lock:
            return self._script.pop(0) if self._script else (200, '{"ok": true}', 0.0, {})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received(self.command, parts.path, parse_qs(parts.query),
                                    {k.lower(): v for k, v in self.headers.items()}, body,
                                    self.client_address[:2])
                receiver.requests.append(received)
                status, answer, delay, extra = receiver._next()
                time.sleep(delay)
                data = (answer(received) if callable(answer) else answer).encode()
                try:
                    self.send_response(status)
                    if not any(name.lower() == "content-type" for name in extra):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("X-Request-Id", f"req-{len(receiver.requests)}")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


