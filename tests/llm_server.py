"""A small OpenAI-compatible chat completions server on 127.0.0.1, for tests.

It records every request and answers ``POST /v1/chat/completions`` as
scripted: each request takes the next scripted answer (a JSON draft, tool
calls, a final text answer or an error), then the default draft. Use it as
a context manager; ``url`` is the base URL to configure.
"""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.receivers import Received

DEFAULT_MODEL = "fake-gpt-1"


@dataclass
class Answer:
    status: int = 200
    body: str | Callable[[Received], str] = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(content: str | None, model: str = DEFAULT_MODEL, prompt_tokens: int = 321, completion_tokens: int = 54,
               finish_reason: str = "stop", tool_calls: list[dict[str, Any]] | None = None) -> str:
    """A chat completion response body, as OpenAI's API shapes it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


class FakeLlm:
    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.model = model
        self.requests: list[Received] = []
        self._script: list[Answer] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ---- scripting ----------------------------------------------------------

    def reply(self, content: dict[str, Any] | str, **usage: Any) -> None:
        """Answer the next request with ``content`` (an object is sent as its JSON text)."""
        text = content if isinstance(content, str) else json.dumps(content)
        self._script.append(Answer(200, completion(text, **({"model": self.model} | usage))))

    def call_tools(self, *calls: tuple[str, dict[str, Any] | str], content: str | None = None,
                   **usage: Any) -> None:
        """Answer the next request by asking for tool calls: (name, arguments) each; arguments given as a
        string are sent as they are (to script malformed JSON)."""
        numbered = len(self._script)
        tool_calls = [{"id": f"call_{numbered}_{n}", "type": "function",
                       "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                      for n, (name, args) in enumerate(calls, 1)]
        self._script.append(Answer(200, completion(content, **({"model": self.model} | usage),
                                                   finish_reason="tool_calls", tool_calls=tool_calls)))

    def call_tools_from(self, decide: Callable[[list[dict[str, Any]]], list[tuple[str, dict[str, Any]]]]) -> None:
        """Answer the next request by asking for the tool calls ``decide`` picks from the messages it was sent:
        a model that does what the text it read (a fetched page, say) tells it to."""
        numbered = len(self._script)

        def body(received: Received) -> str:
            calls = decide(received.json()["messages"])
            tool_calls = [{"id": f"call_{numbered}_{n}", "type": "function",
                           "function": {"name": name, "arguments": json.dumps(args)}}
                          for n, (name, args) in enumerate(calls, 1)]
            return completion(None, model=self.model, finish_reason="tool_calls", tool_calls=tool_calls)

        self._script.append(Answer(200, body))

    def answer(self, text: str, **usage: Any) -> None:
        """Answer the next request with a final text message (no tool calls)."""
        self._script.append(Answer(200, completion(text, **({"model": self.model} | usage))))

    def draft(self, subject: str = "Invoice INV-123 is overdue", body: str = "Dear ACME Corp,\n\nPlease pay.",
              confidence: float | None = 0.93, **usage: Any) -> None:
        answer: dict[str, Any] = {"subject": subject, "body": body}
        if confidence is not None:
            answer["confidence"] = confidence
        self.reply(answer, **usage)

    def fail(self, status: int, message: str = "something went wrong", headers: dict[str, str] | None = None,
             delay: float = 0.0) -> None:
        self._script.append(Answer(status, json.dumps({"error": {"message": message, "type": "test_error"}}),
                                   headers or {}, delay))

    def raw(self, status: int, body: str, delay: float = 0.0) -> None:
        self._script.append(Answer(status, body, {}, delay))

    def _next(self) -> Answer:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return Answer(200, completion(json.dumps({"subject": "Invoice reminder", "body": "Dear customer,\n\n"
                                                  "Please settle the invoice.", "confidence": 0.9}), self.model))

    # ---- what was asked ---------------------------------------------------------

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        return self.requests[index].json()["messages"]

    def prompt(self, index: int = -1) -> str:
        """The text of every message of one request, joined."""
        return "\n".join(m["content"] or "" for m in self.messages(index))

    # ---- the server -------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = Received(self.command, self.path, {}, {k.lower(): v for k, v in self.headers.items()},
                                    body)
                fake.requests.append(received)
                if self.path != "/v1/chat/completions":
                    answer = Answer(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                else:
                    answer = fake._next()
                time.sleep(answer.delay)
                data = (answer.body(received) if callable(answer.body) else answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> "FakeLlm":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# The API key the engine must send, kept as the secret `llm_key` (settings: llm_api_key_secret="llm_key").
KEY = f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    """A running FakeLlm, with KEY available to the worker as the secret `llm_key`."""
    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LLM_KEY", KEY)
    with FakeLlm(model="fake-gpt-1-0613") as running:
        yield running
