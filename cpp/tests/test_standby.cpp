// test_standby: Standby (standby.hpp), where callers stand by for a change of the budget.
//
// What it proves: no lost wake-up between a look at the budget and the sleep, over private and
// shared futexes and across two Standbys over the same words (another process's view); and the
// watcher thread wakes coroutines (Wakers) for another process's changes while it is started,
// left idle, reused, restarted and destroyed underneath them.

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

#include "omnilimit/standby.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;

// 8 threads stand by, each reading the generation and then "looking at the budget" (a counter of
// changes) before it sleeps, sometimes dawdling between the look and the sleep; another thread
// changes the budget and notifies, every few µs to 200 µs. Half the sleepers and half the
// notifications go through a second Standby over the same words (another process's view of a
// segment). A sleep that runs out its 500-ms deadline although the budget changed after its look
// is a lost wake-up. Run over private futexes (in-process words) and shared ones.
void standby_no_lost_wakeups() {
  for (const bool shared : {false, true}) {
    omnilimit::StandbyWords words;
    omnilimit::Standby mine(words, shared);
    omnilimit::Standby theirs(words, shared);
    constexpr int kSleepers = 8;
    constexpr Nanos kRunFor = 400 * kMs;
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> changes{0};
    std::atomic<long> lost{0}, woken{0}, timed_out{0};
    StartGate gate;
    std::vector<std::thread> threads;
    for (int w = 0; w < kSleepers; ++w) {
      threads.emplace_back([&, w] {
        Rng rng(3000 + static_cast<std::uint64_t>(w));
        const omnilimit::Standby::Watch watch(w % 2 == 0 ? mine : theirs);
        gate.wait();
        while (!stop.load()) {
          const std::uint32_t seen = watch.generation();
          const std::uint64_t looked = changes.load();  // the look at the budget
          if (rng.below(3) == 0) sleep_for_ns(rng.below(40 * kUs));  // dawdle between look and sleep
          if (watch.wait(seen, now_ns() + 500 * kMs)) {
            woken.fetch_add(1);
          } else {
            timed_out.fetch_add(1);
            if (!stop.load() && changes.load() != looked) lost.fetch_add(1);
          }
        }
      });
    }
    long notifications = 0;
    threads.emplace_back([&] {
      Rng rng(3100);
      gate.wait();
      const Nanos end = now_ns() + kRunFor;
      while (now_ns() < end) {
        if (rng.below(2) == 0) sleep_for_ns(rng.below(200 * kUs));
        changes.fetch_add(1);
        (rng.below(2) == 0 ? mine : theirs).notify();
        ++notifications;
      }
      stop.store(true);
      mine.notify();
    });
    gate.open();
    join_all(threads);
    std::printf("    %s futex: %ld notifications, %ld wake-ups, %ld deadlines, %ld lost\n", shared ? "shared" : "private",
                notifications, woken.load(), timed_out.load(), lost.load());
    CHECK(lost.load() == 0, lost.load(), " stand-bys slept through a change made after their look (", shared ? "shared" : "private", ")");
    CHECK(woken.load() > 0, "nobody was ever woken");
    CHECK(words.sleepers.load() == 0, words.sleepers.load(), " sleepers still counted");
  }
}

class CountingWaker final : public omnilimit::Waker {
 public:
  void wake() noexcept override { wakes.fetch_add(1); }
  std::atomic<long> wakes{0};
};

// Coroutines standing by on shared words hear other processes' notifications through the
// watcher thread. 4 threads register a listener, wait for a wake delivered after their
// registration (another Standby over the same words notifies every few µs), and leave, over and
// over: the watcher is started, left idle, reused and restarted underneath them. Then 50
// Standbys are destroyed with their watcher running, idle, or never started.
void standby_watcher_for_coroutines() {
  omnilimit::StandbyWords words;
  constexpr int kListeners = 4;
  constexpr Nanos kRunFor = 300 * kMs;
  std::atomic<long> missed{0}, rounds{0};
  {
    omnilimit::Standby mine(words, true);
    omnilimit::Standby theirs(words, true);
    std::atomic<bool> stop{false};
    StartGate gate;
    std::vector<std::thread> threads;
    for (int l = 0; l < kListeners; ++l) {
      threads.emplace_back([&, l] {
        Rng rng(3200 + static_cast<std::uint64_t>(l));
        gate.wait();
        while (!stop.load()) {
          CountingWaker waker;
          omnilimit::Standby::Listener listener(&waker);
          mine.listen(listener);
          const long before = waker.wakes.load();
          if (!wait_for_condition([&] { return waker.wakes.load() > before || stop.load(); }, 1 * kSec)) {
            missed.fetch_add(1);
          }
          mine.stop_listening(listener);
          rounds.fetch_add(1);
          if (rng.below(4) == 0) sleep_for_ns(rng.below(300 * kUs));  // let the watcher go idle
        }
      });
    }
    threads.emplace_back([&] {
      Rng rng(3300);
      gate.wait();
      const Nanos end = now_ns() + kRunFor;
      while (now_ns() < end) {
        sleep_for_ns(rng.below(100 * kUs));
        theirs.notify();
      }
      stop.store(true);
    });
    gate.open();
    join_all(threads);
  }
  long destroyed_listening = 0;
  for (int i = 0; i < 50; ++i) {
    CountingWaker waker;
    omnilimit::Standby::Listener listener(&waker);
    omnilimit::Standby mine(words, true);
    if (i % 3 != 0) mine.listen(listener);  // the watcher runs
    if (i % 3 == 1) mine.stop_listening(listener);  // ... idle
    destroyed_listening += i % 3 == 2;
    // ~Standby stops the watcher (the listener, declared before, outlives it).
  }
  std::printf("    %ld listen/wake/leave rounds, %ld missed; 50 Standbys destroyed (%ld listening)\n", rounds.load(),
              missed.load(), destroyed_listening);
  CHECK(missed.load() == 0, missed.load(), " listeners never heard a notification made by another Standby");
  CHECK(rounds.load() > 10, "too few rounds: ", rounds.load());
  CHECK(words.sleepers.load() == 0, words.sleepers.load(), " sleepers still counted (a watcher that never ended)");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"standby: no lost wake-up between a look and the sleep (private and shared futexes)", standby_no_lost_wakeups},
      {"standby: the watcher wakes coroutines for another process's changes", standby_watcher_for_coroutines},
  });
}
