// test_pause: Pause (pause.hpp), "send nothing before instant E".
//
// What it proves: with 16 threads declaring pauses at once, the end only grows while in the
// future, every reader sees an end no earlier than the latest it declared itself, and afterwards
// the end in effect is the largest one declared.

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

#include "omnilimit/pause.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Pause;

// 16 threads declare pauses with random ends and read the end in effect: the end only grows
// while in the future, every reader sees an end no earlier than the latest it declared itself
// (while that is still ahead), and afterwards the end in effect is the largest one declared.
void pause_extends_only() {
  Pause pause;
  std::vector<std::thread> threads;
  std::vector<Nanos> largest(kThreads, 0);
  StartGate gate;
  const Nanos base = now_ns() + 10 * kSec;  // every end lies in the future for the whole run
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + t);
      gate.wait();
      for (int i = 0; i < 20000; ++i) {
        const Nanos end = base + rng.below(kSec);
        const Nanos now = now_ns();
        const Nanos in_effect = pause.hold_until(end, now);
        largest[t] = std::max(largest[t], end);
        CHECK(in_effect >= end, "hold_until(", end, ") returned an earlier end ", in_effect);
        const Nanos seen = pause.end_ns(now_ns());
        CHECK(seen >= largest[t], "end_ns ", seen, " is before an end this thread declared, ", largest[t]);
        const Nanos go = pause.release_time(seen);
        CHECK(go >= seen && go <= seen + Pause::kMaxJitterNs, "release_time ", go, " outside [end, end + jitter]");
      }
    });
  }
  gate.open();
  join_all(threads);
  const Nanos expected = *std::max_element(largest.begin(), largest.end());
  CHECK(pause.end_ns(now_ns()) == expected, "end in effect ", pause.end_ns(now_ns()), ", largest declared ",
        expected);
  CHECK(pause.end_ns(expected) == 0, "a pause still in effect at its own end");
  CHECK(!pause.maybe_active(), "an expired pause was not cleared");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"pause: extends only, from 16 threads", pause_extends_only},
  });
}
