// WindowGuard: no second (and no minute) holds more admissions than the bucket allows in one.
//
// Why a second rule. A GCRA bucket books instants spaced one interval T apart (after a burst of
// B), so the *booked* instants never put more than B + floor(W / T) in a window of length W. But
// callers go when they wake, not at their instant: an event loop that runs 3 ms late wakes every
// sleeper of those 3 ms in one iteration, and the late-wake rule (rate_policy.hpp) lets a sleeper
// up to kLateToleranceNs late keep its slot, so ordinary wake-up latency costs no capacity. Those
// sleepers then go together, after the on-time ones of the window before: a window of 1 s could
// hold B + (1 s + tolerance) / T admissions (measured: 6,025 in a second at 6,000/s, burst 1).
// Refusing lateness instead (strict pacing of the instants callers actually go at) would cost
// each late wake its lateness, for good: with a loop's 1-ms timer resolution, a limiter of
// 6,000/s would admit about 1,000/s.
//
// The guard bounds what providers count, the admissions themselves, in the windows they enforce
// (a second and a minute), and leaves the small scale to the bucket: for each window it remembers
// the instants of the last `limit` = B + floor(window / T) admissions, and admits at `now` only if
// the oldest of them is at least a window old; otherwise it answers the instant at which it will
// be, and the caller (who keeps the turn it booked) waits until then. So every half-open window
// of that length holds at most `limit` admissions, whatever the lateness: if one held limit + 1,
// the last of them would have found the first among its `limit` predecessors less than a window
// old. With the guard, a sleeper may keep a slot its loop woke it late for (up to
// RatePolicy::kCatchUpNs): the capacity a stall did not use is taken afterwards, within what the
// second and the minute allow. Windows shorter than a second are the price: the guard does not
// bound them. A catch-up puts up to kCatchUpNs of traffic in one loop iteration, and while the
// queue stays full the guard lets as many go together again a second later, when the catch-up
// leaves the window (measured at 6,000/s, burst 1: at most 690 in 10 ms, against 61 at the pace).
//
// Each window is guarded 200 us longer than nominal: the instant recorded here is read a few
// microseconds before the caller's code runs again, so a window of one second on the caller's
// clock is covered with that much slack. The slack costs 0.02 % of the rate while the guard binds.
//
// Cost: one uncontended mutex and two ring writes per admission (admissions are rate-limited, so
// the mutex is never busy for long). A limit above kMaxTracked (65,536 per window) is not
// tracked: at more than 65,536 per minute the minute is left to the bucket (whose lateness rule
// then bounds it: B + floor((60 s + kCatchUpNs) / T)), and beyond 65,536 per second both are.
//
// Thread-safety: every member is safe from any thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

#include "omnilimit/clock.hpp"

namespace omnilimit {

class WindowGuard {
 public:
  // The windows guarded: a second and a minute (what providers count), each with 200 us of slack.
  static constexpr Nanos kSlackNs = 200'000;
  static constexpr Nanos kSecondNs = 1'000'000'000;
  static constexpr Nanos kMinuteNs = 60 * kSecondNs;
  static constexpr Nanos kWindowNs = kSecondNs + kSlackNs;  // the second's guarded length
  static constexpr std::int64_t kMaxTracked = std::int64_t{1} << 16;

  // The most admissions a window of `window_ns` may hold at interval T (ns) and burst B:
  // B + floor(window / T).
  static constexpr std::int64_t limit_for(Nanos interval_ns, std::int64_t burst, Nanos window_ns = kSecondNs) noexcept {
    return burst + window_ns / std::max<Nanos>(interval_ns, 1);
  }

  WindowGuard(Nanos interval_ns, std::int64_t burst) { configure(interval_ns, burst); }
  WindowGuard(const WindowGuard&) = delete;
  WindowGuard& operator=(const WindowGuard&) = delete;

  // A new rate or burst: the limits follow; the most recent admissions are kept.
  void configure(Nanos interval_ns, std::int64_t burst) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Ring& ring : rings_) ring.configure(limit_for(interval_ns, burst, ring.nominal_ns));
  }

  // Admits (and records) an admission at `now`: 0. Otherwise records nothing and answers the
  // first instant at which it would be admitted (> now), when every window has room again.
  Nanos admit(Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    // A `now` read before another thread's admission (a preempted caller) is recorded as that
    // admission's instant: the rings stay in order.
    now = std::max(now, newest_);
    Nanos room_at = 0;
    for (const Ring& ring : rings_) room_at = std::max(room_at, ring.room_at(now));
    if (room_at > now) return room_at;
    for (Ring& ring : rings_) ring.record(now);
    newest_ = now;
    return 0;
  }

  // The limit tracked for the second (0: not tracked), and for the minute.
  std::int64_t limit() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return rings_[0].limit;
  }
  std::int64_t minute_limit() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return rings_[1].limit;
  }

  // In the child of fork(): the mutex may have been held by a thread the child does not have.
  void reinit_after_fork() noexcept { new (&mutex_) std::mutex(); }

 private:
  // One window: the instants of the last `limit` admissions, oldest at `head`.
  struct Ring {
    explicit Ring(Nanos nominal) : nominal_ns(nominal), window_ns(nominal + kSlackNs) {}
    Nanos nominal_ns;
    Nanos window_ns;
    std::vector<Nanos> at;
    std::size_t head = 0;
    std::size_t count = 0;
    std::int64_t limit = 0;  // 0: not tracked

    void configure(std::int64_t new_limit) {
      std::vector<Nanos> recent;
      recent.reserve(count);
      for (std::size_t i = 0; i < count; ++i) recent.push_back(at[(head + i) % at.size()]);
      head = 0;
      if (new_limit > kMaxTracked) {
        limit = 0;
        at.clear();
        at.shrink_to_fit();
        count = 0;
        return;
      }
      limit = new_limit;
      const std::size_t keep = std::min(recent.size(), static_cast<std::size_t>(limit));
      at.assign(static_cast<std::size_t>(limit), 0);
      std::copy(recent.end() - static_cast<std::ptrdiff_t>(keep), recent.end(), at.begin());
      count = keep;
    }
    // When an admission at `now` fits (now itself when it does).
    Nanos room_at(Nanos now) const noexcept {
      if (limit == 0 || count < at.size()) return now;
      return std::max(now, saturating_add(at[head], window_ns));
    }
    void record(Nanos now) noexcept {
      if (limit == 0) return;
      if (count < at.size()) {
        at[(head + count) % at.size()] = now;
        ++count;
      } else {
        at[head] = now;  // the oldest leaves, `now` is the newest
        head = (head + 1) % at.size();
      }
    }
  };

  mutable std::mutex mutex_;
  Ring rings_[2] = {Ring(kSecondNs), Ring(kMinuteNs)};
  Nanos newest_ = 0;
};

}  // namespace omnilimit
