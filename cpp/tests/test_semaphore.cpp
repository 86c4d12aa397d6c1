// test_semaphore: Semaphore (semaphore.hpp) under 16 threads, and coroutine waiters on it.
//
// What it proves, with 16 threads per scenario hammering one shared semaphore: never more than max
// holders at once, whatever mix of try_acquire_fast(), acquire_until() (with timeouts that expire)
// and the stepwise enqueue()/wait()/cancel() API is used; nobody starves; waiters are served in
// arrival order and a newcomer cannot barge past the queue; close() wakes every waiter
// (WaitStatus::closed / std::runtime_error), turns every later acquire away and still lets holders
// release, also when it races with a busy semaphore; over-release is counted and never adds
// capacity; the counters end at zero.
//
// Coroutine waiters (the Waker path of waker.hpp, which the asyncio bindings use), on fake event
// loops (harness.hpp) alongside 8 plain threads, on a semaphore whose max moves: every wake is made
// under the semaphore's mutex and posts a shared waiter; waiters give up (cancel()) or are dropped
// while queued (leaving in their destructor while wakes race them); each loop audits its waiters,
// so a lost wake-up is reported rather than hung on. The same bound holds as for threads alone,
// every coroutine ends, every post is taken, the queue ends empty.

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

#include "omnilimit/semaphore.hpp"
#include "harness.hpp"

namespace {

using namespace omnilimit::test;
using omnilimit::Semaphore;

const char* name_of(Semaphore::WaitStatus s) {
  switch (s) {
    case Semaphore::WaitStatus::acquired: return "acquired";
    case Semaphore::WaitStatus::pending: return "pending";
    case Semaphore::WaitStatus::closed: return "closed";
  }
  return "?";
}
const char* name_of(Semaphore::Enqueued e) {
  switch (e) {
    case Semaphore::Enqueued::acquired: return "acquired";
    case Semaphore::Enqueued::queued: return "queued";
    case Semaphore::Enqueued::closed: return "closed";
  }
  return "?";
}
const char* name_of(Semaphore::Released r) {
  return r == Semaphore::Released::ok ? "ok" : "over_release";
}

// 16 threads, max 4, a random mix of the three ways to acquire, for a fixed wall time. The load
// alternates every 100 ms between saturation (a queue always present, so hand-over dominates) and
// light use (threads pause between attempts, so the queue keeps emptying and refilling and the
// lock-free paths race with queueing: the no-lost-wake-up argument in semaphore.hpp).
void semaphore_mixed_load() {
  constexpr std::int64_t kMax = 4;
  constexpr Nanos kRunFor = 2 * kSec;
  constexpr int kStepsBeforeCancel = 3;
  Semaphore sem(kMax);
  std::atomic<int> holders{0};  // +1 after an acquire succeeds, -1 before the release
  std::atomic<int> peak{0};

  struct Tally {
    long acquired = 0;
    long fast_ok = 0, fast_refused = 0;
    long timed_ok = 0, timed_out = 0;
    long step_immediate = 0, step_granted = 0, step_pending = 0, cancel_won = 0, cancel_left = 0;
  };
  std::vector<Tally> tallies(kThreads);

  StartGate gate;
  std::vector<std::thread> threads;
  Nanos start_at = 0, stop_at = 0;  // written before gate.open(), read after gate.wait()
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(1000 + static_cast<std::uint64_t>(i));
      Tally& t = tallies[static_cast<std::size_t>(i)];
      auto hold_and_release = [&] {
        ++t.acquired;
        const int inside = holders.fetch_add(1, std::memory_order_acq_rel) + 1;
        CHECK(inside <= kMax, inside, " simultaneous holders of a semaphore with max ", kMax);
        raise_to(peak, inside);
        const std::int64_t held = sem.held();
        CHECK(held >= 1 && held <= kMax, "held() = ", held, " while holding a slot (max ", kMax, ")");
        if (rng.below(4) == 0) {
          std::this_thread::yield();
        } else {
          sleep_for_ns(rng.below(150 * kUs));
        }
        holders.fetch_sub(1, std::memory_order_acq_rel);
        const Semaphore::Released r = sem.release();
        CHECK(r == Semaphore::Released::ok, "release() of a held slot returned ", name_of(r));
      };

      gate.wait();
      for (;;) {
        const Nanos now = now_ns();
        if (now >= stop_at) break;
        const bool light_phase = ((now - start_at) / (100 * kMs)) % 2 == 1;
        if (light_phase) sleep_for_ns(rng.below(2 * kMs));
        switch (rng.below(3)) {
          case 0:  // lock-free fast path only
            if (sem.try_acquire_fast()) {
              ++t.fast_ok;
              hold_and_release();
            } else {
              ++t.fast_refused;
              std::this_thread::yield();
            }
            break;
          case 1: {  // blocking acquire with a short deadline (often expires)
            const Nanos deadline = now_ns() + 20 * kUs + rng.below(kMs);
            bool ok = false;
            try {
              ok = sem.acquire_until(deadline);
            } catch (const std::exception& e) {
              CHECK(false, "acquire_until threw on an open semaphore: ", e.what());
            }
            if (ok) {
              ++t.timed_ok;
              hold_and_release();
            } else {
              ++t.timed_out;
              CHECK(now_ns() >= deadline, "acquire_until returned false before its deadline");
            }
            break;
          }
          default: {  // stepwise: enqueue, a few short waits, then cancel
            Semaphore::Waiter w;
            const Semaphore::Enqueued e = sem.enqueue(w);
            if (e == Semaphore::Enqueued::acquired) {
              ++t.step_immediate;
              hold_and_release();
              break;
            }
            CHECK(e == Semaphore::Enqueued::queued, "enqueue on an open semaphore returned ", name_of(e));
            if (e != Semaphore::Enqueued::queued) break;
            bool got = false;
            bool settled = false;
            for (int step = 0; step < kStepsBeforeCancel && !settled; ++step) {
              const Semaphore::WaitStatus s = sem.wait(w, now_ns() + 20 * kUs + rng.below(100 * kUs));
              if (s == Semaphore::WaitStatus::pending) {
                ++t.step_pending;
              } else {
                CHECK(s == Semaphore::WaitStatus::acquired, "wait on an open semaphore returned ", name_of(s));
                got = (s == Semaphore::WaitStatus::acquired);
                if (got) ++t.step_granted;
                settled = true;
              }
            }
            if (!settled) {
              got = sem.cancel(w);  // true: a slot was handed over just before we left
              if (got) {
                ++t.cancel_won;
              } else {
                ++t.cancel_left;
              }
            }
            if (got) hold_and_release();
            break;
          }
        }
      }
    });
  }
  start_at = now_ns();
  stop_at = start_at + kRunFor;
  gate.open();
  join_all(threads);

  Tally sum;
  long fewest = -1, most = 0;
  for (int i = 0; i < kThreads; ++i) {
    const Tally& t = tallies[static_cast<std::size_t>(i)];
    CHECK(t.acquired >= 1, "thread ", i, " never got a slot in ", seconds(kRunFor), " s (starved)");
    fewest = (fewest < 0) ? t.acquired : std::min(fewest, t.acquired);
    most = std::max(most, t.acquired);
    sum.acquired += t.acquired;
    sum.fast_ok += t.fast_ok;
    sum.fast_refused += t.fast_refused;
    sum.timed_ok += t.timed_ok;
    sum.timed_out += t.timed_out;
    sum.step_immediate += t.step_immediate;
    sum.step_granted += t.step_granted;
    sum.step_pending += t.step_pending;
    sum.cancel_won += t.cancel_won;
    sum.cancel_left += t.cancel_left;
  }
  CHECK(peak.load() <= kMax, "peak holders ", peak.load(), " > max ", kMax);
  CHECK(sem.held() == 0, "held() = ", sem.held(), " after every holder released");
  CHECK(sem.waiting() == 0, "waiting() = ", sem.waiting(), " after every waiter left");
  CHECK(sem.over_release_count() == 0, "over_release_count() = ", sem.over_release_count());
  CHECK(!sem.closed(), "the semaphore reports closed without close()");
  // Still fully usable: all max slots can be taken (so no capacity leaked), and no more.
  for (std::int64_t k = 0; k < kMax; ++k) CHECK(sem.try_acquire_fast(), "slot ", k, " not free after the run");
  CHECK(!sem.try_acquire_fast(), "a slot beyond max was granted after the run");
  for (std::int64_t k = 0; k < kMax; ++k) sem.release();
  CHECK(sem.held() == 0 && sem.over_release_count() == 0, "final release bookkeeping off");

  std::printf("    acquired %ld (per thread %ld..%ld), peak holders %d/%lld\n", sum.acquired, fewest,
              most, peak.load(), static_cast<long long>(kMax));
  std::printf("    fast ok %ld refused %ld | timed ok %ld timed out %ld | stepwise immediate %ld "
              "granted %ld pending %ld cancel-won %ld cancelled %ld\n",
              sum.fast_ok, sum.fast_refused, sum.timed_ok, sum.timed_out, sum.step_immediate,
              sum.step_granted, sum.step_pending, sum.cancel_won, sum.cancel_left);
  if (peak.load() < kMax) std::printf("    note: the semaphore never reached max holders\n");
  if (sum.timed_out == 0) std::printf("    note: no acquire_until timed out (path not exercised)\n");
  if (sum.step_pending == 0) std::printf("    note: no stepwise wait returned pending (path not exercised)\n");
}

// max=1 held by this thread; 16 waiters queue one at a time; they must be served in that order,
// and a thread that starts trying only after the release must come last.
void semaphore_fifo() {
  constexpr int kWaiters = kThreads;
  Semaphore sem(1);
  CHECK(sem.try_acquire_fast(), "could not take the only slot of a fresh semaphore");

  std::mutex order_mutex;
  std::vector<int> order;  // who got the slot, in the order they got it
  auto take_turn = [&](int who) {
    {
      std::lock_guard<std::mutex> lock(order_mutex);
      order.push_back(who);
    }
    const Semaphore::Released r = sem.release();
    CHECK(r == Semaphore::Released::ok, "waiter ", who, ": release returned ", name_of(r));
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(2000 + static_cast<std::uint64_t>(i));
      bool got = false;
      switch (i % 3) {
        case 0:  // the blocking call
          try {
            got = sem.acquire_until(kForever);
          } catch (const std::exception& e) {
            CHECK(false, "waiter ", i, ": acquire_until threw: ", e.what());
          }
          break;
        case 1: {  // stepwise, one unbounded wait
          Semaphore::Waiter w;
          const Semaphore::Enqueued e = sem.enqueue(w);
          CHECK(e == Semaphore::Enqueued::queued, "waiter ", i, ": enqueue returned ", name_of(e));
          got = e == Semaphore::Enqueued::acquired;  // wrong, but then pass the slot on rather than hang
          if (e == Semaphore::Enqueued::queued) got = sem.wait(w, kForever) == Semaphore::WaitStatus::acquired;
          break;
        }
        default: {  // stepwise, many short waits: a pending wait must keep the place in the queue
          Semaphore::Waiter w;
          const Semaphore::Enqueued e = sem.enqueue(w);
          CHECK(e == Semaphore::Enqueued::queued, "waiter ", i, ": enqueue returned ", name_of(e));
          got = e == Semaphore::Enqueued::acquired;
          if (e != Semaphore::Enqueued::queued) break;
          Semaphore::WaitStatus s;
          do {
            s = sem.wait(w, now_ns() + 100 * kUs + rng.below(kMs));
          } while (s == Semaphore::WaitStatus::pending);
          CHECK(s == Semaphore::WaitStatus::acquired, "waiter ", i, ": wait returned ", name_of(s));
          got = s == Semaphore::WaitStatus::acquired;
          break;
        }
      }
      CHECK(got, "waiter ", i, " did not get the slot");
      if (got) take_turn(i);
    });
    const bool queued = wait_for_condition([&] { return sem.waiting() == i + 1; }, 10 * kSec);
    CHECK(queued, "waiter ", i, " did not show up in waiting() (waiting() = ", sem.waiting(), ")");
  }
  CHECK(sem.held() == 1, "held() = ", sem.held(), " with the slot held and ", kWaiters, " queued");

  CHECK(sem.release() == Semaphore::Released::ok, "release by the main thread failed");
  // A latecomer polling the lock-free fast path must not get in before the queue has drained.
  const int kLatecomer = kWaiters;
  threads.emplace_back([&] {
    while (!sem.try_acquire_fast()) std::this_thread::yield();
    take_turn(kLatecomer);
  });
  join_all(threads);

  std::vector<int> expected;
  for (int i = 0; i <= kLatecomer; ++i) expected.push_back(i);
  if (order != expected) {
    std::string got;
    for (int who : order) got += cat(who, " ");
    CHECK(order == expected, "slot handed over out of arrival order: got [ ", got, "], want 0..",
          kLatecomer, " (", kLatecomer, " = the latecomer on the fast path)");
  }
  CHECK(sem.held() == 0 && sem.waiting() == 0, "held() = ", sem.held(), ", waiting() = ", sem.waiting(),
        " at the end");
  CHECK(sem.over_release_count() == 0, "over_release_count() = ", sem.over_release_count());
}

// Every slot held, 16 blocked waiters of four kinds; close() must wake each with `closed`.
void semaphore_close_wakes_waiters() {
  constexpr std::int64_t kMax = 2;
  Semaphore sem(kMax);
  for (std::int64_t k = 0; k < kMax; ++k) CHECK(sem.try_acquire_fast(), "could not fill a fresh semaphore");

  std::atomic<int> saw_closed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      switch (i % 4) {
        case 0:
        case 1: {  // blocking call, with no deadline or a far one: must throw runtime_error
          const Nanos deadline = (i % 4 == 0) ? kForever : now_ns() + 60 * kSec;
          try {
            const bool ok = sem.acquire_until(deadline);
            CHECK(false, "waiter ", i, ": acquire_until returned ", ok, " instead of throwing on close");
          } catch (const std::runtime_error&) {
            saw_closed.fetch_add(1);
          } catch (const std::exception& e) {
            CHECK(false, "waiter ", i, ": acquire_until threw the wrong type: ", e.what());
          }
          break;
        }
        case 2: {  // stepwise, unbounded wait
          Semaphore::Waiter w;
          const Semaphore::Enqueued e = sem.enqueue(w);
          CHECK(e == Semaphore::Enqueued::queued, "waiter ", i, ": enqueue returned ", name_of(e));
          if (e != Semaphore::Enqueued::queued) break;
          const Semaphore::WaitStatus s = sem.wait(w, kForever);
          CHECK(s == Semaphore::WaitStatus::closed, "waiter ", i, ": wait returned ", name_of(s));
          if (s == Semaphore::WaitStatus::closed) saw_closed.fetch_add(1);
          CHECK(!sem.cancel(w), "waiter ", i, ": cancel after closed claimed a slot");
          break;
        }
        default: {  // stepwise, short waits until something other than pending
          Semaphore::Waiter w;
          const Semaphore::Enqueued e = sem.enqueue(w);
          CHECK(e == Semaphore::Enqueued::queued, "waiter ", i, ": enqueue returned ", name_of(e));
          if (e != Semaphore::Enqueued::queued) break;
          Semaphore::WaitStatus s;
          do {
            s = sem.wait(w, now_ns() + 300 * kUs);
          } while (s == Semaphore::WaitStatus::pending);
          CHECK(s == Semaphore::WaitStatus::closed, "waiter ", i, ": wait returned ", name_of(s));
          if (s == Semaphore::WaitStatus::closed) saw_closed.fetch_add(1);
          CHECK(!sem.cancel(w), "waiter ", i, ": cancel after closed claimed a slot");
          break;
        }
      }
    });
  }
  const bool all_queued = wait_for_condition([&] { return sem.waiting() == kThreads; }, 10 * kSec);
  CHECK(all_queued, "only ", sem.waiting(), " of ", kThreads, " waiters queued");
  sleep_for_ns(20 * kMs);  // let the blocked ones actually go to sleep
  sem.close();
  join_all(threads);

  CHECK(saw_closed.load() == kThreads, saw_closed.load(), " of ", kThreads, " waiters woke with `closed`");
  CHECK(sem.closed(), "closed() is false after close()");
  CHECK(sem.waiting() == 0, "waiting() = ", sem.waiting(), " after close()");
  CHECK(sem.held() == kMax, "held() = ", sem.held(), " after close(): the holders' slots must stay held");
  {
    Semaphore::Waiter w;
    const Semaphore::Enqueued e = sem.enqueue(w);
    CHECK(e == Semaphore::Enqueued::closed, "enqueue after close returned ", name_of(e));
  }
  CHECK(!sem.try_acquire_fast(), "try_acquire_fast succeeded after close");
  bool threw = false;
  try {
    sem.acquire_until(now_ns() + kMs);
  } catch (const std::runtime_error&) {
    threw = true;
  }
  CHECK(threw, "acquire_until after close did not throw std::runtime_error");
  for (std::int64_t k = 0; k < kMax; ++k) {
    const Semaphore::Released r = sem.release();
    CHECK(r == Semaphore::Released::ok, "holder's release after close returned ", name_of(r));
  }
  CHECK(sem.held() == 0, "held() = ", sem.held(), " after the holders released");
  CHECK(sem.over_release_count() == 0, "over_release_count() = ", sem.over_release_count());
  const Semaphore::Released extra = sem.release();
  CHECK(extra == Semaphore::Released::over_release, "a release with nothing held returned ", name_of(extra));
  CHECK(sem.over_release_count() == 1 && sem.held() == 0, "over-release after close: count ",
        sem.over_release_count(), ", held ", sem.held());
}

// close() racing with 16 threads busily acquiring and releasing: every thread must notice the
// close, nothing may be acquired by an attempt that starts after close() returned, every slot
// that was held comes back, and the counters end at zero.
void semaphore_close_under_load() {
  constexpr std::int64_t kMax = 3;
  Semaphore sem(kMax);
  std::atomic<int> holders{0};
  std::atomic<bool> close_returned{false};
  std::atomic<long> acquisitions{0};

  StartGate gate;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(3000 + static_cast<std::uint64_t>(i));
      gate.wait();
      for (;;) {
        const bool after_close = close_returned.load(std::memory_order_acquire);
        bool got = false;
        bool refused_closed = false;
        switch (rng.below(3)) {
          case 0:
            got = sem.try_acquire_fast();
            if (!got && sem.closed()) refused_closed = true;
            break;
          case 1:
            try {
              got = sem.acquire_until(now_ns() + rng.below(500 * kUs));
            } catch (const std::runtime_error&) {
              refused_closed = true;
            }
            break;
          default: {
            Semaphore::Waiter w;
            const Semaphore::Enqueued e = sem.enqueue(w);
            if (e == Semaphore::Enqueued::closed) {
              refused_closed = true;
            } else if (e == Semaphore::Enqueued::acquired) {
              got = true;
            } else {
              const Semaphore::WaitStatus s = sem.wait(w, now_ns() + rng.below(300 * kUs));
              if (s == Semaphore::WaitStatus::acquired) {
                got = true;
              } else if (s == Semaphore::WaitStatus::closed) {
                refused_closed = true;
              } else {
                got = sem.cancel(w);
              }
            }
            break;
          }
        }
        if (got) {
          CHECK(!after_close, "thread ", i, " acquired a slot by an attempt started after close() returned");
          acquisitions.fetch_add(1, std::memory_order_relaxed);
          const int inside = holders.fetch_add(1, std::memory_order_acq_rel) + 1;
          CHECK(inside <= kMax, inside, " simultaneous holders of a semaphore with max ", kMax);
          sleep_for_ns(rng.below(100 * kUs));
          holders.fetch_sub(1, std::memory_order_acq_rel);
          const Semaphore::Released r = sem.release();
          CHECK(r == Semaphore::Released::ok, "release of a held slot (around close) returned ", name_of(r));
        }
        if (refused_closed) break;
      }
    });
  }
  gate.open();
  sleep_for_ns(400 * kMs);
  const long before_close = acquisitions.load();
  sem.close();
  close_returned.store(true, std::memory_order_release);
  join_all(threads);

  CHECK(before_close > 0, "nothing was acquired before close()");
  CHECK(sem.held() == 0, "held() = ", sem.held(), " after everyone released");
  CHECK(sem.waiting() == 0, "waiting() = ", sem.waiting(), " after close()");
  CHECK(sem.over_release_count() == 0, "over_release_count() = ", sem.over_release_count());
  std::printf("    %ld acquisitions before close(), %ld in all\n", before_close, acquisitions.load());
}

// release() with nothing held is counted and ignored; capacity never grows.
void semaphore_over_release() {
  constexpr std::int64_t kMax = 3;
  Semaphore sem(kMax);
  Semaphore::Released r = sem.release();
  CHECK(r == Semaphore::Released::over_release, "release on a fresh semaphore returned ", name_of(r));
  CHECK(sem.over_release_count() == 1, "over_release_count() = ", sem.over_release_count());
  CHECK(sem.held() == 0, "held() = ", sem.held(), " after an over-release");
  for (std::int64_t k = 0; k < kMax; ++k) CHECK(sem.try_acquire_fast(), "slot ", k, " not free");
  CHECK(!sem.try_acquire_fast(), "an over-release added capacity");
  for (std::int64_t k = 0; k < kMax; ++k) {
    r = sem.release();
    CHECK(r == Semaphore::Released::ok, "release ", k, " returned ", name_of(r));
  }
  r = sem.release();
  CHECK(r == Semaphore::Released::over_release, "release with nothing held returned ", name_of(r));
  CHECK(sem.over_release_count() == 2 && sem.held() == 0, "count ", sem.over_release_count(), ", held ",
        sem.held());

  // Concurrent stray releases on an idle semaphore: all counted, none adds capacity.
  Semaphore idle(2);
  std::vector<std::thread> threads;
  constexpr int kEach = 200;
  std::atomic<int> oks{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < kEach; ++k) {
        if (idle.release() == Semaphore::Released::ok) oks.fetch_add(1);
      }
    });
  }
  join_all(threads);
  CHECK(oks.load() == 0, oks.load(), " stray releases were accepted as real");
  CHECK(idle.over_release_count() == kThreads * kEach, "over_release_count() = ", idle.over_release_count(),
        ", want ", kThreads * kEach);
  CHECK(idle.held() == 0, "held() = ", idle.held());
  CHECK(idle.try_acquire_fast() && idle.try_acquire_fast() && !idle.try_acquire_fast(),
        "capacity changed after stray releases");
}

// 16 threads hold slots for random short times (and some wait with deadlines) while this thread
// keeps changing max between 1 and 6: never more holders than the largest max set, nobody left
// waiting with a slot free at the end, and the count settles to zero.
void semaphore_set_max_under_load() {
  Semaphore sem(3);
  std::atomic<int> holders{0}, peak{0};
  std::atomic<bool> stop{false};
  std::atomic<long> acquired{0};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(500 + t);
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        if (!sem.acquire_until(now_ns() + rng.below(3 * kMs))) continue;
        raise_to(peak, holders.fetch_add(1) + 1);
        acquired.fetch_add(1, std::memory_order_relaxed);
        sleep_for_ns(rng.below(200 * kUs));
        holders.fetch_sub(1);
        CHECK(sem.release() == Semaphore::Released::ok, "a held slot's release was refused");
      }
    });
  }
  gate.open();
  Rng rng(77);
  const Nanos until = now_ns() + 1000 * kMs;
  while (now_ns() < until) {
    sem.set_max(1 + rng.below(6));
    sleep_for_ns(rng.below(2 * kMs));
  }
  sem.set_max(6);
  stop.store(true);
  join_all(threads);
  std::printf("    %ld acquires, at most %d holders at once\n", acquired.load(), peak.load());
  CHECK(peak.load() <= 6, "more holders than any max: ", peak.load());
  CHECK(sem.held() == 0 && sem.waiting() == 0, "left held ", sem.held(), ", waiting ", sem.waiting());
  CHECK(acquired.load() > 100, "only ", acquired.load(), " acquires");
}

// A coroutine waiting for a semaphore slot (AsyncWait's `slot`).
class SemCoroutine final : public LoopTask {
 public:
  enum class State { waiting, holding, done };

  SemCoroutine(FakeLoop& loop, Semaphore& sem) : LoopTask(loop), sem_(sem) {}
  // As ~AsyncWait: leave the queue (under the core's mutex, before the Waker goes); a slot that
  // was handed over and never claimed goes on to the next waiter. `linger` widens the window in
  // which a wake finds the waiter already unowned (its thread could be preempted there anyway).
  ~SemCoroutine() override {
    if (linger > 0) sleep_for_ns(linger);
    if (sem_.cancel(slot) && !claimed) sem_.release();
  }

  Semaphore::Waiter slot{this};
  Nanos linger = 0;
  bool claimed = false;  // the coroutine took the slot (and will release it)
  State state = State::waiting;
  Nanos timer = kForever;  // holding: when it releases; waiting: when it gives up (kForever: never)

 private:
  Semaphore& sem_;
};

// 8 threads acquire_until() and release while 2 fake event loops run coroutine waiters on the
// same semaphore through the Waker path: enqueue() with a Waker, wait for a post, look with
// status(), hold briefly, release. One in four gives up after a while: cancel() (keeping a slot
// handed over at the last moment), or dropped while queued (leaving in its destructor, racing
// the wakes, as an abandoned AsyncWait does). This thread moves max between 2 and 6. Never more
// than 6 holders; every coroutine ends (each loop audits its waiters: a slot granted without a
// wake is a lost wake-up, reported; one still waiting 5 s after the run is reported too), every
// post is taken, and the counts end at zero.
void semaphore_coroutine_waiters() {
  constexpr std::int64_t kLargestMax = 6;
  constexpr int kWorkers = kThreads / 2;
  constexpr int kLoops = 2;
  constexpr std::size_t kPerLoop = 6;  // coroutines alive at once on one loop
  constexpr Nanos kRunFor = 1000 * kMs;
  constexpr Nanos kAuditEvery = 3 * kMs;
  constexpr Nanos kDrainLimit = 5 * kSec;
  Semaphore sem(4);
  FakeLoop loops[kLoops];  // declared after `sem`: destroyed before it
  std::atomic<int> holders{0}, peak{0};
  std::atomic<bool> stop{false};
  std::atomic<long> thread_acquired{0}, thread_timed_out{0};
  Nanos start = 0;  // written before gate.open(), read after gate.wait()
  // Every other 100 ms the load is light (threads and loops pause between attempts), so the queue
  // keeps emptying: coroutines then also take free slots at once and race the lock-free paths.
  auto light_phase = [&](Nanos now) { return ((now - start) / (100 * kMs)) % 2 == 1; };

  auto enter = [&](const char* who) {
    const int inside = holders.fetch_add(1, std::memory_order_acq_rel) + 1;
    CHECK(inside <= kLargestMax, inside, " simultaneous holders (", who, ") of a semaphore whose max is never above ",
          kLargestMax);
    raise_to(peak, inside);
    const std::int64_t held = sem.held();
    CHECK(held >= 1 && held <= kLargestMax, "held() = ", held, " while ", who, " holds a slot");
  };
  auto leave = [&](const char* who) {
    holders.fetch_sub(1, std::memory_order_acq_rel);
    const Semaphore::Released r = sem.release();
    CHECK(r == Semaphore::Released::ok, "release() of a slot held by ", who, " returned ", name_of(r));
  };

  struct Tally {
    long started = 0, immediate = 0, granted = 0, cancel_won = 0, cancelled = 0, abandoned = 0, finished = 0;
    long posts = 0, stale_posts = 0, pending_looks = 0, audits = 0, lost = 0, stuck = 0;
  };
  std::vector<Tally> tallies(kLoops);

  StartGate gate;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWorkers; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(1200 + static_cast<std::uint64_t>(i));
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        if (light_phase(now_ns())) sleep_for_ns(rng.below(2 * kMs));
        const Nanos deadline = now_ns() + 20 * kUs + rng.below(kMs);
        bool ok = false;
        try {
          ok = sem.acquire_until(deadline);
        } catch (const std::exception& e) {
          CHECK(false, "acquire_until threw on an open semaphore: ", e.what());
        }
        if (!ok) {
          thread_timed_out.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        thread_acquired.fetch_add(1, std::memory_order_relaxed);
        enter("a thread");
        sleep_for_ns(rng.below(150 * kUs));
        leave("a thread");
      }
    });
  }
  for (int l = 0; l < kLoops; ++l) {
    threads.emplace_back([&, l] {
      FakeLoop& loop = loops[l];
      Tally& t = tallies[static_cast<std::size_t>(l)];
      Rng rng(1300 + static_cast<std::uint64_t>(l));
      std::vector<std::shared_ptr<SemCoroutine>> active;
      auto claim = [&](SemCoroutine& c, Nanos now) {
        c.claimed = true;
        c.state = SemCoroutine::State::holding;
        c.timer = now + rng.below(300 * kUs);
        enter("a coroutine");
      };
      auto end = [&](SemCoroutine& c) {
        c.state = SemCoroutine::State::done;
        c.timer = kForever;
        ++t.finished;
      };
      gate.wait();
      Nanos next_start = 0, next_audit = now_ns() + kAuditEvery, drain_until = kForever;
      bool rescued = false;
      for (;;) {
        Nanos now = now_ns();
        const bool stopping = stop.load(std::memory_order_relaxed);
        if (stopping && drain_until == kForever) drain_until = now + kDrainLimit;
        if (!stopping && active.size() < kPerLoop && now >= next_start) {  // a coroutine starts
          auto c = std::make_shared<SemCoroutine>(loop, sem);
          ++t.started;
          const Semaphore::Enqueued e = sem.enqueue(c->slot);
          if (e == Semaphore::Enqueued::acquired) {
            ++t.immediate;
            claim(*c, now);
          } else if (e == Semaphore::Enqueued::queued) {
            if (rng.below(4) == 0) c->timer = now + 20 * kUs + rng.below(2 * kMs);  // will give up
          } else {
            CHECK(false, "enqueue on an open semaphore returned ", name_of(e));
            end(*c);
          }
          active.push_back(std::move(c));
          next_start = now + rng.below(light_phase(now) ? 2 * kMs : 200 * kUs);
        }
        if (stopping && active.empty()) break;

        // Sleep until a post or the next timer.
        Nanos until = next_audit;
        if (!stopping && active.size() < kPerLoop) until = std::min(until, next_start);
        for (const auto& c : active) until = std::min(until, c->timer);
        for (const std::shared_ptr<LoopTask>& task : loop.take(until)) {
          ++t.posts;
          SemCoroutine& c = static_cast<SemCoroutine&>(*task);
          if (c.state != SemCoroutine::State::waiting) {  // posted just before it left, or dropped
            ++t.stale_posts;
            continue;
          }
          const Semaphore::WaitStatus s = sem.status(c.slot);  // woken: look again
          if (s == Semaphore::WaitStatus::acquired) {
            ++t.granted;
            claim(c, now_ns());
          } else if (s == Semaphore::WaitStatus::pending) {
            ++t.pending_looks;
          } else {
            CHECK(false, "a coroutine's status() on an open semaphore returned ", name_of(s));
            end(c);
          }
        }

        // Timers: holders release; impatient waiters give up.
        now = now_ns();
        for (const auto& cp : active) {
          SemCoroutine& c = *cp;
          if (c.timer > now) continue;
          c.timer = kForever;
          if (c.state == SemCoroutine::State::holding) {
            leave("a coroutine");
            end(c);
          } else if (c.state == SemCoroutine::State::waiting) {
            if (rng.below(3) == 0) {  // dropped while queued: ~SemCoroutine leaves the queue
              ++t.abandoned;
              c.linger = rng.below(100 * kUs);
              end(c);
            } else if (sem.cancel(c.slot)) {  // a slot was handed over before it could leave
              ++t.cancel_won;
              claim(c, now);
            } else {
              ++t.cancelled;
              end(c);
            }
          }
        }

        // Audit: a waiter granted a slot must have been woken (the grant and the wake happen in
        // one hold of the semaphore's mutex, and status() takes it too).
        if (now >= next_audit) {
          next_audit = now + kAuditEvery;
          for (const auto& cp : active) {
            if (cp->state != SemCoroutine::State::waiting) continue;
            ++t.audits;
            if (sem.status(cp->slot) == Semaphore::WaitStatus::acquired && cp->wakes() == 0) {
              ++t.lost;
              claim(*cp, now);
            }
          }
        }
        if (!rescued && now >= drain_until) {  // nothing can legitimately wait this long
          rescued = true;
          for (const auto& cp : active) {
            if (cp->state != SemCoroutine::State::waiting) continue;
            ++t.stuck;
            if (sem.cancel(cp->slot)) {
              claim(*cp, now);
            } else {
              end(*cp);
            }
          }
        }
        active.erase(std::remove_if(active.begin(), active.end(),
                                    [](const std::shared_ptr<SemCoroutine>& c) {
                                      return c->state == SemCoroutine::State::done;
                                    }),
                     active.end());
      }
      // Posts made before the last waiters left: taken (and dropped) on this thread.
      t.posts += static_cast<long>(loop.take(now_ns()).size());
    });
  }

  start = now_ns();
  gate.open();
  Rng rng(1313);
  long max_changes = 0;
  while (now_ns() < start + kRunFor) {
    sem.set_max(2 + rng.below(kLargestMax - 1));  // 2..6
    ++max_changes;
    sleep_for_ns(rng.below(2 * kMs));
  }
  stop.store(true);
  join_all(threads);

  Tally sum;
  for (int l = 0; l < kLoops; ++l) {
    const Tally& t = tallies[static_cast<std::size_t>(l)];
    CHECK(t.started == t.finished, "loop ", l, ": ", t.started, " coroutines started, ", t.finished, " ended");
    CHECK(t.posts == loops[l].posts(), "loop ", l, ": ", loops[l].posts(), " posts made, ", t.posts, " taken");
    CHECK(t.granted > 0, "loop ", l, ": no coroutine was ever woken with a slot");
    sum.started += t.started;
    sum.immediate += t.immediate;
    sum.granted += t.granted;
    sum.cancel_won += t.cancel_won;
    sum.cancelled += t.cancelled;
    sum.abandoned += t.abandoned;
    sum.posts += t.posts;
    sum.stale_posts += t.stale_posts;
    sum.pending_looks += t.pending_looks;
    sum.audits += t.audits;
    sum.lost += t.lost;
    sum.stuck += t.stuck;
  }
  const long dropped = loops[0].dropped_wakes() + loops[1].dropped_wakes();
  CHECK(sum.lost == 0, sum.lost, " coroutine waiters were granted a slot without a wake (lost wake-up)");
  CHECK(sum.stuck == 0, sum.stuck, " coroutine waiters still waiting ", seconds(kDrainLimit),
        " s after the run (lost wake-up?)");
  CHECK(peak.load() <= kLargestMax, "peak holders ", peak.load(), " > largest max ", kLargestMax);
  CHECK(thread_acquired.load() > 0, "no thread ever got a slot");
  CHECK(sem.held() == 0, "held() = ", sem.held(), " after every holder released");
  CHECK(sem.waiting() == 0, "waiting() = ", sem.waiting(), " after every waiter ended");
  CHECK(sem.over_release_count() == 0, "over_release_count() = ", sem.over_release_count());

  std::printf("    threads: %ld acquired, %ld timed out; peak holders %d (max moved %ld times, 2..%lld)\n",
              thread_acquired.load(), thread_timed_out.load(), peak.load(), max_changes,
              static_cast<long long>(kLargestMax));
  std::printf("    coroutines on %d loops: %ld started, %ld at once, %ld woken with a slot, %ld cancelled "
              "(%ld kept a slot handed over), %ld dropped while queued\n",
              kLoops, sum.started, sum.immediate, sum.granted, sum.cancelled + sum.cancel_won, sum.cancel_won,
              sum.abandoned);
  std::printf("    %ld posts (%ld for waiters that had left, %ld looks found pending), %ld wakes during a "
              "waiter's destruction, %ld audits, %ld lost, %ld stuck\n",
              sum.posts, sum.stale_posts, sum.pending_looks, dropped, sum.audits, sum.lost, sum.stuck);
  if (sum.cancel_won == 0) std::printf("    note: no cancel() found a slot handed over (path not exercised)\n");
  if (dropped == 0) std::printf("    note: no wake raced a waiter's destruction (path not exercised)\n");
}

}  // namespace

int main() {
  return omnilimit::test::run_scenarios({
      {"semaphore: mixed acquire paths, 16 threads, max 4", semaphore_mixed_load},
      {"semaphore: FIFO hand-over and no barging", semaphore_fifo},
      {"semaphore: close() wakes every waiter", semaphore_close_wakes_waiters},
      {"semaphore: close() racing a busy semaphore", semaphore_close_under_load},
      {"semaphore: over-release", semaphore_over_release},
      {"semaphore: set_max while 16 threads come and go", semaphore_set_max_under_load},
      {"semaphore: coroutine waiters on 2 fake loops with 8 threads", semaphore_coroutine_waiters},
  });
}
