"""An OpenAI-compatible chat completions client that asks for one JSON object.

``POST {base_url}/chat/completions`` over httpx, with
``response_format={"type": "json_object"}``. Failures come out as LlmError
subclasses that say whether a retry can help: timeouts, 408/409/425/429 and
5xx are LlmUnavailable (honouring Retry-After), any other refusal is
LlmRefused, and an answer that is not the JSON object asked for is
LlmAnswerInvalid (retryable: the next sample may be fine).
"""

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from followthrough.domain import policies
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.infra.task_secrets import header_safe
from followthrough.config.settings import Settings

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
# A Retry-After beyond this is treated as this: a task should not sleep for hours on a header's say-so.
MAX_RETRY_AFTER_SECONDS = 600.0


class LlmError(Exception):
    error_type = "LlmError"
    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LlmUnavailable(LlmError):
    """Timed out, unreachable, rate limited or a server error: worth another attempt."""

    error_type = "LlmUnavailable"


class LlmRefused(LlmError):
    """The endpoint refused the request (bad key, unknown model, invalid request): retrying cannot help."""

    error_type = policies.LLM_REFUSED
    retryable = False


class LlmNotConfigured(LlmError):
    error_type = policies.LLM_NOT_CONFIGURED
    retryable = False


class LlmAnswerInvalid(LlmError):
    """The answer is not the JSON object asked for, or lacks what it must hold."""

    error_type = "LlmAnswerInvalid"


@dataclass(frozen=True)
class LlmConfig:
    base_url: str
    model: str
    api_key_secret: str = ""
    timeout_seconds: float = 30
    temperature: float | None = None


def llm_config(settings: Settings, task_type: str | None = None) -> LlmConfig | None:
    """The endpoint to use for ``task_type``; None when no LLM is configured or the type opts out."""
    if not settings.llm_base_url:
        return None
    options = settings.llm_types.get(task_type) if task_type else None
    if options is not None and not options.enabled:
        return None
    temperature = options.temperature if options and options.temperature is not None else settings.llm_temperature
    return LlmConfig(base_url=settings.llm_base_url.rstrip("/"),
                     model=(options.model if options and options.model else settings.llm_model),
                     api_key_secret=settings.llm_api_key_secret, timeout_seconds=settings.llm_timeout_seconds,
                     temperature=temperature)


def api_key(config: LlmConfig, secrets: SecretStore) -> str:
    """The key named by the settings, read now (inside the activity); empty when none is named."""
    if not config.api_key_secret:
        return ""
    try:
        key = secrets.get(config.api_key_secret)
    except SecretNotFound as err:
        raise LlmNotConfigured(f"LLM API key: {err}") from err
    if not header_safe(key):  # httpx would refuse it quoting the value; say what is wrong instead
        raise LlmNotConfigured(f"LLM API key: the secret {config.api_key_secret!r} cannot be sent in an HTTP "
                               f"header: it has a line break, a control or non-ASCII character, or surrounding "
                               f"whitespace (often a trailing newline); store the value without it")
    return key


@dataclass
class LlmUsage:
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float


async def _chat(http: httpx.AsyncClient, config: LlmConfig, key: str, body: dict[str, Any],
                timeout_seconds: float | None) -> tuple[dict[str, Any], dict[str, Any], LlmUsage]:
    """One chat completion request: the first choice, and what it cost; failures as LlmError."""
    url = f"{config.base_url}/chat/completions"
    body = {"model": config.model} | body
    if config.temperature is not None:
        body["temperature"] = config.temperature
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = timeout_seconds or config.timeout_seconds
    started = time.perf_counter()
    try:
        response = await http.post(url, json=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.TimeoutException as err:
        raise LlmUnavailable(f"LLM endpoint {url} did not answer within {timeout:g} s") from err
    except httpx.TransportError as err:
        raise LlmUnavailable(f"LLM endpoint {url} unreachable: {type(err).__name__}: {err}") from err
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    status = response.status_code
    if not 200 <= status < 300:
        message = f"LLM endpoint answered {status} {response.reason_phrase}".rstrip()
        detail = _error_detail(response, key)
        message += f": {detail}" if detail else ""
        if status >= 500 or status in RETRYABLE_STATUS:
            raise LlmUnavailable(message, retry_after=retry_after(response.headers.get("retry-after")))
        raise LlmRefused(message)
    try:
        data = response.json()
        choice = data["choices"][0]
        if not isinstance(choice["message"], dict):
            raise TypeError("message is not an object")
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise LlmAnswerInvalid(f"LLM answer is not a chat completion: {response.text[:200]!r}") from err
    if choice.get("finish_reason") == "length":
        raise LlmAnswerInvalid("LLM answer was cut off at the token limit")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return choice, data, LlmUsage(
        model=str(data.get("model") or config.model), prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")), latency_ms=latency_ms)


async def complete_json(http: httpx.AsyncClient, config: LlmConfig, key: str, messages: list[dict[str, str]],
                        timeout_seconds: float | None = None) -> tuple[dict[str, Any], LlmUsage]:
    """One chat completion; the JSON object the model answered and what it cost."""
    choice, data, usage = await _chat(http, config, key, {"messages": messages,
                                                           "response_format": {"type": "json_object"}},
                                       timeout_seconds)
    if "content" not in choice["message"]:
        raise LlmAnswerInvalid(f"LLM answer is not a chat completion: {str(data)[:200]!r}")
    content = choice["message"]["content"]
    if not isinstance(content, str):
        raise LlmAnswerInvalid("LLM answer has no text content")
    return parse_json_object(content), usage


async def complete_with_tools(http: httpx.AsyncClient, config: LlmConfig, key: str, messages: list[dict[str, Any]],
                              tools: list[dict[str, Any]],
                              timeout_seconds: float | None = None) -> tuple[dict[str, Any], LlmUsage]:
    """One chat completion offering ``tools`` (OpenAI function tools): the assistant message (its
    ``content`` and any ``tool_calls``) and what it cost."""
    body: dict[str, Any] = {"messages": messages}
    if tools:
        body["tools"] = tools
    choice, _data, usage = await _chat(http, config, key, body, timeout_seconds)
    message = choice["message"]
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if content is not None and not isinstance(content, str) or not isinstance(calls, list):
        raise LlmAnswerInvalid("LLM answer's message is malformed")
    checked = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise LlmAnswerInvalid(f"LLM answer has a malformed tool call: {str(call)[:200]!r}")
        arguments = function.get("arguments")
        checked.append({"id": str(call.get("id") or ""), "type": "function",
                        "function": {"name": function["name"],
                                     "arguments": arguments if isinstance(arguments, str) else
                                     json.dumps(arguments if arguments is not None else {})}})
    if not checked and not content:
        raise LlmAnswerInvalid("LLM answer has neither text nor tool calls")
    return {"role": "assistant", "content": content, "tool_calls": checked}, usage


FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def parse_json_object(content: str) -> dict[str, Any]:
    """The JSON object in a model's answer, tolerating code fences and words around it."""
    text = FENCE.sub("", content.strip())
    candidates = [text]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise LlmAnswerInvalid(f"LLM answer is not a JSON object: {content[:200]!r}")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None without one."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _error_detail(response: httpx.Response, key: str) -> str:
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else str(error or "")
    except (ValueError, AttributeError):
        text = response.text
    text = (text or "").strip()[:300]
    return text.replace(key, "***") if key else text


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
