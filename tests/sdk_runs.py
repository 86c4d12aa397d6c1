"""The runs of ``test_acceptance_transport.py``: the real openai and anthropic SDKs, built as a
user builds them with only ``http_client=`` changed (``make_client``), called in a loop by threads
(``drive_threads``) or asyncio tasks (``drive_tasks``) against an ``llm_standin.LLMStandIn`` until
the limiter is closed; ``Run.figures()`` reads what the provider saw."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from helpers import need
from llm_standin import LLMStandIn, per_second

from omnilimit import LimiterClosed

openai = need("openai")
anthropic = need("anthropic")
httpx2 = need("httpx2")
from omnilimit.transport.httpx2 import AsyncLimitedTransport, LimitedTransport  # noqa: E402

MESSAGES = [{"role": "user", "content": "Summarise the plot of Hamlet in one sentence, in plain English."}]
MAX_TOKENS = 400
CHARGE = 15 + MAX_TOKENS  # what the stand-in charges at arrival: llm_wire.prompt_tokens(MESSAGES) + max_tokens
THREADS, TASKS = 64, 500


# ------------------------------------------------------------------------------------------------
# The clients, as a user builds them


def make_client(api: str, provider: LLMStandIn, limiter: Any, asynchronous: bool = False, **options: Any) -> Any:
    """``OpenAI`` / ``Anthropic`` (or their async clients) with only ``http_client=`` changed."""
    sdk = openai if api == "openai" else anthropic
    transport = (AsyncLimitedTransport if asynchronous else LimitedTransport)(limiter, **options)
    http_client = getattr(sdk, "DefaultAsyncHttpxClient" if asynchronous else "DefaultHttpxClient")(transport=transport)
    kind = ("Async" if asynchronous else "") + ("OpenAI" if api == "openai" else "Anthropic")
    base_url = provider.base_url if api == "openai" else provider.anthropic_url
    return getattr(sdk, kind)(base_url=base_url, api_key="x", http_client=http_client)


def arguments(api: str, stream: bool) -> dict[str, Any]:
    model = "gpt-4o-mini" if api == "openai" else "claude-haiku-4-5"
    found: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    if stream:
        found["stream"] = True
        if api == "openai":  # without it OpenAI sends no usage: the estimate is settled
            found["stream_options"] = {"include_usage": True}
    return found


def create(client: Any, api: str) -> Any:
    return client.chat.completions.create if api == "openai" else client.messages.create


def call(client: Any, api: str, stream: bool) -> None:
    answer = create(client, api)(**arguments(api, stream))
    if stream:
        with answer:
            for _ in answer:
                pass


async def call_async(client: Any, api: str, stream: bool) -> None:
    answer = await create(client, api)(**arguments(api, stream))
    if stream:
        async with answer:
            async for _ in answer:
                pass


# ------------------------------------------------------------------------------------------------
# A run


@dataclass
class Run:
    provider: LLMStandIn
    closed_at: float = 0.0
    sdk_errors: list[str] = field(default_factory=list)

    def span(self, start: float | None = None) -> tuple[float, float]:
        times = self.provider.served_times
        return (times[0] if start is None else start), self.closed_at

    def figures(self, start: float | None = None) -> dict[str, Any]:
        """What the provider saw, over ``[start (default: the first admission), the close)``."""
        provider = self.provider
        first, end = self.span(start)
        served = [t for t in provider.served_times if first <= t < end]
        tokens = sum(tokens for t, tokens in provider.charges if first <= t < end)
        rejected = len(provider.rejected_times)
        limits = provider.limits
        rps, tps = per_second(limits["rpm"]), per_second(limits["tpm"])
        duration = end - first
        return {
            "D_s": round(duration, 3),
            "served": len(served),
            "http_429": rejected,
            "share_429": rejected / max(1, provider.ok_count + rejected),
            "requests_ratio": len(served) / (rps * duration) if rps else None,
            "tokens_ratio": tokens / (tps * duration) if tps else None,
            "rejected_by": provider.rejected_by,
            "per_window": provider.served_per_second(),
            "sdk_errors": len(self.sdk_errors),
        }


def drive_threads(api: str, provider: LLMStandIn, limiter: Any, stream: bool, seconds: float, **options: Any) -> Run:
    """``THREADS`` threads loop on the SDK until the limiter is closed, ``seconds`` from now."""
    run = Run(provider)
    client = make_client(api, provider, limiter, **options)
    sdk = openai if api == "openai" else anthropic

    def worker() -> None:
        while True:
            try:
                call(client, api, stream)
            except LimiterClosed:
                return
            except sdk.APIError as error:  # e.g. a 429 after the SDK's retries: reported, not fatal
                run.sdk_errors.append(repr(error))

    workers = [threading.Thread(target=worker, name=f"sdk-client-{i}") for i in range(THREADS)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    run.closed_at = time.monotonic()
    limiter.close()
    for w in workers:
        w.join(timeout=60)
    client.close()
    assert not any(w.is_alive() for w in workers), "a client thread is stuck"
    return run


def drive_tasks(api: str, provider: LLMStandIn, limiter: Any, stream: bool, seconds: float, **options: Any) -> Run:
    """``TASKS`` asyncio tasks loop on the async SDK until the limiter is closed, ``seconds`` from now."""
    run = Run(provider)
    sdk = openai if api == "openai" else anthropic

    async def main() -> None:
        client = make_client(api, provider, limiter, True, **options)

        async def worker() -> None:
            while True:
                try:
                    await call_async(client, api, stream)
                except LimiterClosed:
                    return
                except sdk.APIError as error:
                    run.sdk_errors.append(repr(error))

        tasks = [asyncio.ensure_future(worker()) for _ in range(TASKS)]
        await asyncio.sleep(seconds)
        run.closed_at = time.monotonic()
        limiter.close()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        await client.close()

    asyncio.run(main())
    return run


DRIVERS = {"threads": drive_threads, "tasks": drive_tasks}


def report(name: str, figures: dict[str, Any]) -> str:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
    line = f"[{name}] {shown}"
    print(line)
    return line
