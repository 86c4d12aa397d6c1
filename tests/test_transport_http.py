"""omnilimit.transport's transports (for httpx2 and httpx) under the real openai and anthropic
SDKs, with only ``http_client=`` changed; the network is a MockTransport standing in for the
provider."""

import asyncio
import gc
import gzip
import json
import pickle
import time

import pytest
from helpers import need

from omnilimit import ConcurrencyLimiter, LimiterClosed, LimiterTimeout, RateLimiter
from omnilimit.transport.estimate import estimate_tokens

httpx2 = need("httpx2")
openai = need("openai")
anthropic = need("anthropic")

from omnilimit.transport.httpx2 import AsyncLimitedTransport, LimitedTransport  # noqa: E402 - after the check that httpx2 exists

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi. " * 50}], "max_tokens": 200}
MESSAGE = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Say hi. " * 50}], "max_tokens": 200}


SDK_ERROR = {"openai": "OpenAIError", "anthropic": "AnthropicError"}


def create_of(client):
    return (
        client.messages.create
        if hasattr(client, "messages") and not hasattr(client, "chat")
        else client.chat.completions.create
    )


def chat_json(used):
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": used - 10, "completion_tokens": 10, "total_tokens": used},
    }


def message_json(used):
    return {
        "id": "m1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": used - 10, "output_tokens": 10},
    }


def openai_client(limiter, handler, max_retries=0, **options):
    transport = LimitedTransport(limiter, httpx2.MockTransport(handler), **options)
    return openai.OpenAI(
        api_key="k", http_client=openai.DefaultHttpxClient(transport=transport), max_retries=max_retries
    )


def anthropic_client(limiter, handler, max_retries=0, **options):
    transport = LimitedTransport(limiter, httpx2.MockTransport(handler), **options)
    return anthropic.Anthropic(
        api_key="k", http_client=anthropic.DefaultHttpxClient(transport=transport), max_retries=max_retries
    )


SDKS = {"openai": (openai_client, openai, CHAT), "anthropic": (anthropic_client, anthropic, MESSAGE)}


def test_openais_charge_stands_and_anthropics_unused_tokens_come_back():
    estimate = estimate_tokens(CHAT)
    assert estimate > 60
    rate = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    openai_client(rate, lambda request: httpx2.Response(200, json=chat_json(60))).chat.completions.create(**CHAT)
    assert rate.get_current_tpm() == estimate  # used 60: the estimate charged on arrival stands
    rate2 = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    anthropic_client(rate2, lambda request: httpx2.Response(200, json=message_json(60))).messages.create(**MESSAGE)
    assert rate2.get_current_tpm() == 60  # Anthropic gives the unused output back
    full = 10**5
    assert rate2.token_budget_available() > full - estimate  # the refund reached the bucket


def test_a_gzip_body_is_read_for_its_usage():
    def handler(request):
        body = gzip.compress(json.dumps(chat_json(5000)).encode())
        return httpx2.Response(
            200, content=body, headers={"content-encoding": "gzip", "content-type": "application/json"}
        )

    rate = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    reply = openai_client(rate, handler).chat.completions.create(**CHAT)
    assert reply.choices[0].message.content == "hi"  # the SDK got the body untouched
    assert rate.get_current_tpm() == 5000  # more than the estimate: charged extra


def test_a_slot_is_held_for_the_response_and_freed_after():
    slots = ConcurrencyLimiter(2, name="transport")
    seen = []

    def handler(request):
        seen.append(slots.active_calls)
        return httpx2.Response(200, json=chat_json(60))

    client = openai_client(slots, handler)
    client.chat.completions.create(**CHAT)
    assert seen == [1] and slots.active_calls == 0 and slots.total_requests == 1


def sse_stream(n_events):
    chunks = [
        b"data: "
        + json.dumps(
            {
                "object": "chat.completion.chunk",
                "id": "c",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": f"w{i}"}}],
            }
        ).encode()
        + b"\n\n"
        for i in range(n_events)
    ]
    usage = {
        "object": "chat.completion.chunk",
        "id": "c",
        "created": 0,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 100, "completion_tokens": 900, "total_tokens": 1000},
    }
    return [*chunks, b"data: " + json.dumps(usage).encode() + b"\n\n", b"data: [DONE]\n\n"]


def stream_handler(request):
    return httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx2.ByteStream(b"".join(sse_stream(5)))
    )


def test_a_stream_holds_its_slot_until_closed_and_settles_from_its_last_event():
    slots = ConcurrencyLimiter(2, name="stream")
    client = openai_client(slots, stream_handler)
    stream = client.chat.completions.create(stream=True, **CHAT)
    assert slots.active_calls == 1
    words = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert words == [f"w{i}" for i in range(5)]
    assert slots.active_calls == 0  # read to the end: closed by the SDK

    rate = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    for _ in openai_client(rate, stream_handler).chat.completions.create(stream=True, **CHAT):
        pass
    assert rate.get_current_tpm() == max(1000, estimate_tokens(CHAT))


def test_an_abandoned_stream_frees_its_slot():
    slots = ConcurrencyLimiter(1, name="abandoned")
    client = openai_client(slots, stream_handler)
    stream = client.chat.completions.create(stream=True, **CHAT)
    next(iter(stream))
    assert slots.active_calls == 1
    del stream
    gc.collect()
    assert slots.active_calls == 0 and slots.over_release_count == 0


def test_a_429_pauses_the_limiter_and_reaches_the_caller():
    rate = RateLimiter(6000, burst_size=10)
    client = openai_client(
        rate,
        lambda request: httpx2.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow down"}}),
    )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**CHAT)
    assert rate.paused_for > 1.0 and rate.rate_limited_count == 1


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_the_sdks_retry_of_a_429_acquires_again_after_the_pause(sdk):
    """The SDK retries a 429 itself; the retry passes through the transport again: it takes the
    limiter again, and not before the pause the 429 started is over. The 429 says when the budget
    is full again (1 s) but has no Retry-After, so the SDK's own back-off is its default (0.5 s
    at most on a first retry): the 1 s between the two requests is the limiter's."""
    rate = RateLimiter(6000, burst_size=10, provider_name=f"retried-{sdk}")
    sent = []

    def answer(request):
        sent.append(time.monotonic())
        if len(sent) == 1:
            budget = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
            return httpx2.Response(429, headers=budget, json={"error": {"message": "slow down"}})
        return httpx2.Response(200, json=chat_json(60) if sdk == "openai" else message_json(60))

    make, _, arguments = SDKS[sdk]
    create_of(make(rate, answer, max_retries=1))(**arguments)
    assert len(sent) == 2 and rate.total_requests == 2 and rate.rate_limited_count == 1
    assert sent[1] - sent[0] >= 0.95


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_refusal_raises_limiter_timeout_through_the_sdk_unwrapped_and_not_retried(sdk):
    """The anthropic SDK wraps what a transport raises in APIConnectionError and retries it; the
    refusal is also the SDK's own error, which both SDKs let through as it is."""
    slots = ConcurrencyLimiter(1, name="refused")
    assert slots.acquire(timeout=0)
    sent = []
    make, sdk_module, arguments = SDKS[sdk]
    client = make(
        slots,
        lambda request: sent.append(request) or httpx2.Response(200, json=chat_json(1)),
        max_retries=3,
        timeout=0.05,
    )
    with pytest.raises(LimiterTimeout, match=r"after 0\.05s") as raised:
        create_of(client)(**arguments)
    assert isinstance(raised.value, sdk_module.__dict__[SDK_ERROR[sdk]]) and raised.value.__cause__ is None
    assert sent == [] and slots.active_calls == 1
    assert slots.blocked_count == 1  # refused once: the SDK did not retry it (max_retries=3)
    slots.close()
    with pytest.raises(LimiterClosed) as closed:
        create_of(client)(**arguments)
    assert isinstance(closed.value, sdk_module.__dict__[SDK_ERROR[sdk]]) and sent == []


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_an_async_refusal_is_not_retried_either(sdk):
    slots = ConcurrencyLimiter(1, name="refused-async")
    assert slots.acquire(timeout=0)
    transport = AsyncLimitedTransport(slots, httpx2.MockTransport(lambda request: httpx2.Response(500)), timeout=0.05)
    if sdk == "openai":
        client = openai.AsyncOpenAI(
            api_key="k", http_client=openai.DefaultAsyncHttpxClient(transport=transport), max_retries=3
        )
    else:
        client = anthropic.AsyncAnthropic(
            api_key="k", http_client=anthropic.DefaultAsyncHttpxClient(transport=transport), max_retries=3
        )

    async def main():
        with pytest.raises(LimiterTimeout):
            await create_of(client)(**SDKS[sdk][2])

    asyncio.run(main())
    assert slots.blocked_count == 1


def test_the_wrong_packages_client_or_transport_is_a_clear_error():
    httpx = need("httpx")
    slots = ConcurrencyLimiter(1, name="wrong")
    with pytest.raises(TypeError, match=r"must be an httpx2\.BaseTransport, got httpx\..*omnilimit\.transport\.httpx"):
        LimitedTransport(slots, httpx.HTTPTransport())
    with pytest.raises(TypeError, match=r"a CombinedLimiter or a \(manager, role\) pair, got str"):
        LimitedTransport("openai")
    with pytest.raises(ValueError, match="timeout"):
        LimitedTransport(slots, timeout=-1)
    with pytest.raises(TypeError, match=r"must be an httpx2\.AsyncBaseTransport, got httpx2\.HTTPTransport"):
        AsyncLimitedTransport(slots, httpx2.HTTPTransport())
    # A transport in a client of the other kind: the request cannot be sent, and it says why.
    sync_client = openai.OpenAI(
        api_key="k", http_client=httpx2.Client(transport=AsyncLimitedTransport(slots)), max_retries=0
    )
    with pytest.raises(Exception, match="AsyncLimitedTransport is for an async client") as raised:
        sync_client.chat.completions.create(**CHAT)
    assert slots.active_calls == 0 and raised.type is not AssertionError
    # A client of the httpx package: its requests are not httpx2's.
    other_package = openai.OpenAI(
        api_key="k", http_client=httpx.Client(transport=LimitedTransport(slots)), max_retries=0
    )
    with pytest.raises(TypeError, match="client is not an httpx2 client"):
        other_package.chat.completions.create(**CHAT)
    assert slots.active_calls == 0


# ---- asyncio ----------------------------------------------------------------------------------------


def async_openai(limiter, handler, **options):
    transport = AsyncLimitedTransport(limiter, httpx2.MockTransport(handler), **options)
    return openai.AsyncOpenAI(
        api_key="k", http_client=openai.DefaultAsyncHttpxClient(transport=transport), max_retries=0
    )


def test_asyncio_tasks_share_the_slots_and_free_them():
    import asyncio

    slots = ConcurrencyLimiter(3, name="async")
    in_flight, most = [0], [0]

    async def handler(request):
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0.01)
        in_flight[0] -= 1
        return httpx2.Response(200, json=chat_json(60))

    async def main():
        client = async_openai(slots, handler)
        replies = await asyncio.gather(*(client.chat.completions.create(**CHAT) for _ in range(40)))
        return [reply.choices[0].message.content for reply in replies]

    assert asyncio.run(main()) == ["hi"] * 40
    assert most[0] == 3 and slots.active_calls == 0 and slots.total_requests == 40


def test_an_async_anthropic_client_settles_by_anthropics_rule_and_an_async_stream_holds_its_slot():
    import asyncio

    rate = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    slots = ConcurrencyLimiter(1, name="async-stream")

    async def main():
        transport = AsyncLimitedTransport(
            rate, httpx2.MockTransport(lambda request: httpx2.Response(200, json=message_json(60)))
        )
        client = anthropic.AsyncAnthropic(
            api_key="k", http_client=anthropic.DefaultAsyncHttpxClient(transport=transport), max_retries=0
        )
        await client.messages.create(**MESSAGE)
        streaming = async_openai(slots, stream_handler)
        stream = await streaming.chat.completions.create(stream=True, **CHAT)
        held = slots.active_calls
        words = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        return held, words

    held, words = asyncio.run(main())
    assert rate.get_current_tpm() == 60
    assert held == 1 and words == [f"w{i}" for i in range(5)] and slots.active_calls == 0


# ---- the httpx package: the same transports ------------------------------------------------------


def test_the_httpx_packages_transports_under_the_openai_sdk():
    import asyncio

    httpx = need("httpx")
    from omnilimit.transport import httpx as for_httpx

    rate = RateLimiter(6000, burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    transport = for_httpx.LimitedTransport(
        rate, httpx.MockTransport(lambda request: httpx.Response(200, json=chat_json(60)))
    )
    client = openai.OpenAI(api_key="k", http_client=httpx.Client(transport=transport), max_retries=0)
    assert client.chat.completions.create(**CHAT).choices[0].message.content == "hi"
    assert rate.get_current_tpm() == estimate_tokens(CHAT)  # OpenAI's rule, as with httpx2

    slots = ConcurrencyLimiter(2, name="httpx-stream")
    streaming = for_httpx.LimitedTransport(
        slots,
        httpx.MockTransport(
            lambda request: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(b"".join(sse_stream(3)))
            )
        ),
    )
    stream = openai.OpenAI(
        api_key="k", http_client=httpx.Client(transport=streaming), max_retries=0
    ).chat.completions.create(stream=True, **CHAT)
    assert slots.active_calls == 1
    assert [chunk.choices[0].delta.content for chunk in stream if chunk.choices] == ["w0", "w1", "w2"]
    assert slots.active_calls == 0

    async def main():
        async_transport = for_httpx.AsyncLimitedTransport(
            slots, httpx.MockTransport(lambda request: httpx.Response(200, json=chat_json(60)))
        )
        aclient = openai.AsyncOpenAI(
            api_key="k", http_client=httpx.AsyncClient(transport=async_transport), max_retries=0
        )
        return await asyncio.gather(*(aclient.chat.completions.create(**CHAT) for _ in range(10)))

    assert len(asyncio.run(main())) == 10 and slots.active_calls == 0 and slots.total_requests == 11
    with pytest.raises(TypeError, match=r"must be an httpx\.BaseTransport, got httpx2\..*omnilimit\.transport\.httpx2"):
        for_httpx.LimitedTransport(slots, httpx2.HTTPTransport())
    wrong = openai.OpenAI(
        api_key="k", http_client=httpx2.Client(transport=for_httpx.LimitedTransport(slots)), max_retries=0
    )
    with pytest.raises(TypeError, match="the client is not an httpx client"):
        wrong.chat.completions.create(**CHAT)


# ---- the other limiters: combined, and a manager's role ----------------------------------------


def test_a_combined_limiter_holds_a_slot_and_settles_its_tokens():
    from omnilimit import CombinedLimiter

    combined = CombinedLimiter(2, 6000, name="combined", burst_size=10, tokens_per_minute=10**6, token_burst=10**5)
    seen = []

    def handler(request):
        seen.append(combined.active_calls)
        return httpx2.Response(200, json=message_json(60))

    anthropic_client(combined, handler).messages.create(**MESSAGE)
    assert seen == [1] and combined.active_calls == 0 and combined.over_release_count == 0
    assert combined.rate.total_requests == 1 and combined.rate.get_current_tpm() == 60  # refunded: Anthropic


def test_a_manager_and_a_role_name_the_limiter():
    from omnilimit import ProviderRateLimitManager

    manager = ProviderRateLimitManager.from_config(
        {"providers": {"writer": {"name": "openai", "max_concurrent_calls": 2}, "judge": {"name": "openai"}}}
    )
    seen = []

    def handler(request):
        seen.append(manager.limiter_for("writer").active_calls)
        return httpx2.Response(200, json=chat_json(60))

    openai_client((manager, "writer"), handler).chat.completions.create(**CHAT)
    assert seen == [1] and manager.limiter_for("writer").total_requests == 1
    with pytest.raises(KeyError, match="unknown role 'reader'"):
        LimitedTransport((manager, "reader"))
    with pytest.raises(TypeError, match=r"a \(manager, role\) pair needs"):
        LimitedTransport((object(), "writer"))


def test_a_refusal_in_a_request_of_no_known_sdk_is_raised_as_it_is():
    from omnilimit.transport.refusal import through_sdk

    error = LimiterTimeout("Rate limit timeout after 1s for x")
    assert through_sdk(error, {"user-agent": "python-httpx2/1.0"}) is error
    assert through_sdk(error, {}) is error
    joined = through_sdk(error, {"user-agent": "AsyncOpenAI/Python 3.57.0"})
    assert isinstance(joined, LimiterTimeout) and isinstance(joined, openai.OpenAIError)
    assert type(joined).__name__ == "LimiterTimeout" and joined.args == error.args
    assert type(through_sdk(error, {"user-agent": "OpenAI/Python 3"})) is type(joined)  # one class, made once
    sent_back = pickle.loads(pickle.dumps(joined))  # e.g. from a process pool's worker: the plain error
    assert type(sent_back) is LimiterTimeout and sent_back.args == error.args
