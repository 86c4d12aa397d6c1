"""Lease mode (``RateLimiter(..., backend=URL, coordination="lease")``): each process decides on
its native core at a leased share of the Redis budget; shares follow demand, the live leases never
sum above the capacity. Two limiter objects of one name stand for two processes (each has a lease
of its own); the fleet runs use real processes. Against a real redis-server (and Valkey)."""

import json
import threading
import time

import pytest
from helpers import common_start, finish, need, run_children, spawn, start_thread, wait_until

from omnilimit import CombinedLimiter, ConfigError, ProviderRateLimitManager, RateLimiter
from omnilimit.backends import redis_lease

redis = need("redis")


def leased(url, name, rpm=600, **options):
    return RateLimiter(rpm, provider_name=name, backend=url, coordination="lease", **options)


def hammer(limiter, seconds, threads=8):
    """``threads`` threads take turns for ``seconds``; returns the admission instants."""
    until = time.monotonic() + seconds
    admitted, lock = [], threading.Lock()

    def work():
        while (left := until - time.monotonic()) > 0:
            if limiter.acquire(timeout=min(left, 1.0)):
                with lock:
                    admitted.append(time.monotonic())

    workers = [start_thread(work) for _ in range(threads)]
    for worker in workers:
        worker.join()
    return admitted


def test_bad_coordination_settings(redis_url, unique_name):
    with pytest.raises(ValueError, match="coordination must be one of strict, lease"):
        RateLimiter(60, backend=redis_url, coordination="fast")
    with pytest.raises(ValueError, match="needs a Redis backend"):
        RateLimiter(60, coordination="lease")
    with pytest.raises(ValueError, match="needs a Redis backend"):
        RateLimiter(60, backend="shm", coordination="lease")
    strict = RateLimiter(60, provider_name=unique_name, backend=redis_url, coordination="strict")
    assert strict.coordination == "strict" and strict.store is not None


def test_a_busy_process_gets_nearly_the_whole_budget_and_the_leases_never_sum_above_it(redis_url, unique_name):
    """One busy limiter beside an idle one: within 3 s the busy one's share is >= 90% of the
    capacity; at every renewal the two shares together stay within it; decisions never leave the
    process (no store)."""
    busy, idle = leased(redis_url, unique_name), leased(redis_url, unique_name)
    assert busy.store is None and busy.coordination == "lease" and "coordination='lease'" in repr(busy)
    sums = []
    sampling = True

    def sample():
        while sampling:
            sums.append(busy.metrics()["lease_share_rpm"] + idle.metrics()["lease_share_rpm"])
            time.sleep(0.05)

    sampler = start_thread(sample)
    started = time.monotonic()
    admitted = hammer(busy, 3.0)
    sampling = False
    sampler.join()
    share = busy.metrics()["lease_share_rpm"]
    assert share >= 0.9 * 600, share
    assert max(sums) <= 600 * (1 + 1e-9)
    late = [at for at in admitted if at >= started + 2.0]  # the last second, at the share
    assert 0.85 * 10 <= len(late) <= 10 + 2, len(late)
    assert idle.metrics()["lease_share_rpm"] <= 0.02 * 600 + 1e-9  # it used nothing: it wants its floor


def test_two_busy_processes_split_the_budget(redis_url, unique_name):
    one, other = leased(redis_url, unique_name), leased(redis_url, unique_name)
    results = {}
    runs = [
        start_thread(lambda limiter=limiter: results.update({id(limiter): hammer(limiter, 4.0)}))
        for limiter in (one, other)
    ]
    for run in runs:
        run.join()
    shares = [one.metrics()["lease_share_rpm"], other.metrics()["lease_share_rpm"]]
    assert sum(shares) <= 600 * (1 + 1e-9)
    assert all(250 <= share <= 350 for share in shares), shares  # half each, give or take a renewal
    for limiter in (one, other):
        assert limiter.metrics()["lease_live"] == 2 and limiter.metrics()["lease_renewals"] >= 6


def test_a_closed_process_gives_its_share_back_at_once(redis_url, unique_name):
    one, other = leased(redis_url, unique_name), leased(redis_url, unique_name)
    runs = [start_thread(hammer, limiter, 3.0) for limiter in (one, other)]
    for run in runs:
        run.join()
    one.close()
    wait_until(lambda: other.metrics()["lease_live"] == 1, timeout=3)
    admitted = hammer(other, 2.5)
    assert other.metrics()["lease_share_rpm"] >= 0.9 * 600
    assert len(admitted) >= 15  # more than its half: the other's share came back


def test_a_pause_reaches_the_other_processes_at_once(redis_url, unique_name):
    """Through the subscription, well before their next renewal (every RENEW_S); the renewals
    carry it too (a process that was not subscribed yet)."""
    one, other = leased(redis_url, unique_name, rpm=6000), leased(redis_url, unique_name, rpm=6000)
    wait_until(lambda: other._lease._feed.listening.is_set(), timeout=5)
    renewals = other.metrics()["lease_renewals"]
    seen = []
    one.pause(2.0)
    wait_until(lambda: other.paused_for > 0.5 and not seen.append(other.metrics()["lease_renewals"]), timeout=1.5)
    assert seen[-1] == renewals  # paused before its next renewal: the message did it
    started = time.monotonic()
    assert other.acquire(timeout=5)
    assert time.monotonic() - started > 0.5  # it waited the pause out


def test_metrics_and_figures_in_lease_mode(redis_url, unique_name):
    limiter = leased(redis_url, unique_name)
    metrics = limiter.metrics()
    for key in ("lease_share_rpm", "lease_wants_rpm", "lease_expires_in_s", "lease_renewals", "lease_live"):
        assert key in metrics
    assert metrics["coordination"] == "lease" and 2.0 < metrics["lease_expires_in_s"] <= redis_lease.LEASE_S
    assert limiter.backend.startswith("redis://") and limiter.backend_available
    assert limiter.get_stats()["rpm_limit"] == 600


def test_a_lease_that_runs_out_while_redis_is_away_hands_over_to_the_policy(redis_server, unique_name):
    """Redis stopped: the process keeps deciding on its lease until it runs out, then ``closed``
    refuses (after the caller's timeout); Redis back: a renewal gets through and it goes again."""
    limiter = RateLimiter(600, provider_name=unique_name, backend=redis_server.url, coordination="lease")
    hammer(limiter, 1.5, threads=2)  # a share well above its floor
    redis_server.stop()
    stopped = time.monotonic()
    admitted = hammer(limiter, 1.0, threads=2)
    assert len(admitted) >= 3  # still on its lease
    wait_until(lambda: time.monotonic() - stopped > redis_lease.LEASE_S + redis_lease.RENEW_S * 2, timeout=10)
    assert limiter.acquire(timeout=0.3) is False  # the lease ran out: closed
    redis_server.start()
    assert limiter.acquire(timeout=5)
    assert limiter.metrics()["backend_outages"] == 1


FLEET = """
import json, threading, time
from omnilimit import CombinedLimiter, ConfigError, ProviderRateLimitManager, RateLimiter
limiter = RateLimiter(600, provider_name="{name}", backend="{url}", coordination="lease")
start, end = {start}, {start} + {seconds}
admitted, lock = [], threading.Lock()
busy = {busy}

def work():
    while time.monotonic() < start:
        time.sleep(0.001)
    while busy and (left := end - time.monotonic()) > 0:
        if limiter.acquire(timeout=min(left, 1.0)):
            with lock:
                admitted.append(time.monotonic())

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
if not busy:
    time.sleep(max(0.0, end - time.monotonic()))
for t in threads: t.join()
limiter.close()
print(json.dumps(admitted))
"""


def test_eight_processes_share_one_budget_in_lease_mode(redis_url, unique_name):
    """8 processes x 8 threads on one 600-RPM budget for 10 s: from 2 s after the start (the
    leases begin at their floor and grow at the first renewals) the fleet admits at the capacity
    within 2%: the sum of each process's rate (its admissions from its first to its last in that
    span, over the span; a count of all the processes' admissions over a fixed window would be off
    by up to one tick of each of the 8 buckets, 10% of 80). Every 1-s window stays within the rate
    plus the processes' local bursts (1 each) and one call."""
    start = common_start(8)
    seconds = 10.0
    results = run_children(8, FLEET, name=unique_name, url=redis_url, start=start, seconds=seconds, busy=True)
    rates = []
    for child in results:
        mine = sorted(at for at in child if at >= start + 2.0)
        assert len(mine) >= 5, mine  # every process had its share
        rates.append((len(mine) - 1) / (mine[-1] - mine[0]))
    assert abs(sum(rates) - 10.0) <= 0.2, (sum(rates), rates)
    counted = sorted(at for child in results for at in child if at >= start + 2.0)
    windows = [sum(1 for at in counted if t <= at < t + 1.0) for t in counted]
    assert max(windows) <= 10 + 8 + 1, max(windows)


def test_one_busy_process_among_seven_idle_gets_nearly_the_budget(redis_url, unique_name):
    """1 busy process beside 7 idle ones (each holding a lease, using nothing): from 3 s after the
    start the busy one takes >= 90% of the budget."""
    start = common_start(8)
    seconds = 6.0
    idle = [spawn(FLEET, name=unique_name, url=redis_url, start=start, seconds=seconds, busy=False) for _ in range(7)]
    try:
        (admitted,) = run_children(1, FLEET, name=unique_name, url=redis_url, start=start, seconds=seconds, busy=True)
        for child in idle:
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            assert json.loads(out) == []
    finally:
        for child in idle:
            finish(child)
    late = [at for at in admitted if at >= start + 3.0]
    assert len(late) >= 0.9 * 600 / 60 * (seconds - 3.0), len(late)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"rate_limit_coordination": "lease"}, "applies only to a Redis"),
        ({"rate_limit_backend": "redis://h/0", "rate_limit_coordination": "fast"}, "must be one of strict, lease"),
    ],
)
def test_bad_coordination_keys_are_config_errors(settings, match):
    with pytest.raises(ConfigError, match=match) as raised:
        ProviderRateLimitManager.from_config({"providers": {"p": {"rate_limit_rpm": 60, **settings}}})
    assert "rate_limit_coordination" in str(raised.value) or "applies only" in str(raised.value)


def test_the_yaml_key_makes_a_leased_limiter(redis_url, unique_name):
    manager = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "writer": {
                    "name": unique_name,
                    "rate_limit_rpm": 600,
                    "rate_limit_backend": redis_url,
                    "rate_limit_coordination": "lease",
                }
            }
        }
    )
    limiter = manager.limiter_for("writer")
    assert limiter.coordination == "lease" and limiter.store is None
    assert limiter.metrics()["lease_renewals"] >= 1
    limiter.close()


HOLDER = """
import threading, time
from omnilimit import RateLimiter
limiter = RateLimiter(600, provider_name="{name}", backend="{url}", coordination="lease")

def work():
    while True:
        limiter.acquire(timeout=1.0)

for _ in range(8):
    threading.Thread(target=work, daemon=True).start()
while limiter.metrics()["lease_share_rpm"] < 200:
    time.sleep(0.05)
print("holding", flush=True)
time.sleep(60)
"""


def test_a_killed_process_share_comes_back_within_its_lease(redis_url, unique_name):
    """A busy process killed (SIGKILL) while it holds half the budget: the other busy process gets
    nearly all of it once the dead one's lease has run out (3 s after its last renewal was sent),
    and not before it."""
    import signal

    mine = leased(redis_url, unique_name)
    busy = start_thread(hammer, mine, 12.0)
    child = spawn(HOLDER, name=unique_name, url=redis_url)
    try:
        assert child.stdout.readline().strip() == "holding"
        wait_until(lambda: mine.metrics()["lease_share_rpm"] <= 310, timeout=5)  # shared: half each
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        child.wait(5)
        shares = []
        while time.monotonic() - killed < redis_lease.LEASE_S + 2.0:
            shares.append((time.monotonic() - killed, mine.metrics()["lease_share_rpm"]))
            time.sleep(0.05)
    finally:
        finish(child)
    back = next(at for at, share in shares if share >= 0.9 * 600)
    assert back <= redis_lease.LEASE_S + 2 * redis_lease.RENEW_S, shares
    assert all(share <= 310 for at, share in shares if at < redis_lease.LEASE_S - redis_lease.RENEW_S - 0.2), shares
    busy.join()


AGAINST_THE_PROVIDER = """
import json, threading, time
import openai
from omnilimit import RateLimiter
limiter = RateLimiter({rpm}, provider_name="{name}", backend="{url}", coordination="lease")
client = openai.OpenAI(base_url="{base_url}", api_key="x", max_retries=0, timeout=30.0)
start, end = {start}, {start} + {seconds}
figures = {{"ok": [], "rejected": 0, "errors": []}}
lock = threading.Lock()

def worker():
    while time.monotonic() < start:
        time.sleep(0.001)
    while (left := end - time.monotonic()) > 0:
        if not limiter.acquire(timeout=min(left, 1.0)):
            continue
        admitted = time.monotonic()
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hi"}}], max_tokens=5)
        except openai.RateLimitError as error:
            limiter.on_response(error.response.status_code, error.response.headers)
            with lock:
                figures["rejected"] += 1
            continue
        except Exception as error:
            with lock:
                figures["errors"].append(repr(error))
            return
        limiter.on_response(raw.http_response.status_code, raw.headers)
        with lock:
            figures["ok"].append(admitted)

threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
limiter.close()
client.close()
print(json.dumps(figures))
"""


@pytest.mark.parametrize("window", ["bucket", "fixed"])
def test_eight_leased_processes_against_a_provider_that_enforces_the_rpm(
    provider_factory, redis_url, unique_name, window
):
    """8 processes x 8 threads in lease mode, each call through the real openai client, against
    the stand-in enforcing 1200 RPM as a token bucket of one second's worth or as fixed 1-s
    slices at exactly the cap (the shares are whole requests a second, so no second holds more
    than their sum): at most 1% 429s, and the RPM from 2 s after the start (the leases grow at the
    first renewals): >= 95% against the bucket, >= 93% against the slices (95% to 100% measured;
    a stray 429 at a slice's edge pauses everyone)."""
    need("openai")
    rpm = 1200
    provider = provider_factory(rpm=rpm, max_concurrent=64, window=window)
    start = common_start(8)
    seconds = 8.0
    results = run_children(
        8,
        AGAINST_THE_PROVIDER,
        rpm=rpm,
        name=unique_name,
        url=redis_url,
        base_url=provider.base_url,
        start=start,
        seconds=seconds,
    )
    errors = [error for child in results for error in child["errors"]]
    assert not errors, errors[:3]
    ok = sorted(at for child in results for at in child["ok"])
    rejected = sum(child["rejected"] for child in results)
    counted = [at for at in ok if at >= start + 2.0]
    rate = len(counted) / (start + seconds - (start + 2.0))
    line = f"[lease-8-processes] calls={len(ok)} http_429={rejected} rate={rate:.2f}/s of {rpm / 60:g}"
    print(line)
    assert rejected <= 0.01 * (len(ok) + rejected), line
    assert rate >= (0.95 if window == "bucket" else 0.93) * rpm / 60, line


def test_a_token_budget_is_leased_too(redis_url, unique_name):
    """6000 TPM (100 tokens a second) and a request budget that does not bind, two processes: the
    busy one gets >= 90% of the tokens within 3 s and takes them at its share; a call that used
    less than it reserved gives the rest back to its process's bucket (settled locally)."""
    options = {"tokens_per_minute": 6000, "token_burst": 200}
    busy, idle = (
        leased(redis_url, unique_name, rpm=6000, **options),
        leased(redis_url, unique_name, rpm=6000, **options),
    )
    assert "tokens_per_minute=6000" in repr(busy) and "coordination='lease'" in repr(busy)
    until = time.monotonic() + 4.0
    admitted, lock = [], threading.Lock()

    def work():
        while (left := until - time.monotonic()) > 0:
            if busy.acquire(tokens=50, timeout=min(left, 1.0)):
                with lock:
                    admitted.append(time.monotonic())
                busy.record_request(tokens=25)  # half of what it reserved: the rest goes back

    workers = [start_thread(work) for _ in range(8)]
    for worker in workers:
        worker.join()
    metrics = busy.metrics()
    assert metrics["lease_token_share_tpm"] >= 0.9 * 6000, metrics
    assert metrics["lease_token_share_tpm"] + idle.metrics()["lease_token_share_tpm"] <= 6000 * (1 + 1e-9)
    late = [at for at in admitted if at >= until - 2.0]
    # 25 tokens a call once settled: about twice the calls that 50 each would allow (2 per second)
    assert len(late) >= 1.5 * 2 * 2.0 * metrics["lease_token_share_tpm"] / 6000, len(late)


def test_a_combined_limiter_leases_its_requests_and_keeps_its_slots_in_redis(redis_url, unique_name):
    """CombinedLimiter(2 slots, 600 RPM, coordination="lease"): never more than 2 calls in flight
    (the slots in Redis), the requests at the leased share; the YAML form builds the same."""
    limiter = CombinedLimiter(2, 600, name=unique_name, backend=redis_url, coordination="lease")
    assert limiter.rate.coordination == "lease" and limiter.concurrency.store is not None
    inside, peak, lock = [0], [], threading.Lock()
    until = time.monotonic() + 4.0
    calls = []

    def work():
        while (left := until - time.monotonic()) > 0:
            if not limiter.acquire(timeout=min(left, 1.0)):
                continue
            with lock:
                inside[0] += 1
                peak.append(inside[0])
                calls.append(time.monotonic())
            time.sleep(0.05)
            with lock:
                inside[0] -= 1
            limiter.release()

    workers = [start_thread(work) for _ in range(8)]
    for worker in workers:
        worker.join()
    assert max(peak) <= 2
    late = [at for at in calls if at >= until - 2.0]
    assert 0.8 * 20 <= len(late) <= 20 + 2, len(late)  # 10 a second at the leased share, from 2 s on
    limiter.close()
    manager = ProviderRateLimitManager.from_config(
        {
            "providers": {
                "writer": {
                    "name": unique_name + "-yaml",
                    "max_concurrent_calls": 2,
                    "rate_limit_rpm": 600,
                    "rate_limit_mode": "combined",
                    "rate_limit_backend": redis_url,
                    "rate_limit_coordination": "lease",
                }
            }
        }
    )
    built = manager.limiter_for("writer")
    assert isinstance(built, CombinedLimiter) and built.rate.coordination == "lease"
    built.close()


def test_redis_stopped_for_3_s_the_fleet_goes_on_on_its_leases_within_the_budget(redis_server, unique_name):
    """Two busy processes on 600 RPM; Redis stopped for 3 s: admissions go on at the leased shares
    (each lease runs 3 s from its last renewal, so near the end of the outage a process may pause
    until Redis is back) and no 1-s window exceeds the rate plus the local bursts and one call."""
    one = RateLimiter(600, provider_name=unique_name, backend=redis_server.url, coordination="lease")
    other = RateLimiter(600, provider_name=unique_name, backend=redis_server.url, coordination="lease")
    results = []
    runs = [start_thread(lambda limiter=limiter: results.append(hammer(limiter, 9.0))) for limiter in (one, other)]
    time.sleep(3.0)  # the shares settle at half each
    redis_server.stop()
    stopped = time.monotonic()
    time.sleep(3.0)
    redis_server.start()
    for run in runs:
        run.join()
    admitted = sorted(at for mine in results for at in mine)
    during = [at for at in admitted if stopped <= at < stopped + 2.5]
    assert len(during) >= 0.8 * 10 * 2.5, len(during)  # on the leases
    counted = [at for at in admitted if at >= admitted[0] + 2.0]
    windows = [sum(1 for at in counted if t <= at < t + 1.0) for t in counted]
    assert max(windows) <= 10 + 2 + 1, max(windows)
    assert one.acquire(timeout=5) and one.backend_available  # back on Redis


def test_a_renewal_that_meets_a_foreign_key_logs_and_hands_over_to_the_policy(redis_url, unique_name, caplog):
    """Another program overwrites the leases' key with a string: the first renewal error is
    logged once (the renewals go on), and once the lease has run out the policy (``closed``)
    decides; the key put right, the renewals recover."""
    import logging

    from omnilimit.backends.redis_link import keys_for
    from omnilimit.spec import name_for_key

    limiter = leased(redis_url, unique_name)
    client = redis.Redis.from_url(redis_url)
    leases_key = keys_for("lease", name_for_key(unique_name))[0]
    with caplog.at_level(logging.ERROR, logger="omnilimit"):
        client.set(leases_key, "not a hash")
        wait_until(lambda: "a lease renewal failed" in caplog.text, timeout=3)
        wait_until(lambda: limiter.metrics()["lease_expires_in_s"] == 0.0, timeout=redis_lease.LEASE_S + 2)
        time.sleep(redis_lease.RENEW_S * 2)
        assert limiter.acquire(timeout=0.2) is False  # closed: paused until a renewal gets through
        assert caplog.text.count("a lease renewal failed") == 1
        client.delete(leases_key)
        assert limiter.acquire(timeout=5)
    limiter.close()


def test_the_local_policy_in_lease_mode_keeps_the_last_lease(redis_server, unique_name):
    """``on_backend_error="local"`` needs no ``local_fraction`` in lease mode: once the lease has
    run out with Redis away, the process goes on at its last share (YAML alike)."""
    limiter = RateLimiter(
        600, provider_name=unique_name, backend=redis_server.url, coordination="lease", on_backend_error="local"
    )
    hammer(limiter, 2.0, threads=4)  # the whole budget: nobody else is there
    share = limiter.metrics()["lease_share_rpm"]
    assert share >= 0.9 * 600
    redis_server.stop()
    time.sleep(redis_lease.LEASE_S + 2 * redis_lease.RENEW_S)
    assert limiter.metrics()["lease_expires_in_s"] == 0.0
    admitted = hammer(limiter, 2.0, threads=4)
    assert len(admitted) >= 0.8 * share / 60 * 2.0, len(admitted)
    redis_server.start()
    ProviderRateLimitManager.from_config(  # accepted: no ConfigError for the missing fraction
        {
            "providers": {
                "p": {
                    "rate_limit_rpm": 60,
                    "rate_limit_backend": "redis://127.0.0.1:1/0",
                    "rate_limit_coordination": "lease",
                    "rate_limit_on_backend_error": "local",
                }
            }
        }
    )
    with pytest.raises(ValueError, match="needs local_fraction"):  # strict mode still needs it
        RateLimiter(60, backend=redis_server.url, on_backend_error="local")


def test_an_idle_process_holds_no_request_not_even_its_burst(redis_url, unique_name):
    """With whole requests a second, a process that has not asked yet holds a share of 0 and no
    burst (so no second of the fleet exceeds the shares' sum); its first caller waits for a
    renewal that finds it short, then goes."""
    limiter = leased(redis_url, unique_name)
    assert limiter.metrics()["lease_share_rpm"] == 0.0
    assert limiter.acquire(timeout=0) is False
    started = time.monotonic()
    assert limiter.acquire(timeout=5)
    assert time.monotonic() - started <= 3 * redis_lease.RENEW_S + 0.5
    assert limiter.metrics()["lease_share_rpm"] > 0


def test_a_leased_share_keeps_the_late_wake_tolerance(redis_url, unique_name):
    """A leased share does not catch up after a stall (its pacing keeps the fleet's bound): a
    sleeper more than 5 ms late books again, as before; an in-process limiter catches up."""
    limiter = leased(redis_url, unique_name, 1200)
    try:
        assert limiter._catch_up is False
        assert RateLimiter(1200, provider_name=unique_name)._catch_up is True
    finally:
        limiter.close()
