// WaitHistogram: how long callers waited, in log-linear buckets, without a lock.
//
// Only callers that waited record (the fast path stays untouched: an admission without a wait is
// counted by the limiter's own admitted counter, and quantile() is given that count). Buckets are
// powers of two of nanoseconds split in kSub equal parts, so a quantile is known within 1/kSub of
// its value (25%), from 1 us to 2^44 ns (4.9 hours); longer waits land in the last bucket.
//
// Thread-safety: record() and the readers are safe from any thread; a reader sees each count at
// some instant, not all of them at the same one (fine for monitoring).
#pragma once

#include <atomic>
#include <cstdint>

#include "omnilimit/clock.hpp"

namespace omnilimit {

class WaitHistogram {
 public:
  static constexpr int kSub = 4;
  static constexpr int kMinShift = 10;  // waits below 2^10 ns (~1 us) share the first bucket
  static constexpr int kMaxShift = 44;
  static constexpr int kBuckets = (kMaxShift - kMinShift) * kSub + 2;  // + below 1 us, + overflow

  void record(Nanos wait_ns) noexcept { counts_[bucket(wait_ns)].fetch_add(1, std::memory_order_relaxed); }

  std::int64_t recorded() const noexcept {
    std::int64_t n = 0;
    for (const auto& c : counts_) n += c.load(std::memory_order_relaxed);
    return n;
  }

  // The q-quantile (0 < q <= 1) of the waits of `total` callers, of which `total - recorded()`
  // did not wait at all: the upper edge of the bucket holding it, in ns (0 if it did not wait).
  Nanos quantile(double q, std::int64_t total) const noexcept {
    std::int64_t counts[kBuckets];
    std::int64_t waited = 0;
    for (int i = 0; i < kBuckets; ++i) waited += counts[i] = counts_[i].load(std::memory_order_relaxed);
    const std::int64_t everyone = total > waited ? total : waited;
    if (everyone == 0) return 0;
    auto rank = static_cast<std::int64_t>(q * static_cast<double>(everyone) + 0.999999);  // ceil, within rounding
    if (rank < 1) rank = 1;
    rank -= everyone - waited;  // the callers that did not wait come first
    if (rank <= 0) return 0;
    for (int i = 0; i < kBuckets; ++i) {
      rank -= counts[i];
      if (rank <= 0) return upper_edge(i);
    }
    return upper_edge(kBuckets - 1);
  }

  static int bucket(Nanos wait_ns) noexcept {
    if (wait_ns < (Nanos{1} << kMinShift)) return 0;
    const int shift = 63 - __builtin_clzll(static_cast<unsigned long long>(wait_ns));  // floor(log2)
    if (shift >= kMaxShift) return kBuckets - 1;
    const int sub = static_cast<int>((wait_ns >> (shift - 2)) & (kSub - 1));  // the next two bits
    return 1 + (shift - kMinShift) * kSub + sub;
  }
  static Nanos upper_edge(int i) noexcept {
    if (i == 0) return Nanos{1} << kMinShift;
    if (i >= kBuckets - 1) return Nanos{1} << kMaxShift;
    const int shift = kMinShift + (i - 1) / kSub;
    const int sub = (i - 1) % kSub;
    return (Nanos{1} << shift) + (static_cast<Nanos>(sub + 1) << (shift - 2));
  }

 private:
  std::atomic<std::int64_t> counts_[kBuckets] = {};
};

}  // namespace omnilimit
