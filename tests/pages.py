"""Real web pages on a loopback address for browser tasks to drive: a form that posts back, a page whose
content appears late, a catalogue to extract from, a page that makes the browser fetch another address,
redirects, a page that shows whether two browsers load it at once, and a missing page. Every request is
recorded."""

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FORM = """<!doctype html><html><head><title>Sign up</title></head><body>
<form method="post" action="/submit">
  <input id="name" name="name"> <input id="email" name="email" type="email">
  <button id="submit" type="submit">Send</button>
</form></body></html>"""

DELAYED = """<!doctype html><html><head><title>Later</title></head><body><div id="box"></div>
<script>setTimeout(() => { const p = document.createElement('p'); p.id = 'late'; p.textContent = 'Arrived';
document.getElementById('box').appendChild(p); }, 700);</script></body></html>"""

CATALOGUE = """<!doctype html><html><head><title>Catalogue</title>
<meta name="price" content="42.50"></head><body><h1>  Spring catalogue  </h1>
<ul><li><a class="item" href="/items/1" data-sku="A-1">Anvil</a></li>
<li><a class="item" href="/items/2" data-sku="B-2">Bucket</a></li>
<li><a class="item" href="/items/3" data-sku="C-3">Crate</a></li></ul></body></html>"""


def probe(target: str) -> str:
    """A page that makes the browser reach ``target`` every way it can: image, script, frame, fetch, navigation
    of a popup and a WebSocket."""
    t = html.escape(target, quote=True)
    ws = target.replace("http://", "ws://", 1)
    return f"""<!doctype html><html><head><title>Probe</title><script src="{t}?via=script"></script></head><body>
<img src="{t}?via=img"><iframe src="{t}?via=frame"></iframe>
<p id="status">waiting</p>
<script>
const tries = [fetch("{t}?via=fetch").then(() => "fetched", e => "fetch failed"),
               new Promise(done => {{ try {{ const s = new WebSocket("{ws}?via=ws");
                 s.onopen = () => done("ws open"); s.onerror = s.onclose = () => done("ws failed"); }}
                 catch (e) {{ done("ws failed"); }} }})];
Promise.all(tries).then(r => {{ document.getElementById("status").textContent = r.join(", "); }});
</script></body></html>"""


class Pages:
    """An HTTP server in a thread on ``host`` (any loopback address)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.paths: list[str] = []
        self.posted: list[dict[str, list[str]]] = []
        # /hold: each request waits (up to a few seconds) for a second one to be in flight at the same time.
        self.holding: list[str] = []
        self._held = threading.Condition()
        self._in_flight = 0
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def sign_up_steps(self) -> list[dict]:
        """Browser steps filling the form (the email from the secret `signup_email`), submitting it and
        reading the thanks."""
        return [
            {"action": "navigate", "url": f"{self.url}/form"},
            {"action": "type", "selector": "#name", "text": "Ann"},
            {"action": "type", "selector": "#email", "secret": "signup_email"},
            {"action": "click", "selector": "#submit"},
            {"action": "wait", "selector": "#thanks"},
            {"action": "extract", "selector": "#thanks", "name": "thanks"},
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                pages.paths.append(self.path)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                match parts.path:
                    case "/form":
                        self._send(200, FORM)
                    case "/delayed":
                        self._send(200, DELAYED)
                    case "/catalogue":
                        self._send(200, CATALOGUE)
                    case "/probe":
                        self._send(200, probe(query["target"][0]))
                    case "/hold":
                        pages._hold()
                        self._send(200, "<title>Held</title><p>ok</p>")
                    case "/redirect":
                        self._send(302, "", {"Location": query["to"][0]})
                    case _ if parts.path.startswith("/items/") or parts.path == "/secret":
                        self._send(200, f"<title>{html.escape(parts.path)}</title><p>ok</p>")
                    case _:
                        self._send(404, "<title>Not found</title><p>nothing here</p>")

            def do_POST(self) -> None:
                pages.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = parse_qs(body)
                pages.posted.append(form)
                name = html.escape(form.get("name", [""])[0])
                self._send(200, f'<!doctype html><title>Thanks</title><p id="thanks">Thanks, {name}</p>'
                                f'<p id="email">{html.escape(form.get("email", [""])[0])}</p>')

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _hold(self) -> None:
        with self._held:
            self.holding.append("start")
            self._in_flight += 1
            self._held.notify_all()
            self._held.wait_for(lambda: self._in_flight >= 2, timeout=3)
            self._in_flight -= 1
            self.holding.append("end")

    def __enter__(self) -> "Pages":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
