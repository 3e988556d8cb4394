"""LLM drafting and planning through an OpenAI-compatible chat completions endpoint.

Configured by the FOLLOWTHROUGH_LLM_* settings; without a base URL nothing
here is used and every type drafts from its templates. The API key is a named
secret, read inside the activity that makes the call.
"""

from followthrough.llm.client import (
    LlmAnswerInvalid,
    LlmConfig,
    LlmError,
    LlmNotConfigured,
    LlmRefused,
    LlmUnavailable,
    LlmUsage,
    api_key,
    complete_json,
    complete_with_tools,
    llm_config,
)

__all__ = ["LlmAnswerInvalid", "LlmConfig", "LlmError", "LlmNotConfigured", "LlmRefused", "LlmUnavailable",
           "LlmUsage", "api_key", "complete_json", "complete_with_tools", "llm_config"]
