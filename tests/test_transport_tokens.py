"""omnilimit.transport's token accounting: what a request may cost (estimate) and what a response
says it used (usage), on the bodies the real openai and anthropic SDKs send and receive."""

import json
import math
import sys
import types

import pytest
from helpers import need

from omnilimit.transport import estimate
from omnilimit.transport.estimate import CHARS_PER_TOKEN, MESSAGE_OVERHEAD, estimate_tokens
from omnilimit.transport.usage import StreamUsage, usage_of, usage_of_body


def chars(*texts):
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts)


def sent_by(make_client, call):
    """The JSON body the SDK sends for `call(client)`, caught by a mock transport of httpx2."""
    httpx2 = need("httpx2")
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx2.Response(500, json={"error": {"message": "stop here"}})

    client = make_client(httpx2.Client(transport=httpx2.MockTransport(handler)))
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises its own error for the 500
        call(client)
    return bodies[0]


def test_an_openai_chat_request_costs_its_prompt_plus_its_output_cap_times_n():
    openai = need("openai")
    system, question = "You are terse. " * 20, "What is GCRA? " * 30
    body = sent_by(
        lambda http: openai.OpenAI(api_key="k", http_client=http, max_retries=0),
        lambda client: client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_completion_tokens=300,
            n=2,
        ),
    )
    expected = chars("system", system, "user", question) + 2 * MESSAGE_OVERHEAD + 300 * 2
    assert estimate_tokens(json.dumps(body).encode()) == expected
    assert estimate_tokens(body) == expected  # a decoded body too


def test_an_anthropic_request_counts_system_content_parts_and_tool_schemas():
    anthropic = need("anthropic")
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    body = sent_by(
        lambda http: anthropic.Anthropic(api_key="k", http_client=http, max_retries=0),
        lambda client: client.messages.create(
            model="claude-sonnet-4-5",
            system="Answer in French.",
            tools=[tool],
            messages=[{"role": "user", "content": [{"type": "text", "text": "Quel temps fait-il ? " * 10}]}],
            max_tokens=512,
        ),
    )
    tool_text = json.dumps(body["tools"][0], separators=(",", ":"))
    prompt = chars("Answer in French.", tool_text, "user", "text", "Quel temps fait-il ? " * 10) + MESSAGE_OVERHEAD
    assert estimate_tokens(json.dumps(body)) == prompt + 512


def test_the_responses_api_counts_input_instructions_and_max_output_tokens():
    body = {"model": "gpt-4.1", "instructions": "Be brief.", "input": "Explain GCRA. " * 10, "max_output_tokens": 64}
    assert estimate_tokens(body) == chars("Be brief.", "Explain GCRA. " * 10) + 64


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b"\xff\xfe", None, b'{"max_tokens": true}'])
def test_a_body_that_is_not_a_request_costs_nothing(body):
    assert estimate_tokens(body) == 0


def test_tiktoken_counts_when_it_knows_the_model_and_each_string_is_encoded_once(monkeypatch):
    encoded = []

    class Encoding:
        def encode(self, text, disallowed_special=()):
            encoded.append(text)
            return text.split()  # one "token" a word

    fake = types.ModuleType("tiktoken")
    fake.encoding_for_model = lambda model: Encoding() if model == "known" else (_ for _ in ()).throw(KeyError(model))
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    estimate._counter.cache_clear()
    try:
        long_prompt = "word " * 5000
        request = {"model": "known", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 10}
        assert estimate_tokens(request) == 1 + 5000 + MESSAGE_OVERHEAD + 10
        assert estimate_tokens(request) == 1 + 5000 + MESSAGE_OVERHEAD + 10
        assert encoded.count(long_prompt) == 1  # the second time, from the cache
        unknown = {"model": "unknown", "messages": [{"role": "user", "content": long_prompt}]}
        assert estimate_tokens(unknown) == chars("user", long_prompt) + MESSAGE_OVERHEAD  # the characters rule
    finally:
        estimate._counter.cache_clear()


# ---- usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "tokens"),
    [
        (
            {"object": "chat.completion", "usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}},
            42,
        ),
        ({"object": "chat.completion", "usage": {"prompt_tokens": 12, "completion_tokens": 30}}, 42),
        ({"object": "response", "usage": {"input_tokens": 7, "output_tokens": 5, "total_tokens": 12}}, 12),
        (
            {
                "type": "message",
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 4, "output_tokens": 20},
            },
            34,
        ),
        ({"error": {"message": "rate limited"}}, None),
        ({"usage": "garbage"}, None),
        ({"usage": {"prompt_tokens": -3}}, None),
    ],
)
def test_the_usage_of_a_json_response(response, tokens):
    assert usage_of(response) == tokens
    assert usage_of_body(json.dumps(response).encode()) == tokens


def sse(*events):
    return b"".join(b"event: x\ndata: " + json.dumps(event).encode() + b"\n\n" for event in events)


ANTHROPIC_STREAM = sse(
    {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}},
    {"type": "content_block_delta", "delta": {"text": "Bonjour"}},
    {"type": "message_delta", "usage": {"output_tokens": 15}},
    {"type": "message_delta", "usage": {"output_tokens": 40}},
    {"type": "message_stop"},
)
OPENAI_STREAM = (
    sse({"object": "chat.completion.chunk", "choices": [{"delta": {"content": "Hi"}}], "usage": None})
    + sse({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    + b"data: [DONE]\n\n"
)
RESPONSES_STREAM = sse(
    {"type": "response.output_text.delta", "delta": "Hi"},
    {"type": "response.completed", "response": {"usage": {"input_tokens": 8, "output_tokens": 2, "total_tokens": 10}}},
)


@pytest.mark.parametrize(("stream", "tokens"), [(ANTHROPIC_STREAM, 65), (OPENAI_STREAM, 12), (RESPONSES_STREAM, 10)])
def test_a_stream_reports_its_usage_however_its_bytes_are_cut(stream, tokens):
    for cut in range(1, len(stream)):
        usage = StreamUsage()
        usage.feed(stream[:cut])
        usage.feed(stream[cut:])
        usage.close()
        assert usage.tokens == tokens, cut
    one_byte_at_a_time = StreamUsage()
    for byte in range(len(stream)):
        one_byte_at_a_time.feed(stream[byte : byte + 1])
    assert one_byte_at_a_time.tokens == tokens


def test_a_stream_abandoned_before_its_usage_says_nothing_or_what_it_said_so_far():
    usage = StreamUsage()
    usage.feed(OPENAI_STREAM[: OPENAI_STREAM.index(b"prompt_tokens")])
    assert usage.tokens is None
    anthropic = StreamUsage()
    anthropic.feed(ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"40")])
    assert anthropic.tokens == 25 + 15  # the output so far
    crlf = StreamUsage()
    crlf.feed(RESPONSES_STREAM.replace(b"\n", b"\r\n"))
    assert crlf.tokens == 10
