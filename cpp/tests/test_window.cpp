// test_window: RequestWindow (window.hpp), the one-minute count of events.
//
// What it proves: concurrent record() calls lose no event (count() is exact, bucket by bucket,
// including across laps of the ring), and count() racing with record() never reports more than
// the final total and never goes down.

#include <algorithm>
#include <atomic>
#include <cmath>
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

#include "omnilimit/window.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::RequestWindow;

constexpr Nanos kBucket = RequestWindow::kBucketNs;
constexpr std::int64_t kBucketsPerWindow = RequestWindow::kBuckets;

// Records events at explicit instants from 16 threads while 2 more read count(query) and check
// it never exceeds `final_total` nor goes down. `events_of(thread, rng, record)` makes one thread's
// events. Returns the histogram of recorded events per bucket index (relative to `base`).
template <class Events>
std::vector<std::int64_t> record_concurrently(RequestWindow& w, std::size_t buckets, Nanos base, Nanos query,
                                              std::int64_t final_total, Events events_of) {
  std::vector<std::vector<std::int64_t>> per_thread(kThreads, std::vector<std::int64_t>(buckets, 0));
  std::atomic<int> writers_left{kThreads};
  std::atomic<long> reads{0};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(6000 + static_cast<std::uint64_t>(i));
      std::vector<std::int64_t>& hist = per_thread[static_cast<std::size_t>(i)];
      gate.wait();
      events_of(i, rng, [&](Nanos t, std::uint32_t n) {
        w.record(t, n);
        hist[static_cast<std::size_t>((t - base) / kBucket)] += n;
      });
      writers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gate.wait();
      std::int64_t last = 0;
      bool more = true;
      while (more) {
        more = writers_left.load(std::memory_order_acquire) > 0;  // one last read after they finish
        const std::int64_t c = w.count(query);
        reads.fetch_add(1, std::memory_order_relaxed);
        CHECK(c <= final_total, "reader ", r, ": count() = ", c, " during recording exceeds the final total ",
              final_total);
        CHECK(c >= last, "reader ", r, ": count() went down from ", last, " to ", c);
        last = c;
      }
    });
  }
  gate.open();
  join_all(threads);
  std::printf("    %ld concurrent count() calls\n", reads.load());
  std::vector<std::int64_t> hist(buckets, 0);
  for (const auto& h : per_thread) {
    for (std::size_t b = 0; b < buckets; ++b) hist[b] += h[b];
  }
  return hist;
}

// Every event inside one 60 s window: count() must be exact, for every bucket boundary.
void window_one_minute() {
  constexpr std::int64_t kEventsPerThread = 20'000;
  const Nanos base = 10'000 * RequestWindow::kWindowNs;  // bucket-aligned, far from 0
  const Nanos span = RequestWindow::kWindowNs;
  const std::size_t buckets = static_cast<std::size_t>(kBucketsPerWindow);
  // Each thread's events are fixed by its seed, so the total is known before they are recorded.
  auto events_of = [&](int, Rng& rng, auto&& record) {
    for (std::int64_t k = 0; k < kEventsPerThread; ++k) {
      const Nanos t = base + rng.below(span);
      const std::uint32_t n = rng.below(8) == 0 ? 3u : 1u;
      record(t, n);
    }
  };
  std::int64_t expected_total = 0;
  for (int i = 0; i < kThreads; ++i) {
    Rng rng(6000 + static_cast<std::uint64_t>(i));
    events_of(i, rng, [&](Nanos, std::uint32_t n) { expected_total += n; });
  }

  RequestWindow w;
  const Nanos query = base + span - 1;  // the window is exactly the span's 1200 buckets
  const std::vector<std::int64_t> hist = record_concurrently(w, buckets, base, query, expected_total, events_of);
  std::int64_t total = 0;
  for (std::int64_t c : hist) total += c;
  CHECK(total == expected_total, "test bookkeeping: recorded ", total, ", expected ", expected_total);
  CHECK(w.count(query) == total, "count() = ", w.count(query), " but ", total, " events were recorded");

  // Window ending at each bucket boundary inside the span: exactly the events before it.
  std::int64_t prefix = 0;
  for (std::size_t b = 0; b < buckets; ++b) {
    prefix += hist[b];
    const Nanos at = base + static_cast<Nanos>(b + 1) * kBucket - 1;
    const std::int64_t c = w.count(at);
    CHECK(c == prefix, "count(end of bucket ", b, ") = ", c, ", want ", prefix);
  }
  // Windows that have slid past the start: exactly the events in the buckets still inside.
  std::int64_t suffix = total;
  for (std::size_t b = 0; b < buckets; ++b) {
    suffix -= hist[b];
    const Nanos at = query + static_cast<Nanos>(b + 1) * kBucket;  // bucket b has just left
    const std::int64_t c = w.count(at);
    CHECK(c == suffix, "count() with buckets 0..", b, " gone = ", c, ", want ", suffix);
  }
  // Halfway into the next bucket: half of the oldest bucket is still inside the window.
  const Nanos half = base + span + kBucket / 2;
  const std::int64_t want_half =
      (total - hist[0]) + static_cast<std::int64_t>(std::llround(0.5 * static_cast<double>(hist[0])));
  CHECK(w.count(half) == want_half, "count() half a bucket later = ", w.count(half), ", want ", want_half);
  std::printf("    %lld events in one window, counted exactly\n", static_cast<long long>(total));
}

// Five simulated minutes recorded by threads that each advance at their own pace, so writers of
// different laps of the ring race on the same slots. The last minute must still be exact.
void window_ring_laps() {
  constexpr std::int64_t kEventsPerThread = 30'000;
  const Nanos base = 20'000 * RequestWindow::kWindowNs;
  const Nanos span = 5 * RequestWindow::kWindowNs;
  const std::size_t buckets = static_cast<std::size_t>(span / kBucket);
  auto events_of = [&](int, Rng& rng, auto&& record) {
    // Mostly forward in time, with jitter of up to two minutes backwards: old laps keep arriving.
    for (std::int64_t k = 0; k < kEventsPerThread; ++k) {
      Nanos t = base + span * k / kEventsPerThread;
      if (rng.below(4) == 0) t = std::max(base, t - rng.below(2 * RequestWindow::kWindowNs));
      record(t, 1u);
    }
  };
  std::int64_t expected_last_minute = 0;
  const std::size_t first_of_last_minute = buckets - static_cast<std::size_t>(kBucketsPerWindow);
  for (int i = 0; i < kThreads; ++i) {
    Rng rng(6000 + static_cast<std::uint64_t>(i));
    events_of(i, rng, [&](Nanos t, std::uint32_t n) {
      if (static_cast<std::size_t>((t - base) / kBucket) >= first_of_last_minute) expected_last_minute += n;
    });
  }

  RequestWindow w;
  const Nanos query = base + span - 1;
  const std::vector<std::int64_t> hist =
      record_concurrently(w, buckets, base, query, expected_last_minute, events_of);
  std::int64_t last_minute = 0;
  for (std::size_t b = first_of_last_minute; b < buckets; ++b) last_minute += hist[b];
  CHECK(last_minute == expected_last_minute, "test bookkeeping: ", last_minute, " vs ", expected_last_minute);
  CHECK(w.count(query) == last_minute, "count() after 5 laps = ", w.count(query), ", want ", last_minute);
  // And at every bucket boundary of the last minute, going back: what is left of it.
  std::int64_t suffix = last_minute;
  for (std::size_t b = first_of_last_minute; b < buckets; ++b) {
    suffix -= hist[b];
    const Nanos at = query + static_cast<Nanos>(b - first_of_last_minute + 1) * kBucket;
    CHECK(w.count(at) == suffix, "count() with buckets up to ", b, " gone = ", w.count(at), ", want ", suffix);
  }
  std::printf("    %lld events in the last of 5 minutes, counted exactly\n", static_cast<long long>(last_minute));
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"window: 16 writers within one minute", window_one_minute},
      {"window: 16 writers across five laps of the ring", window_ring_laps},
  });
}
