"""omnilimit.transport.settle: what a finished request is charged, by its provider's rule."""

import warnings

import pytest
from helpers import need

from omnilimit.transport.settle import (
    KEEP_CHARGE,
    REFUND_UNUSED,
    charged,
    keep_charge,
    provider_rule,
    refund_unused,
    rule_named,
)


@pytest.mark.parametrize(
    ("estimate", "used", "kept", "refunded"),
    [
        (1000, 400, 1000, 400),  # used less: OpenAI keeps its charge, Anthropic gives the rest back
        (1000, 1500, 1500, 1500),  # used more: both charge it
        (1000, None, 1000, 1000),  # no usage: the estimate stands
        (0, 30, 30, 30),
    ],
)
def test_the_two_rules(estimate, used, kept, refunded):
    assert keep_charge(estimate, used) == kept
    assert refund_unused(estimate, used) == refunded


def request_to(make_client, call):
    """(host, path, headers) of the request the SDK sends for `call(client)`."""
    httpx2 = need("httpx2")
    seen = []

    def handler(request):
        seen.append((request.url.host, request.url.path, dict(request.headers)))
        return httpx2.Response(500, json={"error": {"message": "stop here"}})

    with pytest.raises(Exception):  # noqa: B017 - the SDK's own error for the 500
        call(make_client(httpx2.Client(transport=httpx2.MockTransport(handler))))
    return seen[0]


def deprecated_call(function, *args, **kwargs):
    """Calls an SDK method that warns it is deprecated (the suite turns warnings into errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return function(*args, **kwargs)


def test_each_sdk_request_gets_its_providers_rule():
    openai, anthropic = need("openai"), need("anthropic")
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    to_openai = request_to(
        lambda http: openai.OpenAI(api_key="k", http_client=http, max_retries=0),
        lambda client: client.chat.completions.create(**chat),
    )
    to_openrouter = request_to(
        lambda http: openai.OpenAI(
            api_key="k", base_url="https://openrouter.ai/api/v1", http_client=http, max_retries=0
        ),
        lambda client: client.chat.completions.create(**chat),
    )
    thread_message = request_to(  # OpenAI's Assistants API also has a .../messages path
        lambda http: openai.OpenAI(api_key="k", http_client=http, max_retries=0),
        lambda client: deprecated_call(client.beta.threads.messages.create, "thread_1", role="user", content="hi"),
    )
    to_anthropic = request_to(
        lambda http: anthropic.Anthropic(api_key="k", http_client=http, max_retries=0),
        lambda client: client.messages.create(max_tokens=5, **chat),
    )
    to_a_compatible_server = request_to(
        lambda http: anthropic.Anthropic(api_key="k", base_url="http://127.0.0.1:9", http_client=http, max_retries=0),
        lambda client: client.messages.create(max_tokens=5, **chat),
    )
    assert [provider_rule(*seen) for seen in (to_openai, to_openrouter, thread_message)] == [KEEP_CHARGE] * 3
    assert [provider_rule(*seen) for seen in (to_anthropic, to_a_compatible_server)] == [REFUND_UNUSED] * 2
    assert provider_rule("api.example.com", "/v1/messages", {}) == REFUND_UNUSED  # the path alone


def test_a_rule_is_named_or_a_function_and_what_it_returns_is_checked():
    assert rule_named("keep_charge") is keep_charge and rule_named(REFUND_UNUSED) is refund_unused
    assert rule_named(min)(3, 1) == 1
    with pytest.raises(ValueError, match="settle must be one of keep_charge, refund_unused"):
        rule_named("refund")
    assert charged(keep_charge, 10, 4) == 10
    for bad in (-1, 1.5, True, None, "5"):
        with pytest.raises(ValueError, match=r"whole number of tokens >= 0, got"):
            charged(lambda estimate, used, bad=bad: bad, 10, 4)
