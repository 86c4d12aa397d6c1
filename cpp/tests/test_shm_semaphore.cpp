// test_shm_semaphore: SharedSemaphore (shm_semaphore.hpp), the semaphore of shared limiters,
// driven by the threads of this one process (what processes add, per-process holder records and
// their reclaim, is proven by the Python tests with real processes).
//
// What it proves: with 16 threads taking, waiting on the futex queue with deadlines that expire,
// cancelling and releasing while max changes, never more holders than the largest max and every
// count back to zero; and while a peer holds the segment's mutex (stopped), every call still
// answers by its deadline and nobody gets a slot until the mutex is free again.

#include <pthread.h>

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

#include "omnilimit/shm_semaphore.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::SharedSemaphore;

// The semaphore of shared limiters, driven by 16 threads of this one process (what processes add,
// per-process holder records and their reclaim, is proven by the Python tests with real
// processes): takes, queued waits on the futex with deadlines that expire, cancellations that
// find a slot handed over at the last moment, releases, while this thread changes max between
// 1 and 5. Never more holders than the largest max, and everything back to zero at the end.
void shared_semaphore_threads() {
  auto state = std::make_unique<SharedSemaphore::State>();
  SharedSemaphore::init(*state, 3);
  SharedSemaphore sem(*state);
  std::atomic<int> holders{0}, peak{0};
  std::atomic<long> acquired{0}, timed_out{0}, kept_at_cancel{0};
  std::atomic<bool> stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(700 + t);
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        bool got = false;
        if (rng.below(4) == 0) {
          got = sem.try_acquire();
        } else {
          int entry = -1;
          if (sem.enqueue(&entry) == SharedSemaphore::Enqueued::acquired) {
            got = true;
          } else if (sem.wait(entry, now_ns() + rng.below(3 * kMs))) {
            sem.claim(entry);
            got = true;
          } else if (sem.cancel(entry)) {
            kept_at_cancel.fetch_add(1, std::memory_order_relaxed);
            got = true;
          } else {
            timed_out.fetch_add(1, std::memory_order_relaxed);
          }
        }
        if (!got) continue;
        raise_to(peak, holders.fetch_add(1) + 1);
        acquired.fetch_add(1, std::memory_order_relaxed);
        sleep_for_ns(rng.below(200 * kUs));
        holders.fetch_sub(1);
        CHECK(sem.release(), "a holder's release was refused");
      }
    });
  }
  const Nanos start = now_ns();
  gate.open();
  Rng rng(11);
  while (now_ns() < start + 1000 * kMs) {
    sem.set_max(1 + rng.below(5));
    sleep_for_ns(rng.below(20 * kMs));
  }
  sem.set_max(5);  // nobody may be left waiting behind a small max at the end
  stop.store(true);
  join_all(threads);
  std::printf("    %ld acquired, %ld timed out, %ld kept at cancel; peak holders %d\n", acquired.load(),
              timed_out.load(), kept_at_cancel.load(), peak.load());
  CHECK(peak.load() <= 5, "peak holders ", peak.load(), " above the largest max 5");
  CHECK(acquired.load() > 100, "too few acquisitions: ", acquired.load());
  CHECK(sem.held() == 0 && sem.waiting() == 0, "held ", sem.held(), ", waiting ", sem.waiting(), " at the end");
  CHECK(sem.over_release_count() == 0, "over-releases: ", sem.over_release_count());
  CHECK(!sem.release() && sem.over_release_count() == 1, "a release without a slot was not refused and counted");
}

// A peer stops while it holds the segment's mutex (here: this thread takes it and keeps it for
// 300 ms). Meanwhile 8 threads keep calling: enqueue with a deadline answers busy by that
// deadline, try_acquire answers no at once, a queued caller leaves (cancel) and a granted one
// claims without the mutex, and nobody waits longer than its deadline. Once the mutex is
// released, everyone gets through and the figures settle.
void shared_semaphore_stopped_holder() {
  auto state = std::make_unique<SharedSemaphore::State>();
  SharedSemaphore::init(*state, 2);
  SharedSemaphore sem(*state);
  constexpr Nanos kHeldFor = 300 * kMs;
  constexpr Nanos kDeadline = 20 * kMs;
  int queued_entry = -1;
  CHECK(sem.enqueue(&queued_entry) == SharedSemaphore::Enqueued::acquired, "first slot");
  CHECK(sem.enqueue(&queued_entry) == SharedSemaphore::Enqueued::acquired, "second slot");
  CHECK(sem.enqueue(&queued_entry) == SharedSemaphore::Enqueued::queued, "a third caller queues");
  std::atomic<long> busy{0}, late{0}, got{0};
  std::atomic<bool> held{false}, stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(900 + static_cast<std::uint64_t>(t));
      gate.wait();
      while (!stop.load()) {
        const Nanos started = now_ns();
        int entry = -1;
        const bool tried = rng.below(2) == 0;
        bool acquired = false;
        if (tried) {
          acquired = sem.try_acquire();
        } else {
          const SharedSemaphore::Enqueued e = sem.enqueue(&entry, started + kDeadline);
          if (e == SharedSemaphore::Enqueued::busy) busy.fetch_add(1);
          acquired = e == SharedSemaphore::Enqueued::acquired;
          if (e == SharedSemaphore::Enqueued::queued) {
            acquired = sem.wait(entry, started + kDeadline) ? (sem.claim(entry), true) : sem.cancel(entry);
          }
        }
        const Nanos took = now_ns() - started;
        if (held.load() && took > kDeadline + 15 * kMs) late.fetch_add(1);
        if (acquired) {
          got.fetch_add(1);
          CHECK(sem.release(), "a holder's release was refused");
        }
      }
    });
  }
  gate.open();
  sleep_for_ns(20 * kMs);
  CHECK(pthread_mutex_lock(&sem.mutex_for_tests()) == 0, "the test could not take the mutex");
  held.store(true);
  const long got_before = got.load();
  sleep_for_ns(kHeldFor);
  const long got_while_held = got.load() - got_before;
  held.store(false);
  pthread_mutex_unlock(&sem.mutex_for_tests());
  CHECK(!sem.cancel(queued_entry), "the queued third caller left (no slot was free to grant it)");
  CHECK(sem.release() && sem.release(), "the first two slots");  // now the threads get through
  sleep_for_ns(50 * kMs);
  stop.store(true);
  join_all(threads);
  std::printf("    while the mutex was held for %.0f ms: %ld calls answered busy, %ld late, %ld slots got; %ld in all\n",
              seconds(kHeldFor) * 1000, busy.load(), late.load(), got_while_held, got.load());
  CHECK(busy.load() > 0, "no call met the held mutex");
  CHECK(late.load() == 0, late.load(), " calls waited past their deadline for the mutex");
  CHECK(got_while_held == 0, "a slot was had while the mutex was held");
  CHECK(got.load() > got_before, "nobody got through after the mutex was released");
  CHECK(sem.held() == 0 && sem.waiting() == 0, "held ", sem.held(), ", waiting ", sem.waiting(), " at the end");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"shared semaphore: 16 threads on the futex queue while max changes", shared_semaphore_threads},
      {"shared semaphore: a peer holds the mutex (stopped): deadlines hold", shared_semaphore_stopped_holder},
  });
}
