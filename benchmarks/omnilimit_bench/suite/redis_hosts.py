"""Section 10, Redis: one budget across hosts. omnilimit's limiters with ``backend="redis://..."``
against the peers' Redis limiters and redis-py's PING, per decision (time, round trips, server
commands) and with threads sharing each limiter."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NamedTuple

import omnilimit
from omnilimit._shown import redact
from omnilimit.backends.redis_link import keys_for
from omnilimit.spec import name_for_key

from .. import peers
from .per_call import times_per_call
from .processes import (
    CONCURRENCY_PAIR,
    RATE_DECISION,
    TOKEN_DECISION,
    _add_skipped,
    _checked,
    _pair_without_waiting,
    _segment_numbers,
)
from .settings import HUGE, Impls, Settings

# --- 10: Redis: one budget across hosts ------------------------------------------------------------

REDIS_ENV_VAR = "OMNILIMIT_BENCH_REDIS"  # the default of ``omnilimit bench --redis URL``
ROUND_TRIP = "round trip"
NO_LIMITER = "(no limiter)"


def redis_problem(url: str | None) -> str | None:
    """Why section 10 cannot run against `url` (none given, no redis-py, no server answering), or
    None when it can."""
    if not url:
        return f"no Redis server given: omnilimit bench --redis redis://HOST:6379/0 (or {REDIS_ENV_VAR}=URL)"
    if "+cluster://" in url:
        return f"{redact(url)} names a Redis Cluster: this section measures one server (redis:// or rediss://)"
    try:
        import redis
    except ImportError:
        return "redis-py is not installed: pip install 'omnilimit[redis]'"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError, OSError) as error:
        return f"no Redis answering at {redact(url)} ({type(error).__name__}: {error})"
    return None


class _RedisCase(NamedTuple):
    """One limiter of section 10, built: ``decide()`` is one decision (True: admitted)."""

    call: str  # RATE_DECISION, TOKEN_DECISION, CONCURRENCY_PAIR or ROUND_TRIP
    impl: str
    api: str
    decide: Callable[[], Any]
    api_in_threads: str  # what the threads of the multi-thread run call (see peers.RateDecider)
    decide_in_threads: Callable[[], Any]


@contextmanager
def _redis_cases(impls: Impls, url: str, slots: int) -> Iterator[tuple[Any, list[_RedisCase]]]:
    """Yields (a client of the server, every limiter of section 10 on it); on the way out, whatever
    happened, closes them and deletes every key they made."""
    import redis

    client = redis.Redis.from_url(url)
    name = f"bench-{os.getpid()}-{next(_segment_numbers)}"  # omnilimit's limiters: keys omnilimit:{NAME}:...
    closers: list[Callable[[], None]] = []
    try:
        rate = omnilimit.RateLimiter(HUGE, burst_size=HUGE, provider_name=name, backend=url)
        tokens = omnilimit.RateLimiter(
            HUGE, burst_size=HUGE, provider_name=name + "-tokens", backend=url, tokens_per_minute=HUGE, token_burst=HUGE
        )
        closers.append(tokens.close)
        pair = omnilimit.ConcurrencyLimiter(slots, name=name, backend=url)
        closers.append(pair.close)
        leased = omnilimit.RateLimiter(
            HUGE, burst_size=HUGE, provider_name=name + "-lease", backend=url, coordination="lease"
        )
        closers.append(leased.close)
        ours = (
            (ROUND_TRIP, f"redis-py {redis.__version__} {NO_LIMITER}", "ping()", client.ping),
            (RATE_DECISION, "omnilimit", "acquire(timeout=0)", partial(rate.acquire, 0)),
            (RATE_DECISION, "omnilimit, coordination lease", "acquire(timeout=0)", partial(leased.acquire, 0)),
            (TOKEN_DECISION, "omnilimit", "acquire(timeout=0, tokens=100)", partial(tokens.acquire, 0, 100)),
            (CONCURRENCY_PAIR, "omnilimit", "acquire(timeout=0); release()", _pair_without_waiting(pair)),
        )
        cases = [_RedisCase(call, impl, api, decide, api, decide) for call, impl, api, decide in ours]
        found, skipped = peers.redis_rate_deciders(HUGE, HUGE, url)
        closers += [decider.close for decider in found]
        _add_skipped(impls, skipped)
        for d in found:
            in_threads = (d.call_in_threads, d.decide_in_threads) if d.decide_in_threads else (d.call, d.decide)
            cases.append(_RedisCase(RATE_DECISION, d.name, d.call, d.decide, *in_threads))
        yield client, cases
    finally:
        try:
            for close in closers:
                close()
        finally:
            client.delete(
                *keys_for("rate", name_for_key(name)),
                *keys_for("sem", name_for_key(name)),
                *keys_for("tokens", name_for_key(name + "-tokens")),
                *keys_for("lease", name_for_key(name + "-lease")),
            )
            client.close()


@contextmanager
def _sends() -> Iterator[list[int]]:
    """Counts what this thread sends to Redis inside the block, as ``[count]``: each send of a
    redis-py connection is one round trip (a command, or a whole pipeline). Other threads' sends
    (omnilimit's lease keeper, say) are not counted."""
    from redis.connection import Connection

    owner: Any = next(klass for klass in Connection.__mro__ if "send_packed_command" in vars(klass))
    send = owner.send_packed_command
    me = threading.get_ident()
    sent = [0]

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me:
            sent[0] += 1
        return send(self, *args, **kwargs)

    owner.send_packed_command = counted
    try:
        yield sent
    finally:
        owner.send_packed_command = send


def _server_counts(client: Any) -> tuple[dict[str, int], float]:
    """The commands Redis has run so far by name (INFO commandstats, those run by scripts included;
    INFO itself left out) and its CPU seconds so far (INFO cpu, user + system). The whole server's."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    calls.pop("info", None)
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _redis_counts(decide: Callable[[], Any], client: Any, decisions: int) -> dict[str, Any]:
    """Over `decisions` decisions on this thread: round trips, Redis commands (and by name), Redis
    CPU and this process's CPU, per decision; and how many were refused."""
    before, server_cpu = _server_counts(client)
    refused = 0
    cpu = time.process_time()
    with _sends() as sent:
        for _ in range(decisions):
            if decide() is False:
                refused += 1
    cpu = time.process_time() - cpu
    after, server_cpu_after = _server_counts(client)
    ran = {name: (n - before.get(name, 0)) / decisions for name, n in after.items() if n != before.get(name, 0)}
    return {
        "round_trips": sent[0] / decisions,
        "commands": sum(ran.values()),
        "commands_by_name": dict(sorted(ran.items(), key=lambda item: (-item[1], item[0]))),
        "server_cpu_us": (server_cpu_after - server_cpu) / decisions * 1e6,
        "cpu_us": cpu / decisions * 1e6,
        "counted": decisions,
        "refused": refused,
    }


def _redis_threads_trial(decide: Callable[[], Any], client: Any, settings: Settings) -> dict[str, Any]:
    """`redis_threads` threads decide in a loop on one limiter; counted for `redis_seconds` after
    `warmup_s` (the threads start, the connection pool grows to one connection each)."""
    threads = settings.redis_threads
    phase = [0]  # 0 warm-up, 1 counting, 2 stop
    counted = [0] * threads
    refused = [0] * threads
    errors: list[str] = []
    start = threading.Event()

    def worker(i: int) -> None:
        start.wait()
        n = no = 0
        try:
            while (state := phase[0]) != 2:
                admitted = decide()
                if state == 1:
                    n += 1
                    if admitted is False:
                        no += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        counted[i], refused[i] = n, no

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    start.set()
    time.sleep(settings.warmup_s)
    _, server_cpu = _server_counts(client)
    cpu, t0 = time.process_time(), time.perf_counter()
    phase[0] = 1
    time.sleep(settings.redis_seconds)
    phase[0] = 2
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu
    _, server_cpu_after = _server_counts(client)
    for w in workers:
        w.join()
    n = sum(counted)
    return {
        "decisions_per_s": n / elapsed,
        "cpu_us": cpu / n * 1e6 if n else math.nan,
        "server_cpu_us": (server_cpu_after - server_cpu) / n * 1e6 if n else math.nan,
        "refused": sum(refused),
        "errors": errors,
    }


def redis_across_hosts(impls: Impls, settings: Settings) -> list[dict[str, Any]]:
    """10. Limiters whose state lives in one Redis server (``impls.redis_url``), shared by every
    process and host that names them there; a limit no run exhausts, as in section 2.

    Decisions (rows with ``part == "decision"``): one thread; ns per call (minimum and median of
    `micro_repeat` runs, interleaved; decisions/s from the median), then over `redis_counted` more decisions the round
    trips (what this thread sent: one per send of a redis-py connection), the commands Redis ran
    (those a script runs included), Redis's CPU and this process's, per decision. omnilimit's
    RateLimiter (``acquire(timeout=0)``) and ConcurrencyLimiter (``acquire(timeout=0); release()``),
    the peers' Redis limiters, and redis-py's PING: one round trip deciding nothing, the floor.

    Threads (``part == "threads"``): `redis_threads` threads share each limiter (and its client's
    connection pool) and decide in a loop: decisions/s against one thread's, CPU per decision;
    the trial of median throughput of `redis_trials` (interleaved; every trial in ``trials``).

    Redis's figures are the whole server's: the run should be its only client. Every key the run
    makes is deleted at the end, on errors too."""
    if impls.redis_url is None:
        raise ValueError("section 10 needs a Redis server: Impls.redis_url")
    url = impls.redis_url
    decisions: list[dict[str, Any]] = []
    with _redis_cases(impls, url, max(4, settings.redis_threads)) as (client, cases):
        where = f"{server_label(client.info('server'))} at {redact(url)}"
        deciders = [_checked(case.decide, f"{case.impl} ({case.call})") for case in cases]
        for case, decide, timed in zip(cases, deciders, times_per_call(deciders, settings), strict=False):
            decisions.append(
                {"part": "decision", "call": case.call, "impl": case.impl, "api": case.api, "server": where}
                | timed
                | {"decisions_per_s": 1e9 / timed["median_ns"]}  # the typical run: threads are compared with it
                | _redis_counts(decide, client, settings.redis_counted)
            )
        trials: list[list[dict[str, Any]]] = [[] for _ in cases]
        for _ in range(settings.redis_trials):  # interleaved: a slow phase of the machine hits everyone
            for case, mine in zip(cases, trials, strict=False):
                mine.append(_redis_threads_trial(case.decide_in_threads, client, settings))
    threads = []
    for case, one, mine in zip(cases, decisions, trials, strict=False):
        median = sorted(mine, key=lambda t: t["decisions_per_s"])[(len(mine) - 1) // 2]
        threads.append(
            {"part": "threads", "call": case.call, "impl": case.impl, "api": case.api_in_threads, "server": where}
            | {"threads": settings.redis_threads, "seconds": settings.redis_seconds, **median}
            | {"vs_one_thread": median["decisions_per_s"] / one["decisions_per_s"], "trials": mine}
        )
    return decisions + threads


def server_label(info: dict[str, Any]) -> str:
    """The server as INFO names it: "Redis 7.2.4", or "Valkey 9.1.2" (Valkey also answers a
    ``redis_version``, the Redis version it is compatible with: 7.2.4)."""
    if info.get("server_name") == "valkey":
        return f"Valkey {info.get('valkey_version', info.get('redis_version', '?'))}"
    return f"Redis {info.get('redis_version', '?')}"
