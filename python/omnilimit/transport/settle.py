"""How many tokens a finished request is charged, once its usage is known: the rule each provider
follows, which the limiter must follow too, or it believes in tokens the provider does not have.

- ``KEEP_CHARGE`` (OpenAI, and the APIs that copy it: Azure OpenAI, OpenRouter...): a request is
  counted on arrival by its estimate, and, as far as the headers show, that charge stands. Usage
  above the estimate is charged on top; usage below it gives nothing back. Refunding the rest
  sent 48% of a trial's requests into 429s (token_burst=600).
- ``REFUND_UNUSED`` (Anthropic): output tokens are adjusted to the real use at the end, so the
  unused part of the estimate comes back: the request is charged what it used.

Without a usage (an error body, a stream abandoned before its usage came) the estimate stands.
Where a response's headers say how many tokens remain, the limiter is capped at that
(``on_response``), whatever the rule said: the provider has the last word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

SettleRule = Callable[[int, "int | None"], int]
"""``rule(estimate, used) -> tokens charged``; ``used`` None when the response did not say."""


def keep_charge(estimate: int, used: int | None) -> int:
    """OpenAI's rule: the estimate charged on arrival stands; only more is charged extra."""
    return estimate if used is None else max(estimate, used)


def refund_unused(estimate: int, used: int | None) -> int:
    """Anthropic's rule: charged what was used."""
    return estimate if used is None else used


KEEP_CHARGE = "keep_charge"
REFUND_UNUSED = "refund_unused"
RULES: dict[str, SettleRule] = {KEEP_CHARGE: keep_charge, REFUND_UNUSED: refund_unused}


def provider_rule(host: str, path: str, request_headers: Mapping[str, str]) -> str:
    """The rule of the provider a request goes to: Anthropic's for its API (its host, its
    ``anthropic-version`` header, or a ``/v1/messages`` path on a compatible server), OpenAI's
    for everything else (OpenAI, and the many APIs that copy its)."""
    lowered = {name.lower() for name in request_headers}
    if (
        host.lower().endswith("anthropic.com")
        or "anthropic-version" in lowered
        or path.rstrip("/").endswith("/v1/messages")
    ):
        return REFUND_UNUSED
    return KEEP_CHARGE


def rule_named(rule: str | SettleRule) -> SettleRule:
    """A rule given by name (``keep_charge``, ``refund_unused``) or as ``rule(estimate, used)``.
    ValueError for another name."""
    if callable(rule):
        return rule
    if rule not in RULES:
        raise ValueError(
            f"settle must be one of {', '.join(RULES)} or a function (estimate, used) -> tokens, got {rule!r}"
        )
    return RULES[rule]


def charged(rule: SettleRule, estimate: int, used: int | None) -> int:
    """What ``rule`` charges, checked: a whole number of tokens >= 0 (ValueError otherwise, naming
    what the rule returned: a user's rule that returns garbage must not corrupt the budget)."""
    tokens = rule(estimate, used)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"a settle rule must return a whole number of tokens >= 0, got {tokens!r}")
    return tokens
