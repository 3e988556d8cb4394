"""A small CRM on 127.0.0.1 for the connector tests: it keeps what it receives (contacts, opportunities,
tags, every request), checks the bearer token, and answers a repeated Idempotency-Key with its first answer,
as the APIs connectors talk to do."""

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class CrmRequest:
    method: str
    path: str  # decoded
    raw_path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any


@dataclass
class Crm:
    token: str
    port: int = 0  # 0: any free port
    echo: bool = False  # print each request as it comes
    requests: list[CrmRequest] = field(default_factory=list)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    opportunities: list[dict[str, Any]] = field(default_factory=list)
    # Answers to give instead of the real one, in order: (status, body).
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    _answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "Crm":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: CrmRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
            if self.echo:
                print(request.method, request.raw_path, json.dumps(request.body), flush=True)
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return 401, {"error": "invalid or missing bearer token"}
            if self.script:
                return self.script.pop(0)
            key = request.headers.get("idempotency-key")
            if key and key in self._answers:
                return self._answers[key]
            answer = self._route(request)
            if key and answer[0] < 300:
                self._answers[key] = answer
            return answer

    def _route(self, r: CrmRequest) -> tuple[int, dict[str, Any]]:
        body = r.body if isinstance(r.body, dict) else {}
        if (r.method, r.path) == ("POST", "/v1/contacts"):
            if not body.get("email"):
                return 422, {"error": "email is required"}
            contact = {"id": f"c-{len(self.contacts) + 1}", "tags": []} | body
            self.contacts[contact["id"]] = contact
            return 201, {"contact": contact}
        if m := re.fullmatch(r"/v1/contacts/([^/]+)", r.path):
            if r.method != "PUT":
                return 405, {"error": "method not allowed"}
            if m.group(1) not in self.contacts:
                return 404, {"error": f"no contact {m.group(1)}"}
            self.contacts[m.group(1)].update(body)
            return 200, {"contact": self.contacts[m.group(1)]}
        if (m := re.fullmatch(r"/v1/contacts/([^/]+)/tags", r.path)) and r.method == "POST":
            if m.group(1) not in self.contacts:
                return 404, {"error": f"no contact {m.group(1)}"}
            tags = self.contacts[m.group(1)]["tags"]
            tags.extend(t for t in body.get("tags", []) if t not in tags)
            return 200, {"tags": tags}
        if (m := re.fullmatch(r"/v1/pipelines/([^/]+)/opportunities", r.path)) and r.method == "POST":
            opportunity = {"id": f"o-{len(self.opportunities) + 1}", "pipelineId": m.group(1)} | body
            self.opportunities.append(opportunity)
            return 201, {"opportunity": opportunity}
        return 404, {"error": f"no route {r.method} {r.path}"}


def _handler(crm: Crm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            # Segments decoded one by one: an encoded "/" stays inside its segment.
            path = "/".join(unquote(s).replace("/", "%2F") for s in parts.path.split("/"))
            status, answer = crm.handle(CrmRequest(self.command, path, parts.path, parse_qs(parts.query),
                                                   {k.lower(): v for k, v in self.headers.items()}, body))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            pass

    return Handler


# The connector example of docs/task-types.md: python -m tests.crm_server --port 8124 --token …
if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A small CRM that keeps what it receives, for trying connectors.")
    parser.add_argument("--port", type=int, default=8124)
    parser.add_argument("--token", required=True, help="the bearer token it accepts")
    args = parser.parse_args()
    crm = Crm(token=args.token, port=args.port, echo=True)
    print(f"CRM at {crm.url}; Ctrl-C stops it", flush=True)
    try:
        crm._server.serve_forever()
    except KeyboardInterrupt:
        print(json.dumps({"contacts": crm.contacts, "opportunities": crm.opportunities}, indent=2))
