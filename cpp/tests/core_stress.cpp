// core_stress: a multi-threaded stress test of omnilimit's C++ core (no Python involved).
//
// What it proves, with 16 threads per scenario hammering one shared object:
//   * Semaphore: never more than max holders at once, whatever mix of try_acquire_fast(),
//     acquire_until() (with timeouts that expire) and the stepwise enqueue()/wait()/cancel() API
//     is used; nobody starves; waiters are served in arrival order and a newcomer cannot barge
//     past the queue; close() wakes every waiter (WaitStatus::closed / std::runtime_error), turns
//     every later acquire away and still lets holders release, also when it races with a busy
//     semaphore; over-release is counted and never adds capacity; the counters end at zero.
//   * Gcra: under concurrent try_acquire() and reserve() (some reservations abandoned and
//     refunded) the tokens admitted in ANY time window [t1, t2] never exceed
//     burst + (t2 - t1) / interval (the GCRA guarantee, checked exactly over every window of the
//     run) and the total stays near the ideal rate; with set_interval() / set_burst() running
//     concurrently the total stays within the fastest rate and the state stays sane; and while
//     the interval flips 10x, no decision racing with set_interval() leaves more debt than the
//     burst at the current pace (the "Live changes" promise in gcra.hpp).
//   * DualBucket: requests and tokens taken together through its queue, with deadlines, callers
//     giving up, settles, holds, caps and live changes: the request window bound holds, the tokens
//     stay within burst + refill, callers go in arrival order, nobody is lost or left queued.
//   * WaitHistogram: waits of known lengths, at every scale from 1 us to 4.9 h, give quantiles
//     within 1/32 of the exact ones (never above the maximum; a lone wait gives itself exactly);
//     16 threads recording at once lose no count, and the maximum is exact.
//   * RequestWindow: concurrent record() calls lose no event (count() is exact, bucket by
//     bucket, including across laps of the ring), and count() racing with record() never
//     reports more than the final total and never goes down.
//   * Coroutine waiters (the Waker path of waker.hpp, which the asyncio bindings use), on fake
//     event loops (a list of posted waiters and a loop thread that looks again at each, as
//     async_wait.* does with its eventfd) alongside 8 plain threads: on a Semaphore whose max
//     moves, and in a DualBucket's queue while it is settled, capped and re-paced. Every wake is
//     made under the core's mutex and posts a shared waiter; waiters give up (cancel()/leave()) or
//     are dropped while queued (leaving in their destructor while wakes race them); each loop
//     audits its waiters, so a lost wake-up is reported rather than hung on. The same bounds hold
//     as for threads alone, every coroutine ends, every post is taken, the queues end empty.
// Any failed check is printed to stderr as "FAIL file:line: ..." and the exit status is 1; a
// watchdog turns a hang (a lost wake-up, say) into a message and exit status 3.
//
// How CI runs it (ThreadSanitizer; any data race report also fails the run):
//   cmake -S . -B build-tsan -DOMNILIMIT_CORE_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
//         -DCMAKE_CXX_FLAGS="-fsanitize=thread -g"
//   cmake --build build-tsan && ./build-tsan/core_stress
// It takes about 10-12 s on two cores, with or without TSan (most scenarios run for a fixed time).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "omnilimit/clock.hpp"
#include "omnilimit/dual_bucket.hpp"
#include "omnilimit/gcra.hpp"
#include "omnilimit/histogram.hpp"
#include "omnilimit/pause.hpp"
#include "omnilimit/schedule.hpp"
#include "omnilimit/semaphore.hpp"
#include "omnilimit/shm_semaphore.hpp"
#include "omnilimit/standby.hpp"
#include "omnilimit/waker.hpp"
#include "omnilimit/window.hpp"

namespace {

using omnilimit::DualBucket;
using omnilimit::SharedSemaphore;
using omnilimit::Gcra;
using omnilimit::kForever;
using omnilimit::Nanos;
using omnilimit::now_ns;
using omnilimit::Pause;
using omnilimit::RequestWindow;
using omnilimit::Reservation;
using omnilimit::Schedule;
using omnilimit::Semaphore;
using omnilimit::sleep_until_ns;
using omnilimit::WaitHistogram;

constexpr Nanos kUs = 1'000;
constexpr Nanos kMs = 1'000'000;
constexpr Nanos kSec = 1'000'000'000;
constexpr int kThreads = 16;

// ---------------------------------------------------------------------------------------------
// Checks

std::atomic<int> g_failures{0};
std::mutex g_report_mutex;
constexpr int kMaxReportedFailures = 40;

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

void record_failure(const char* file, int line, const char* expr, const std::string& msg) {
  const int n = g_failures.fetch_add(1) + 1;
  if (n > kMaxReportedFailures) return;
  std::lock_guard<std::mutex> lock(g_report_mutex);
  std::fprintf(stderr, "FAIL %s:%d: CHECK(%s): %s\n", file, line, expr, msg.c_str());
  if (n == kMaxReportedFailures) std::fprintf(stderr, "(further failures are counted, not printed)\n");
}

// CHECK(condition, message parts...): records a failure (thread-safe) and carries on. The message
// parts are only formatted when the check fails.
#define CHECK(cond, ...)                                                 \
  do {                                                                   \
    if (!(cond)) record_failure(__FILE__, __LINE__, #cond, cat(__VA_ARGS__)); \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Small helpers

// splitmix64: a fast, seedable per-thread generator (the test is deterministic in its choices,
// though not in its interleavings).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1.
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n)); }

 private:
  std::uint64_t state_;
};

// Lets every worker thread start at the same moment.
class StartGate {
 public:
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return open_; });
  }
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

void join_all(std::vector<std::thread>& threads) {
  for (auto& t : threads) t.join();
  threads.clear();
}

void sleep_for_ns(Nanos d) { sleep_until_ns(now_ns() + d); }

// Polls `pred` until it holds or `timeout` passes; returns whether it held.
template <class Pred>
bool wait_for_condition(Pred pred, Nanos timeout) {
  const Nanos deadline = now_ns() + timeout;
  while (!pred()) {
    if (now_ns() >= deadline) return false;
    sleep_for_ns(50 * kUs);
  }
  return true;
}

void raise_to(std::atomic<int>& peak, int value) {
  int seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

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
const char* name_of(DualBucket::Status s) {
  switch (s) {
    case DualBucket::Status::admitted: return "admitted";
    case DualBucket::Status::queued: return "queued";
    case DualBucket::Status::refused: return "refused";
    case DualBucket::Status::closed: return "closed";
  }
  return "?";
}

double seconds(Nanos d) { return static_cast<double>(d) / static_cast<double>(kSec); }

// Names the running scenario for the watchdog.
std::atomic<const char*> g_current_scenario{"startup"};

// Ends the process with a message if the run hangs (a deadlock or a lost wake-up in the core
// would otherwise just stall CI until its job timeout).
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit)
      : thread_([this, limit] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr,
                         "core_stress: WATCHDOG: still running after %lld s, in scenario '%s' "
                         "(a deadlock or a lost wake-up?)\n",
                         static_cast<long long>(limit.count()), g_current_scenario.load());
            std::fflush(stderr);
            std::_Exit(3);
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// ---------------------------------------------------------------------------------------------
// Semaphore

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

// ---------------------------------------------------------------------------------------------
// Gcra

// The instants at which tokens were used: one entry per token (a request of cost n adds n).
// A try_acquire uses its tokens at the `now` it passed, a reservation at its ready_at.
struct GcraRun {
  std::vector<Nanos> uses;
  Nanos start = 0, end = 0;
  long tries = 0, reserved = 0, reserve_refused = 0, refunded = 0, refund_lost = 0;
};

// Runs 16 threads on `g` for `run_for`. Even threads (all of them if !with_reservations) call
// try_acquire in a tight loop; odd ones reserve with a random max_wait and sleep until ready_at,
// except that one admitted reservation in five with a wait is abandoned part-way through its
// wait and refunded (which fails once someone has queued behind it). `during(stop_at)` runs on
// this thread meanwhile.
template <class During>
GcraRun run_gcra_load(Gcra& g, Nanos run_for, bool with_reservations, During during) {
  constexpr Nanos kMaxWait = 3 * kMs;
  std::vector<GcraRun> per_thread(kThreads);
  StartGate gate;
  Nanos stop_at = 0;  // written before gate.open(), read after gate.wait()
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Rng rng(4000 + static_cast<std::uint64_t>(i));
      GcraRun& mine = per_thread[static_cast<std::size_t>(i)];
      gate.wait();
      if (i % 2 == 0 || !with_reservations) {
        for (;;) {
          const Nanos now = now_ns();
          if (now >= stop_at) break;
          const std::int64_t cost = rng.below(16) == 0 ? 2 : 1;
          ++mine.tries;
          if (g.try_acquire(cost, now)) {
            for (std::int64_t c = 0; c < cost; ++c) mine.uses.push_back(now);
          } else if (with_reservations && rng.below(32) == 0) {
            std::this_thread::yield();  // let the sleeping reservers in; otherwise get preempted anywhere
          }
        }
        return;
      }
      for (;;) {
        const Nanos now = now_ns();
        if (now >= stop_at) break;
        const Nanos max_wait = rng.below(kMaxWait);
        const Reservation r = g.reserve(1, max_wait, now);
        if (!r.admitted) {
          ++mine.reserve_refused;
          CHECK(r.wait_ns > max_wait, "refused reservation reports wait ", r.wait_ns, " <= max_wait ", max_wait);
          CHECK(!g.refund(r, now), "refund of a refused reservation succeeded");
          sleep_for_ns(rng.below(200 * kUs));
          continue;
        }
        ++mine.reserved;
        CHECK(r.wait_ns >= 0 && r.wait_ns <= max_wait, "admitted reservation waits ", r.wait_ns,
              " ns, max_wait ", max_wait);
        CHECK(r.ready_at_ns == now + r.wait_ns, "ready_at ", r.ready_at_ns, " != now ", now, " + wait ", r.wait_ns);
        CHECK(r.cost == 1, "reservation cost ", r.cost);
        if (r.wait_ns > 0 && rng.below(5) == 0) {  // the caller gives up before its turn
          sleep_for_ns(rng.below(r.wait_ns));
          if (g.refund(r, now_ns())) {
            ++mine.refunded;
            continue;  // the token went back: never used
          }
          ++mine.refund_lost;  // someone queued behind it (or its time came): the slot is spent
          mine.uses.push_back(r.ready_at_ns);
          continue;
        }
        sleep_until_ns(r.ready_at_ns);
        mine.uses.push_back(r.ready_at_ns);
      }
    });
  }
  GcraRun all;
  all.start = now_ns();
  stop_at = all.start + run_for;
  gate.open();
  during(stop_at);
  join_all(threads);
  all.end = now_ns();
  for (const GcraRun& r : per_thread) {
    all.uses.insert(all.uses.end(), r.uses.begin(), r.uses.end());
    all.tries += r.tries;
    all.reserved += r.reserved;
    all.reserve_refused += r.reserve_refused;
    all.refunded += r.refunded;
    all.refund_lost += r.refund_lost;
  }
  std::sort(all.uses.begin(), all.uses.end());
  return all;
}

// The GCRA guarantee over every window: for all i <= j, the tokens used in [uses[i], uses[j]]
// (j - i + 1 of them) are at most burst + (uses[j] - uses[i]) / interval. With
// g(k) = k*interval - uses[k] that is g(j) - g(i) <= (burst - 1) * interval: one pass keeping the
// running minimum of g checks every window exactly, in integers. (This holds for stale `now`
// values too: each admission needs TAT <= now + (burst - cost) * interval and moves TAT to at
// least max(TAT, now) + cost * interval, and a refund only undoes the latest admission.)
void check_every_window(const std::vector<Nanos>& uses, Nanos interval, std::int64_t burst, const char* what) {
  if (uses.empty()) return;
  Nanos min_g = 0, fullest = 0;
  std::size_t min_at = 0, first = 0, last = 0;
  for (std::size_t j = 0; j < uses.size(); ++j) {
    const Nanos gj = static_cast<Nanos>(j) * interval - uses[j];
    if (j == 0 || gj < min_g) {
      min_g = gj;
      min_at = j;
    }
    if (j == 0 || gj - min_g > fullest) {
      fullest = gj - min_g;
      first = min_at;
      last = j;
    }
  }
  const Nanos span = uses[last] - uses[first];
  const std::int64_t tokens = static_cast<std::int64_t>(last - first + 1);
  const std::int64_t bound = burst + span / interval;
  std::printf("    fullest window: %lld tokens in %lld ns; burst + window / interval = %lld\n",
              static_cast<long long>(tokens), static_cast<long long>(span), static_cast<long long>(bound));
  CHECK(fullest <= (burst - 1) * interval, what, ": ", tokens, " tokens used within ", span, " ns, but burst ",
        burst, " + window / interval ", interval, " allows ", bound, " (window starts ", uses[first] - uses.front(),
        " ns into the run)");
}

void print_gcra_run(const GcraRun& run, double ideal) {
  std::printf("    %zu tokens in %.3f s (ideal %.0f), %ld tries, %ld reserved, %ld refused, %ld refunded, "
              "%ld abandoned unrefunded\n",
              run.uses.size(), seconds(run.end - run.start), ideal, run.tries, run.reserved,
              run.reserve_refused, run.refunded, run.refund_lost);
}

// A few single-threaded facts at fixed instants, so the stress results rest on known ground.
void gcra_basics() {
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  const Nanos t0 = 1'000 * kSec;
  CHECK(g.tokens_available(t0) == kB, "fresh bucket holds ", g.tokens_available(t0));
  for (std::int64_t k = 0; k < kB; ++k) CHECK(g.try_acquire(1, t0), "token ", k, " of a full bucket refused");
  CHECK(!g.try_acquire(1, t0), "an empty bucket admitted");
  CHECK(g.tokens_available(t0) == 0, "empty bucket reports ", g.tokens_available(t0));
  CHECK(g.try_acquire(1, t0 + kT), "the token refilled after one interval was refused");
  const Reservation r1 = g.reserve(1, kMs, t0 + kT);
  CHECK(r1.admitted && r1.wait_ns == kT, "reserve on an empty bucket: admitted ", r1.admitted, " wait ", r1.wait_ns);
  const Reservation refused = g.reserve(1, kT - 1, t0 + kT);
  CHECK(!refused.admitted && refused.wait_ns == 2 * kT, "reserve beyond max_wait: admitted ", refused.admitted,
        " wait ", refused.wait_ns);
  CHECK(g.refund(r1, t0 + kT), "refund of the latest reservation failed");
  const Reservation r2 = g.reserve(1, kMs, t0 + kT);
  CHECK(r2.admitted && r2.wait_ns == kT, "after a refund the same slot should be free again: wait ", r2.wait_ns);
  const Reservation r3 = g.reserve(1, kMs, t0 + kT);
  CHECK(!g.refund(r2, t0 + kT), "refund of a reservation with another queued behind it succeeded");
  CHECK(!g.refund(r3, r3.ready_at_ns), "refund after the reservation's time came succeeded");
}

// 16 threads on one bucket with a fixed configuration: the exact window bound must hold.
void gcra_fixed_config() {
  gcra_basics();
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  const GcraRun run = run_gcra_load(g, 1500 * kMs, true, [](Nanos) {});
  const double elapsed = static_cast<double>(run.end - run.start);
  const double ideal = static_cast<double>(kB) + elapsed / static_cast<double>(kT);
  print_gcra_run(run, ideal);

  const double total = static_cast<double>(run.uses.size());
  CHECK(total <= ideal + 1.0, "admitted ", total, " tokens in ", elapsed,
        " ns: more than burst + elapsed / interval + 1 = ", ideal + 1.0);
  CHECK(total >= 0.5 * ideal, "admitted only ", total, " tokens, under half the ideal ", ideal);
  CHECK(run.uses.empty() || (run.uses.front() >= run.start && run.uses.back() <= run.end),
        "a token was used outside the run");
  check_every_window(run.uses, kT, kB, "fixed config");
  const Nanos now = now_ns();
  const std::int64_t left = g.tokens_available(now);
  CHECK(left >= 0 && left <= kB, "tokens_available = ", left, " outside [0, ", kB, "]");
  CHECK(g.tokens_available(std::max(now, g.tat_ns())) == kB, "the bucket does not refill to the burst");
}

// The same load while this thread keeps changing the interval (never faster than kTMin) and the
// burst (never above kBMax). Checked: the total against the fastest rate and largest burst, and
// that the state is sane afterwards. (Not checked per window: a reservation keeps the ready_at
// it was given, so after a speed-up the old, slower schedule and the new one overlap for a while
// and a short window can legitimately exceed the new rate. gcra_rate_changes checks the debt.)
void gcra_reconfigured() {
  constexpr Nanos kTMin = 100 * kUs;
  constexpr Nanos kIntervals[] = {100 * kUs, 150 * kUs, 250 * kUs};
  constexpr Nanos kTMax = 250 * kUs;
  constexpr std::int64_t kBMax = 10;
  Gcra g(kTMin, kBMax);
  long changes = 0;
  const GcraRun run = run_gcra_load(g, 1500 * kMs, true, [&](Nanos stop_at) {
    Rng rng(5000);
    while (now_ns() < stop_at) {
      const Nanos interval = kIntervals[rng.below(3)];
      if (rng.below(2) == 0) {
        g.set_interval(interval);
      } else {
        g.set_interval(interval, now_ns());
      }
      g.set_burst(2 + rng.below(kBMax - 1));  // 2..kBMax
      ++changes;
      sleep_for_ns(kMs + rng.below(4 * kMs));
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  const double most = static_cast<double>(kBMax) + elapsed / static_cast<double>(kTMin);
  const double least = elapsed / static_cast<double>(kTMax);
  print_gcra_run(run, most);
  std::printf("    %ld configuration changes\n", changes);

  const double total = static_cast<double>(run.uses.size());
  CHECK(total <= most + 1.0, "admitted ", total, " tokens: more than max burst + elapsed / min interval + 1 = ",
        most + 1.0);
  CHECK(total >= 0.5 * least, "admitted only ", total, " tokens, under half of elapsed / max interval ", least);

  // The state is still sane and still behaves like a bucket.
  const Nanos now = now_ns();
  const std::int64_t burst = g.burst();
  const Nanos interval = g.interval_ns();
  CHECK(burst >= 2 && burst <= kBMax, "burst() = ", burst);
  CHECK(interval >= kTMin && interval <= kTMax, "interval_ns() = ", interval);
  const std::int64_t left = g.tokens_available(now);
  CHECK(left >= 0 && left <= burst, "tokens_available = ", left, " outside [0, ", burst, "]");
  CHECK(g.tat_ns() <= now + kSec, "TAT ran ", g.tat_ns() - now, " ns into the future");
  g.set_interval(kTMin);
  g.set_burst(kBMax);
  const Nanos full_at = std::max(now_ns(), g.tat_ns());
  CHECK(g.tokens_available(full_at) == kBMax, "not full at TAT: ", g.tokens_available(full_at));
  for (std::int64_t k = 0; k < kBMax; ++k) CHECK(g.try_acquire(1, full_at), "token ", k, " of a full bucket refused");
  CHECK(!g.try_acquire(1, full_at), "more than the burst admitted after reconfiguration");
}

// try_acquire only while the interval flips between kFast and ten times slower. set_interval
// promises that no decision mixes the old pace with the rescaled TAT (or the reverse): a decision
// is made wholly before or wholly after the change. Then the debt stays bounded: every admission leaves
// TAT <= (its now) + burst * interval, and a rescale keeps tokens owed as tokens owed. This
// thread is the only one that changes the interval, so between its changes it polls
// TAT - now <= burst * interval + E, where E is what the rescale itself may have added beyond
// that; E decays by 1 ns per ns, as nothing but a rescale can push TAT past the bound:
//   * After slowing down, E is measured: TAT read right after set_interval returns, minus the
//     clock, minus burst * new interval. (A slow-down anchored at a `now` that is d stale by the
//     time the rescale runs counts every token taken since as owed at the slow pace, about
//     (new/old - 1) * d more debt: conservative, hence allowed. Under TSan d is sometimes tens
//     of ms, so a formula for E would be far too loose.)
//   * After speeding up (anchored at the clock read just before the call, which can only keep
//     more owed), E is the previous excess scaled by new/old, plus rounding.
// A decision that pairs the old, slow interval with a TAT already rescaled to the fast one treats
// the tokens owed as ten times fewer: on a drained bucket it is admitted and pushes TAT about
// kSlow past the bound.
void gcra_rate_changes() {
  constexpr Nanos kFast = 100 * kUs;
  constexpr Nanos kSlow = 10 * kFast;
  constexpr std::int64_t kB = 10;
  Gcra g(kFast, kB);
  long changes = 0, polls = 0, violations = 0;
  Nanos worst_excess = 0, worst_debt = 0, worst_allowed = 0, worst_interval = 0, largest_allowance = 0;
  const GcraRun run = run_gcra_load(g, 2500 * kMs, false, [&](Nanos stop_at) {
    Rng rng(5500);
    Nanos excess = 0;                // bound on TAT - now - burst * interval ...
    Nanos excess_since = now_ns();   // ... as of this instant, decaying 1 ns per ns after it
    while (now_ns() < stop_at) {
      const Nanos old_interval = g.interval_ns();
      const Nanos interval = changes % 2 == 0 ? kSlow : kFast;
      const Nanos before = now_ns();
      const Nanos carried = std::max<Nanos>(0, excess - (before - excess_since));
      g.set_interval(interval, before);
      ++changes;
      if (interval > old_interval) {
        const Nanos tat = g.tat_ns();
        excess_since = now_ns();
        excess = std::max<Nanos>(0, tat - excess_since - kB * interval);
      } else {
        excess_since = now_ns();
        excess = (carried * interval + old_interval - 1) / old_interval + 2;  // +2: rounding
      }
      largest_allowance = std::max(largest_allowance, excess);
      const Nanos next_change = excess_since + kMs + rng.below(3 * kMs);
      for (;;) {
        const Nanos tat = g.tat_ns();  // TAT first: the `now` behind every admission in it is <= the clock read next
        const Nanos now = now_ns();
        if (now >= next_change) break;
        ++polls;
        const Nanos allowed = kB * interval + std::max<Nanos>(0, excess - (now - excess_since));
        if (tat - now > allowed) {
          ++violations;
          if (tat - now - allowed > worst_excess) {
            worst_excess = tat - now - allowed;
            worst_debt = tat - now;
            worst_allowed = allowed;
            worst_interval = interval;
          }
        }
        sleep_for_ns(20 * kUs);
      }
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  print_gcra_run(run, static_cast<double>(kB) + elapsed / static_cast<double>(kFast));
  std::printf("    %ld interval changes between %lld and %lld ns, %ld polls of TAT, largest allowance "
              "for a rescale %lld ns\n",
              changes, static_cast<long long>(kFast), static_cast<long long>(kSlow), polls,
              static_cast<long long>(largest_allowance));
  CHECK(violations == 0, violations, " polls saw TAT - now above burst * interval + allowance; worst: ", worst_debt,
        " ns owed at interval ", worst_interval, " ns (",
        static_cast<double>(worst_debt) / static_cast<double>(worst_interval), " tokens, burst ", kB,
        "), allowed ", worst_allowed, " ns: a decision mixed the old interval with the rescaled TAT?");
  CHECK(static_cast<double>(run.uses.size()) >= 0.5 * elapsed / static_cast<double>(kSlow), "admitted only ",
        run.uses.size(), " tokens");
  const std::int64_t left = g.tokens_available(now_ns());
  CHECK(left >= 0 && left <= kB, "tokens_available = ", left, " outside [0, ", kB, "]");
}

// ---------------------------------------------------------------------------------------------
// RequestWindow

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

// ---------------------------------------------------------------------------------------------

struct Scenario {
  const char* name;
  void (*run)();
};

// A provider's feedback under load: this thread keeps declaring holds (hold_until: nothing before
// an instant, then from an empty bucket) and caps (limit_available) while 16 threads take tokens.
// Both only move TAT forward, so the exact window bound of the fixed configuration must still
// hold; and a try_acquire made after a hold was declared never succeeds before its end (checked
// by the taker that declares it, at fixed instants, so the check is exact).
void gcra_holds_under_load() {
  constexpr Nanos kT = 100 * kUs;
  constexpr std::int64_t kB = 10;
  Gcra g(kT, kB);
  Rng rng(7);
  std::int64_t holds = 0, caps = 0;
  const GcraRun run = run_gcra_load(g, 1000 * kMs, true, [&](Nanos stop_at) {
    while (now_ns() < stop_at) {
      const Nanos now = now_ns();
      if (rng.below(2) == 0) {
        const Nanos end = now + 1 + rng.below(2 * kMs);
        g.hold_until(end);
        ++holds;
        CHECK(!g.try_acquire(1, std::max(now, end - 1)), "a token was admitted before the end of a hold");
      } else {
        const std::int64_t cap = rng.below(kB + 2);
        g.limit_available(cap, now);
        ++caps;
        CHECK(g.tokens_available(now) <= cap, "limit_available(", cap, ") left ", g.tokens_available(now));
      }
      sleep_for_ns(rng.below(3 * kMs));
    }
  });
  const double elapsed = static_cast<double>(run.end - run.start);
  const double ideal = static_cast<double>(kB) + elapsed / static_cast<double>(kT);
  print_gcra_run(run, ideal);
  std::printf("    %lld holds and %lld caps declared meanwhile\n", static_cast<long long>(holds),
              static_cast<long long>(caps));
  CHECK(static_cast<double>(run.uses.size()) <= ideal + 1.0, "admitted ", run.uses.size(), " > ideal ", ideal);
  check_every_window(run.uses, kT, kB, "holds under load");
}

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

// ---------------------------------------------------------------------------------------------
// WaitHistogram

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
}

// 16 threads take one request and 1..64 tokens together through the queue (some with deadlines
// that expire, some giving up early as an interrupted caller does), settling with what they
// "used" (never more than they took), while this thread declares holds and caps. The request
// bucket must keep the exact window bound, the tokens used may not exceed the token burst plus
// what refilled during the run, nobody may be admitted before its planned instant, and the queue
// must end empty.
void dual_bucket_under_load() {
  constexpr Nanos kRequestT = 200 * kUs;
  constexpr std::int64_t kRequestB = 8;
  constexpr Nanos kTokenT = 5 * kUs;  // 200,000 tokens/s
  constexpr std::int64_t kTokenB = 400;
  DualBucket bucket(kRequestT, kRequestB, kTokenT, kTokenB);
  std::vector<std::vector<Nanos>> requests(kThreads);
  std::vector<std::int64_t> tokens_used(kThreads, 0);
  std::atomic<long> refused{0}, gave_up{0};
  std::atomic<bool> stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(300 + t);
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const std::int64_t tokens = 1 + rng.below(64);
        const Nanos now = now_ns();
        const Nanos deadline = rng.below(8) == 0 ? omnilimit::kForever : now + rng.below(4 * kMs);
        DualBucket::Ticket ticket(bucket, tokens, deadline);
        DualBucket::Status status = bucket.arrive(ticket, now);
        if (status == DualBucket::Status::queued) {
          const bool impatient = rng.below(6) == 0;  // gives up before its turn, or not
          const Nanos until = impatient ? now + rng.below(kMs) : deadline;
          status = bucket.wait(ticket, until);
          if (status == DualBucket::Status::queued && impatient) {
            bucket.leave(ticket);  // an interrupted caller: nothing was committed for it
            gave_up.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
        }
        if (status != DualBucket::Status::admitted) {
          // refused (would not fit), or still queued at its deadline (the callers ahead were
          // late): a timeout either way, and ~Ticket takes it out of the queue.
          refused.fetch_add(1, std::memory_order_relaxed);
          sleep_for_ns(rng.below(300 * kUs));
          continue;
        }
        const Nanos went = now_ns();
        CHECK(ticket.planned_ns() <= went, "admitted at ", ticket.planned_ns(), " after reading ", went);
        requests[t].push_back(ticket.planned_ns());
        const std::int64_t used = rng.below(tokens + 1);
        tokens_used[t] += used;
        bucket.settle(tokens, used, now_ns());
      }
    });
  }
  const Nanos start = now_ns();
  gate.open();
  Rng rng(99);
  while (now_ns() < start + 1200 * kMs) {
    const Nanos now = now_ns();
    switch (rng.below(3)) {
      case 0: bucket.hold_until(now + rng.below(kMs)); break;
      case 1: bucket.limit_available_requests(rng.below(kRequestB + 1), now); break;
      default: bucket.limit_available_tokens(rng.below(kTokenB + 1), now); break;
    }
    sleep_for_ns(rng.below(5 * kMs));
  }
  stop.store(true);
  join_all(threads);
  const Nanos end = now_ns();
  std::vector<Nanos> all;
  std::int64_t used = 0;
  for (int t = 0; t < kThreads; ++t) {
    all.insert(all.end(), requests[t].begin(), requests[t].end());
    used += tokens_used[t];
  }
  std::sort(all.begin(), all.end());
  const double elapsed = static_cast<double>(end - start);
  const double token_bound = static_cast<double>(kTokenB) + elapsed / static_cast<double>(kTokenT) + 64.0;
  std::printf("    %zu requests (%ld refused, %ld gave up), %lld tokens used (bound %.0f) in %.3f s\n", all.size(),
              refused.load(), gave_up.load(), static_cast<long long>(used), token_bound, seconds(end - start));
  CHECK(!all.empty(), "no request went through");
  CHECK(gave_up.load() > 0 && refused.load() > 0, "the run never gave up or refused: it tested too little");
  check_every_window(all, kRequestT, kRequestB, "dual bucket requests");
  CHECK(static_cast<double>(used) <= token_bound, "tokens used ", used, " exceed burst + refill ", token_bound);
  CHECK(bucket.queued() == 0, bucket.queued(), " tickets left in the queue");
}

// The queue keeps arrival order and follows every change. Callers arrive one after another
// (each enqueued before the next starts, so the arrival order is known) and wait with no
// deadline, while this thread keeps changing the token rate 10x either way, the burst, and gives
// tokens back: every caller must be admitted (no lost wake-up: the watchdog would fire), in
// exactly the order it arrived, and the queue must end empty.
void dual_bucket_queue_order_and_changes() {
  constexpr int kCallers = 64;
  DualBucket bucket(100 * kUs, 1, 20 * kUs, 50);  // tokens: 50,000/s or 5,000/s
  std::vector<Nanos> went(kCallers, 0);  // the instant each was admitted (read under the queue's mutex)
  std::atomic<int> arrived{0};
  std::atomic<bool> done{false};
  std::thread changer([&] {
    Rng rng(7);
    bool fast = true;
    while (!done.load()) {
      const Nanos now = now_ns();
      switch (rng.below(4)) {
        case 0: bucket.set_token_interval((fast = !fast) ? 20 * kUs : 200 * kUs, now); break;
        case 1: bucket.set_token_burst(1 + rng.below(100)); break;
        case 2: bucket.settle(100, rng.below(100), now); break;
        default: bucket.set_request_interval(50 * kUs + rng.below(100 * kUs), now); break;
      }
      sleep_for_ns(rng.below(2 * kMs));
    }
  });
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    std::atomic<bool> queued{false};
    callers.emplace_back([&, c] {
      DualBucket::Ticket ticket(bucket, 20 + c % 50, omnilimit::kForever);
      DualBucket::Status status = bucket.arrive(ticket, now_ns());
      queued.store(true);
      while (status == DualBucket::Status::queued) status = bucket.wait(ticket, omnilimit::kForever);
      CHECK(status == DualBucket::Status::admitted, "caller ", c, " was not admitted");
      went[c] = ticket.planned_ns();
    });
    while (!queued.load()) std::this_thread::yield();  // arrivals in a known order
    arrived.fetch_add(1);
  }
  join_all(callers);
  done.store(true);
  changer.join();
  for (int c = 1; c < kCallers; ++c) {
    CHECK(went[c - 1] <= went[c], "caller ", c, " went at ", went[c], ", before caller ", c - 1, " (", went[c - 1], ")");
  }
  CHECK(bucket.queued() == 0, bucket.queued(), " tickets left in the queue");
}

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

// 16 threads book on a Gcra and sleep in a Schedule while this thread flips the interval between
// 100 us and 400 us through Schedule::change: every sleeper returns (none stuck past its
// deadline), and the uses never exceed the burst plus the fastest rate over the run.
void schedule_rate_flips() {
  constexpr Nanos kFast = 100 * kUs;
  constexpr std::int64_t kB = 5;
  Gcra g(kFast, kB);
  Schedule schedule;
  std::vector<std::vector<Nanos>> uses(kThreads);
  std::atomic<bool> stop{false};
  std::atomic<long> lost{0}, late{0};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(700 + t);
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
    schedule.change(at, interval, [&] {
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

// ---------------------------------------------------------------------------------------------
// Coroutine waiters: the Waker path (waker.hpp), without Python
//
// The bindings (async_wait.*) let an asyncio coroutine wait in the core's queues. Its waiter
// carries a Waker whose wake(), called by the core under the core's own mutex from whatever
// thread handed over the slot or changed the budget, posts the waiter to its event loop (a list
// and an eventfd); the loop's thread takes the list, and each posted waiter asks the core where
// it stands (status() / poll()). FakeLoop is that list, with a condition variable standing in for
// the eventfd; LoopTask is the waiter, shared as the bindings' AsyncWait is (std::shared_ptr: the
// coroutine holds it, and so does the list from a post until the loop takes it, so a post made
// just before the waiter left the queue stays harmless, and a waiter dropped while still queued
// leaves the queue in its destructor while a wake may be racing it). A loop thread runs many
// coroutines at once, each a small state machine driven by posts and by the loop's timers: it
// waits until a post or its next timer, and never longer than an audit period.

class LoopTask;

class FakeLoop {
 public:
  FakeLoop() = default;
  FakeLoop(const FakeLoop&) = delete;
  FakeLoop& operator=(const FakeLoop&) = delete;

  // Any thread, with the core's mutex held: queue `task` for the loop and wake its thread.
  void post(std::shared_ptr<LoopTask> task) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.push_back(std::move(task));  // (bad_alloc would end the test here: noexcept)
    ++posts_;
    cv_.notify_one();
  }

  // The loop's thread: waits until something is posted or the clock reaches `until_ns` (finite),
  // then takes what was posted, each post once and in order. Nothing is destroyed under the
  // mutex: the last reference to a waiter may go with the returned vector, and a waiter's
  // destructor may leave a queue, which may post to this loop.
  std::vector<std::shared_ptr<LoopTask>> take(Nanos until_ns) {
    std::vector<std::shared_ptr<LoopTask>> taken;
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_until(lock, omnilimit::to_time_point(until_ns), [this] { return !ready_.empty(); });
    taken.swap(ready_);
    return taken;
  }

  void count_dropped_wake() noexcept { dropped_wakes_.fetch_add(1, std::memory_order_relaxed); }
  long posts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return posts_;
  }
  long dropped_wakes() const noexcept { return dropped_wakes_.load(std::memory_order_relaxed); }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<LoopTask>> ready_;  // guarded by mutex_
  long posts_ = 0;                                // guarded by mutex_
  std::atomic<long> dropped_wakes_{0};
};

// A coroutine's waiter, as AsyncWait: a Waker that posts itself to its loop.
class LoopTask : public omnilimit::Waker, public std::enable_shared_from_this<LoopTask> {
 public:
  explicit LoopTask(FakeLoop& loop) : loop_(loop) {}
  virtual ~LoopTask() = default;
  LoopTask(const LoopTask&) = delete;
  LoopTask& operator=(const LoopTask&) = delete;

  // The core calls this under its mutex. A waiter whose last reference is gone is being
  // destroyed: its destructor is about to leave the queue (blocked on that same mutex), and
  // nobody will look, so the wake is dropped (as AsyncWait's bad_weak_ptr case).
  void wake() noexcept override {
    wakes_.fetch_add(1, std::memory_order_relaxed);
    if (std::shared_ptr<LoopTask> self = weak_from_this().lock()) {
      loop_.post(std::move(self));
    } else {
      loop_.count_dropped_wake();
    }
  }

  // wake() calls so far. Each is made under the core's mutex, so a load after any call that
  // took that mutex sees every wake made before that call.
  long wakes() const noexcept { return wakes_.load(std::memory_order_relaxed); }

 private:
  FakeLoop& loop_;
  std::atomic<long> wakes_{0};
};

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

// A coroutine holding a token-budget ticket (AsyncWait's `ticket`).
class TicketCoroutine final : public LoopTask {
 public:
  explicit TicketCoroutine(FakeLoop& loop) : LoopTask(loop) {}
  // As ~AsyncWait: the ticket leaves the queue (under the bucket's mutex) before the Waker goes
  // (after `linger`, as in ~SemCoroutine).
  ~TicketCoroutine() override {
    if (linger > 0) sleep_for_ns(linger);
    ticket.reset();
  }

  Nanos timer() const noexcept { return std::min({head_at, give_up_at, deadline}); }

  std::optional<DualBucket::Ticket> ticket;
  std::int64_t tokens = 0;
  Nanos deadline = kForever;
  Nanos give_up_at = kForever;  // an impatient caller (interrupted): kForever for the others
  bool abandon = false;         // gives up by being dropped (~Ticket leaves), not by leave()
  Nanos linger = 0;
  bool done = false;
  Nanos head_at = kForever;  // the instant poll() gave at the last look (kForever: not the head)
  bool standing = false;     // standing by at the last look (head_at is then its deadline)
  long seen_wakes = 0;       // wakes() just before the last look
};

// 8 threads take one request and 1..64 tokens together through the queue (arrive/wait, as in
// dual_bucket_under_load) while 2 fake event loops run coroutine tickets through the Waker path:
// arrive, then poll() on every post and at the instant poll() returned (the loop's timer); some
// with deadlines, some giving up early (leave(), or dropped while queued, leaving in the
// destructor as an abandoned AsyncWait does). This thread settles (charging and giving back),
// caps tokens and requests and flips the token interval 4x. The request window bound holds over
// every admission (threads and coroutines), the tokens used stay within burst + the refill at
// the pace in force, period by period (+ what this thread gave back), every coroutine ends, every
// post is taken, and the queue ends empty. Lost wake-ups are looked for directly: each loop
// re-polls its waiters every few ms, and a ticket that nothing woke since its last look must find
// the same thing (not the head; or the head with the same instant, admitted once that has come):
// becoming the head, being refused or having one's instant moved all come with a wake, made
// under the bucket's mutex.
void dual_bucket_coroutine_tickets() {
  constexpr Nanos kRequestT = 200 * kUs;
  constexpr std::int64_t kRequestB = 8;
  // Tokens are the scarcer budget here (the callers ask for about 120,000 a second), so the token
  // bound below is tight.
  constexpr Nanos kTokenT = 10 * kUs;         // 100,000 tokens/s
  constexpr Nanos kSlowTokenT = 4 * kTokenT;  // 25,000 tokens/s
  constexpr std::int64_t kTokenB = 400;
  constexpr int kWorkers = kThreads / 2;
  constexpr int kLoops = 2;
  constexpr std::size_t kPerLoop = 6;
  constexpr Nanos kRunFor = 1000 * kMs;
  constexpr Nanos kAuditEvery = 3 * kMs;
  constexpr Nanos kDrainLimit = 5 * kSec;
  using Status = DualBucket::Status;
  DualBucket bucket(kRequestT, kRequestB, kTokenT, kTokenB);
  FakeLoop loops[kLoops];  // declared after `bucket`: destroyed before it

  struct Tally {
    std::vector<Nanos> requests;  // planned_ns() of each admission
    std::int64_t tokens_used = 0;
    long started = 0, admitted = 0, refused = 0, gave_up = 0, abandoned = 0, timed_out = 0;
    long posts = 0, stale_posts = 0, looks_after_post = 0, timer_looks = 0, audits = 0, lost = 0, stuck = 0;
  };
  std::vector<Tally> workers(kWorkers);
  std::vector<Tally> tallies(kLoops);
  std::atomic<bool> stop{false};
  StartGate gate;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      Rng rng(1400 + static_cast<std::uint64_t>(w));
      Tally& mine = workers[static_cast<std::size_t>(w)];
      gate.wait();
      while (!stop.load(std::memory_order_relaxed)) {
        const std::int64_t tokens = 1 + rng.below(64);
        const Nanos now = now_ns();
        const Nanos deadline = rng.below(8) == 0 ? kForever : now + rng.below(4 * kMs);
        DualBucket::Ticket ticket(bucket, tokens, deadline);
        ++mine.started;
        Status status = bucket.arrive(ticket, now);
        if (status == Status::queued) {
          const bool impatient = rng.below(6) == 0;
          const Nanos until = impatient ? now + rng.below(kMs) : deadline;
          status = bucket.wait(ticket, until);
          if (status == Status::queued && impatient) {
            bucket.leave(ticket);
            ++mine.gave_up;
            continue;
          }
        }
        if (status != Status::admitted) {  // refused, or still queued at its deadline (~Ticket leaves)
          ++mine.refused;
          sleep_for_ns(rng.below(300 * kUs));
          continue;
        }
        ++mine.admitted;
        const Nanos went = now_ns();
        CHECK(ticket.planned_ns() <= went, "thread admitted at ", ticket.planned_ns(), " after reading ", went);
        mine.requests.push_back(ticket.planned_ns());
        const std::int64_t used = rng.below(2) == 0 ? tokens : rng.below(tokens + 1);
        mine.tokens_used += used;
        bucket.settle(tokens, used, now_ns());
      }
    });
  }
  for (int l = 0; l < kLoops; ++l) {
    threads.emplace_back([&, l] {
      FakeLoop& loop = loops[l];
      Tally& t = tallies[static_cast<std::size_t>(l)];
      Rng rng(1500 + static_cast<std::uint64_t>(l));
      std::vector<std::shared_ptr<TicketCoroutine>> active;

      // What a coroutine does with what poll() (or arrive()) told it.
      auto handle = [&](TicketCoroutine& c, Status s, Nanos now) {
        switch (s) {
          case Status::admitted: {
            const Nanos went = now_ns();
            CHECK(c.ticket->planned_ns() <= went, "coroutine admitted at ", c.ticket->planned_ns(),
                  " after reading ", went);
            t.requests.push_back(c.ticket->planned_ns());
            const std::int64_t used = rng.below(2) == 0 ? c.tokens : rng.below(c.tokens + 1);
            t.tokens_used += used;
            bucket.settle(c.tokens, used, now_ns());  // re-plans: may wake this loop's own waiters
            ++t.admitted;
            c.done = true;
            return;
          }
          case Status::refused:
          case Status::closed:  // (nothing closes the bucket here)
            ++t.refused;
            c.done = true;
            return;
          case Status::queued:
            if (now >= c.give_up_at) {
              if (c.abandon) {
                ++t.abandoned;  // dropped with its ticket queued: ~TicketCoroutine leaves
                c.linger = rng.below(100 * kUs);
              } else {
                bucket.leave(*c.ticket);
                ++t.gave_up;
              }
              c.done = true;
            } else if (now >= c.deadline) {  // still queued at its deadline: those ahead were late
              bucket.leave(*c.ticket);
              ++t.timed_out;
              c.done = true;
            }
            return;
        }
      };
      // One look (poll). Returns what it found, the instant in *head_at (a caller standing by:
      // its deadline, with *standing set).
      auto poll = [&](TicketCoroutine& c, Nanos now, Nanos* head_at, bool* standing) {
        Nanos wake_at = kForever;
        const Status s = bucket.poll(*c.ticket, now, &wake_at, standing);
        *head_at = s == Status::queued ? wake_at : kForever;
        return s;
      };
      auto look = [&](TicketCoroutine& c) {
        c.seen_wakes = c.wakes();
        const Nanos now = now_ns();
        const Status s = poll(c, now, &c.head_at, &c.standing);
        handle(c, s, now);
      };

      gate.wait();
      Nanos next_start = 0, next_audit = now_ns() + kAuditEvery, drain_until = kForever;
      bool rescued = false;
      for (;;) {
        Nanos now = now_ns();
        const bool stopping = stop.load(std::memory_order_relaxed);
        if (stopping && drain_until == kForever) drain_until = now + kDrainLimit;
        if (!stopping && active.size() < kPerLoop && now >= next_start) {  // a coroutine arrives
          auto c = std::make_shared<TicketCoroutine>(loop);
          c->tokens = 1 + rng.below(64);
          c->deadline = rng.below(8) == 0 ? kForever : now + rng.below(4 * kMs);
          if (rng.below(6) == 0) {
            c->give_up_at = now + rng.below(kMs);
            c->abandon = rng.below(2) == 0;
          }
          c->ticket.emplace(bucket, c->tokens, c->deadline, c.get());
          ++t.started;
          const Status s = bucket.arrive(*c->ticket, now);
          if (s == Status::queued) {
            look(*c);  // its first look: the head learns its instant
          } else {
            handle(*c, s, now);
          }
          if (!c->done) active.push_back(std::move(c));
          next_start = now + rng.below(300 * kUs);
        }
        if (stopping && active.empty()) break;

        Nanos until = next_audit;
        if (!stopping && active.size() < kPerLoop) until = std::min(until, next_start);
        for (const auto& c : active) until = std::min(until, c->timer());
        for (const std::shared_ptr<LoopTask>& task : loop.take(until)) {
          ++t.posts;
          TicketCoroutine& c = static_cast<TicketCoroutine&>(*task);
          if (c.done) {
            ++t.stale_posts;
            continue;
          }
          ++t.looks_after_post;
          look(c);
        }

        now = now_ns();
        for (const auto& c : active) {
          if (c->done || c->timer() > now) continue;
          ++t.timer_looks;
          look(*c);
        }

        if (now >= next_audit) {
          next_audit = now + kAuditEvery;
          for (const auto& cp : active) {
            TicketCoroutine& c = *cp;
            if (c.done) continue;
            ++t.audits;
            const long before = c.wakes();
            const Nanos at_now = now_ns();
            Nanos head_at = kForever;
            bool standing = false;
            const Status s = poll(c, at_now, &head_at, &standing);
            if (c.wakes() == c.seen_wakes) {  // nothing woke it since just before its last look
              // Standing by, only its deadline ends the stand-by without a wake (joining the
              // queue comes with one); in the queue, as before.
              const bool same = c.standing ? (s == Status::queued && standing && head_at == c.head_at) ||
                                                 (s == Status::refused && at_now >= c.deadline)
                                : c.head_at == kForever
                                    ? s == Status::queued && !standing && head_at == kForever
                                    : (s == Status::queued && !standing && head_at == c.head_at) ||
                                          (s == Status::admitted && at_now >= c.head_at);
              if (!same) {
                ++t.lost;
                auto instant = [](Nanos at) { return at == kForever ? std::string("none") : std::to_string(at); };
                CHECK(false, "lost wake-up: a ticket that nothing woke since its last look (which found it ",
                      c.standing                 ? "standing by until " + instant(c.head_at)
                      : c.head_at == kForever ? "behind the head"
                                              : "the head, instant " + instant(c.head_at),
                      ") now finds it ", name_of(s), ", instant ", instant(head_at), " (now ", at_now, ")");
              }
            }
            c.seen_wakes = before;
            c.head_at = head_at;
            c.standing = standing;
            handle(c, s, at_now);
          }
        }
        if (!rescued && now >= drain_until) {  // nothing can legitimately wait this long
          rescued = true;
          for (const auto& c : active) {
            if (c->done) continue;
            ++t.stuck;
            ++t.abandoned;
            c->done = true;
          }
        }
        active.erase(std::remove_if(active.begin(), active.end(),
                                    [](const std::shared_ptr<TicketCoroutine>& c) { return c->done; }),
                     active.end());
      }
      t.posts += static_cast<long>(loop.take(now_ns()).size());
    });
  }

  // The token refill, period by period. set_token_interval(T, a) keeps the tokens owed at `a` and
  // refills at the new pace from `a` on: as if the pace had changed at `a` (this thread's clock
  // reading, so the periods follow one another). Only the decisions made between `a` and the
  // rescale itself (the call waits for the bucket's mutex) still use the old pace; after a
  // slow-down that is at most (after - a) * (1/fast - 1/slow) more tokens, counted in `slack`.
  double refill = 0.0, slack = 0.0;
  Nanos period_start = 0, pace = kTokenT;
  const Nanos start = now_ns();
  period_start = start;
  gate.open();
  Rng rng(1414);
  std::int64_t given_back = 0;
  long changes = 0, pace_changes = 0;
  while (now_ns() < start + kRunFor) {
    const Nanos now = now_ns();
    switch (rng.below(5)) {
      case 0: bucket.settle(0, 1 + rng.below(100), now); break;  // a call that used more than it took
      case 1: {
        const std::int64_t n = 1 + rng.below(100);
        bucket.settle(n, 0, now);  // tokens given back that nobody took: added to the bound
        given_back += n;
        break;
      }
      case 2: bucket.limit_available_tokens(rng.below(kTokenB + 1), now); break;
      case 3: {
        const Nanos next = pace == kTokenT ? kSlowTokenT : kTokenT;
        const Nanos old = bucket.set_token_interval(next, now);
        const Nanos after = now_ns();
        CHECK(old == pace, "set_token_interval replaced ", old, ", expected ", pace);
        refill += static_cast<double>(now - period_start) / static_cast<double>(pace);
        if (next > pace) slack += static_cast<double>(after - now) * (1.0 / static_cast<double>(pace) - 1.0 / static_cast<double>(next));
        period_start = now;
        pace = next;
        ++pace_changes;
        break;
      }
      default: bucket.limit_available_requests(rng.below(kRequestB + 1), now); break;
    }
    ++changes;
    sleep_for_ns(rng.below(3 * kMs));
  }
  stop.store(true);
  join_all(threads);
  const Nanos end = now_ns();
  refill += static_cast<double>(end - period_start) / static_cast<double>(pace);

  std::vector<Nanos> all;
  std::int64_t used = 0;
  Tally threads_sum, loops_sum;
  for (const Tally& w : workers) {
    all.insert(all.end(), w.requests.begin(), w.requests.end());
    used += w.tokens_used;
    threads_sum.started += w.started;
    threads_sum.admitted += w.admitted;
    threads_sum.refused += w.refused;
    threads_sum.gave_up += w.gave_up;
  }
  for (int l = 0; l < kLoops; ++l) {
    const Tally& t = tallies[static_cast<std::size_t>(l)];
    all.insert(all.end(), t.requests.begin(), t.requests.end());
    used += t.tokens_used;
    const long ended = t.admitted + t.refused + t.gave_up + t.abandoned + t.timed_out;
    CHECK(t.started == ended, "loop ", l, ": ", t.started, " tickets started, ", ended, " ended");
    CHECK(t.posts == loops[l].posts(), "loop ", l, ": ", loops[l].posts(), " posts made, ", t.posts, " taken");
    CHECK(t.admitted > 0, "loop ", l, ": no coroutine ticket was admitted");
    loops_sum.started += t.started;
    loops_sum.admitted += t.admitted;
    loops_sum.refused += t.refused;
    loops_sum.gave_up += t.gave_up;
    loops_sum.abandoned += t.abandoned;
    loops_sum.timed_out += t.timed_out;
    loops_sum.posts += t.posts;
    loops_sum.stale_posts += t.stale_posts;
    loops_sum.looks_after_post += t.looks_after_post;
    loops_sum.timer_looks += t.timer_looks;
    loops_sum.audits += t.audits;
    loops_sum.lost += t.lost;
    loops_sum.stuck += t.stuck;
  }
  const long dropped = loops[0].dropped_wakes() + loops[1].dropped_wakes();
  std::sort(all.begin(), all.end());
  const double token_bound = static_cast<double>(kTokenB) + refill + slack + 64.0 + static_cast<double>(given_back);
  std::printf("    threads: %ld tickets, %ld admitted, %ld refused or late, %ld gave up\n", threads_sum.started,
              threads_sum.admitted, threads_sum.refused, threads_sum.gave_up);
  std::printf("    coroutines on %d loops: %ld tickets, %ld admitted, %ld refused, %ld late, %ld left early, "
              "%ld dropped while queued\n",
              kLoops, loops_sum.started, loops_sum.admitted, loops_sum.refused, loops_sum.timed_out,
              loops_sum.gave_up, loops_sum.abandoned);
  std::printf("    %ld posts (%ld for tickets that had ended), %ld timer looks, %ld wakes during a waiter's "
              "destruction, %ld audits, %ld lost, %ld stuck; %ld changes by this thread\n",
              loops_sum.posts, loops_sum.stale_posts, loops_sum.timer_looks, dropped, loops_sum.audits,
              loops_sum.lost, loops_sum.stuck, changes);
  std::printf("    %zu requests, %lld tokens used in %.3f s; bound %.0f = burst + refill %.0f (%ld pace changes) "
              "+ slack %.0f + 64 + %lld given back\n",
              all.size(), static_cast<long long>(used), seconds(end - start), token_bound, refill, pace_changes, slack,
              static_cast<long long>(given_back));
  CHECK(loops_sum.lost == 0, loops_sum.lost, " lost wake-ups seen by the audits");
  CHECK(loops_sum.stuck == 0, loops_sum.stuck, " coroutine tickets still queued ", seconds(kDrainLimit),
        " s after the run (lost wake-up?)");
  CHECK(loops_sum.looks_after_post > 0, "no coroutine was ever woken");
  CHECK(threads_sum.admitted > 0, "no thread was ever admitted");
  check_every_window(all, kRequestT, kRequestB, "dual bucket requests (threads and coroutines)");
  CHECK(static_cast<double>(used) <= token_bound, "tokens used ", used, " exceed burst + refill ", token_bound);
  CHECK(bucket.queued() == 0, bucket.queued(), " tickets left in the queue");
  if (dropped == 0) std::printf("    note: no wake raced a waiter's destruction (path not exercised)\n");
}

// ---- Standby ------------------------------------------------------------------------------------

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
  const Scenario scenarios[] = {
      {"semaphore: mixed acquire paths, 16 threads, max 4", semaphore_mixed_load},
      {"semaphore: FIFO hand-over and no barging", semaphore_fifo},
      {"semaphore: close() wakes every waiter", semaphore_close_wakes_waiters},
      {"semaphore: close() racing a busy semaphore", semaphore_close_under_load},
      {"semaphore: over-release", semaphore_over_release},
      {"semaphore: set_max while 16 threads come and go", semaphore_set_max_under_load},
      {"shared semaphore: 16 threads on the futex queue while max changes", shared_semaphore_threads},
      {"shared semaphore: a peer holds the mutex (stopped): deadlines hold", shared_semaphore_stopped_holder},
      {"gcra: 16 threads, fixed interval and burst", gcra_fixed_config},
      {"gcra: 16 threads while set_interval/set_burst run", gcra_reconfigured},
      {"gcra: debt bound while the interval flips 10x", gcra_rate_changes},
      {"gcra: hold_until and limit_available under load", gcra_holds_under_load},
      {"pause: extends only, from 16 threads", pause_extends_only},
      {"histogram: quantiles within 1/32 at every scale, the maximum exact", histogram_accuracy},
      {"histogram: 16 threads record at once: no count lost, the maximum exact", histogram_concurrent_records},
      {"dual bucket: requests and tokens together, settled, held and capped", dual_bucket_under_load},
      {"dual bucket: arrival order kept through rate, burst and settle changes", dual_bucket_queue_order_and_changes},
      {"schedule: sleepers follow the interval as it flips", schedule_rate_flips},
      {"window: 16 writers within one minute", window_one_minute},
      {"window: 16 writers across five laps of the ring", window_ring_laps},
      {"semaphore: coroutine waiters on 2 fake loops with 8 threads", semaphore_coroutine_waiters},
      {"dual bucket: coroutine tickets on 2 fake loops alongside 8 threads", dual_bucket_coroutine_tickets},
      {"standby: no lost wake-up between a look and the sleep (private and shared futexes)", standby_no_lost_wakeups},
      {"standby: the watcher wakes coroutines for another process's changes", standby_watcher_for_coroutines},
  };

  Watchdog watchdog(std::chrono::seconds(120));
  const Nanos started = now_ns();
  std::vector<const char*> failed;
  for (const Scenario& s : scenarios) {
    g_current_scenario.store(s.name);
    std::printf("[ RUN  ] %s\n", s.name);
    std::fflush(stdout);
    const int failures_before = g_failures.load();
    const Nanos t0 = now_ns();
    try {
      s.run();
    } catch (const std::exception& e) {
      CHECK(false, "scenario threw: ", e.what());
    }
    const int failures = g_failures.load() - failures_before;
    std::printf("[ %s ] %s (%.2f s)\n", failures == 0 ? " OK " : "FAIL", s.name, seconds(now_ns() - t0));
    std::fflush(stdout);
    if (failures != 0) failed.push_back(s.name);
  }

  const double total_s = seconds(now_ns() - started);
  const std::size_t count = sizeof(scenarios) / sizeof(scenarios[0]);
  if (failed.empty()) {
    std::printf("core_stress: all %zu scenarios passed in %.2f s\n", count, total_s);
    return 0;
  }
  std::fprintf(stderr, "core_stress: %d check(s) FAILED in %zu of %zu scenarios (%.2f s):\n", g_failures.load(),
               failed.size(), count, total_s);
  for (const char* name : failed) std::fprintf(stderr, "  - %s\n", name);
  return 1;
}
