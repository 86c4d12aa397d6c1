// WindowGuard: no window of one second holds more admissions than the bucket allows in one.
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
// The guard bounds what providers count, the admissions themselves, in the window they enforce
// on the shortest (a second), and leaves the small scale to the bucket: it remembers the instants
// of the last `limit` = B + floor(1 s / T) admissions, and admits at `now` only if the oldest of
// them is at least kWindowNs old; otherwise it answers the instant at which it will be, and the
// caller (who keeps the turn it booked) waits until then. So every half-open window of kWindowNs
// holds at most `limit` admissions, whatever the lateness: if one held limit + 1, the last of
// them would have found the first among its `limit` predecessors less than kWindowNs old. The
// bucket's own bound still holds for short windows: B + floor((W + tolerance) / T).
//
// kWindowNs is a second plus 200 us: the instant recorded here is read a few microseconds before
// the caller's code runs again, so a window of one second on the caller's clock is covered with
// that much slack. The slack costs 0.02 % of the rate while the guard binds.
//
// Cost: one uncontended mutex and a ring write per admission (admissions are rate-limited, so the
// mutex is never busy for long). Limits above kMaxTracked per window (65,536 per second, 3.9M
// per minute: beyond any provider's) are not tracked: the guard then admits everything.
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
  static constexpr Nanos kWindowNs = 1'000'200'000;
  static constexpr std::int64_t kMaxTracked = std::int64_t{1} << 16;

  // The most admissions a second may hold at interval T (ns) and burst B: B + floor(1 s / T).
  static constexpr std::int64_t limit_for(Nanos interval_ns, std::int64_t burst) noexcept {
    return burst + 1'000'000'000 / std::max<Nanos>(interval_ns, 1);
  }

  WindowGuard(Nanos interval_ns, std::int64_t burst) { configure(interval_ns, burst); }
  WindowGuard(const WindowGuard&) = delete;
  WindowGuard& operator=(const WindowGuard&) = delete;

  // A new rate or burst: the limit follows; the most recent admissions are kept.
  void configure(Nanos interval_ns, std::int64_t burst) {
    const std::int64_t limit = limit_for(interval_ns, burst);
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Nanos> recent = ordered();
    if (limit > kMaxTracked) {
      limit_ = 0;  // not tracked
      ring_.clear();
      ring_.shrink_to_fit();
      count_ = head_ = 0;
      return;
    }
    limit_ = limit;
    const std::size_t keep = std::min(recent.size(), static_cast<std::size_t>(limit));
    ring_.assign(static_cast<std::size_t>(limit), 0);
    std::copy(recent.end() - static_cast<std::ptrdiff_t>(keep), recent.end(), ring_.begin());
    count_ = keep;
    head_ = 0;
  }

  // Admits (and records) an admission at `now`: 0. Otherwise records nothing and answers the
  // first instant at which it would be admitted (> now), when the window has room again.
  Nanos admit(Nanos now) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit_ == 0) return 0;
    const std::size_t size = ring_.size();
    // A `now` read before another thread's admission (a preempted caller) is recorded as that
    // admission's instant: the ring stays in order.
    if (count_ > 0) now = std::max(now, ring_[(head_ + count_ - 1) % size]);
    if (count_ < size) {
      ring_[(head_ + count_) % size] = now;
      ++count_;
      return 0;
    }
    const Nanos oldest = ring_[head_];
    const Nanos free_at = saturating_add(oldest, kWindowNs);
    if (now < free_at) return free_at;
    ring_[head_] = now;  // the oldest leaves, `now` is the newest
    head_ = (head_ + 1) % size;
    return 0;
  }

  // The limit tracked (0: not tracked).
  std::int64_t limit() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

  // In the child of fork(): the mutex may have been held by a thread the child does not have.
  void reinit_after_fork() noexcept { new (&mutex_) std::mutex(); }

 private:
  // The recorded instants, oldest first. With the mutex held.
  std::vector<Nanos> ordered() const {
    std::vector<Nanos> out;
    out.reserve(count_);
    for (std::size_t i = 0; i < count_; ++i) out.push_back(ring_[(head_ + i) % ring_.size()]);
    return out;
  }

  mutable std::mutex mutex_;
  std::vector<Nanos> ring_;  // the instants of the last `count_` admissions, oldest at head_
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::int64_t limit_ = 0;
};

}  // namespace omnilimit
