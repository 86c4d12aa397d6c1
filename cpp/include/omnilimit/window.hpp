// RequestWindow: how many events happened in the last 60 seconds, in constant memory.
//
// The minute is cut into 1200 buckets of 50 ms, kept in a ring of 1201 slots (one more than the
// window, so the bucket that is leaving the window is still readable while the current one
// fills). Each slot is one atomic word holding the bucket's number (its start time / 50 ms) and
// its count, so recording an event is a single compare-and-swap and a slot left over from an
// earlier lap of the ring is recognised by its number and reset by the first writer of the new
// lap. Memory is about 9.6 KB whatever the rate.
//
// count(now) adds the 1199 whole buckets and the current one, plus the share of the oldest bucket
// that still lies inside (now - 60 s, now], assuming its events were spread evenly over its 50 ms.
// That assumption is the only error: at most the events of one 50 ms bucket, so under steady
// traffic the estimate is within 50 ms / 60 s (0.08%) of the exact count.
//
// Thread-safety: record() and count() are lock-free and safe from any thread; count() racing
// with record() sees each event either counted or not yet counted.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "omnilimit/clock.hpp"

namespace omnilimit {

class RequestWindow {
 public:
  static constexpr Nanos kWindowNs = 60 * kNanosPerSecond;
  static constexpr std::int64_t kBuckets = 1200;
  static constexpr Nanos kBucketNs = kWindowNs / kBuckets;  // 50 ms

  RequestWindow() noexcept {
    for (auto& slot : slots_) slot.store(kEmpty, std::memory_order_relaxed);
  }
  RequestWindow(const RequestWindow&) = delete;
  RequestWindow& operator=(const RequestWindow&) = delete;

  // Records `n` events at `now`. Events older than the ring's newest lap are dropped (they lie
  // outside every window that can still be asked for). Lock-free.
  void record(Nanos now, std::uint32_t n = 1) noexcept {
    const std::uint64_t bucket = bucket_of(now);
    std::atomic<std::uint64_t>& slot = slots_[bucket % kSlots];
    std::uint64_t word = slot.load(std::memory_order_relaxed);
    for (;;) {
      std::uint64_t next;
      const std::uint64_t stored = word >> kCountBits;
      if (word != kEmpty && stored == bucket) {
        const std::uint64_t count = word & kCountMask;
        next = word - count + std::min<std::uint64_t>(kCountMask, count + n);
      } else if (word == kEmpty || stored < bucket) {
        next = (bucket << kCountBits) | std::min<std::uint64_t>(kCountMask, n);
      } else {
        return;  // the slot already belongs to a later lap
      }
      if (slot.compare_exchange_weak(word, next, std::memory_order_relaxed)) return;
    }
  }
  void record() noexcept { record(coarse_now_ns()); }

  // Estimated events in (now - 60 s, now]. Lock-free; reads every slot (about a microsecond).
  std::int64_t count(Nanos now) const noexcept {
    const std::uint64_t current = bucket_of(now);
    std::int64_t whole = 0;
    for (std::int64_t back = 0; back < kBuckets; ++back) {
      if (static_cast<std::uint64_t>(back) > current) break;
      whole += count_of(current - back);
    }
    double total = static_cast<double>(whole);
    if (current >= static_cast<std::uint64_t>(kBuckets)) {
      const Nanos into_current = (now < 0 ? 0 : now) % kBucketNs;
      const double inside = 1.0 - static_cast<double>(into_current) / static_cast<double>(kBucketNs);
      total += static_cast<double>(count_of(current - kBuckets)) * inside;
    }
    return static_cast<std::int64_t>(std::llround(total));
  }
  std::int64_t count() const noexcept { return count(coarse_now_ns()); }

 private:
  static constexpr std::size_t kSlots = kBuckets + 1;
  static constexpr int kCountBits = 28;  // up to 268 million events per 50 ms bucket
  static constexpr std::uint64_t kCountMask = (1ULL << kCountBits) - 1;
  static constexpr std::uint64_t kEmpty = ~0ULL;

  // Bucket numbers fit in 36 bits for 109 years of uptime.
  static std::uint64_t bucket_of(Nanos now) noexcept {
    return now <= 0 ? 0 : static_cast<std::uint64_t>(now / kBucketNs);
  }

  std::int64_t count_of(std::uint64_t bucket) const noexcept {
    const std::uint64_t word = slots_[bucket % kSlots].load(std::memory_order_relaxed);
    if (word == kEmpty || (word >> kCountBits) != bucket) return 0;
    return static_cast<std::int64_t>(word & kCountMask);
  }

  std::array<std::atomic<std::uint64_t>, kSlots> slots_;
};

}  // namespace omnilimit
