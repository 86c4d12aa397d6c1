// WaitHistogram: how long callers waited, in log-linear buckets, without a lock, and the longest
// wait exactly.
//
// Only callers that waited record (the fast path stays untouched: an admission without a wait is
// counted by the limiter's own admitted counter, and quantile() is given that count). Buckets are
// powers of two of nanoseconds split in kSub = 32 equal parts, from 1 us to 2^44 ns (4.9 hours);
// shorter waits share the first bucket, longer ones the last. record() is one relaxed fetch_add on
// the bucket (its index from clz and shifts) plus, for a new longest wait only, a relaxed CAS on
// the maximum: one load when the wait is not the longest so far; and one relaxed fetch_add on the
// sum of the waits (for the exported histograms' _sum and the mean).
//
// Accuracy. quantile() finds the bucket [lo, up) holding the nearest-rank quantile and
// interpolates linearly by rank inside it: the k-th of the bucket's c waits is reported as
// lo + (hi - lo) * k / c, where hi is up, or the maximum when the maximum lies in that bucket (every
// wait in it is then at most the maximum). The estimate and the exact value both lie in the bucket,
// whose width is lo / 32, so the error is less than 1/32 (3.125%) of the exact value from 1 us to
// 4.9 hours, whatever the distribution (a smooth one comes within about 1%). The top rank of
// the top bucket is the maximum itself: a single wait reports p50 = p99 = max, exactly; and no
// quantile exceeds the maximum. (kSub = 16 with the same interpolation would be wrong by up to
// 1/16 = 6.25% when the waits bunch at the low end of a bucket, as equal waits of a steady rate
// do: hence 32.) Memory: 1090 counters, 8.7 KB per limiter (in its shared segment if shared).
//
// Export. count(i), lower_edge(i) and upper_edge(i) give the buckets themselves and sum_us() the
// total of the waits in microseconds (each wait truncated to a whole microsecond; in ns the total
// would wrap after 292 years of waiting, which 1000 callers always waiting reach in 107 days):
// what telemetry exports as a histogram, coarsened to its own bounds, from these counters alone.
//
// Thread-safety: record() and the readers are safe from any thread; a reader sees each count (and
// the maximum) at some instant, not all of them at the same one (fine for monitoring): a quantile
// read while a new longest wait is being recorded may come from a bucket above the maximum read,
// and is then interpolated up to the bucket's upper edge.
#pragma once

#include <atomic>
#include <cstdint>

#include "omnilimit/clock.hpp"

namespace omnilimit {

class WaitHistogram {
 public:
  static constexpr int kSubBits = 5;
  static constexpr int kSub = 1 << kSubBits;  // 32 buckets per power of two: 1/32 of their value wide
  static constexpr int kMinShift = 10;        // waits below 2^10 ns (~1 us) share the first bucket
  static constexpr int kMaxShift = 44;        // waits of 2^44 ns (~4.9 h) or more share the last one
  static constexpr int kBuckets = (kMaxShift - kMinShift) * kSub + 2;  // + below 1 us, + overflow
  static_assert(kMinShift >= kSubBits, "a bucket is at least 1 ns wide");

  void record(Nanos wait_ns) noexcept {
    counts_[bucket(wait_ns)].fetch_add(1, std::memory_order_relaxed);
    if (wait_ns >= 1000) sum_us_.fetch_add(wait_ns / 1000, std::memory_order_relaxed);
    Nanos longest = max_.load(std::memory_order_relaxed);
    while (wait_ns > longest &&
           !max_.compare_exchange_weak(longest, wait_ns, std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }

  std::int64_t recorded() const noexcept {
    std::int64_t n = 0;
    for (const auto& c : counts_) n += c.load(std::memory_order_relaxed);
    return n;
  }

  // The longest wait recorded, in ns (0 if none).
  Nanos max() const noexcept { return max_.load(std::memory_order_relaxed); }

  // The waits recorded in bucket i (0 <= i < kBuckets).
  std::int64_t count(int i) const noexcept { return counts_[i].load(std::memory_order_relaxed); }

  // The total of the waits recorded, in whole microseconds (each wait truncated).
  std::int64_t sum_us() const noexcept { return sum_us_.load(std::memory_order_relaxed); }

  // The q-quantile (0 < q <= 1) of the waits of `total` callers, of which `total - recorded()`
  // did not wait at all, in ns (0 if it did not wait): the nearest-rank quantile within 1/32 of
  // its value (see Accuracy above), never above max().
  Nanos quantile(double q, std::int64_t total) const noexcept {
    std::int64_t counts[kBuckets];
    std::int64_t waited = 0;
    for (int i = 0; i < kBuckets; ++i) waited += counts[i] = counts_[i].load(std::memory_order_relaxed);
    const Nanos longest = max();
    const std::int64_t everyone = total > waited ? total : waited;
    if (everyone == 0) return 0;
    auto rank = static_cast<std::int64_t>(q * static_cast<double>(everyone) + 0.999999);  // ceil, within rounding
    if (rank < 1) rank = 1;
    rank -= everyone - waited;  // the callers that did not wait come first
    if (rank <= 0) return 0;
    int i = 0;
    for (; i < kBuckets - 1 && rank > counts[i]; ++i) rank -= counts[i];
    if (counts[i] == 0) return longest;  // not reached: `rank` is at most `waited`
    if (rank > counts[i]) rank = counts[i];
    const Nanos lo = lower_edge(i);
    const Nanos up = upper_edge(i);
    // What the bucket's waits lie below: its upper edge, or the maximum when that is in it (the
    // last bucket has no upper edge: the maximum is in it).
    const Nanos hi = longest >= lo && (longest < up || i == kBuckets - 1) ? longest : up;
    const double share = static_cast<double>(rank) / static_cast<double>(counts[i]);
    const Nanos estimate = lo + static_cast<Nanos>(static_cast<double>(hi - lo) * share);
    // Never above the maximum: hi is at most the maximum whenever the maximum reaches this bucket
    // (the clamp only guards the rounding of the interpolation).
    return longest >= lo && estimate > longest ? longest : estimate;
  }

  static int bucket(Nanos wait_ns) noexcept {
    if (wait_ns < (Nanos{1} << kMinShift)) return 0;
    const int shift = 63 - __builtin_clzll(static_cast<unsigned long long>(wait_ns));  // floor(log2)
    if (shift >= kMaxShift) return kBuckets - 1;
    const int sub = static_cast<int>((wait_ns >> (shift - kSubBits)) & (kSub - 1));  // the next kSubBits bits
    return 1 + (shift - kMinShift) * kSub + sub;
  }
  // Bucket i holds the waits in [lower_edge(i), upper_edge(i)) (the last one: from 2^kMaxShift on).
  static Nanos lower_edge(int i) noexcept {
    if (i <= 0) return 0;
    if (i >= kBuckets - 1) return Nanos{1} << kMaxShift;
    const int shift = kMinShift + (i - 1) / kSub;
    const int sub = (i - 1) % kSub;
    return (Nanos{1} << shift) + (static_cast<Nanos>(sub) << (shift - kSubBits));
  }
  static Nanos upper_edge(int i) noexcept {
    if (i <= 0) return Nanos{1} << kMinShift;
    if (i >= kBuckets - 1) return Nanos{1} << kMaxShift;  // no upper edge: quantile() uses the maximum
    return lower_edge(i + 1);
  }

 private:
  std::atomic<std::int64_t> counts_[kBuckets] = {};
  std::atomic<Nanos> max_{0};
  std::atomic<std::int64_t> sum_us_{0};
};

}  // namespace omnilimit
