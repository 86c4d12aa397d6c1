// test_histogram: WaitHistogram (histogram.hpp).
//
// What it proves: waits of known lengths, at every scale from 1 us to 4.9 h, give quantiles within
// 1/32 of the exact ones (never above the maximum; a lone wait gives itself exactly); 16 threads
// recording at once lose no count, and the maximum is exact.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "omnilimit/histogram.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::WaitHistogram;

// The nearest-rank q-quantile of `sorted` (ascending) and `idle` zeros before them: what
// WaitHistogram::quantile estimates.
Nanos exact_quantile(const std::vector<Nanos>& sorted, double q, std::int64_t idle) {
  const std::int64_t everyone = static_cast<std::int64_t>(sorted.size()) + idle;
  std::int64_t rank = static_cast<std::int64_t>(q * static_cast<double>(everyone) + 0.999999);
  rank = std::max<std::int64_t>(rank, 1) - idle;
  return rank <= 0 ? 0 : sorted[static_cast<std::size_t>(rank - 1)];
}

// Checks h's quantiles against the exact ones of `waits` (plus `idle` callers that did not wait):
// within 1/32 of the exact value, never above the maximum, the top one the maximum itself.
void check_quantiles(const WaitHistogram& h, std::vector<Nanos> waits, std::int64_t idle, const char* what) {
  std::sort(waits.begin(), waits.end());
  const std::int64_t total = static_cast<std::int64_t>(waits.size()) + idle;
  CHECK(h.max() == waits.back(), what, ": max() ", h.max(), ", longest wait ", waits.back());
  CHECK(h.quantile(1.0, total) == waits.back(), what, ": quantile(1) ", h.quantile(1.0, total), ", longest wait ",
        waits.back());
  for (double q : {0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0}) {
    const Nanos exact = exact_quantile(waits, q, idle);
    const Nanos got = h.quantile(q, total);
    const Nanos off = got > exact ? got - exact : exact - got;
    CHECK(off * WaitHistogram::kSub <= exact, what, ": quantile(", q, ") = ", got, " ns, exact ", exact, " ns");
    CHECK(got <= h.max(), what, ": quantile(", q, ") = ", got, " above max() = ", h.max());
  }
}

// Waits of known lengths, one shape at a time, at every scale the histogram covers (1 us to 4.9 h,
// 5% apart with a random offset): a lone wait, 200 equal waits, 190 equal waits and 10 three times longer (the waits
// bunched at the low end of a bucket: the worst case of interpolation), and 300 spread over
// [x, 2x], with and without callers that did not wait.
void histogram_accuracy() {
  Rng rng(77);
  int shapes = 0;
  for (double x = 1024.0; x < static_cast<double>(Nanos{1} << WaitHistogram::kMaxShift) / 4; x *= 1.05) {
    const auto wait = static_cast<Nanos>(x * (1.0 + static_cast<double>(rng.below(500)) / 10'000.0));
    std::vector<std::vector<Nanos>> sets;
    sets.push_back({wait});
    sets.emplace_back(200, wait);
    sets.emplace_back(190, wait);
    for (int i = 0; i < 10; ++i) sets.back().push_back(3 * wait);
    sets.emplace_back();
    for (int i = 0; i < 300; ++i) sets.back().push_back(wait + rng.below(wait));
    for (const auto& waits : sets) {
      for (std::int64_t idle : {std::int64_t{0}, static_cast<std::int64_t>(waits.size())}) {
        WaitHistogram h;
        for (Nanos w : waits) h.record(w);
        const std::string what = cat(waits.size(), " waits from ", wait, " ns, ", idle, " callers that did not wait");
        check_quantiles(h, waits, idle, what.c_str());
        ++shapes;
      }
    }
  }
  WaitHistogram lone;  // the issue: a lone wait of 1.9 s was reported as 2.147483648 s
  lone.record(1'900'000'000);
  CHECK(lone.quantile(0.5, 1) == 1'900'000'000 && lone.quantile(0.99, 1) == 1'900'000'000,
        "a lone wait of 1.9 s: p50 ", lone.quantile(0.5, 1), " ns, p99 ", lone.quantile(0.99, 1), " ns");
  WaitHistogram none;
  CHECK(none.quantile(0.5, 10) == 0 && none.max() == 0, "nobody waited: p50 ", none.quantile(0.5, 10));
  std::printf("    %d shapes checked\n", shapes);
}

// 16 threads record 20,000 waits each (1 us to ~18 min, about log-uniform) while 2 readers read
// the quantiles and watch the maximum only grow; then every count is there, the maximum is the
// longest wait recorded and the quantiles are within 1/32 of the exact ones.
void histogram_concurrent_records() {
  constexpr int kPerThread = 20'000;
  WaitHistogram h;
  std::vector<std::vector<Nanos>> recorded(kThreads);
  std::atomic<int> writers_left{kThreads};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(9000 + static_cast<std::uint64_t>(t));
      auto& mine = recorded[static_cast<std::size_t>(t)];
      gate.wait();
      for (int i = 0; i < kPerThread; ++i) {
        const int shift = 10 + static_cast<int>(rng.below(30));
        const Nanos wait = (Nanos{1} << shift) + rng.below(Nanos{1} << shift);
        h.record(wait);
        mine.push_back(wait);
      }
      writers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gate.wait();
      Nanos last_max = 0;
      bool more = true;
      while (more) {
        more = writers_left.load(std::memory_order_acquire) > 0;  // one last read after they finish
        const Nanos longest = h.max();
        CHECK(longest >= last_max, "reader ", r, ": max() went down from ", last_max, " to ", longest);
        last_max = longest;
        const Nanos p99 = h.quantile(0.99, h.recorded());
        CHECK(p99 >= 0 && p99 < Nanos{1} << 41, "reader ", r, ": p99 ", p99, " ns, outside what was recorded");
      }
    });
  }
  gate.open();
  join_all(threads);
  std::vector<Nanos> all;
  for (const auto& mine : recorded) all.insert(all.end(), mine.begin(), mine.end());
  CHECK(h.recorded() == static_cast<std::int64_t>(all.size()), "recorded() = ", h.recorded(), ", recorded ",
        all.size());
  check_quantiles(h, all, 0, "16 threads' waits");
  // The export: the total in whole microseconds, each wait truncated; every wait in the bucket
  // whose edges hold it; the buckets' counts add up to every wait.
  std::int64_t sum_us = 0;
  std::vector<std::int64_t> expected(WaitHistogram::kBuckets, 0);
  for (const Nanos wait : all) {
    sum_us += wait / 1000;
    const int i = WaitHistogram::bucket(wait);
    CHECK(WaitHistogram::lower_edge(i) <= wait && (wait < WaitHistogram::upper_edge(i) || i == WaitHistogram::kBuckets - 1),
          "a wait of ", wait, " ns outside its bucket ", i);
    ++expected[static_cast<std::size_t>(i)];
  }
  CHECK(h.sum_us() == sum_us, "sum_us() = ", h.sum_us(), ", the waits add up to ", sum_us, " us");
  for (int i = 0; i < WaitHistogram::kBuckets; ++i) {
    CHECK(h.count(i) == expected[static_cast<std::size_t>(i)], "bucket ", i, ": count ", h.count(i), ", expected ",
          expected[static_cast<std::size_t>(i)]);
  }
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"histogram: quantiles within 1/32 at every scale, the maximum exact", histogram_accuracy},
      {"histogram: 16 threads record at once: no count lost, the maximum and the sum exact",
       histogram_concurrent_records},
  });
}
