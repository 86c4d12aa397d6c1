// test_schedule: Schedule (schedule.hpp), where a token bucket's sleepers wait so that a rate
// change reschedules them.
//
// What it proves: with 16 threads booking on a Gcra and sleeping in a Schedule while the interval
// flips 4x, every sleeper returns and the uses never exceed the burst plus the fastest rate. The
// same over shared words (ScheduleWords: a seqlock of changes, a bell), through two Schedules as
// two processes would have: half the threads sleep on each, the changes are made through one.

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

#include "omnilimit/gcra.hpp"
#include "omnilimit/schedule.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Gcra;
using omnilimit::Reservation;
using omnilimit::Schedule;

// 16 threads book on a Gcra and sleep in a Schedule while this thread flips the interval between
// 100 us and 400 us through Schedule::change: every sleeper returns (none stuck past its
// deadline), and the uses never exceed the burst plus the fastest rate over the run.
constexpr Nanos kFast = 100 * kUs;
constexpr std::int64_t kB = 5;

void flips(Schedule& schedule, Schedule& second);

void schedule_rate_flips() {
  Schedule schedule;
  flips(schedule, schedule);
}

void shared_schedule_rate_flips() {
  omnilimit::ScheduleWords words;
  Schedule one(words, true);
  Schedule other(words, true);
  flips(one, other);
}

void flips(Schedule& changes, Schedule& second) {
  Gcra g(kFast, kB);
  std::vector<std::vector<Nanos>> uses(kThreads);
  std::atomic<bool> stop{false};
  std::atomic<long> lost{0}, late{0};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(700 + t);
      Schedule& schedule = t % 2 == 0 ? changes : second;
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const Nanos now = now_ns();
        const Nanos deadline = now + rng.below(5 * kMs);
        std::uint64_t epoch = schedule.epoch();
        const Reservation r = g.reserve(1, deadline - now, now);
        if (!r.admitted) continue;
        if (!schedule.stable(epoch)) continue;  // booked across a change: its slot is spent
        Nanos ready = r.ready_at_ns;
        const Schedule::Woke woke = schedule.wait(ready, epoch, deadline);
        if (woke == Schedule::Woke::lost) {
          lost.fetch_add(1);
          continue;
        }
        if (woke == Schedule::Woke::deadline) {
          g.refund(r, now_ns());
          continue;
        }
        const Nanos at = now_ns();
        if (at > deadline + 50 * kMs) late.fetch_add(1);
        uses[t].push_back(ready);
      }
    });
  }
  const Nanos start = now_ns();
  gate.open();
  bool fast = false;
  while (now_ns() < start + 1000 * kMs) {
    const Nanos interval = fast ? kFast : 4 * kFast;
    fast = !fast;
    const Nanos at = now_ns();
    changes.change(at, interval, [&] {
      const Nanos old = g.interval_ns();
      g.set_interval(interval, at);
      return old;
    });
    sleep_for_ns(2 * kMs);
  }
  stop.store(true);
  join_all(threads);
  const Nanos end = now_ns();
  std::vector<Nanos> all;
  for (auto& u : uses) all.insert(all.end(), u.begin(), u.end());
  const double bound = static_cast<double>(kB) + static_cast<double>(end - start) / static_cast<double>(kFast) + 1.0;
  std::printf("    %zu uses (bound %.0f), %ld sleepers lost their instant, %ld woke late\n", all.size(), bound,
              lost.load(), late.load());
  CHECK(static_cast<double>(all.size()) <= bound, "uses ", all.size(), " exceed the fastest rate's bound ", bound);
  CHECK(!all.empty(), "no use at all");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"schedule: sleepers follow the interval as it flips", schedule_rate_flips},
      {"shared schedule (a seqlock of changes, a bell): the same through two schedules", shared_schedule_rate_flips},
  });
}
