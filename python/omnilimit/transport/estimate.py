"""What a request to an LLM API may cost in tokens, before it is sent: what a limiter with a token
budget reserves for it (``omnilimit.transport``).

OpenAI and Anthropic count a request against the tokens-per-minute budget on arrival by an
estimate of the same kind: the prompt (its characters, about four to a token) plus the output
cap (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``, times ``n`` choices).
So does this module:

- the prompt is every text the request sends the model: ``messages`` (and their content parts),
  ``system``, ``tools``, ``input`` and ``instructions`` (the Responses API), ``prompt`` (legacy
  completions). Strings count ``ceil(characters / CHARS_PER_TOKEN)``; each message adds
  ``MESSAGE_OVERHEAD`` tokens (its role and separators), as OpenAI's own counting does. With
  ``tiktoken`` installed and an encoding for the model, the prompt's strings are counted with it
  instead (cached per string, so a long system prompt sent again costs a dictionary look-up);
- the output is the request's cap times ``n``; a request without a cap adds nothing (the provider
  cannot charge what it does not know in advance; the settlement charges the real output later).

A body that is not JSON (or not an object) costs 0 tokens here: the request still takes a request
(and a slot); only its token reservation is empty.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

CHARS_PER_TOKEN = 4.0
"""OpenAI's rule of thumb (its rate-limit guide and tokenizer page): about 4 characters a token."""

MESSAGE_OVERHEAD = 4
"""Tokens each message costs besides its text (OpenAI's counting: 3 for the role and separators,
rounded up; Anthropic's is of the same order)."""

PROMPT_FIELDS = ("messages", "system", "tools", "input", "instructions", "prompt", "functions")
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def estimate_tokens(body: bytes | str | Mapping[str, Any] | None) -> int:
    """The tokens a request may cost: its prompt plus its output cap (see the module). ``body``
    is the request's JSON (bytes or text) or the decoded object."""
    request = _decoded(body)
    if request is None:
        return 0
    count = _counter(request.get("model"))
    prompt = 0
    for field in PROMPT_FIELDS:
        value = request.get(field)
        if value is None:
            continue
        prompt += sum(count(text) for text in _texts(value))
        if field == "messages" and isinstance(value, list):
            prompt += MESSAGE_OVERHEAD * len(value)
    return prompt + _output_cap(request)


def _decoded(body: bytes | str | Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, Mapping):
        return body
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _output_cap(request: Mapping[str, Any]) -> int:
    cap = 0
    for field in OUTPUT_CAPS:
        value = request.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            cap = max(cap, value)
    choices = request.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices > 1:
        cap *= choices
    return cap


def _texts(value: Any) -> Iterator[str]:
    """Every string in a prompt field, depth first (keys are not text the model reads, except in
    tool definitions, where the schema's property names are: those count their JSON)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        if "parameters" in value or "input_schema" in value:  # a tool: its schema is prompt text
            yield json.dumps(value, separators=(",", ":"))
            return
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def by_characters(text: str) -> int:
    """Tokens of ``text`` by the characters rule."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@functools.lru_cache(maxsize=64)
def _counter(model: object) -> Callable[[str], int]:
    """How to count a string's tokens for ``model``: its tiktoken encoding when tiktoken is
    installed and knows the model (with a cache of the strings counted), else the characters
    rule."""
    if not isinstance(model, str):
        return by_characters
    try:
        import tiktoken  # type: ignore[import-not-found]  # optional: pip install tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except Exception:  # not installed, unknown model, or its files cannot be fetched offline
        return by_characters

    @functools.lru_cache(maxsize=4096)
    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count
