// test_window_guard: WindowGuard (window_guard.hpp), the rule that no window of a second holds
// more admissions than the bucket allows in one.
//
// What it proves, at fixed instants: the limit (B + floor(1 s / T)) is admitted at once and the
// next is told the exact instant the window frees; a minute is guarded as a second is; a stream booked at the pace whose sleepers wake
// up to 5 ms late (the late-wake tolerance), in clusters as an event loop wakes them, never puts
// more than the limit in any window of kWindowNs, and loses almost nothing of the rate; a rate
// change keeps the recent admissions; limits beyond kMaxTracked are not tracked. And with real
// threads admitting concurrently, the recorded instants keep the bound.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "omnilimit/window_guard.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::WindowGuard;

constexpr Nanos kWindow = WindowGuard::kWindowNs;

// The most of the sorted `times` in any half-open window of length `window`.
std::int64_t most_in_window(const std::vector<Nanos>& times, Nanos window) {
  std::int64_t best = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < times.size(); ++hi) {
    while (times[hi] - times[lo] >= window) ++lo;
    best = std::max<std::int64_t>(best, static_cast<std::int64_t>(hi - lo + 1));
  }
  return best;
}

void limit_then_exact_instant() {
  // 1,000 per second (T = 1 ms), burst 1: 1,001 per window.
  WindowGuard guard(kMs, 1);
  CHECK_EQ(guard.limit(), 1001);
  CHECK_EQ(WindowGuard::limit_for(kMs, 10), 1010);
  const Nanos t0 = 5 * kSec;
  for (int i = 0; i < 1001; ++i) CHECK_EQ(guard.admit(t0), 0, "admission ", i);
  CHECK_EQ(guard.admit(t0), t0 + kWindow, "the 1,002nd waits until the first is a window old");
  CHECK_EQ(guard.admit(t0 + kWindow - 1), t0 + kWindow);
  // The window [t0, t0 + kWindow) holds the 1,001 at t0; from t0 + kWindow on, 1,001 more.
  for (int i = 0; i < 1001; ++i) CHECK_EQ(guard.admit(t0 + kWindow), 0, "admission ", i, " of the second window");
  CHECK_EQ(guard.admit(t0 + kWindow + kMs), t0 + 2 * kWindow);
  // A refusal records nothing: the answer stays the same until the instant comes.
  CHECK_EQ(guard.admit(t0 + kWindow + 2 * kMs), t0 + 2 * kWindow);
  CHECK_EQ(guard.admit(t0 + 2 * kWindow), 0);
}

void late_clusters_keep_the_bound_and_the_rate() {
  // 6,000 per second (T = 166,667 ns), burst 1, for 10 s: booked instants at the pace; an event
  // loop wakes the sleepers in iterations up to 5 ms apart (every one of them within the
  // tolerance, so none books again); each goes when it wakes, or at the guard's instant, in the
  // order they booked (a sleeper never goes before the one ahead of it).
  const Nanos interval = 166'667;
  WindowGuard guard(interval, 1);
  Rng rng(7);
  std::vector<Nanos> went;
  const int n = 60'000;
  Nanos loop_at = kSec;  // the loop's next iteration
  Nanos lag_max = 0;
  for (int i = 0; i < n; ++i) {
    const Nanos booked = kSec + i * interval;
    while (loop_at < booked) loop_at += static_cast<Nanos>(rng.below(5 * kMs)) + 1;
    Nanos at = std::max({loop_at, booked, went.empty() ? 0 : went.back()});
    for (Nanos retry = guard.admit(at); retry != 0; retry = guard.admit(at)) {
      CHECK(retry > at);
      at = retry;
    }
    went.push_back(at);
    lag_max = std::max(lag_max, at - booked);
  }
  CHECK(std::is_sorted(went.begin(), went.end()));
  CHECK(most_in_window(went, kWindow) <= guard.limit(), "most in a window: ", most_in_window(went, kWindow));
  CHECK(most_in_window(went, kSec) <= guard.limit());
  // Without the guard the clusters would put more in some second: the guard is what keeps it.
  // And it costs at most the loop's lateness: the last went within 10 ms of its booked instant.
  CHECK(went.back() - (kSec + (n - 1) * interval) <= 10 * kMs, "lag at the end: ", went.back() - (kSec + (n - 1) * interval));
  CHECK(lag_max <= 10 * kMs, "largest lag: ", lag_max);
}

void a_stall_is_caught_up_within_the_second() {
  // 6,000 per second, burst 1, 5 s; the loop stalls 80 ms at 2 s (a garbage collection): the
  // sleepers it held up keep their slots (within RatePolicy::kCatchUpNs) and go when it ends, as
  // far as the last second has room. Nothing is lost and no second holds more than the limit;
  // the catch-up is at most 100 ms of traffic in a short window.
  const Nanos interval = 166'667;
  WindowGuard guard(interval, 1);
  std::vector<Nanos> went;
  const int n = 30'000;
  for (int i = 0; i < n; ++i) {
    const Nanos booked = kSec + i * interval;
    Nanos at = booked;
    if (booked >= 2 * kSec && booked < 2 * kSec + 80 * kMs) at = 2 * kSec + 80 * kMs;  // woken at the end
    at = std::max(at, went.empty() ? 0 : went.back());
    for (Nanos retry = guard.admit(at); retry != 0; retry = guard.admit(at)) at = retry;
    went.push_back(at);
  }
  CHECK(most_in_window(went, kSec) <= guard.limit(), "most in a second: ", most_in_window(went, kSec));
  CHECK(went.back() - (kSec + (n - 1) * interval) <= kMs, "lag at the end: ", went.back() - (kSec + (n - 1) * interval));
  const std::int64_t short_bound = 1 + (10 * kMs + 100 * kMs) / interval;
  CHECK(most_in_window(went, 10 * kMs) <= short_bound, "most in 10 ms: ", most_in_window(went, 10 * kMs));
}

void without_the_guard_the_clusters_exceed() {
  // The same stream, everyone going when woken: the bound the guard keeps is broken (so the test
  // above measures something).
  const Nanos interval = 166'667;
  Rng rng(7);
  std::vector<Nanos> went;
  Nanos loop_at = kSec;
  for (int i = 0; i < 60'000; ++i) {
    const Nanos booked = kSec + i * interval;
    while (loop_at < booked) loop_at += static_cast<Nanos>(rng.below(5 * kMs)) + 1;
    went.push_back(std::max(loop_at, booked));
  }
  std::sort(went.begin(), went.end());
  CHECK(most_in_window(went, kSec) > WindowGuard::limit_for(interval, 1), "most: ", most_in_window(went, kSec));
}

void a_new_rate_keeps_the_recent_admissions() {
  WindowGuard guard(kMs, 1);  // 1,001 per window
  const Nanos t0 = 5 * kSec;
  for (int i = 0; i < 1001; ++i) guard.admit(t0 + i * kUs);
  guard.configure(2 * kMs, 1);  // 501 per window: the latest 501 are kept, so the window is full
  CHECK_EQ(guard.limit(), 501);
  CHECK_EQ(guard.admit(t0 + 1001 * kUs), t0 + 500 * kUs + kWindow);
  guard.configure(kMs / 2, 1);  // 2,001 per window: room again
  CHECK_EQ(guard.admit(t0 + 1001 * kUs), 0);
  guard.configure(1, 1);  // a rate far beyond any provider's: not tracked
  CHECK_EQ(guard.limit(), 0);
  for (int i = 0; i < 100'000; ++i) CHECK_EQ(guard.admit(t0), 0);
}

void the_minute_is_guarded_too() {
  // 60 per minute (T = 1 s), burst 1: 2 per second, 61 per minute. Callers take every instant the
  // guard answers, as fast as it lets them, for 5 minutes: each second holds at most 2 and each
  // minute at most 61 (the second alone would let 120 through in a minute).
  WindowGuard guard(kSec, 1);
  CHECK_EQ(guard.limit(), 2);
  CHECK_EQ(guard.minute_limit(), 61);
  std::vector<Nanos> went;
  Nanos at = kSec;
  while (at < 301 * kSec) {
    const Nanos retry = guard.admit(at);
    if (retry == 0) {
      went.push_back(at);
    } else {
      CHECK(retry > at);
      at = retry;
    }
  }
  CHECK(most_in_window(went, kSec) <= 2, "most in a second: ", most_in_window(went, kSec));
  CHECK(most_in_window(went, 60 * kSec) <= 61, "most in a minute: ", most_in_window(went, 60 * kSec));
  CHECK(static_cast<std::int64_t>(went.size()) >= 5 * 61 - 1, "admitted: ", went.size());
  // Beyond 65,536 per minute the minute is not tracked (the second still is).
  WindowGuard fast(kMs, 1);  // 1,000 per second, 60,000 per minute: tracked
  CHECK_EQ(fast.minute_limit(), 60'001);
  WindowGuard faster(kMs / 2, 1);  // 120,000 per minute: not tracked
  CHECK_EQ(faster.minute_limit(), 0);
  CHECK_EQ(faster.limit(), 2'001);
}

void threads_keep_the_bound() {
  // 16 threads take 20,000 admissions at 10,000 per second (T = 100 us, burst 5): each waits for
  // the instant it is given. The instants recorded (answered 0) keep the bound.
  WindowGuard guard(100 * kUs, 5);
  std::mutex mutex;
  std::vector<Nanos> went;
  std::atomic<int> left{20'000};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (left.fetch_sub(1) > 0) {
        for (;;) {
          const Nanos now = now_ns();
          const Nanos retry = guard.admit(now);
          if (retry == 0) {
            std::lock_guard<std::mutex> lock(mutex);
            went.push_back(now);
            break;
          }
          sleep_until_ns(std::min(retry, now + kMs));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::sort(went.begin(), went.end());
  // The guard records max(now, the newest): a thread's own `now` may be a little earlier, by
  // the time another thread took between reading the clock and admitting.
  CHECK(most_in_window(went, kWindow - kMs) <= guard.limit(), "most: ", most_in_window(went, kWindow - kMs));
  CHECK_EQ(static_cast<std::int64_t>(went.size()), std::int64_t{20'000});
}

}  // namespace

int main() {
  return run_scenarios({{"limit_then_exact_instant", limit_then_exact_instant},
                        {"late_clusters_keep_the_bound_and_the_rate", late_clusters_keep_the_bound_and_the_rate},
                        {"a_stall_is_caught_up_within_the_second", a_stall_is_caught_up_within_the_second},
                        {"without_the_guard_the_clusters_exceed", without_the_guard_the_clusters_exceed},
                        {"a_new_rate_keeps_the_recent_admissions", a_new_rate_keeps_the_recent_admissions},
                        {"the_minute_is_guarded_too", the_minute_is_guarded_too},
                        {"threads_keep_the_bound", threads_keep_the_bound}});
}
